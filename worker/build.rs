//! Links libtorch so that its CUDA library loads on GPU hosts.
//!
//! torch-sys links `torch_cuda` by name, but with the linker's default
//! `--as-needed` a library none of our symbols reference is dropped from the
//! binary's DT_NEEDED — and then CUDA silently never initialises (every
//! `tch::Cuda::is_available()` is false). `--no-as-needed` keeps it, and an
//! rpath to the wheel's lib directory finds it at run time without
//! LD_LIBRARY_PATH.

fn main() {
    // Set by torch-sys (links = "tch") for crates that depend on it directly.
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys exports its libtorch lib dir");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    println!("cargo:rustc-link-arg=-L{lib}");
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    for name in ["torch_cuda", "torch_cpu", "torch", "c10"] {
        if std::path::Path::new(&lib).join(format!("lib{name}.so")).exists() {
            println!("cargo:rustc-link-arg=-l{name}");
        }
    }
    println!("cargo:rustc-link-arg=-Wl,--as-needed");
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
}
