//! `carto-worker --coordinator URL`: a thin edge over [`carto_worker::client`].
use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = carto_worker::client::WorkerArgs::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CARTO_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match carto_worker::client::run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("carto-worker: error: {e:#}");
            // 2: the user's flags or environment are wrong; 3: anything else
            // (an unreachable coordinator, a refused registration).
            let input = e.downcast_ref::<carto_common::CartoError>().is_some_and(|c| {
                matches!(c, carto_common::CartoError::InvalidInput(_) | carto_common::CartoError::NotFound(_))
            });
            std::process::ExitCode::from(if input { 2 } else { 3 })
        }
    }
}
