//! Cluster mode as separate processes: `carto serve`, workers started on their
//! own, jobs submitted by a plain grpcio client and by `carto submit`.

use std::process::Command;
use std::time::{Duration, Instant};

use carto_e2e::*;

fn json(out: &std::process::Output) -> serde_json::Value {
    assert_success(out);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_grpcio_client_runs_a_job_on_two_separately_started_workers() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = serve(&dir.path().join("state"), &[]);
    let _w1 = worker(&url, "w1", &[]);
    let _w2 = worker(&url, "w2", &[]);
    let out = dir.path().join("out");
    let target = url.trim_start_matches("http://");
    let client = Command::new(python())
        .arg(repo_root().join("e2e/python/grpc_client.py"))
        .arg(repo_root().join("proto"))
        .arg(target)
        .arg(example("fashion_mnist/fashion-2k.parquet"))
        .arg(&out)
        .output()
        .unwrap();
    assert_success(&client);
    let stdout = String::from_utf8_lossy(&client.stdout);
    assert!(stdout.contains("grpcio ok"), "{stdout}");
    // It saw the job run epoch by epoch.
    assert!(stdout.contains("\"state\": \"JOB_STATE_RUNNING\", \"epoch\": 0"), "{stdout}");
    assert!(stdout.contains("JOB_STATE_SUCCEEDED"), "{stdout}");
    // Two ranks, two partitions per epoch, every sample once.
    for epoch in 0..3 {
        for rank in 0..2 {
            assert!(out.join(format!("dynamics/epoch={epoch}/part-{rank}.parquet")).exists());
        }
    }
    assert_eq!(read_parquet(&out.join("metrics.parquet")).num_rows(), 2000);
}

#[test]
fn cancelling_a_running_job_frees_its_workers_for_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = serve(&dir.path().join("state"), &[]);
    let _w1 = worker(&url, "w1", &[]);
    let _w2 = worker(&url, "w2", &[]);
    let cli = |args: &[&str]| {
        Command::new(bin("carto")).args(args).env("CARTO_COORDINATOR", &url).output().unwrap()
    };
    let data = example("fashion_mnist/fashion-2k.parquet");
    let long = dir.path().join("long.toml");
    std::fs::write(
        &long,
        format!(
            "name = \"long\"\ndata = \"{}\"\nlabel_col = \"label\"\nfeatures_col = \"pixels\"\nmodel = \"mlp\"\nepochs = 500\nbatch_size = 16\nworkers = 2\nthreads_per_worker = 1\nout = \"out-long\"\n",
            data.display()
        ),
    )
    .unwrap();
    let sub = cli(&["submit", long.to_str().unwrap()]);
    assert_success(&sub);
    let long_id = String::from_utf8_lossy(&sub.stdout).trim().to_string();
    assert!(long_id.starts_with("job-"), "{long_id}");
    // Relative `out` is resolved against the job file's directory.
    wait_for("the long job to run", Duration::from_secs(60), || {
        let s = json(&cli(&["status", &long_id, "--json"]));
        s["state"] == "running" && s["progress"]["samples_done"].as_u64().unwrap_or(0) > 0
    });
    assert!(dir.path().join("out-long/job.json").exists());

    let short = dir.path().join("short.toml");
    std::fs::write(
        &short,
        format!(
            "name = \"short\"\ndata = \"{}\"\nlabel_col = \"label\"\nfeatures_col = \"pixels\"\nmodel = \"linear\"\nepochs = 2\nworkers = 2\nthreads_per_worker = 1\nout = \"out-short\"\n",
            data.display()
        ),
    )
    .unwrap();
    let sub = cli(&["submit", short.to_str().unwrap()]);
    assert_success(&sub);
    let short_id = String::from_utf8_lossy(&sub.stdout).trim().to_string();
    assert_eq!(json(&cli(&["status", &short_id, "--json"]))["state"], "queued", "both workers are busy");

    let cancelled = json(&cli(&["cancel", &long_id, "--json"]));
    assert_eq!(cancelled["state"], "cancelled");
    // The freed workers take the queued job; `watch` follows it to the end.
    let watch = cli(&["watch", &short_id, "--json"]);
    assert_success(&watch);
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&watch.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.last().unwrap()["state"], "succeeded");
    assert_eq!(lines.last().unwrap()["workers"].as_array().unwrap().len(), 2);

    let list = json(&cli(&["list", "--json"]));
    let states: Vec<(String, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|j| (j["name"].as_str().unwrap().to_string(), j["state"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(states, vec![("long".into(), "cancelled".into()), ("short".into(), "succeeded".into())]);
    let job: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("out-long/job.json")).unwrap()).unwrap();
    assert_eq!(job["state"], "cancelled");
    assert!(!dir.path().join("out-long/metrics.parquet").exists(), "a cancelled job claims no results");
    let text = cli(&["list"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("short"));
}

#[test]
fn a_token_keeps_strangers_out() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = serve(&dir.path().join("state"), &["--token", "s3cret"]);
    let no = Command::new(bin("carto")).args(["list", "--coordinator", &url]).env_remove("CARTO_TOKEN").output().unwrap();
    assert_eq!(no.status.code(), Some(2));
    assert!(error_line(&no).contains("unauthenticated"), "{}", error_line(&no));
    let wrong = Command::new(bin("carto")).args(["list", "--coordinator", &url, "--token", "guess"]).output().unwrap();
    assert!(error_line(&wrong).contains("wrong token"));
    let ok = Command::new(bin("carto")).args(["list", "--coordinator", &url]).env("CARTO_TOKEN", "s3cret").output().unwrap();
    assert_success(&ok);
}

#[test]
fn tls_and_separate_user_and_worker_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let (_server, url) = serve(
        &dir.path().join("state"),
        &["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap(), "--user-token", "u-secret", "--worker-token", "w-secret"],
    );
    assert!(url.starts_with("https://"), "{url}");
    let user = |extra: &[&str]| {
        Command::new(bin("carto")).args(["list", "--coordinator", &url]).args(extra).env_remove("CARTO_TOKEN").output().unwrap()
    };
    assert_success(&user(&["--ca", cert.to_str().unwrap(), "--token", "u-secret"]));
    // Without our CA the certificate is not trusted.
    // (exit 3: the coordinator could not be reached, not bad input)
    let untrusted = user(&["--token", "u-secret"]);
    assert_eq!(untrusted.status.code(), Some(3));
    assert!(error_line(&untrusted).contains("cannot reach the coordinator"), "{}", error_line(&untrusted));
    // The workers' token does not open the users' service.
    let wrong = user(&["--ca", cert.to_str().unwrap(), "--token", "w-secret"]);
    assert!(error_line(&wrong).contains("wrong token"), "{}", error_line(&wrong));

    // A worker with the users' token is refused at registration…
    let mut refused = worker(&url, "intruder", &["--ca", cert.to_str().unwrap(), "--token", "u-secret"]);
    let status = refused.0.wait().unwrap();
    assert!(!status.success());
    // …one with the workers' token runs a job over TLS.
    let _w = worker(&url, "w", &["--ca", cert.to_str().unwrap(), "--token", "w-secret"]);
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        format!(
            "data = \"{}\"\nlabel_col = \"label\"\nfeatures_col = \"pixels\"\nmodel = \"linear\"\nepochs = 2\nout = \"out\"\n",
            example("fashion_mnist/fashion-2k.parquet").display()
        ),
    )
    .unwrap();
    let sub = Command::new(bin("carto"))
        .args(["submit", "--coordinator", &url, "--ca", cert.to_str().unwrap(), "--token", "u-secret", job.to_str().unwrap()])
        .output()
        .unwrap();
    assert_success(&sub);
    let id = String::from_utf8_lossy(&sub.stdout).trim().to_string();
    let watch = Command::new(bin("carto"))
        .args(["watch", "--coordinator", &url, "--ca", cert.to_str().unwrap(), "--token", "u-secret", &id])
        .output()
        .unwrap();
    assert_success(&watch);
    assert_eq!(read_parquet(&dir.path().join("out/metrics.parquet")).num_rows(), 2000);
}

#[test]
fn an_unauthenticated_client_can_neither_read_nor_submit() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = serve(&dir.path().join("state"), &["--token", "s3cret"]);
    let job = dir.path().join("job.toml");
    std::fs::write(&job, format!("data = \"{}\"\nlabel_col = \"label\"\nfeatures_col = \"pixels\"\nout = \"out\"\n",
        example("fashion_mnist/fashion-2k.parquet").display())).unwrap();
    for args in [vec!["submit", job.to_str().unwrap()], vec!["status", "job-x"], vec!["watch", "job-x"], vec!["cancel", "job-x"], vec!["list"]] {
        let r = Command::new(bin("carto")).args(&args).args(["--coordinator", &url]).env_remove("CARTO_TOKEN").output().unwrap();
        assert_eq!(r.status.code(), Some(2), "{args:?}");
        assert!(error_line(&r).contains("unauthenticated"), "{args:?}: {}", error_line(&r));
    }
    assert!(!dir.path().join("out").exists(), "nothing was submitted");
}
