//! Helpers for the whole-system tests in `tests/`: locating the built
//! binaries, running them as separate processes, reading their outputs back.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::compute::concat_batches;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// The workspace root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("e2e is in the workspace").to_path_buf()
}

/// A file under `examples/`.
pub fn example(rel: &str) -> PathBuf {
    repo_root().join("examples").join(rel)
}

/// A built binary of this profile (`target/<profile>/NAME`), which the test
/// command builds before running the tests.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --release --workspace` (scripts/test.sh does) before the e2e tests",
        path.display()
    );
    path
}

/// Runs `carto ARGS…` to completion.
pub fn carto(args: &[&str]) -> Output {
    Command::new(bin("carto"))
        .args(args)
        .env("CARTO_WORKER_BIN", bin("carto-worker"))
        .output()
        .expect("carto starts")
}

/// Panics with both output streams when `out` did not succeed.
pub fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Python with pyarrow, polars and duckdb (`CARTO_PYTHON`, set by scripts/test.sh).
pub fn python() -> PathBuf {
    std::env::var_os("CARTO_PYTHON").map(PathBuf::from).unwrap_or_else(|| {
        panic!("CARTO_PYTHON is not set: run the tests through scripts/test.sh, which creates the Python environment")
    })
}

/// Reads a whole Parquet file into one batch.
pub fn read_parquet(path: &Path) -> RecordBatch {
    let f = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let reader = ParquetRecordBatchReaderBuilder::try_new(f).unwrap().build().unwrap();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    let schema = batches[0].schema();
    concat_batches(&schema, &batches).unwrap()
}

/// A column by name, downcast.
pub fn col<'a, T: 'static>(b: &'a RecordBatch, name: &str) -> &'a T {
    b.column_by_name(name)
        .unwrap_or_else(|| panic!("column {name} missing"))
        .as_any()
        .downcast_ref::<T>()
        .unwrap_or_else(|| panic!("column {name} has type {}", b.column_by_name(name).unwrap().data_type()))
}

pub fn column(b: &RecordBatch, name: &str) -> ArrayRef {
    b.column_by_name(name).unwrap_or_else(|| panic!("column {name} missing")).clone()
}

/// Every `epoch=K/part-R.parquet` under `dir`, read: K → batches.
pub fn read_dynamics(dir: &Path) -> HashMap<u32, Vec<RecordBatch>> {
    let mut out: HashMap<u32, Vec<RecordBatch>> = HashMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let k: u32 = name.strip_prefix("epoch=").unwrap_or_else(|| panic!("unexpected {name}")).parse().unwrap();
        for f in std::fs::read_dir(e.path()).unwrap() {
            let p = f.unwrap().path();
            let fname = p.file_name().unwrap().to_string_lossy().into_owned();
            assert!(fname.starts_with("part-") && fname.ends_with(".parquet"), "stray file {}", p.display());
            out.entry(k).or_default().push(read_parquet(&p));
        }
    }
    out
}

/// The one line a failed command printed on stderr.
pub fn error_line(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected exactly one error line, got:\n{stderr}");
    lines[0].to_string()
}

/// A child process killed when dropped (tests never leak servers or workers).
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `carto serve` on a free loopback port; returns it and its URL.
pub fn serve(state_dir: &Path, extra: &[&str]) -> (Proc, String) {
    serve_on("127.0.0.1:0", state_dir, extra)
}

/// Starts a `carto-worker` for `url`.
pub fn worker(url: &str, name: &str, extra: &[&str]) -> Proc {
    Proc(
        Command::new(bin("carto-worker"))
            .args(["--coordinator", url, "--name", name, "--advertise-host", "127.0.0.1"])
            .args(extra)
            .spawn()
            .expect("carto-worker starts"),
    )
}

/// Processes whose parent is `parent` and whose command name is `name`.
pub fn children_named(parent: u32, name: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // pid (comm) state ppid …; comm may hold spaces, so split after ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let comm = &stat[open + 1..close];
        let ppid: u32 = stat[close + 2..].split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
        if ppid == parent && comm == &name[..name.len().min(15)] {
            found.push(pid);
        }
    }
    found.sort();
    found
}

/// `kill -9 pid`.
pub fn kill9(pid: u32) {
    let ok = Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap().success();
    assert!(ok, "kill -9 {pid}");
}

/// Polls `f` every 50 ms until it holds; panics after `secs`.
pub fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !f() {
        assert!(start.elapsed().as_secs() < secs, "timed out after {secs} s waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A free loopback port (for servers that must come back on the same one).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts `carto serve` on a given address; returns once it prints its URL.
pub fn serve_on(listen: &str, state_dir: &Path, extra: &[&str]) -> (Proc, String) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(bin("carto"))
        .args(["serve", "--listen", listen, "--state-dir", state_dir.to_str().unwrap()])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("carto serve starts");
    let stdout = child.stdout.take().unwrap();
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://") || w.starts_with("https://"))
        .unwrap_or_else(|| panic!("carto serve printed {line:?}"))
        .to_string();
    (Proc(child), url)
}

/// Largest absolute difference of the float metrics of two metrics files
/// (and checks both have every sample once with the same epochs).
pub fn metrics_difference(a: &Path, b: &Path) -> f64 {
    let (a, b) = (read_parquet(a), read_parquet(b));
    assert_eq!(a.num_rows(), b.num_rows());
    let ids_a = col::<arrow::array::Int64Array>(&a, "sample_id");
    assert!(ids_a.values().iter().enumerate().all(|(i, &s)| s == i as i64), "every sample once, in order");
    assert_eq!(column(&a, "epochs").to_data(), column(&b, "epochs").to_data());
    let mut worst = 0f64;
    for c in ["confidence", "variability", "correctness", "aum", "el2n"] {
        let (x, y) = (col::<arrow::array::Float64Array>(&a, c), col::<arrow::array::Float64Array>(&b, c));
        for i in 0..x.len() {
            worst = worst.max((x.value(i) - y.value(i)).abs());
        }
    }
    worst
}
