//! Bundles the data map's page code (web/: regl-scatterplot and carto's
//! modules) with esbuild into OUT_DIR/datamap.js (embedded in every
//! `datamap.html` by `datamap_html.rs`) and OUT_DIR/live.js (the live page of
//! `carto serve --http`, served by `http.rs`).
//! Third-party code comes from npm (web/package-lock.json) at build time and
//! is never copied into the repository.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let web = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../web");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    for f in ["src/datamap.js", "src/live.js", "src/map.js", "package.json", "package-lock.json"] {
        println!("cargo:rerun-if-changed={}", web.join(f).display());
    }
    let npm = std::env::var("NPM").unwrap_or_else(|_| "npm".into());
    let run = |args: &[&str]| {
        let status = Command::new(&npm).args(args).current_dir(&web).status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => panic!("`npm {}` in {} failed ({s})", args.join(" "), web.display()),
            Err(_) => panic!(
                "carto's data map page is bundled with npm at build time: install Node.js 18+ and npm \
                 (Debian: apt-get install nodejs npm)"
            ),
        }
    };
    if !web.join("node_modules/.package-lock.json").exists() {
        run(&["ci", "--no-audit", "--no-fund", "--silent"]);
    }
    for entry in ["datamap", "live"] {
        let src = format!("src/{entry}.js");
        let outfile = format!("--outfile={}", out_dir.join(format!("{entry}.js")).display());
        run(&["exec", "--", "esbuild", &src, "--bundle", "--minify", "--format=iife", "--target=es2020", "--log-level=warning", &outfile]);
    }
}
