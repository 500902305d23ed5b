//! Bundles the data map page (web/: regl-scatterplot and carto's module)
//! with esbuild into OUT_DIR/datamap.js, which `datamap_html.rs` embeds.
//! Third-party code comes from npm (web/package-lock.json) at build time and
//! is never copied into the repository.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let web = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../web");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("datamap.js");
    for f in ["src/datamap.js", "package.json", "package-lock.json"] {
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
    let outfile = format!("--outfile={}", out.display());
    run(&["exec", "--", "esbuild", "src/datamap.js", "--bundle", "--minify", "--format=iife", "--target=es2020", "--log-level=warning", &outfile]);
}
