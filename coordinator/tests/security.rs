//! Who may call the coordinator and what it gives away: `carto serve`'s
//! refusal to serve a network address without tokens, token files, the
//! embedded coordinator's per-job token, reflection (v1 and v1alpha) behind
//! the user token, redacted file contents, exit codes and ListJobs paging.
//! In-process servers on 127.0.0.1:0 and the real `carto` binary.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use carto_common::dataset::{load, DatasetSpec, FeatureSource};
use carto_common::error::redact_for_remote;
use carto_common::proto::v1 as pb;
use carto_common::CartoError;
use carto_coordinator::config::CoordinatorConfig;
use carto_coordinator::coordinator::Coordinator;
use carto_coordinator::remote::Connection;
use carto_coordinator::server::{Embedded, Security};

const CARTO: &str = env!("CARGO_BIN_EXE_carto");
const TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// `carto` with no token or coordinator inherited from the test's environment.
/// `CARTO_TEST_BIN` runs another build instead (e.g. an older one, to see
/// these tests fail on it).
fn carto() -> Command {
    let bin = std::env::var_os("CARTO_TEST_BIN").unwrap_or_else(|| CARTO.into());
    let mut c = Command::new(bin);
    for v in [
        "CARTO_TOKEN",
        "CARTO_TOKEN_FILE",
        "CARTO_USER_TOKEN",
        "CARTO_USER_TOKEN_FILE",
        "CARTO_WORKER_TOKEN",
        "CARTO_WORKER_TOKEN_FILE",
        "CARTO_COORDINATOR",
        "CARTO_CA",
        "CARTO_WORKER_BIN",
    ] {
        c.env_remove(v);
    }
    c.stdin(Stdio::null());
    c
}

/// Runs to completion within a deadline (a server that should have refused
/// to start is killed and reported). Output is drained as it comes, so a
/// long answer cannot stall the child on a full pipe.
fn finish(mut cmd: Command, within: Duration) -> (i32, String, String) {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let drain = |r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = BufReader::new(r).read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status.code().unwrap_or(-1), out.join().unwrap(), err.join().unwrap());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let out: String = out.join().unwrap().chars().take(2000).collect();
            panic!("still running after {within:?}; stdout: {out} stderr: {}", err.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running `carto serve`, killed on drop.
struct Served {
    child: Child,
    url: String,
    stderr: std::thread::JoinHandle<String>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    fn stderr(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let h = std::mem::replace(&mut self.stderr, std::thread::spawn(String::new));
        h.join().unwrap()
    }
}

/// Starts `carto serve ARGS` and waits for its "serving on" line.
fn serve(mut cmd: Command) -> Served {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        for line in BufReader::new(stderr).lines() {
            s += &line.unwrap_or_default();
            s.push('\n');
        }
        s
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(rest) = line.strip_prefix("carto: serving on ") {
                    break rest.split_whitespace().next().unwrap().to_string();
                }
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("carto serve ended before serving: {}", stderr.join().unwrap());
            }
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Served { child, url, stderr }
}

fn serve_cmd(state: &Path, listen: &str) -> Command {
    let mut c = carto();
    c.arg("serve").arg("--listen").arg(listen).arg("--state-dir").arg(state);
    c
}

fn token_file(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, contents).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    p
}

// ---- hole 4: open by default ----------------------------------------------

#[test]
fn serve_refuses_a_network_address_without_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = finish(serve_cmd(&dir.path().join("s"), "0.0.0.0:0"), Duration::from_secs(20));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("refusing") && err.contains("--insecure"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[test]
fn serve_refuses_a_network_address_with_only_the_user_token() {
    let dir = tempfile::tempdir().unwrap();
    let f = token_file(dir.path(), "user", &format!("{TOKEN}\n"));
    let mut c = serve_cmd(&dir.path().join("s"), "0.0.0.0:0");
    c.arg("--user-token-file").arg(&f);
    let (code, _, err) = finish(c, Duration::from_secs(20));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("workers"), "{err}");
}

#[test]
fn serve_insecure_serves_a_network_address_with_a_loud_warning() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = serve_cmd(&dir.path().join("s"), "0.0.0.0:0");
    c.arg("--insecure");
    let served = serve(c);
    assert!(served.url.starts_with("http://0.0.0.0:"), "{}", served.url);
    let err = served.stderr();
    assert!(err.contains("WARNING") && err.contains("--insecure"), "{err}");
}

#[test]
fn serve_with_a_token_file_serves_a_network_address_and_checks_clients() {
    let dir = tempfile::tempdir().unwrap();
    let f = token_file(dir.path(), "token", &format!("{TOKEN}\n"));
    let mut c = serve_cmd(&dir.path().join("s"), "0.0.0.0:0");
    c.arg("--token-file").arg(&f);
    let served = serve(c);
    let port = served.url.rsplit(':').next().unwrap().to_string();
    let url = format!("http://127.0.0.1:{port}");
    // No token: refused, a user error.
    let mut list = carto();
    list.args(["list", "--coordinator", &url]);
    let (code, _, err) = finish(list, Duration::from_secs(20));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unauthenticated"), "{err}");
    // The client reads the same file.
    let mut list = carto();
    list.args(["list", "--coordinator", &url, "--token-file"]).arg(&f);
    let (code, out, err) = finish(list, Duration::from_secs(20));
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("JOB"), "{out}");
    // And from the environment.
    let mut list = carto();
    list.args(["list", "--coordinator", &url]).env("CARTO_TOKEN", TOKEN);
    assert_eq!(finish(list, Duration::from_secs(20)).0, 0);
}

#[test]
fn serve_on_loopback_without_tokens_is_allowed_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let served = serve(serve_cmd(&dir.path().join("s"), "127.0.0.1:0"));
    assert!(served.url.starts_with("http://127.0.0.1:"));
    let err = served.stderr();
    assert!(err.contains("warning") && err.contains("no token"), "{err}");
}

#[test]
fn an_empty_token_is_an_error_not_auth_off() {
    let dir = tempfile::tempdir().unwrap();
    // From the environment.
    let mut c = serve_cmd(&dir.path().join("s"), "127.0.0.1:0");
    c.env("CARTO_TOKEN", "");
    let (code, _, err) = finish(c, Duration::from_secs(20));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("empty"), "{err}");
    // From a file holding only a newline.
    let f = token_file(dir.path(), "empty", "\n");
    let mut c = serve_cmd(&dir.path().join("s"), "127.0.0.1:0");
    c.arg("--token-file").arg(&f);
    let (code, _, err) = finish(c, Duration::from_secs(20));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("empty"), "{err}");
    // From a flag, for one service.
    let mut c = serve_cmd(&dir.path().join("s"), "127.0.0.1:0");
    c.args(["--worker-token", ""]);
    assert_eq!(finish(c, Duration::from_secs(20)).0, 2);
}

#[test]
fn the_deploy_placeholder_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = serve_cmd(&dir.path().join("s"), "0.0.0.0:0");
    c.env("CARTO_TOKEN", "CHANGE-ME-use-openssl-rand-hex-32");
    let (code, _, err) = finish(c, Duration::from_secs(20));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("openssl rand -hex 32"), "{err}");
}

#[test]
fn in_process_servers_refuse_an_empty_token() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let coord = Coordinator::new(CoordinatorConfig::default());
        let security = Security { user_token: Some(String::new()), worker_token: Some(TOKEN.into()), tls: None };
        assert!(Embedded::start_with(coord, "127.0.0.1:0", security).await.is_err());
    });
}

/// `carto run` serves its embedded coordinator with a random per-job token
/// and hands it to its workers in their environment only: a fake worker
/// records its arguments and environment, and a caller without the token is
/// refused while one with it is served.
#[test]
fn carto_run_guards_its_embedded_coordinator_with_a_per_job_token() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut csv = String::from("text,label\n");
    for i in 0..8 {
        csv += &format!("sample {i},{}\n", i % 2);
    }
    std::fs::write(d.join("data.csv"), csv).unwrap();
    let worker = d.join("fake-worker.sh");
    std::fs::write(
        &worker,
        format!(
            "#!/bin/sh\nprintf '%s' \"$CARTO_TOKEN\" > {dir}/token\n\
             printf '%s\\n' \"$@\" > {dir}/args.tmp && mv {dir}/args.tmp {dir}/args\n\
             while [ ! -e {dir}/release ]; do sleep 0.05; done\nexit 1\n",
            dir = d.display()
        ),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&worker, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut run = carto();
    run.args(["run", "--label-col", "label", "--text-col", "text", "--epochs", "1", "--max-restarts", "0", "--quiet"])
        .arg("--data")
        .arg(d.join("data.csv"))
        .arg("--out")
        .arg(d.join("out"))
        .arg("--worker-bin")
        .arg(&worker)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = run.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !d.join("args").exists() {
        if let Some(s) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("carto run ended ({s}) before its worker started: {err}");
        }
        assert!(Instant::now() < deadline, "the fake worker never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let args = std::fs::read_to_string(d.join("args")).unwrap();
    let token = std::fs::read_to_string(d.join("token")).unwrap();
    let url = args.lines().skip_while(|a| *a != "--coordinator").nth(1).unwrap().to_string();
    let checks = std::panic::catch_unwind(|| {
        assert_eq!(token.len(), 64, "CARTO_TOKEN in the worker's environment: {token:?}");
        assert!(!args.contains(&token), "the token is on the command line: {args}");
        assert!(!args.contains("--token"), "{args}");
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let conn = |token: Option<&str>| Connection {
                coordinator: url.clone(),
                token: token.map(String::from),
                token_file: None,
                ca: None,
            };
            let err = carto_coordinator::remote::list(&conn(None)).await.unwrap_err();
            assert!(err.to_string().contains("unauthenticated"), "{err}");
            let err = carto_coordinator::remote::list(&conn(Some("not-the-token"))).await.unwrap_err();
            assert!(err.to_string().contains("unauthenticated"), "{err}");
            let jobs = carto_coordinator::remote::list(&conn(Some(&token))).await.unwrap();
            assert_eq!(jobs.len(), 1);
        });
    });
    std::fs::write(d.join("release"), "").unwrap();
    let _ = child.wait();
    if let Err(p) = checks {
        std::panic::resume_unwind(p);
    }
}

// ---- hole 15: reflection v1alpha --------------------------------------------

#[test]
fn reflection_v1alpha_lists_the_services_behind_the_user_token() {
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    let dir = tempfile::tempdir().unwrap();
    let mut c = serve_cmd(&dir.path().join("s"), "127.0.0.1:0");
    c.env("CARTO_TOKEN", TOKEN);
    let served = serve(c);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let req = || ServerReflectionRequest { host: String::new(), message_request: Some(MessageRequest::ListServices(String::new())) };
        let channel = tonic::transport::Endpoint::from_shared(served.url.clone()).unwrap().connect().await.unwrap();

        let mut open = ServerReflectionClient::new(channel.clone());
        let err = open.server_reflection_info(tokio_stream::iter(vec![req()])).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");

        let send = carto_coordinator::auth::SendToken::new(Some(TOKEN)).unwrap();
        let mut refl = ServerReflectionClient::with_interceptor(channel, send);
        let mut stream = refl.server_reflection_info(tokio_stream::iter(vec![req()])).await.unwrap().into_inner();
        let resp = stream.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
            panic!("unexpected reflection answer: {resp:?}")
        };
        let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
        assert!(names.contains(&"carto.v1.JobService"), "{names:?}");
        assert!(names.contains(&"carto.v1.WorkerService"), "{names:?}");
    });
}

// ---- hole 5: the coordinator's file system ----------------------------------

#[test]
fn serve_roots_must_be_existing_directories() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = serve_cmd(&dir.path().join("s"), "127.0.0.1:0");
    c.arg("--data-root").arg(dir.path().join("missing"));
    let (code, _, err) = finish(c, Duration::from_secs(20));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--data-root"), "{err}");
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::create_dir(dir.path().join("out")).unwrap();
    let mut c = serve_cmd(&dir.path().join("s"), "127.0.0.1:0");
    c.arg("--data-root").arg(dir.path().join("data")).arg("--out-root").arg(dir.path().join("out"));
    drop(serve(c));
}

fn reader_error(path: &Path, label: &str, features: FeatureSource) -> String {
    match load(&DatasetSpec { path: path.to_path_buf(), label_col: label.into(), id_col: None, features }) {
        Err(e @ CartoError::InvalidInput(_)) => e.to_string(),
        other => panic!("expected InvalidInput, got {:?}", other.map(|d| d.len())),
    }
}

#[test]
fn remote_messages_withhold_file_contents() {
    let dir = tempfile::tempdir().unwrap();
    let secret_col = "ssn_4111111111111111";
    let csv = dir.path().join("people.csv");
    std::fs::write(&csv, format!("{secret_col},label,x\n123-45-6789,1,2\n987-65-4321,0,3\n")).unwrap();
    let path = csv.display().to_string();

    // A missing column: locally the header is listed, remotely not.
    let local = reader_error(&csv, "label", FeatureSource::Text("review".into()));
    assert!(local.contains(secret_col), "{local}");
    let remote = redact_for_remote(&local);
    assert!(!remote.contains(secret_col) && !remote.contains("ssn"), "{remote}");
    assert!(remote.starts_with(&path) && remote.contains("'review'") && remote.contains("not found"), "{remote}");

    // A cell that is not a number: its text is withheld, its place is not.
    let local = reader_error(&csv, "label", FeatureSource::Columns(vec![secret_col.into()]));
    assert!(local.contains("123-45-6789"), "{local}");
    let remote = redact_for_remote(&local);
    assert!(!remote.contains("123-45-6789"), "{remote}");
    assert!(remote.starts_with(&path) && remote.contains("row 0 (line 2)") && remote.contains("not a number"), "{remote}");

    // Label values.
    let bad = dir.path().join("labels.csv");
    std::fs::write(&bad, "x,label\n1,0\n2,-4242\n").unwrap();
    let local = reader_error(&bad, "label", FeatureSource::Columns(vec!["x".into()]));
    assert!(local.contains("-4242"), "{local}");
    let remote = redact_for_remote(&local);
    assert!(!remote.contains("4242") && remote.contains("negative label") && remote.contains("row 1 (line 3)"), "{remote}");

    let one = dir.path().join("one.jsonl");
    std::fs::write(&one, "{\"x\": 1, \"label\": \"topsecret\"}\n{\"x\": 2, \"label\": \"topsecret\"}\n").unwrap();
    let local = reader_error(&one, "label", FeatureSource::Columns(vec!["x".into()]));
    assert!(local.contains("topsecret"), "{local}");
    let remote = redact_for_remote(&local);
    assert!(!remote.contains("topsecret") && remote.contains("only one class"), "{remote}");

    let list = dir.path().join("list.jsonl");
    std::fs::write(&list, "{\"v\": [1, \"hunter2\"], \"label\": 0}\n{\"v\": [1, 2], \"label\": 1}\n").unwrap();
    let local = reader_error(&list, "label", FeatureSource::List("v".into()));
    assert!(local.contains("hunter2"), "{local}");
    assert!(!redact_for_remote(&local).contains("hunter2"), "{}", redact_for_remote(&local));

    let big = dir.path().join("big.csv");
    std::fs::write(&big, "x,label\n1,0\n31415e300,1\n").unwrap();
    let local = reader_error(&big, "label", FeatureSource::Columns(vec!["x".into()]));
    assert!(local.contains("3.1415e304"), "{local}");
    assert!(!redact_for_remote(&local).contains("3.1415"), "{}", redact_for_remote(&local));
}

#[test]
fn redaction_rules() {
    let cases = [
        (
            "/d/x.csv: column 'pixels' not found (columns: ssn_7f3a, label)",
            "/d/x.csv: column 'pixels' not found (columns not listed)",
        ),
        (
            r#"/d/x.csv: row 1 (line 3), column 'x': feature value "hunter2 \"q\"" is not a number"#,
            r#"/d/x.csv: row 1 (line 3), column 'x': feature value "…" is not a number"#,
        ),
        (
            r#"/d/x.csv: row 1 (line 3), column 'v': list element 1 ("s3cr3t") is not a number"#,
            r#"/d/x.csv: row 1 (line 3), column 'v': list element 1 ("…") is not a number"#,
        ),
        (
            "/d/x.csv: row 1 (line 3), column 'label': negative label -17; integer labels are class indices and must be >= 0",
            "/d/x.csv: row 1 (line 3), column 'label': negative label …; integer labels are class indices and must be >= 0",
        ),
        (
            "/d/x.csv: row 1 (line 3), column 'x': feature value 1e300 is out of the f32 range",
            "/d/x.csv: row 1 (line 3), column 'x': feature value … is out of the f32 range",
        ),
        (
            "/d/x.csv: column 'label': only one class (topsecret (v2)) in 4 rows; a classifier needs at least two",
            "/d/x.csv: column 'label': only one class (…) in 4 rows; a classifier needs at least two",
        ),
        (
            "/d/x.parquet: column 'a': cannot convert: Cast error: Cannot cast string 'zz' to Int64",
            "/d/x.parquet: column 'a': cannot convert (details withheld)",
        ),
        (
            "/d/x.jsonl: row 0 (line 1), column 'label': label must be an integer or a string, found an array",
            "/d/x.jsonl: row 0 (line 1), column 'label': label must be an integer or a string, found an array",
        ),
        ("lr (--lr) must be a finite number ≥ 0, got -1", "lr (--lr) must be a finite number ≥ 0, got -1"),
        ("unterminated \"quote", "unterminated \"…\""),
    ];
    for (full, remote) in cases {
        assert_eq!(redact_for_remote(full), remote, "{full}");
    }
}

#[test]
fn permission_denied_maps_to_its_status_and_back() {
    let s: tonic::Status = CartoError::denied("outside --data-root").into();
    assert_eq!(s.code(), tonic::Code::PermissionDenied);
    assert!(matches!(CartoError::from(s), CartoError::PermissionDenied(m) if m == "outside --data-root"));
}

// ---- exit codes --------------------------------------------------------------

#[test]
fn exit_codes_separate_the_users_input_from_internal_errors() {
    let dir = tempfile::tempdir().unwrap();
    // A flag clap rejects.
    let mut c = carto();
    c.args(["status", "--no-such-flag"]);
    assert_eq!(finish(c, Duration::from_secs(20)).0, 2);
    // A job file that does not exist.
    let mut c = carto();
    c.args(["submit", "--coordinator", "http://127.0.0.1:9", "missing.toml"]).current_dir(dir.path());
    let (code, _, err) = finish(c, Duration::from_secs(20));
    assert_eq!(code, 2, "{err}");
    // A coordinator that nothing answers for: not the user's input.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", free.local_addr().unwrap());
    drop(free);
    let mut c = carto();
    c.args(["status", "--coordinator", &url, "job-1"]);
    let (code, _, err) = finish(c, Duration::from_secs(30));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("cannot reach"), "{err}");
}

#[test]
fn exit_code_follows_the_error_type() {
    use carto_coordinator::cli::{exit_code, EXIT_INTERNAL, EXIT_USER};
    use carto_coordinator::remote::{status_error, RemoteError};
    let e = anyhow::Error::new(CartoError::invalid("bad")).context("reading x");
    assert_eq!(exit_code(&e), EXIT_USER);
    assert_eq!(exit_code(&anyhow::Error::new(CartoError::denied("outside"))), EXIT_USER);
    assert_eq!(exit_code(&anyhow::Error::new(CartoError::NotFound("job".into()))), EXIT_USER);
    assert_eq!(exit_code(&anyhow::Error::new(CartoError::internal("state")).context("resuming")), EXIT_INTERNAL);
    assert_eq!(exit_code(&status_error(tonic::Status::internal("boom"))), EXIT_INTERNAL);
    assert_eq!(exit_code(&status_error(tonic::Status::unavailable("down"))), EXIT_INTERNAL);
    assert_eq!(exit_code(&status_error(tonic::Status::invalid_argument("bad"))), EXIT_USER);
    assert_eq!(exit_code(&status_error(tonic::Status::permission_denied("root"))), EXIT_USER);
    assert_eq!(exit_code(&anyhow::Error::new(RemoteError { code: tonic::Code::Unknown, message: "?".into() })), EXIT_INTERNAL);
    assert_eq!(exit_code(&anyhow::anyhow!("--state-dir /x: denied")), EXIT_USER);
}

// ---- ListJobs paging ---------------------------------------------------------

/// A JobService that lists `total` jobs `per_page` at a time.
struct Paged {
    total: usize,
    per_page: usize,
}

#[tonic::async_trait]
impl pb::job_service_server::JobService for Paged {
    async fn submit_job(
        &self,
        _: tonic::Request<pb::SubmitJobRequest>,
    ) -> Result<tonic::Response<pb::SubmitJobResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
    async fn get_job(&self, _: tonic::Request<pb::GetJobRequest>) -> Result<tonic::Response<pb::Job>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
    async fn list_jobs(
        &self,
        req: tonic::Request<pb::ListJobsRequest>,
    ) -> Result<tonic::Response<pb::ListJobsResponse>, tonic::Status> {
        let start: usize = match req.get_ref().page_token.as_str() {
            "" => 0,
            t => t.strip_prefix("p").and_then(|n| n.parse().ok()).ok_or_else(|| tonic::Status::invalid_argument("token"))?,
        };
        let end = (start + self.per_page).min(self.total);
        let jobs = (start..end).map(|i| pb::Job { id: format!("job-{i}"), ..Default::default() }).collect();
        let next_page_token = if end < self.total { format!("p{end}") } else { String::new() };
        Ok(tonic::Response::new(pb::ListJobsResponse { jobs, next_page_token }))
    }
    type WatchJobStream = tokio_stream::Empty<Result<pb::JobEvent, tonic::Status>>;
    async fn watch_job(
        &self,
        _: tonic::Request<pb::WatchJobRequest>,
    ) -> Result<tonic::Response<Self::WatchJobStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
    async fn cancel_job(&self, _: tonic::Request<pb::CancelJobRequest>) -> Result<tonic::Response<pb::Job>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
    async fn get_data_map(&self, _: tonic::Request<pb::GetDataMapRequest>) -> Result<tonic::Response<pb::DataMap>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
}

/// `carto list` (the real binary) against a coordinator with 250 jobs that
/// answers 100 a page.
#[test]
fn list_follows_page_tokens_to_the_end() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = rt.spawn(
        tonic::transport::Server::builder()
            .add_service(pb::job_service_server::JobServiceServer::new(Paged { total: 250, per_page: 100 }))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let mut c = carto();
    c.args(["list", "--json", "--coordinator", &format!("http://{addr}")]);
    let (code, out, err) = finish(c, Duration::from_secs(30));
    assert_eq!(code, 0, "{err}");
    let jobs: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ids: Vec<_> = jobs.as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids.len(), 250);
    assert_eq!(ids[0], "job-0");
    assert_eq!(ids[249], "job-249");
    // The library call too.
    let conn = Connection { coordinator: format!("http://{addr}"), token: None, token_file: None, ca: None };
    assert_eq!(rt.block_on(carto_coordinator::remote::list(&conn)).unwrap().len(), 250);
    server.abort();
}

#[test]
fn a_second_serve_on_the_same_state_dir_is_refused_and_leaves_it_alone() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let first = serve(serve_cmd(&state, "127.0.0.1:0"));
    // What a running coordinator keeps there: an epoch still being staged.
    let pending = state.join("jobs/job-x");
    std::fs::create_dir_all(&pending).unwrap();
    let (code, _, err) = finish(serve_cmd(&state, "127.0.0.1:0"), Duration::from_secs(30));
    assert_ne!(code, 0);
    assert!(err.contains("another carto serve"), "{err}");
    assert!(pending.exists());
    drop(first);
}
