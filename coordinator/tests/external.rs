//! External jobs: the user's own training loop joins with JoinExternal,
//! streams rows of logits, and finishes with FinishExternal; the coordinator
//! computes the statistics with the worker's formulas, resolves a sample
//! seen twice in an epoch (the lowest rank's row), allows samples missing
//! from an epoch, refuses a label that changes, and writes the outputs of
//! any job. In-process on 127.0.0.1:0 with real gRPC clients.

use std::sync::Arc;

use arrow::array::{Array, FixedSizeListArray, Float32Array, Float64Array, Int32Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use carto_common::ipc;
use carto_common::metrics::{RowStats, SampleAccumulators};
use carto_common::proto::v1 as pb;
use carto_common::proto::v1::job_service_client::JobServiceClient;
use carto_common::proto::v1::worker_service_client::WorkerServiceClient;
use carto_coordinator::coordinator::{Coordinator, CoordinatorConfig};
use carto_coordinator::server::Embedded;
use tonic::transport::Channel;
use tonic::Code;

mod common;
use common::{read, FakeRank, Registered};

const N: usize = 10;
const K: usize = 3;

fn logits(s: usize, epoch: u32, rank: u32) -> [f32; K] {
    let x = ((s as f32) * 0.7 + epoch as f32 * 1.3 + rank as f32 * 0.11).sin();
    [x, -x * 0.5, 0.25]
}

fn label(s: usize) -> i64 {
    (s % K) as i64
}

fn rows(samples: &[usize], epoch: u32, rank: u32, label_of: impl Fn(usize) -> i64) -> Vec<u8> {
    let field = Arc::new(Field::new("item", DataType::Float32, false));
    let values: Vec<f32> = samples.iter().flat_map(|&s| logits(s, epoch, rank)).collect();
    let list = FixedSizeListArray::new(field.clone(), K as i32, Arc::new(Float32Array::from(values)), None);
    let schema = Schema::new(vec![
        Field::new("sample_id", DataType::Int64, false),
        Field::new("label", DataType::Int64, false),
        Field::new("logits", DataType::FixedSizeList(field, K as i32), false),
    ]);
    let batch = RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(Int64Array::from(samples.iter().map(|&s| s as i64).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(samples.iter().map(|&s| label_of(s)).collect::<Vec<_>>())),
            Arc::new(list),
        ],
    )
    .unwrap();
    ipc::encode_batch(&batch).unwrap()
}

struct Rank {
    client: WorkerServiceClient<Channel>,
    a: pb::Assignment,
    _reg: Registered,
}

impl Rank {
    async fn join(url: &str, job: &str, rank: u32, world: u32) -> Result<Rank, tonic::Status> {
        let mut client = FakeRank::join(url).await;
        let reg = FakeRank::register(&mut client).await;
        let req = pb::JoinExternalRequest {
            worker_id: reg.worker_id.clone(),
            worker_secret: reg.secret.clone(),
            job_id: job.into(),
            rank,
            world_size: world,
        };
        let a = client.join_external(req).await?.into_inner();
        Ok(Rank { client, a, _reg: reg })
    }

    async fn report(&mut self, epoch: u32, bytes: Vec<u8>) -> Result<u64, tonic::Status> {
        let a = &self.a;
        let chunks = pb::EpochChunk::report(&a.job_id, a.generation, a.rank, &a.lease, epoch, vec![bytes]);
        self.client.report_epoch(tokio_stream::iter(chunks)).await.map(|r| r.into_inner().rows)
    }

    async fn done(&mut self, epoch: u32, rows: u64) -> Result<bool, tonic::Status> {
        let a = &self.a;
        let req = pb::EpochDoneRequest {
            job_id: a.job_id.clone(),
            generation: a.generation,
            rank: a.rank,
            epoch,
            rows_sent: rows,
            train_seconds: 0.5,
            lease: a.lease.clone(),
            ..Default::default()
        };
        self.client.epoch_done(req).await.map(|r| r.into_inner().stop)
    }

    async fn finish(mut self) -> Result<pb::Job, tonic::Status> {
        let a = &self.a;
        let req = pb::FinishExternalRequest { job_id: a.job_id.clone(), generation: a.generation, rank: a.rank, lease: a.lease.clone() };
        self.client.finish_external(req).await.map(|r| r.into_inner())
    }
}

fn external_spec(out: &std::path::Path, world: u32) -> pb::JobSpec {
    pb::JobSpec {
        trainer: "external".into(),
        out: out.display().to_string(),
        num_samples: Some(N as u64),
        num_classes: Some(K as u32),
        label_names: vec!["a".into(), "b".into(), "c".into()],
        world_size: Some(world),
        ..Default::default()
    }
}

#[tokio::test]
async fn an_external_loop_of_two_ranks_is_merged_like_any_job() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let server = Embedded::start(Coordinator::new(CoordinatorConfig::default()), "127.0.0.1:0").await.unwrap();
    let mut jobs = JobServiceClient::connect(server.url()).await.unwrap();
    let job = jobs.submit_job(pb::SubmitJobRequest { spec: Some(external_spec(&out, 2)) }).await.unwrap().into_inner().job.unwrap();
    assert_eq!(job.state, pb::JobState::Queued as i32);
    let url = server.url();
    let mut r0 = Rank::join(&url, &job.id, 0, 2).await.unwrap();
    let mut r1 = Rank::join(&url, &job.id, 1, 2).await.unwrap();
    assert_eq!(Rank::join(&url, &job.id, 1, 2).await.err().unwrap().code(), Code::FailedPrecondition, "rank 1 joins once");
    assert_eq!(Rank::join(&url, &job.id, 0, 3).await.err().unwrap().code(), Code::InvalidArgument, "the job's world is 2");

    // Epoch 0: sample 0 twice (rank 1 pads with it), every sample present.
    let e0 = [(0u32, vec![0, 1, 2, 3, 4]), (1u32, vec![5, 6, 7, 8, 9, 0])];
    // Epoch 1: sample 9 missing (drop_last); rank 1 repeats sample 5 in its own rows.
    let e1 = [(0u32, vec![0, 1, 2, 3, 4]), (1u32, vec![5, 6, 7, 8, 5])];
    for (epoch, plan) in [(0u32, &e0), (1u32, &e1)] {
        // Rank 1 first: its duplicate of sample 0 must still lose to rank 0's row.
        for (rank, samples) in plan.iter().rev() {
            let r = if *rank == 0 { &mut r0 } else { &mut r1 };
            assert_eq!(r.report(epoch, rows(samples, epoch, *rank, label)).await.unwrap(), samples.len() as u64);
        }
        if epoch == 1 {
            // A label that changes between epochs is refused, naming the sample.
            let err = r1.report(epoch, rows(&[5], epoch, 1, |s| (label(s) + 1) % K as i64)).await.unwrap_err();
            assert_eq!(err.code(), Code::FailedPrecondition, "rank 1 already reported: {}", err.message());
        }
        // Each rank's EpochDone returns once the epoch is committed: together.
        let (d0, d1) = tokio::join!(r0.done(epoch, plan[0].1.len() as u64), r1.done(epoch, plan[1].1.len() as u64));
        assert!(!d0.unwrap() && !d1.unwrap());
    }
    let (a, b) = tokio::join!(r0.finish(), r1.finish());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.state, pb::JobState::Succeeded as i32, "{}", a.error);
    assert_eq!((b.state, a.epochs.len()), (pb::JobState::Succeeded as i32, 2));
    assert_eq!(a.epochs[1].samples, 9, "sample 9 missed epoch 1");
    let rec = carto_coordinator::record::JobRecord::read(&out.join("job.json")).unwrap();
    assert_eq!((rec.epochs[0].missing_samples, rec.epochs[1].missing_samples), (Some(0), Some(1)));

    // The expected metrics, from the same formulas: the lowest rank's row
    // and a rank's first row win.
    let mut acc = SampleAccumulators::new(N);
    for (epoch, plan) in [(0u32, &e0), (1u32, &e1)] {
        let mut seen = [false; N];
        for (rank, samples) in plan.iter() {
            for &s in samples {
                if !seen[s] {
                    seen[s] = true;
                    let r = RowStats::from_logits(&logits(s, epoch, *rank), label(s) as usize);
                    acc.observe(s, epoch, r.gold_prob, r.correct, r.margin, r.el2n).unwrap();
                }
            }
        }
    }
    let m = read(&out.join("metrics.parquet"));
    let conf = m.column_by_name("confidence").unwrap().as_any().downcast_ref::<Float64Array>().unwrap();
    let epochs = m.column_by_name("epochs").unwrap().as_any().downcast_ref::<Int32Array>().unwrap();
    let labels = m.column_by_name("label").unwrap().as_any().downcast_ref::<Int64Array>().unwrap();
    for s in 0..N {
        assert_eq!(conf.value(s), acc.metrics(s).unwrap().confidence, "sample {s}");
        assert_eq!(labels.value(s), label(s));
    }
    assert_eq!(epochs.value(9), 1);
    assert_eq!(epochs.value(0), 2);
    assert!(m.column_by_name("label_name").is_some());
    // Each sample at most once per committed epoch.
    for (epoch, want) in [(0, N), (1, N - 1)] {
        let rows: usize = (0..2).map(|r| read(&out.join(format!("dynamics/epoch={epoch}/part-{r}.parquet"))).num_rows()).sum();
        assert_eq!(rows, want, "epoch {epoch}");
    }
    for f in ["datamap.png", "suspects.csv", "job.json"] {
        assert!(out.join(f).exists(), "{f}");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_logits_and_changed_labels_are_refused_naming_the_row() {
    let dir = tempfile::tempdir().unwrap();
    let server = Embedded::start(Coordinator::new(CoordinatorConfig::default()), "127.0.0.1:0").await.unwrap();
    let mut jobs = JobServiceClient::connect(server.url()).await.unwrap();
    let job = jobs
        .submit_job(pb::SubmitJobRequest { spec: Some(external_spec(&dir.path().join("out"), 1)) })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let mut r = Rank::join(&server.url(), &job.id, 0, 1).await.unwrap();
    let err = r.report(0, rows(&[0, 11], 0, 0, label)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("sample_id 11") && err.message().contains("outside"), "{}", err.message());
    let err = r.report(0, rows(&[0, 1], 0, 0, |s| if s == 1 { 7 } else { 0 })).await.unwrap_err();
    assert!(err.message().contains("label 7 is not a class index below 3"), "{}", err.message());
    let all: Vec<usize> = (0..N).collect();
    assert_eq!(r.report(0, rows(&all, 0, 0, label)).await.unwrap(), N as u64);
    r.done(0, N as u64).await.unwrap();
    let err = r.report(1, rows(&[4], 1, 0, |_| 0)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("sample_id 4") && err.message().contains("may not change"), "{}", err.message());
    // Nothing of the refused report stayed: the epoch is reported afresh.
    assert_eq!(r.report(1, rows(&all, 1, 0, label)).await.unwrap(), N as u64);
    r.done(1, N as u64).await.unwrap();
    let job = r.finish().await.unwrap();
    assert_eq!(job.state, pb::JobState::Succeeded as i32, "{}", job.error);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn external_specs_are_checked_and_carto_workers_never_take_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = Embedded::start(Coordinator::new(CoordinatorConfig::default()), "127.0.0.1:0").await.unwrap();
    let mut jobs = JobServiceClient::connect(server.url()).await.unwrap();
    let out = dir.path().join("out");
    for (edit, want) in [
        (Box::new(|s: &mut pb::JobSpec| s.num_samples = None) as Box<dyn Fn(&mut pb::JobSpec)>, "num_samples is required"),
        (Box::new(|s: &mut pb::JobSpec| s.num_classes = Some(1)), "num_classes is required"),
        (Box::new(|s: &mut pb::JobSpec| s.label_names = vec!["x".into()]), "label_names has 1 names"),
        (Box::new(|s: &mut pb::JobSpec| s.trainer = "mine".into()), "trainer must be carto or external"),
    ] {
        let mut spec = external_spec(&out, 1);
        edit(&mut spec);
        let err = jobs.submit_job(pb::SubmitJobRequest { spec: Some(spec) }).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains(want), "{want}: {}", err.message());
    }
    let job = jobs.submit_job(pb::SubmitJobRequest { spec: Some(external_spec(&out, 1)) }).await.unwrap().into_inner().job.unwrap();
    // A carto-worker that registers is not given the external job.
    let worker = FakeRank::register(&mut FakeRank::join(&server.url()).await).await;
    let j = jobs.get_job(pb::GetJobRequest { job_id: job.id.clone() }).await.unwrap().into_inner();
    assert_eq!((j.state, j.generation), (pb::JobState::Queued as i32, 0));
    drop(worker);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_killed_rank_fails_the_job_with_the_reason_and_no_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let config = CoordinatorConfig { heartbeat_interval: std::time::Duration::from_millis(50), ..Default::default() };
    let server = Embedded::start(Coordinator::new(config), "127.0.0.1:0").await.unwrap();
    let mut jobs = JobServiceClient::connect(server.url()).await.unwrap();
    let job = jobs.submit_job(pb::SubmitJobRequest { spec: Some(external_spec(&out, 2)) }).await.unwrap().into_inner().job.unwrap();
    let mut r0 = Rank::join(&server.url(), &job.id, 0, 2).await.unwrap();
    let r1 = Rank::join(&server.url(), &job.id, 1, 2).await.unwrap();
    assert_eq!(r0.report(0, rows(&[0, 1, 2], 0, 0, label)).await.unwrap(), 3);
    // Rank 1's process dies: its order stream closes.
    drop(r1);
    let mut events = jobs.watch_job(pb::WatchJobRequest { job_id: job.id.clone() }).await.unwrap().into_inner();
    let mut last = None;
    while let Some(ev) = tokio::time::timeout(std::time::Duration::from_secs(20), events.message()).await.unwrap().unwrap() {
        last = ev.job;
    }
    let last = last.unwrap();
    assert_eq!(last.state, pb::JobState::Failed as i32);
    assert!(last.error.contains("rank 1") && last.error.contains("cannot be re-formed"), "{}", last.error);
    assert!(!out.join("metrics.parquet").exists(), "no metrics claim success");
    let rec = carto_coordinator::record::JobRecord::read(&out.join("job.json")).unwrap();
    assert_eq!(rec.state, carto_coordinator::record::RecordState::Failed);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_rank_with_no_rows_in_an_epoch_only_says_it_is_done() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let server = Embedded::start(Coordinator::new(CoordinatorConfig::default()), "127.0.0.1:0").await.unwrap();
    let mut jobs = JobServiceClient::connect(server.url()).await.unwrap();
    let job = jobs.submit_job(pb::SubmitJobRequest { spec: Some(external_spec(&out, 2)) }).await.unwrap().into_inner().job.unwrap();
    let mut r0 = Rank::join(&server.url(), &job.id, 0, 2).await.unwrap();
    let mut r1 = Rank::join(&server.url(), &job.id, 1, 2).await.unwrap();
    let all: Vec<usize> = (0..N).collect();
    assert_eq!(r0.report(0, rows(&all, 0, 0, label)).await.unwrap(), N as u64);
    let (d0, d1) = tokio::join!(r0.done(0, N as u64), r1.done(0, 0));
    assert!(!d0.unwrap() && !d1.unwrap());
    let (a, b) = tokio::join!(r0.finish(), r1.finish());
    let a = a.unwrap();
    assert_eq!(a.state, pb::JobState::Succeeded as i32, "{}", a.error);
    assert_eq!(b.unwrap().epochs.len(), 1);
    assert_eq!(read(&out.join("dynamics/epoch=0/part-0.parquet")).num_rows(), N);
    assert!(!out.join("dynamics/epoch=0/part-1.parquet").exists());
    server.shutdown().await.unwrap();
}
