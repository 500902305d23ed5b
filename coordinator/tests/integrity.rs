//! What a caller, a crash or an old stream must not be able to do to a job:
//! each test here is a hole that was open (a stale stream writing into the
//! next generation, two streams for one rank, a caller acting for another
//! rank, a failed commit rename, an unreadable record, a hung trainer, racing
//! submits) and is closed. In-process on 127.0.0.1:0, real gRPC clients;
//! every wait is on a WatchJob event, an order or a file, never a fixed sleep.

use std::time::Duration;

use carto_common::ipc;
use carto_common::proto::v1 as pb;
use carto_common::proto::v1::job_service_client::JobServiceClient;
use carto_coordinator::config::{CoordinatorConfig, Limits};
use carto_coordinator::coordinator::Coordinator;
use carto_coordinator::locking::io_under_state_lock;
use carto_coordinator::record::{DatasetRecord, JobRecord, RecordState, RECORD_VERSION};
use carto_coordinator::server::Embedded;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

mod common;
use common::*;

fn encode(rows: &carto_common::dynamics::DynamicsColumns, from: usize, to: usize) -> Vec<u8> {
    ipc::encode_batch(&rows.slice_to_batch(from, to)).unwrap()
}

fn no_io_under_the_state_lock() {
    assert_eq!(io_under_state_lock(), 0, "file I/O ran while the coordinator's state lock was held");
}

/// A report stream whose chunks the test sends one at a time.
fn open_stream(
    rank: &FakeRank,
) -> (tokio::sync::mpsc::Sender<pb::EpochChunk>, tokio::task::JoinHandle<Result<u64, tonic::Status>>) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut client = rank.client.clone();
    let handle = tokio::spawn(async move { client.report_epoch(ReceiverStream::new(rx)).await.map(|r| r.into_inner().rows) });
    (tx, handle)
}

#[tokio::test]
async fn a_stream_that_outlives_its_generation_touches_nothing_of_the_next() {
    let (mut f, job) = Fixture::start(1).await;
    let url = f.server.url();
    let old = FakeRank::assigned(FakeRank::join(&url).await).await;
    let mut spare_client = FakeRank::join(&url).await;
    let spare = FakeRank::register(&mut spare_client).await;

    // Generation 1's rank starts its report of epoch 0 and keeps the stream open.
    let samples = my_samples(&old, 0);
    let rows = rows_for(&samples, 0);
    let (tx, stale) = open_stream(&old);
    tx.send(old.chunk(0, encode(&rows, 0, 10))).await.unwrap();
    wait_for_path(&f.out.join("dynamics/.epoch=0.pending")).await;

    // The generation ends (the rank says it crashed); the spare takes over.
    let failure = pb::ReportFailureRequest {
        job_id: job.id.clone(),
        generation: 1,
        rank: 0,
        message: "simulated crash".into(),
        lease: old.assignment.lease.clone(),
        ..Default::default()
    };
    let mut old_client = old.client.clone();
    old_client.report_failure(failure).await.unwrap();
    let stale_chunk = old.chunk(0, encode(&rows, 10, 25));
    // The freed worker or the spare: either runs generation 2.
    let mut new = FakeRank::either(old, spare_client, spare).await;
    assert_eq!(new.assignment.generation, 2);
    assert_eq!(new.report(vec![new.chunk(0, encode(&rows, 0, ROWS))]).await.unwrap(), ROWS as u64);

    // The stale stream goes on: refused, and generation 2's rows stay.
    tx.send(stale_chunk).await.unwrap();
    drop(tx);
    let err = stale.await.unwrap().expect_err("a stale stream's later chunk");
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(!new.done(0, ROWS as u64).await.unwrap());
    let j = watch_until(&mut f.jobs, &job.id, |j| !j.epochs.is_empty()).await;
    assert_eq!((j.generation, j.epochs[0].samples), (2, ROWS as u64));
    assert_eq!(read(&f.out.join("dynamics/epoch=0/part-0.parquet")).num_rows(), ROWS);
    f.server.shutdown().await.unwrap();
    no_io_under_the_state_lock();
}

#[tokio::test]
async fn a_second_report_stream_for_one_rank_is_refused() {
    let (mut f, job) = Fixture::start(1).await;
    let mut rank = FakeRank::assigned(FakeRank::join(&f.server.url()).await).await;
    let rows = rows_for(&my_samples(&rank, 0), 0);
    let (tx, first) = open_stream(&rank);
    tx.send(rank.chunk(0, encode(&rows, 0, 0))).await.unwrap();
    wait_for_path(&f.out.join("dynamics/.epoch=0.pending")).await;
    let err = rank.report(vec![rank.chunk(0, encode(&rows, 0, 0)), rank.chunk(0, encode(&rows, 0, 5))]).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    tx.send(rank.chunk(0, encode(&rows, 0, ROWS))).await.unwrap();
    drop(tx);
    assert_eq!(first.await.unwrap().unwrap(), ROWS as u64);
    assert!(!rank.done(0, ROWS as u64).await.unwrap());
    watch_until(&mut f.jobs, &job.id, |j| !j.epochs.is_empty()).await;
    assert_eq!(read(&f.out.join("dynamics/epoch=0/part-0.parquet")).num_rows(), ROWS, "the committed part holds every row");
    f.server.shutdown().await.unwrap();
    no_io_under_the_state_lock();
}

#[tokio::test]
async fn callers_act_only_for_the_rank_whose_lease_they_hold() {
    let (mut f, job) = Fixture::start(2).await;
    let url = f.server.url();
    let mut c0 = FakeRank::join(&url).await;
    let reg0 = FakeRank::register(&mut c0).await;
    let (worker0, secret0) = (reg0.worker_id.clone(), reg0.secret.clone());
    let c1 = FakeRank::join(&url).await;
    let (a, b) = tokio::join!(FakeRank::take_assignment(c0, reg0), FakeRank::assigned(c1));
    let (mut r0, mut r1) = if a.assignment.rank == 0 { (a, b) } else { (b, a) };
    let rows = rows_for(&my_samples(&r0, 0), 0);

    // Rank 1's worker reports, finishes and fails rank 0's work: refused.
    let forged = pb::EpochChunk { lease: r1.assignment.lease.clone(), ..r0.chunk(0, encode(&rows, 0, 3)) };
    assert_eq!(r1.report(vec![forged]).await.unwrap_err().code(), Code::Unauthenticated);
    let no_lease = pb::EpochChunk { lease: String::new(), ..r0.chunk(0, encode(&rows, 0, 3)) };
    assert_eq!(r0.report(vec![no_lease]).await.unwrap_err().code(), Code::Unauthenticated);
    let done = pb::EpochDoneRequest {
        job_id: job.id.clone(),
        generation: 1,
        rank: r0.assignment.rank,
        epoch: 0,
        lease: r1.assignment.lease.clone(),
        ..Default::default()
    };
    assert_eq!(r1.client.epoch_done(done).await.unwrap_err().code(), Code::Unauthenticated);
    let fail = pb::ReportFailureRequest {
        job_id: job.id.clone(),
        generation: 1,
        rank: r0.assignment.rank,
        message: "forged".into(),
        invalid_input: true,
        lease: r1.assignment.lease.clone(),
        ..Default::default()
    };
    assert_eq!(r1.client.report_failure(fail).await.unwrap_err().code(), Code::Unauthenticated);
    let j = f.jobs.get_job(pb::GetJobRequest { job_id: job.id.clone() }).await.unwrap().into_inner();
    assert_eq!((j.state, j.generation), (pb::JobState::Running as i32, 1), "the forged failure changed nothing");

    // A worker's id is not enough to take its order stream or heartbeat for it.
    let steal = pb::OrdersRequest { worker_id: worker0.clone(), worker_secret: "guess".into() };
    assert_eq!(r1.client.orders(steal).await.unwrap_err().code(), Code::Unauthenticated);
    let twice = pb::OrdersRequest { worker_id: worker0.clone(), worker_secret: secret0.clone() };
    assert_eq!(r1.client.orders(twice).await.unwrap_err().code(), Code::FailedPrecondition, "one open stream per worker");
    let beat = pb::HeartbeatRequest { worker_id: worker0.clone(), worker_secret: String::new(), progress: None };
    assert_eq!(r1.client.heartbeat(beat).await.unwrap_err().code(), Code::Unauthenticated);

    // The rightful rank still reports.
    assert_eq!(r0.report(vec![r0.chunk(0, encode(&rows, 0, rows.len()))]).await.unwrap(), rows.len() as u64);
    f.server.shutdown().await.unwrap();
    no_io_under_the_state_lock();
}

#[tokio::test]
async fn a_failed_commit_rename_reforms_the_job_and_the_rerun_commits() {
    let (mut f, job) = Fixture::start(1).await;
    let url = f.server.url();
    let mut first = FakeRank::assigned(FakeRank::join(&url).await).await;
    let mut spare_client = FakeRank::join(&url).await;
    let spare = FakeRank::register(&mut spare_client).await;
    let rows0 = rows_for(&my_samples(&first, 0), 0);
    assert_eq!(first.report(vec![first.chunk(0, encode(&rows0, 0, ROWS))]).await.unwrap(), ROWS as u64);
    // Something in the way of the rename of `.epoch=0.pending` to `epoch=0`.
    let blocker = f.out.join("dynamics/epoch=0");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let err = first.done(0, ROWS as u64).await.unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{}", err.message());
    std::fs::remove_file(&blocker).unwrap();

    let mut rerun = FakeRank::either(first, spare_client, spare).await;
    assert_eq!((rerun.assignment.generation, rerun.assignment.start_epoch), (2, 0));
    for epoch in 0..2 {
        let rows = rows_for(&my_samples(&rerun, epoch), epoch);
        assert_eq!(rerun.report(vec![rerun.chunk(epoch, encode(&rows, 0, ROWS))]).await.unwrap(), ROWS as u64);
        assert_eq!(rerun.done(epoch, ROWS as u64).await.unwrap(), epoch == 1);
    }
    let j = watch_until(&mut f.jobs, &job.id, |j| j.state != pb::JobState::Running as i32).await;
    assert_eq!(j.state, pb::JobState::Succeeded as i32, "{}", j.error);
    assert_eq!(j.epochs.len(), 2);
    let m = read(&f.out.join("metrics.parquet"));
    let epochs = m.column_by_name("epochs").unwrap().as_any().downcast_ref::<arrow::array::Int32Array>().unwrap();
    assert!(epochs.iter().all(|e| e == Some(2)), "each sample counted once per epoch");
    f.server.shutdown().await.unwrap();
    no_io_under_the_state_lock();
}

fn finished_record(id: &str, out: &std::path::Path) -> JobRecord {
    JobRecord {
        record_version: RECORD_VERSION,
        carto_version: "test".into(),
        id: id.into(),
        name: None,
        state: RecordState::Succeeded,
        error: None,
        warnings: vec![],
        spec: carto_common::spec::JobSpec { out: Some(out.display().to_string()), ..Default::default() },
        restarts: 0,
        faults: None,
        created_unix_ms: 1,
        dataset: DatasetRecord { path: "/data.csv".into(), rows: 3, classes: 2, label_names: None },
        world_size: 1,
        generation: 1,
        workers: vec![],
        epochs: vec![],
        timings: Default::default(),
        outputs: Default::default(),
        label_errors: None,
    }
}

#[tokio::test]
async fn an_unreadable_record_fails_one_job_and_a_second_coordinator_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let good = state.join("jobs/job-good");
    finished_record("job-good", &dir.path().join("out")).write(&good.join("job.json")).unwrap();
    let bad = state.join("jobs/job-bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("job.json"), b"{\"id\": \"job-bad\", \"state\": ").unwrap();

    let config = CoordinatorConfig { state_dir: Some(state.clone()), ..Default::default() };
    let coord = Coordinator::new(config.clone());
    assert_eq!(coord.restore().expect("one bad record does not stop the others"), 0);
    let jobs = coord.list();
    assert_eq!(jobs.len(), 2);
    let good_job = coord.get("job-good").unwrap();
    assert_eq!(good_job.state, pb::JobState::Succeeded as i32);
    let bad_job = coord.get("job-bad").unwrap();
    assert_eq!(bad_job.state, pb::JobState::Failed as i32);
    assert!(bad_job.error.contains("could not be read"), "{}", bad_job.error);
    assert!(bad.join("job.json.unreadable").exists(), "the unreadable record is kept");
    let mut events = coord.watch("job-bad").unwrap();
    events.wait_for(|j| j.state == pb::JobState::Failed as i32).await.unwrap();
    wait_for_path(&bad.join("job.json")).await;
    assert_eq!(JobRecord::read(&bad.join("job.json")).unwrap().state, RecordState::Failed);

    // A second coordinator on the same state directory is refused, and
    // touches nothing there.
    let second = Coordinator::new(config);
    let err = second.restore().unwrap_err();
    assert!(err.to_string().contains("another carto serve"), "{err}");
    drop(coord);
    no_io_under_the_state_lock();
}

#[tokio::test]
async fn a_generation_that_stops_making_progress_is_reformed() {
    let config = CoordinatorConfig {
        progress_timeout: Duration::from_millis(300),
        heartbeat_interval: Duration::from_millis(50),
        ..Default::default()
    };
    let (mut f, job) = Fixture::start_with(config, 1).await;
    // Assigned, then silent about progress (a hung training thread): its
    // connection stays up, so only the progress deadline can notice.
    let rank = FakeRank::assigned(FakeRank::join(&f.server.url()).await).await;
    let j = watch_until(&mut f.jobs, &job.id, |j| j.generation >= 2 || j.state == pb::JobState::Failed as i32).await;
    assert!(j.generation >= 2, "{}", j.error);
    let rec = JobRecord::read(&f.out.join("job.json")).unwrap();
    assert!(rec.faults.unwrap_or_default().contains("no training progress"));
    drop(rank);
    f.server.shutdown().await.unwrap();
    no_io_under_the_state_lock();
}

/// A dataset file that blocks its reader until the test writes it: a submit
/// stays in its loading phase for as long as the test wants.
fn fifo(path: &std::path::Path) {
    let ok = std::process::Command::new("mkfifo").arg(path).status().unwrap().success();
    assert!(ok, "mkfifo {}", path.display());
}

async fn wait_until(cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "condition never held");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn release_fifo(path: std::path::PathBuf) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || write_dataset(&path))
}

#[tokio::test]
async fn submits_are_bounded_and_one_output_directory_takes_one_job() {
    let config = CoordinatorConfig {
        limits: Limits { max_concurrent_submits: 1, max_pending_submits: 1, max_active_jobs: 2, ..Default::default() },
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let server = Embedded::start(Coordinator::new(config), "127.0.0.1:0").await.unwrap();
    let mut jobs = JobServiceClient::connect(server.url()).await.unwrap();
    let data = dir.path().join("data.csv");
    write_dataset(&data);
    let slow = dir.path().join("slow.csv");
    fifo(&slow);

    // A submit loading a dataset holds its output directory: a second
    // submit to the same place is refused at once, not accepted twice.
    let mut j1 = jobs.clone();
    let spec1 = spec(&slow, &dir.path().join("out-a"), 1);
    let first = tokio::spawn(async move { j1.submit_job(pb::SubmitJobRequest { spec: Some(spec1) }).await });
    wait_until(|| server.coord.submits_in_flight() == 1).await;
    let same_out = spec(&data, &dir.path().join("out-a"), 1);
    let err = jobs.submit_job(pb::SubmitJobRequest { spec: Some(same_out) }).await.expect_err("two jobs for one output directory");
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(err.message().contains("another submit"), "{}", err.message());

    // One loads, one may wait; a third is turned away.
    let mut j2 = jobs.clone();
    let slow2 = dir.path().join("slow2.csv");
    fifo(&slow2);
    let spec2 = spec(&slow2, &dir.path().join("out-b"), 1);
    let second = tokio::spawn(async move { j2.submit_job(pb::SubmitJobRequest { spec: Some(spec2) }).await });
    wait_until(|| server.coord.submits_in_flight() == 2).await;
    let third = spec(&data, &dir.path().join("out-c"), 1);
    let err = jobs.submit_job(pb::SubmitJobRequest { spec: Some(third) }).await.expect_err("a third submit past the bound");
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    let writers = [release_fifo(slow), release_fifo(slow2)];
    first.await.unwrap().expect("the first submit completes");
    second.await.unwrap().expect("the waiting submit completes");
    for w in writers {
        w.join().unwrap();
    }

    // Two jobs are active, the most this coordinator takes.
    let err = jobs.submit_job(pb::SubmitJobRequest { spec: Some(spec(&data, &dir.path().join("out-d"), 1)) }).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());

    // Listing pages through the jobs.
    let page = jobs.list_jobs(pb::ListJobsRequest { page_size: 1, page_token: String::new() }).await.unwrap().into_inner();
    assert_eq!(page.jobs.len(), 1);
    let rest = jobs.list_jobs(pb::ListJobsRequest { page_size: 1, page_token: page.next_page_token.clone() }).await.unwrap().into_inner();
    assert_eq!((rest.jobs.len(), rest.next_page_token.as_str()), (1, ""));
    assert_ne!(page.jobs[0].id, rest.jobs[0].id);
    server.shutdown().await.unwrap();
    no_io_under_the_state_lock();
}

#[tokio::test]
async fn absurd_values_are_refused_and_a_poisoned_lock_does_not_take_the_coordinator_down() {
    let (mut f, job) = Fixture::start(1).await;
    let mut rank = FakeRank::assigned(FakeRank::join(&f.server.url()).await).await;
    let samples = my_samples(&rank, 0);
    let mut rows = rows_for(&samples, 0);
    rows.el2n[3] = 1e39;
    let err = rank.report(vec![rank.chunk(0, encode(&rows, 0, ROWS))]).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(err.message().contains("el2n"), "{}", err.message());

    // A panic while the aggregator's lock was held (simulated here) must not
    // turn every later call into a panic.
    let a = rank.assignment.clone();
    let agg = f.server.coord.running(&a.job_id, a.generation, a.rank, &a.lease).unwrap();
    let poisoner = agg.clone();
    let _ = std::thread::spawn(move || {
        let _guard = poisoner.lock().unwrap();
        panic!("simulated bug under the aggregator lock");
    })
    .join();
    assert!(agg.is_poisoned());
    let rows = rows_for(&samples, 0);
    assert_eq!(rank.report(vec![rank.chunk(0, encode(&rows, 0, ROWS))]).await.unwrap(), ROWS as u64);

    // Sums that cannot be: more samples than the shard, infinite losses.
    let absurd = pb::EpochDoneRequest {
        job_id: job.id.clone(),
        generation: a.generation,
        rank: a.rank,
        epoch: 0,
        samples: u64::MAX,
        loss_sum: f64::INFINITY,
        rows_sent: ROWS as u64,
        lease: a.lease.clone(),
        ..Default::default()
    };
    let err = rank.client.epoch_done(absurd).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(!rank.done(0, ROWS as u64).await.unwrap());
    let j = watch_until(&mut f.jobs, &job.id, |j| !j.epochs.is_empty()).await;
    assert!(j.epochs[0].loss.is_finite());
    f.server.shutdown().await.unwrap();
    no_io_under_the_state_lock();
}

#[tokio::test]
async fn remote_submits_stay_inside_the_roots_and_learn_nothing_of_other_files() {
    let dir = tempfile::tempdir().unwrap();
    let (data_root, out_root) = (dir.path().join("data"), dir.path().join("out"));
    std::fs::create_dir_all(&data_root).unwrap();
    std::fs::create_dir_all(&out_root).unwrap();
    write_dataset(&data_root.join("data.csv"));
    std::fs::write(dir.path().join("private.csv"), "secret_column_name,label\nhunter2,1\n").unwrap();
    std::os::unix::fs::symlink(dir.path().join("private.csv"), data_root.join("link.csv")).unwrap();
    std::fs::write(data_root.join("other.csv"), "secret_column_name,label\nhunter2,1\n").unwrap();
    let config = CoordinatorConfig { data_root: Some(data_root.clone()), out_root: Some(out_root.clone()), ..Default::default() };
    let server = Embedded::start(Coordinator::new(config), "127.0.0.1:0").await.unwrap();
    let mut jobs = JobServiceClient::connect(server.url()).await.unwrap();
    let submit = |data: &str, out: &str| pb::JobSpec {
        data: data.into(),
        out: out.into(),
        ..spec(std::path::Path::new(""), std::path::Path::new(""), 1)
    };
    let cases = [
        ("data outside the root", submit(&dir.path().join("private.csv").display().to_string(), "a"), Code::PermissionDenied),
        ("data through a symlink out of the root", submit("link.csv", "b"), Code::PermissionDenied),
        ("data climbing out with ..", submit("../private.csv", "c"), Code::PermissionDenied),
        ("out outside the root", submit("data.csv", "/etc"), Code::PermissionDenied),
        ("out climbing out with ..", submit("data.csv", "../../x"), Code::PermissionDenied),
    ];
    for (what, spec, code) in cases {
        let err = jobs.submit_job(pb::SubmitJobRequest { spec: Some(spec) }).await.expect_err(what);
        assert_eq!(err.code(), code, "{what}: {}", err.message());
        for leak in ["passwd", "hosts", "secret_column_name", "hunter2"] {
            assert!(!err.message().contains(leak), "{what} leaks {leak}: {}", err.message());
        }
    }
    // A file inside the root with the wrong columns: the error names the
    // missing column, not the file's header.
    let err = jobs.submit_job(pb::SubmitJobRequest { spec: Some(submit("other.csv", "d")) }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(err.message().contains("text"), "{}", err.message());
    assert!(!err.message().contains("secret_column_name"), "{}", err.message());
    // Relative paths resolve against the roots.
    let ok = jobs.submit_job(pb::SubmitJobRequest { spec: Some(submit("data.csv", "run-1")) }).await.unwrap().into_inner();
    let job = ok.job.unwrap();
    assert_eq!(std::path::PathBuf::from(&job.out), out_root.canonicalize().unwrap().join("run-1"));
    server.shutdown().await.unwrap();
    no_io_under_the_state_lock();
}
