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
//!
//! ProcessGroupNCCL (multi-GPU jobs) is compiled in whenever the torch wheel
//! ships NCCL: `nccl.h` under site-packages/nvidia/nccl/include plus the CUDA
//! headers ProcessGroupNCCL.hpp includes (the CUDA runtime's, which the wheel
//! brings, and crt/ and CCCL's nv/target, which scripts/requirements.txt adds).
//! Such a build gets the cfg `carto_nccl`. A CPU-only wheel has none of them
//! and builds without NCCL; a CUDA wheel that lacks only some headers builds
//! without it too, with a cargo warning naming them. The `nccl` feature (or
//! `CARTO_NCCL=1`) makes NCCL required: the build fails with one line saying
//! what is missing; `CARTO_NCCL=0` leaves it out even where the headers are.

use std::path::{Path, PathBuf};

fn main() {
    // Set by torch-sys (links = "tch") for crates that depend on it directly.
    let lib = PathBuf::from(std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys exports its libtorch lib dir"));
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=CARTO_GLOO_INCLUDE");
    println!("cargo:rerun-if-changed=csrc/c10d_shim.cpp");
    println!("cargo:rerun-if-changed=csrc/autocast.cpp");
    println!("cargo:rerun-if-changed=csrc/optim.cpp");
    println!("cargo:rerun-if-changed=csrc/errors.h");

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
    // Kept apart from the file list above: NCCL only adds include paths and defines.
    let nccl = nccl_headers(&lib);
    if let Some(dirs) = &nccl {
        for dir in dirs {
            build.include(dir);
        }
        build.flag("-DUSE_C10D_NCCL").flag("-DUSE_CUDA").flag("-DCARTO_NCCL");
        println!("cargo:rustc-cfg=carto_nccl");
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

/// The headers ProcessGroupNCCL.hpp needs besides libtorch's, each found in
/// one of these directories.
const NCCL_HEADERS: [&str; 4] = ["nccl.h", "cuda_runtime_api.h", "crt/host_config.h", "nv/target"];

/// Include directories for the NCCL path, or None to build without it (see
/// the module comment for when that is an error instead).
fn nccl_headers(lib: &Path) -> Option<Vec<PathBuf>> {
    println!("cargo:rustc-check-cfg=cfg(carto_nccl)");
    println!("cargo:rerun-if-env-changed=CARTO_NCCL");
    println!("cargo:rerun-if-env-changed=CARTO_CUDA_INCLUDE");
    let mode = std::env::var("CARTO_NCCL").unwrap_or_default();
    let required = std::env::var_os("CARGO_FEATURE_NCCL").is_some() || mode == "1";
    if mode == "0" {
        if required {
            panic!("the nccl feature requires NCCL but CARTO_NCCL=0 leaves it out: drop one of them");
        }
        println!("cargo:rustc-env=CARTO_NCCL_VERSION=not compiled in (CARTO_NCCL=0)");
        return None;
    }
    // torch/lib -> torch -> site-packages; the nvidia-* wheels unpack under nvidia/.
    let nvidia = lib.parent().and_then(Path::parent).map(|site| site.join("nvidia"));
    let mut candidates: Vec<PathBuf> = std::env::var_os("CARTO_CUDA_INCLUDE")
        .map(|v| std::env::split_paths(&v).collect())
        .unwrap_or_default();
    if let Some(nvidia) = nvidia.as_ref().filter(|d| d.is_dir()) {
        // nvidia/nccl/include, nvidia/cu13/include (CUDA 13 wheels merge the
        // toolkit's headers there), nvidia/cuda_runtime/include (CUDA 12's
        // one package per component): every package's include directory.
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(nvidia)
            .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path().join("include")).filter(|d| d.is_dir()).collect())
            .unwrap_or_default();
        dirs.sort();
        // Rebuild when headers come (pip install -r scripts/requirements.txt
        // adds crt/ and nv/ to cu13/include). Only include directories: the
        // package roots get Python's __pycache__ when torch is imported.
        for d in &dirs {
            println!("cargo:rerun-if-changed={}", d.display());
        }
        candidates.extend(dirs);
    }
    let mut found: Vec<PathBuf> = Vec::new();
    let mut missing: Vec<&str> = Vec::new();
    for header in NCCL_HEADERS {
        match candidates.iter().find(|d| d.join(header).exists()) {
            Some(d) if found.contains(d) => {}
            Some(d) => found.push(d.clone()),
            None => missing.push(header),
        }
    }
    // ProcessGroupNCCL's code lives in libtorch_cuda: a CPU-only libtorch cannot link it.
    let cuda_lib = lib.join("libtorch_cuda.so").exists();
    if missing.is_empty() && cuda_lib {
        let version = nccl_version(&found).unwrap_or_else(|| "unknown version".into());
        println!("cargo:rustc-env=CARTO_NCCL_VERSION={version}");
        return Some(found);
    }
    let where_ = nvidia.as_deref().unwrap_or(lib).display().to_string();
    let what = if !cuda_lib {
        format!("libtorch at {} is a CPU-only build (no libtorch_cuda.so)", lib.display())
    } else {
        format!("{} not found under {where_} (or CARTO_CUDA_INCLUDE)", missing.join(", "))
    };
    if required {
        panic!(
            "NCCL is required (feature `nccl` or CARTO_NCCL=1) but {what}: install PyPI's CUDA build of torch and \
             the CUDA headers with `pip install -r scripts/requirements.txt` into the torch environment"
        );
    }
    // nccl.h present means a CUDA wheel whose headers are incomplete: worth a word.
    if !missing.contains(&"nccl.h") && cuda_lib {
        println!(
            "cargo:warning=building carto-worker without NCCL (multi-GPU jobs need it): {what}; \
             `pip install -r scripts/requirements.txt` adds them"
        );
    }
    println!("cargo:rustc-env=CARTO_NCCL_VERSION=not compiled in");
    None
}

/// NCCL's version from nccl.h, e.g. "2.29.7".
fn nccl_version(dirs: &[PathBuf]) -> Option<String> {
    let text = dirs.iter().find_map(|d| std::fs::read_to_string(d.join("nccl.h")).ok())?;
    let num = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("#define ")?.strip_prefix(name)?.trim().parse::<u32>().ok())
    };
    Some(format!("{}.{}.{}", num("NCCL_MAJOR")?, num("NCCL_MINOR")?, num("NCCL_PATCH")?))
}
