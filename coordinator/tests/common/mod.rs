//! What the coordinator's in-process service tests share: a served
//! coordinator with one submitted job, and clients that speak the worker
//! protocol (no training: they send rows computed from chosen logits, so the
//! expected metrics are known exactly).
#![allow(dead_code)]

use std::time::Duration;

use arrow::array::RecordBatch;
use carto_common::dynamics::DynamicsColumns;
use carto_common::metrics::RowStats;
use carto_common::proto::v1 as pb;
use carto_common::proto::v1::job_service_client::JobServiceClient;
use carto_common::proto::v1::worker_service_client::WorkerServiceClient;
use carto_common::proto::PROTOCOL_VERSION;
use carto_common::sampler::ShardPlan;
use carto_coordinator::coordinator::{Coordinator, CoordinatorConfig};
use carto_coordinator::server::Embedded;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tonic::transport::Channel;

pub const ROWS: usize = 40;

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub out: std::path::PathBuf,
    pub server: Embedded,
    pub jobs: JobServiceClient<Channel>,
}

/// The fixture's dataset: ROWS reviews, labels "neg" (every third) and "pos".
pub fn write_dataset(path: &std::path::Path) {
    let mut csv = String::from("text,label\n");
    for i in 0..ROWS {
        csv += &format!("review number {i},{}\n", if i % 3 == 0 { "neg" } else { "pos" });
    }
    std::fs::write(path, csv).unwrap();
}

/// A job spec over `data`, writing to `out`.
pub fn spec(data: &std::path::Path, out: &std::path::Path, workers: u32) -> pb::JobSpec {
    pb::JobSpec {
        data: data.display().to_string(),
        label_col: "label".into(),
        text_col: "text".into(),
        out: out.display().to_string(),
        epochs: Some(2),
        batch_size: Some(8),
        workers: Some(workers),
        ..Default::default()
    }
}

impl Fixture {
    pub async fn start(workers: u32) -> (Fixture, pb::Job) {
        Self::start_with(CoordinatorConfig::default(), workers).await
    }

    pub async fn start_with(config: CoordinatorConfig, workers: u32) -> (Fixture, pb::Job) {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data.csv");
        write_dataset(&data);
        let out = dir.path().join("out");
        let coord = Coordinator::new(config);
        let server = Embedded::start(coord, "127.0.0.1:0").await.unwrap();
        let mut jobs = JobServiceClient::connect(server.url()).await.unwrap();
        let spec = spec(&data, &out, workers);
        let job = jobs.submit_job(pb::SubmitJobRequest { spec: Some(spec) }).await.unwrap().into_inner().job.unwrap();
        (Fixture { dir, out, server, jobs }, job)
    }
}

/// A client that speaks the worker protocol (no training: it sends rows it
/// computes from chosen logits, so the expected metrics are known exactly).
pub struct FakeRank {
    pub client: WorkerServiceClient<Channel>,
    pub assignment: pb::Assignment,
    pub control: tonic::Streaming<pb::Order>,
}

/// A registration: the worker's id, secret and order stream.
pub struct Registered {
    pub worker_id: String,
    pub secret: String,
    pub control: tonic::Streaming<pb::Order>,
}

impl FakeRank {
    pub async fn join(url: &str) -> WorkerServiceClient<Channel> {
        WorkerServiceClient::connect(url.to_string()).await.unwrap()
    }

    pub async fn register(client: &mut WorkerServiceClient<Channel>) -> Registered {
        let reg = client
            .register(pb::RegisterRequest {
                protocol_version: PROTOCOL_VERSION,
                hostname: "test".into(),
                devices: vec!["cpu".into()],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let control = client
            .orders(pb::OrdersRequest { worker_id: reg.worker_id.clone(), worker_secret: reg.worker_secret.clone() })
            .await
            .unwrap()
            .into_inner();
        Registered { worker_id: reg.worker_id, secret: reg.worker_secret, control }
    }

    /// Waits on a registered worker's order stream for its next assignment.
    pub async fn take_assignment(client: WorkerServiceClient<Channel>, mut reg: Registered) -> FakeRank {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), reg.control.message()).await.unwrap().unwrap().unwrap();
            if let Some(pb::order::Kind::Assignment(assignment)) = msg.kind {
                return FakeRank { client, assignment, control: reg.control };
            }
        }
    }

    /// This worker's next assignment (after an abort, say).
    pub async fn next_assignment(self) -> FakeRank {
        let reg = Registered { worker_id: String::new(), secret: String::new(), control: self.control };
        Self::take_assignment(self.client, reg).await
    }

    /// The next assignment of whichever of two workers gets one first.
    pub async fn either(a: FakeRank, b_client: WorkerServiceClient<Channel>, b: Registered) -> FakeRank {
        tokio::select! {
            r = a.next_assignment() => r,
            r = Self::take_assignment(b_client, b) => r,
        }
    }

    pub async fn assigned(mut client: WorkerServiceClient<Channel>) -> FakeRank {
        let Registered { mut control, .. } = Self::register(&mut client).await;
        let msg = tokio::time::timeout(Duration::from_secs(5), control.message()).await.unwrap().unwrap().unwrap();
        let Some(pb::order::Kind::Assignment(assignment)) = msg.kind else { panic!("expected an assignment, got {msg:?}") };
        FakeRank { client, assignment, control }
    }

    pub fn plan(&self) -> ShardPlan {
        let s = self.assignment.shard.unwrap();
        ShardPlan { num_samples: s.num_samples, seed: s.seed, world_size: s.world_size, rank: s.rank, global_batch: s.global_batch }
    }

    pub fn chunk(&self, epoch: u32, bytes: Vec<u8>) -> pb::EpochChunk {
        pb::EpochChunk {
            job_id: self.assignment.job_id.clone(),
            generation: self.assignment.generation,
            rank: self.assignment.rank,
            epoch,
            arrow_ipc: bytes,
            lease: self.assignment.lease.clone(),
        }
    }

    pub async fn report(&mut self, chunks: Vec<pb::EpochChunk>) -> Result<u64, tonic::Status> {
        self.client.report_epoch(tokio_stream::iter(chunks)).await.map(|r| r.into_inner().rows)
    }

    pub async fn done(&mut self, epoch: u32, rows: u64) -> Result<bool, tonic::Status> {
        self.client
            .epoch_done(pb::EpochDoneRequest {
                job_id: self.assignment.job_id.clone(),
                generation: self.assignment.generation,
                rank: self.assignment.rank,
                epoch,
                samples: rows,
                loss_sum: rows as f64 * 0.5,
                correct: rows / 2,
                train_seconds: 0.1,
                rows_sent: rows,
                lease: self.assignment.lease.clone(),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().stop)
    }
}

pub fn label(s: usize) -> i64 {
    // "neg" < "pos": neg = 0, pos = 1.
    if s % 3 == 0 { 0 } else { 1 }
}

/// Logits chosen per (sample, epoch) so metrics differ across samples and epochs.
pub fn logits(s: usize, epoch: u32) -> [f64; 2] {
    let x = (s as f64 * 0.37 + epoch as f64 * 0.9).sin() * 2.0;
    [x, -x * 0.5]
}

pub fn rows_for(samples: &[u64], epoch: u32) -> DynamicsColumns {
    let mut cols = DynamicsColumns::default();
    for &s in samples {
        let s = s as usize;
        cols.push(s as i64, label(s), &RowStats::from_logits(&logits(s, epoch), label(s) as usize));
    }
    cols
}

pub fn my_samples(rank: &FakeRank, epoch: u32) -> Vec<u64> {
    rank.plan().rank_items(epoch).iter().filter(|i| !i.padding).map(|i| i.sample).collect()
}

pub fn read(path: &std::path::Path) -> RecordBatch {
    let r = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap()).unwrap().build().unwrap();
    let b: Vec<RecordBatch> = r.map(|b| b.unwrap()).collect();
    arrow::compute::concat_batches(&b[0].schema(), &b).unwrap()
}

/// Follows the job's WatchJob events until one satisfies `until`.
pub async fn watch_until(jobs: &mut JobServiceClient<Channel>, id: &str, until: impl Fn(&pb::Job) -> bool) -> pb::Job {
    let mut events = jobs.watch_job(pb::WatchJobRequest { job_id: id.into() }).await.unwrap().into_inner();
    let wait = async {
        while let Some(ev) = events.message().await.unwrap() {
            let job = ev.job.unwrap();
            if until(&job) {
                return job;
            }
        }
        panic!("job {id}'s events ended first");
    };
    tokio::time::timeout(Duration::from_secs(20), wait).await.expect("the awaited job event")
}

/// Polls for a path to appear (files the coordinator writes as it goes).
pub async fn wait_for_path(path: &std::path::Path) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        assert!(tokio::time::Instant::now() < deadline, "{} never appeared", path.display());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub async fn wait_state(jobs: &mut JobServiceClient<Channel>, id: &str, want: pb::JobState) -> pb::Job {
    for _ in 0..100 {
        let j = jobs.get_job(pb::GetJobRequest { job_id: id.into() }).await.unwrap().into_inner();
        if j.state == want as i32 {
            return j;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("job {id} never reached {want:?}");
}

