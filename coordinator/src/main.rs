//! The `carto` binary: a thin edge over [`carto_coordinator::cli`].
fn main() -> std::process::ExitCode {
    carto_coordinator::cli::main()
}
