//! Faults as separate processes: a worker killed with -9 mid-job, and the
//! coordinator killed with -9 mid-job. Each job still ends with every sample
//! exactly once, `epochs` equal to the job's, and values within 1e-4 of an
//! uninterrupted run (in fact equal: the rerun epoch starts from the
//! checkpoint of the last finished one, with the same shard plan).

use std::path::Path;
use std::process::{Command, Stdio};

use carto_e2e::*;

const EPOCHS: &str = "14";

fn job_args(out: &Path) -> Vec<String> {
    [
        "--data", example("fashion_mnist/fashion-2k.parquet").to_str().unwrap(), "--label-col", "label",
        "--features-col", "pixels", "--model", "mlp", "--hidden", "64", "--epochs", EPOCHS, "--batch-size", "16",
        "--threads-per-worker", "1", "--out", out.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn committed(out: &Path, epoch: u32) -> bool {
    out.join(format!("dynamics/epoch={epoch}")).is_dir()
}

fn job_json(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("job.json")).unwrap()).unwrap()
}

/// `carto run ARGS` in the background, output captured, so a test can kill
/// its workers while it runs.
fn spawn_run(args: &[String]) -> std::process::Child {
    Command::new(bin("carto"))
        .args(args)
        .env("CARTO_WORKER_BIN", bin("carto-worker"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The same job, uninterrupted, for comparison.
fn reference(dir: &Path, workers: &str) -> std::path::PathBuf {
    let out = dir.join(format!("reference-{workers}"));
    let mut args = vec!["run".to_string(), "--workers".into(), workers.into()];
    args.extend(job_args(&out));
    assert_success(&carto(&args.iter().map(String::as_str).collect::<Vec<_>>()));
    out
}

#[test]
fn carto_run_restarts_a_killed_worker_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("killed");
    let mut args = vec!["run".to_string(), "--workers".into(), "2".into(), "-q".into()];
    args.extend(job_args(&out));
    let run = spawn_run(&args);
    wait_until("epoch 2 to commit", 120, || committed(&out, 2));
    let workers = children_named(run.id(), "carto-worker");
    assert_eq!(workers.len(), 2, "two worker processes");
    kill9(workers[1]);
    let output = run.wait_with_output().unwrap();
    assert_success(&output);
    let job = job_json(&out);
    assert_eq!(job["state"], "succeeded");
    assert!(job["restarts"].as_u64().unwrap() >= 1, "{}", job["restarts"]);
    assert!(job["generation"].as_u64().unwrap() >= 2);
    assert_eq!(job["epochs"].as_array().unwrap().len(), 14);
    assert!(!out.join(".carto").exists(), "run-time state is gone after success");

    let diff = metrics_difference(&out.join("metrics.parquet"), &reference(dir.path(), "2").join("metrics.parquet"));
    assert!(diff <= 1e-4, "largest metric difference {diff}");
}

#[test]
fn a_killed_carto_run_takes_its_workers_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("orphans");
    let mut args = vec!["run".to_string(), "--workers".into(), "2".into(), "-q".into()];
    args.extend(job_args(&out));
    let mut run = spawn_run(&args);
    wait_until("epoch 0 to commit", 120, || committed(&out, 0));
    let workers = children_named(run.id(), "carto-worker");
    assert_eq!(workers.len(), 2, "two worker processes");
    // -9: carto run gets no chance to clean up; the kernel must end its workers.
    kill9(run.id());
    let _ = run.wait();
    wait_until("the workers to die with carto run", 30, || {
        workers.iter().all(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists() || is_zombie(*pid))
    });
}

/// A process that has exited but whose parent has not reaped it yet.
fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(true)
}

#[test]
fn a_job_past_its_restart_budget_fails_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut args = vec!["run".to_string(), "--max-restarts".into(), "0".into(), "-q".into()];
    args.extend(job_args(&out));
    let run = spawn_run(&args);
    wait_until("epoch 1 to commit", 120, || committed(&out, 1));
    kill9(children_named(run.id(), "carto-worker")[0]);
    let output = run.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.contains("was lost") || last.contains("exited"), "{stderr}");
    assert!(!out.join("metrics.parquet").exists(), "a failed job claims no results");
    assert_ne!(job_json(&out)["state"], "succeeded");
}

#[test]
fn a_cluster_job_moves_to_a_spare_when_a_worker_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = serve(&dir.path().join("state"), &["--rejoin-wait-secs", "60"]);
    let mut w1 = worker(&url, "w1", &[]);
    let _w2 = worker(&url, "w2", &[]);
    let out = dir.path().join("out");
    let mut args = vec!["submit".to_string(), "--coordinator".into(), url.clone()];
    let job_file = dir.path().join("job.toml");
    let a = job_args(&out);
    let toml: String = a
        .chunks(2)
        .map(|kv| {
            let key = kv[0].trim_start_matches("--").replace('-', "_");
            let v = &kv[1];
            if v.parse::<f64>().is_ok() { format!("{key} = {v}\n") } else { format!("{key} = \"{v}\"\n") }
        })
        .collect::<String>()
        + "workers = 2\n";
    std::fs::write(&job_file, toml).unwrap();
    args.push(job_file.to_str().unwrap().into());
    let sub = carto(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_success(&sub);
    let id = String::from_utf8_lossy(&sub.stdout).trim().to_string();
    wait_until("epoch 2 to commit", 120, || committed(&out, 2));
    // The spare need not have registered yet: the re-forming job waits
    // (--rejoin-wait-secs) for a second worker rather than shrinking.
    let _spare = worker(&url, "spare", &[]);
    kill9(w1.0.id());
    let _ = w1.0.wait();
    let watch = carto(&["watch", "--coordinator", &url, &id, "--json"]);
    assert_success(&watch);
    let job = job_json(&out);
    assert_eq!(job["state"], "succeeded");
    assert_eq!(job["restarts"], 1);
    assert_eq!(job["world_size"], 2);
    assert_eq!(job["epochs"].as_array().unwrap().len(), 14);
    let diff = metrics_difference(&out.join("metrics.parquet"), &reference(dir.path(), "2").join("metrics.parquet"));
    assert!(diff <= 1e-4, "largest metric difference {diff}");
}

#[test]
fn a_killed_coordinator_resumes_its_job_from_the_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let listen = format!("127.0.0.1:{}", free_port());
    let (mut server, url) = serve_on(&listen, &state, &[]);
    let _w1 = worker(&url, "w1", &[]);
    let _w2 = worker(&url, "w2", &[]);
    let out = dir.path().join("out");
    let job_file = dir.path().join("job.toml");
    let a = job_args(&out);
    let toml: String = a
        .chunks(2)
        .map(|kv| {
            let key = kv[0].trim_start_matches("--").replace('-', "_");
            let v = &kv[1];
            if v.parse::<f64>().is_ok() { format!("{key} = {v}\n") } else { format!("{key} = \"{v}\"\n") }
        })
        .collect::<String>()
        + "workers = 2\n";
    std::fs::write(&job_file, toml).unwrap();
    let sub = carto(&["submit", "--coordinator", &url, job_file.to_str().unwrap()]);
    assert_success(&sub);
    let id = String::from_utf8_lossy(&sub.stdout).trim().to_string();
    wait_until("epoch 3 to commit", 120, || committed(&out, 3));
    kill9(server.0.id());
    let _ = server.0.wait();
    // Workers keep trying to reconnect; a new coordinator on the same
    // address and state directory resumes the job.
    let (_server2, url2) = serve_on(&listen, &state, &[]);
    assert_eq!(url, url2);
    let watch = carto(&["watch", "--coordinator", &url2, &id, "--json"]);
    assert_success(&watch);
    let job = job_json(&out);
    assert_eq!(job["state"], "succeeded");
    assert!(job["generation"].as_u64().unwrap() >= 2);
    assert_eq!(job["epochs"].as_array().unwrap().len(), 14);
    assert!(!out.join("dynamics").read_dir().unwrap().any(|e| e.unwrap().file_name().to_string_lossy().starts_with('.')));
    let diff = metrics_difference(&out.join("metrics.parquet"), &reference(dir.path(), "2").join("metrics.parquet"));
    assert!(diff <= 1e-4, "largest metric difference {diff}");
    // The restarted coordinator still knows the job.
    let list = carto(&["list", "--coordinator", &url2, "--json"]);
    assert!(String::from_utf8_lossy(&list.stdout).contains(&id));
}
