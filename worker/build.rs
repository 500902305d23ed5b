//! Links libtorch so its CUDA library loads on GPU hosts, and compiles the
//! c10d shim (`csrc/c10d_shim.cpp`), the autocast setting
//! (`csrc/autocast.cpp`) and the fused optimizer step (`csrc/optim.cpp`)
//! against the wheel's headers.
//!
//! torch-sys links `torch_cuda` by name, but with the linker's default
//! `--as-needed` a library none of our symbols reference is dropped from the
//! binary's DT_NEEDED — and then CUDA silently never initialises (every
//! `tch::Cuda::is_available()` is false). `--no-as-needed` keeps it, and an
//! rpath to the wheel's lib directory finds it at run time without
//! LD_LIBRARY_PATH.
//!
//! The shim needs Gloo's headers (ProcessGroupGloo.hpp includes them; the
//! code itself is inside libtorch_cpu): from `CARTO_GLOO_INCLUDE` (scripts/env.sh
//! unpacks Debian's libgloo-dev there) or the system's /usr/include.

use std::path::{Path, PathBuf};

fn main() {
    // Set by torch-sys (links = "tch") for crates that depend on it directly.
    let lib = PathBuf::from(std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys exports its libtorch lib dir"));
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=CARTO_GLOO_INCLUDE");
    println!("cargo:rerun-if-changed=csrc/c10d_shim.cpp");
    println!("cargo:rerun-if-changed=csrc/autocast.cpp");
    println!("cargo:rerun-if-changed=csrc/optim.cpp");

    let torch_include = lib.parent().expect("torch/lib has a parent").join("include");
    let gloo_include = std::env::var_os("CARTO_GLOO_INCLUDE").map(PathBuf::from);
    let gloo_found = match &gloo_include {
        Some(dir) => dir.join("gloo/allreduce.h").exists(),
        None => Path::new("/usr/include/gloo/allreduce.h").exists(),
    };
    if !gloo_found {
        panic!(
            "Gloo headers not found (looked in {}): run `source scripts/env.sh`, which unpacks Debian's \
             libgloo-dev into ~/.cache/carto, or `apt-get install libgloo-dev`",
            gloo_include.as_deref().unwrap_or(Path::new("/usr/include")).display()
        );
    }

    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .warnings(false)
        .file("csrc/c10d_shim.cpp")
        .file("csrc/autocast.cpp")
        .file("csrc/optim.cpp")
        .include(&torch_include)
        .include(torch_include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .flag("-DUSE_C10D_GLOO")
        .flag("-DGLOG_USE_GLOG_EXPORT");
    if let Some(dir) = &gloo_include {
        build.include(dir);
    }
    if std::env::var_os("CARGO_FEATURE_NCCL").is_some() {
        // The wheel ships nccl.h and the CUDA headers under site-packages/nvidia/.
        // nccl.h and the CUDA runtime headers come with the torch wheel; crt/
        // and CCCL's nv/target come from scripts/requirements.txt.
        let site = lib.parent().and_then(Path::parent).expect("site-packages");
        let cuda = site.join("nvidia/cu13/include");
        if !cuda.join("nv/target").exists() || !cuda.join("crt/host_config.h").exists() {
            panic!(
                "the nccl feature needs CUDA's crt/ and CCCL headers in {}: \
                 pip install -r scripts/requirements.txt into the torch environment",
                cuda.display()
            );
        }
        build.include(site.join("nvidia/nccl/include")).include(&cuda);
        build.flag("-DUSE_C10D_NCCL").flag("-DUSE_CUDA").flag("-DCARTO_NCCL");
    }
    build.compile("carto_c10d_shim");

    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    println!("cargo:rustc-link-arg=-L{}", lib.display());
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    for name in ["torch_cuda", "torch_cpu", "torch", "c10"] {
        if lib.join(format!("lib{name}.so")).exists() {
            println!("cargo:rustc-link-arg=-l{name}");
        }
    }
    println!("cargo:rustc-link-arg=-Wl,--as-needed");
}
