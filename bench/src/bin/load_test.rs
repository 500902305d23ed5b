//! Coordinator under load: one `carto serve` process, and in this process
//! many simulated workers that play the real worker protocol over gRPC on
//! loopback (register, heartbeat, follow the order stream, stream each
//! epoch's dynamics as Arrow IPC chunks, report the epoch done), while a
//! separate client calls GetJob every ~10 ms.
//!
//! Measures ingest rows/s, the coordinator's peak memory (VmHWM, and the
//! largest VmRSS seen in each phase) against the per-sample tables it holds,
//! and the latency of the status calls. No training: the rows are
//! synthetic (`carto_bench::synthetic_rows`), sorted by sample id within a
//! rank's shard, as real workers send them. The job must end Succeeded with
//! one metrics row per sample.

use std::fs::File;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use arrow::array::{Float32Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use carto_common::ipc;
use carto_common::metrics::SampleAccumulators;
use carto_common::proto::v1 as pb;
use carto_common::proto::v1::job_service_client::JobServiceClient;
use carto_common::proto::v1::worker_service_client::WorkerServiceClient;
use carto_common::proto::{MAX_CHUNK_BYTES, PROTOCOL_VERSION};
use carto_common::sampler::{ShardPlan, MAX_SAMPLES};
use clap::Parser;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use serde_json::json;
use tonic::transport::Channel;

#[derive(Parser, Debug)]
#[command(
    about = "Load test of `carto serve`: simulated workers stream synthetic dynamics over gRPC while a client polls GetJob."
)]
struct Args {
    #[arg(long, default_value_t = 20_000_000)]
    samples: u64,
    /// Simulated workers (ranks), each a tokio task with its own gRPC channel.
    #[arg(long, default_value_t = 64)]
    workers: u32,
    #[arg(long, default_value_t = 2)]
    epochs: u32,
    #[arg(long, default_value_t = 4)]
    classes: u32,
    /// The coordinator binary.
    #[arg(long, default_value = "target/release/carto")]
    carto: PathBuf,
    /// Run directory (emptied first): coordinator state, the job's outputs, the coordinator's log.
    #[arg(long, default_value = "out/bench/load_test")]
    out: PathBuf,
    /// Where the synthetic dataset (label, x) is written once and reused.
    #[arg(long, default_value = "out/bench")]
    data_dir: PathBuf,
    /// ahead: every IPC chunk is built before the job starts; live: each
    /// worker builds its shard's rows when its epoch starts (timed).
    #[arg(long, value_enum, default_value_t = RowSource::Ahead)]
    rows: RowSource,
    /// Milliseconds between status calls.
    #[arg(long, default_value_t = 10)]
    status_every_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RowSource {
    Ahead,
    Live,
}

/// The job's seed (shard ownership depends on it) and the rows' noise seed.
const JOB_SEED: u64 = 42;
const ROW_SEED: u64 = 7;

// Phases of a run, for attributing memory, CPU and status latencies.
const SETUP: u8 = 0;
const SUBMIT: u8 = 1;
const INGEST: u8 = 2;
const FINISH: u8 = 3;
const PHASES: [&str; 4] = ["setup", "submit", "ingest", "finish"];

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(args.workers >= 1 && args.epochs >= 1 && args.classes >= 2, "need ≥ 1 worker, ≥ 1 epoch, ≥ 2 classes");
    ensure!(
        args.samples >= args.workers as u64 && args.samples <= MAX_SAMPLES,
        "--samples must be between --workers and {MAX_SAMPLES}"
    );
    ensure!(
        args.carto.is_file(),
        "{}: no such file (build it: cargo build --release -p carto-coordinator)",
        args.carto.display()
    );

    let data = std::path::absolute(args.data_dir.join(format!("load_test_{}x{}.parquet", args.samples, args.classes)))?;
    let t = Instant::now();
    if ensure_dataset(&data, args.samples, args.classes)? {
        eprintln!("wrote {} in {:.1} s", data.display(), t.elapsed().as_secs_f64());
    }
    let run_dir = std::path::absolute(&args.out)?;
    if run_dir.exists() {
        std::fs::remove_dir_all(&run_dir).with_context(|| format!("emptying {}", run_dir.display()))?;
    }
    std::fs::create_dir_all(&run_dir)?;

    let t = Instant::now();
    let shards = Arc::new(Shards::prepare(&args)?);
    let prepare_seconds = t.elapsed().as_secs_f64();
    eprintln!(
        "{} ready in {:.1} s: {} chunks, {:.0} MB of Arrow IPC",
        match args.rows {
            RowSource::Ahead => "chunks of every epoch",
            RowSource::Live => "shard sample lists",
        },
        prepare_seconds,
        shards.chunks,
        shards.ipc_bytes as f64 / 1e6
    );

    let coord = Coordinator::start(&args.carto, &run_dir)?;
    eprintln!("coordinator pid {} on {}", coord.pid, coord.url);
    let sampler = Sampler::start(coord.pid);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let run = runtime.block_on(drive(&args, &coord.url, &data, &run_dir, shards, sampler.phase.clone()));
    let hwm = proc_status_kb(coord.pid, "VmHWM").map(|kb| kb * 1024);
    let memory = sampler.stop();
    drop(coord);
    let run = run?;
    let hwm = hwm.context("reading the coordinator's VmHWM")?;

    let metrics = run_dir.join("job").join("metrics.parquet");
    let metrics_rows = SerializedFileReader::new(File::open(&metrics).with_context(|| metrics.display().to_string())?)?
        .metadata()
        .file_metadata()
        .num_rows() as u64;
    ensure!(metrics_rows == args.samples, "{}: {metrics_rows} rows, expected {}", metrics.display(), args.samples);

    let csv: String = std::iter::once("unix_seconds,phase,rss_bytes\n".to_string())
        .chain(memory.timeline.iter().map(|(t, p, b)| format!("{t:.3},{},{b}\n", PHASES[*p as usize])))
        .collect();
    std::fs::write(run_dir.join("rss.csv"), csv)?;
    report(&args, prepare_seconds, &run, hwm, &memory, metrics_rows, &run_dir);
    Ok(())
}

// ------------------------------------------------------------------ dataset

/// Writes the synthetic dataset unless a file with the right row count is
/// there: `label` (int64, `carto_bench::label_of`, which the rows agree
/// with) and one float feature `x`. Returns whether it was written.
fn ensure_dataset(path: &Path, samples: u64, classes: u32) -> anyhow::Result<bool> {
    if let Ok(f) = File::open(path) {
        if SerializedFileReader::new(f).is_ok_and(|r| r.metadata().file_metadata().num_rows() as u64 == samples) {
            return Ok(false);
        }
    }
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
    let schema = Arc::new(Schema::new(vec![
        Field::new("label", DataType::Int64, false),
        Field::new("x", DataType::Float32, false),
    ]));
    let tmp = path.with_extension("parquet.tmp");
    let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
    let mut w = ArrowWriter::try_new(File::create(&tmp)?, schema.clone(), Some(props))?;
    let step = 1u64 << 20;
    for start in (0..samples).step_by(step as usize) {
        let ids = start..(start + step).min(samples);
        let label = Int64Array::from_iter_values(ids.clone().map(|s| carto_bench::label_of(s, classes)));
        let x = Float32Array::from_iter_values(ids.map(|s| (s % 1000) as f32 / 1000.0));
        w.write(&RecordBatch::try_new(schema.clone(), vec![Arc::new(label), Arc::new(x)])?)?;
    }
    w.close()?;
    std::fs::rename(&tmp, path)?;
    Ok(true)
}

// ------------------------------------------------------------------ shards

/// One rank's report of one epoch: its IPC chunks and its EpochDone numbers.
struct ShardReport {
    chunks: Vec<Vec<u8>>,
    rows: u64,
    loss_sum: f64,
    correct: u64,
}

impl ShardReport {
    fn build(samples: &[u64], epoch: u32, classes: u32) -> anyhow::Result<ShardReport> {
        let rows = carto_bench::synthetic_rows(samples, epoch, classes, ROW_SEED);
        Ok(ShardReport {
            chunks: ipc::encode_dynamics(&rows, MAX_CHUNK_BYTES)?,
            rows: rows.len() as u64,
            loss_sum: rows.loss.iter().sum(),
            correct: rows.correct.iter().filter(|&&c| c).count() as u64,
        })
    }
}

/// What each rank sends per epoch: built ahead ([`RowSource::Ahead`]), or
/// only the shards' sample ids ([`RowSource::Live`]).
struct Shards {
    classes: u32,
    /// [epoch][rank], taken by the rank that sends it.
    reports: Vec<Vec<Mutex<Option<ShardReport>>>>,
    /// [epoch][rank]: sample ids in ascending order.
    samples: Vec<Vec<Vec<u64>>>,
    chunks: usize,
    ipc_bytes: usize,
}

impl Shards {
    fn prepare(args: &Args) -> anyhow::Result<Shards> {
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let mut shards = Shards { classes: args.classes, reports: vec![], samples: vec![], chunks: 0, ipc_bytes: 0 };
        for epoch in 0..args.epochs {
            let owners = ShardPlan::owners(args.samples, JOB_SEED, args.workers, epoch);
            let mut per_rank: Vec<Vec<u64>> = (0..args.workers)
                .map(|_| Vec::with_capacity((args.samples / args.workers as u64 + 1) as usize))
                .collect();
            for (s, &r) in owners.iter().enumerate() {
                per_rank[r as usize].push(s as u64);
            }
            drop(owners);
            if args.rows == RowSource::Live {
                shards.samples.push(per_rank);
                continue;
            }
            // Ranks spread over every core.
            let next = AtomicUsize::new(0);
            let built: Vec<Mutex<Option<ShardReport>>> = (0..args.workers).map(|_| Mutex::new(None)).collect();
            std::thread::scope(|scope| -> anyhow::Result<()> {
                let handles: Vec<_> = (0..threads)
                    .map(|_| {
                        scope.spawn(|| -> anyhow::Result<()> {
                            loop {
                                let r = next.fetch_add(1, Ordering::Relaxed);
                                let Some(mine) = per_rank.get(r) else { return Ok(()) };
                                *built[r].lock().unwrap() = Some(ShardReport::build(mine, epoch, args.classes)?);
                            }
                        })
                    })
                    .collect();
                for h in handles {
                    h.join().expect("encoder thread")?;
                }
                Ok(())
            })?;
            for b in &built {
                let b = b.lock().unwrap();
                let b = b.as_ref().expect("every rank built");
                shards.chunks += b.chunks.len();
                shards.ipc_bytes += b.chunks.iter().map(Vec::len).sum::<usize>();
            }
            shards.reports.push(built);
        }
        Ok(shards)
    }

    /// Rank `rank`'s report of `epoch` (built now in live mode).
    async fn take(self: &Arc<Self>, epoch: u32, rank: u32) -> anyhow::Result<ShardReport> {
        if let Some(slot) = self.reports.get(epoch as usize) {
            return slot[rank as usize].lock().unwrap().take().context("a rank's report was sent twice");
        }
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            ShardReport::build(&me.samples[epoch as usize][rank as usize], epoch, me.classes)
        })
        .await?
    }
}

// -------------------------------------------------------------- coordinator

/// The `carto serve` process; killed when dropped.
struct Coordinator {
    child: Child,
    pid: u32,
    url: String,
    /// Kept open: the coordinator must not write into a closed pipe.
    _stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Coordinator {
    fn start(carto: &Path, run_dir: &Path) -> anyhow::Result<Coordinator> {
        let state = run_dir.join("state");
        let log = File::create(run_dir.join("coordinator.log"))?;
        let mut child = Command::new(carto)
            .args(["serve", "--listen", "127.0.0.1:0", "--state-dir"])
            .arg(&state)
            // Info level: job events with timestamps (nothing per chunk).
            .env("CARTO_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", carto.display()))?;
        let pid = child.id();
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        // "carto: serving on http://127.0.0.1:PORT (state in DIR)"
        let url = line.split_whitespace().find(|w| w.starts_with("http://")).map(str::to_string);
        let Some(url) = url else {
            let _ = child.kill();
            bail!("the coordinator did not say where it listens (see {}/coordinator.log): {line:?}", run_dir.display());
        };
        Ok(Coordinator { child, pid, url, _stdout: stdout })
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn proc_status_kb(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))?;
    line[key.len() + 1..].trim().trim_end_matches("kB").trim().parse().ok()
}

/// User + system CPU seconds of a process (USER_HZ is 100 on Linux).
fn cpu_seconds(pid: &str) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?) as f64 / 100.0)
}

/// Samples the coordinator's VmRSS every 20 ms, keeping the largest per
/// phase, and both processes' CPU time at each phase change.
struct Sampler {
    phase: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Memory>,
}

#[derive(Debug, Default)]
struct Memory {
    rss_max: [u64; 4],
    /// (unix seconds, phase, VmRSS bytes), written to rss.csv (the
    /// coordinator's log has the same clock).
    timeline: Vec<(f64, u8, u64)>,
    /// CPU seconds spent in each phase: coordinator, this process.
    coordinator_cpu: [f64; 4],
    load_test_cpu: [f64; 4],
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let phase = Arc::new(AtomicU8::new(SETUP));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (phase.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut m = Memory::default();
            let pid_s = pid.to_string();
            let mut current = p.load(Ordering::SeqCst) as usize;
            let mut since = (cpu_seconds(&pid_s).unwrap_or(0.0), cpu_seconds("self").unwrap_or(0.0));
            loop {
                let stopping = s.load(Ordering::SeqCst);
                if let Some(kb) = proc_status_kb(pid, "VmRSS") {
                    m.rss_max[current] = m.rss_max[current].max(kb * 1024);
                    let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                    m.timeline.push((unix.as_secs_f64(), current as u8, kb * 1024));
                }
                let now = p.load(Ordering::SeqCst) as usize;
                if now != current || stopping {
                    let cpu = (cpu_seconds(&pid_s).unwrap_or(since.0), cpu_seconds("self").unwrap_or(since.1));
                    m.coordinator_cpu[current] += cpu.0 - since.0;
                    m.load_test_cpu[current] += cpu.1 - since.1;
                    since = cpu;
                    current = now;
                }
                if stopping {
                    return m;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Sampler { phase, stop, thread }
    }

    fn stop(self) -> Memory {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("sampler thread")
    }
}

// -------------------------------------------------------------------- run

/// When each epoch's reports started, were all in, and were all committed.
#[derive(Debug, Default, Clone, Copy)]
struct EpochTimes {
    start: Option<Instant>,
    /// The first rank's report in, and the last one's.
    first_report_in: Option<Instant>,
    reports_in: Option<Instant>,
    done: Option<Instant>,
    rows: u64,
}

/// One GetJob call: the phase it ran in, when it started, how long it took.
#[derive(Debug, Clone, Copy)]
struct StatusCall {
    phase: u8,
    at: Instant,
    latency: Duration,
}

struct Shared {
    phase: Arc<AtomicU8>,
    epochs: Mutex<Vec<EpochTimes>>,
    /// Ranks still sending their last epoch: at 0 the finish phase begins.
    last_reports_left: AtomicUsize,
    chunks_sent: AtomicUsize,
    ipc_bytes_sent: AtomicUsize,
}

struct RunResult {
    chunks_sent: usize,
    ipc_bytes_sent: usize,
    submit_seconds: f64,
    job_seconds: f64,
    epochs: Vec<EpochTimes>,
    job: pb::Job,
    status: Vec<StatusCall>,
    status_errors: usize,
}

async fn drive(
    args: &Args,
    url: &str,
    data: &Path,
    run_dir: &Path,
    shards: Arc<Shards>,
    phase: Arc<AtomicU8>,
) -> anyhow::Result<RunResult> {
    let shared = Arc::new(Shared {
        phase: phase.clone(),
        epochs: Mutex::new(vec![EpochTimes::default(); args.epochs as usize]),
        last_reports_left: AtomicUsize::new(args.workers as usize),
        chunks_sent: AtomicUsize::new(0),
        ipc_bytes_sent: AtomicUsize::new(0),
    });
    // Workers leave only once the job has ended, as real ones stay: a rank
    // that disconnects while the job finishes counts as lost.
    let (ended_tx, ended_rx) = tokio::sync::watch::channel(false);
    let ended = Arc::new(ended_tx);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(args.workers as usize);
    // The collectives' barrier between epochs: nobody reports epoch e+1
    // before every rank's EpochDone for e has returned.
    let barrier = Arc::new(tokio::sync::Barrier::new(args.workers as usize));
    let mut workers = tokio::task::JoinSet::new();
    for index in 0..args.workers {
        let sim = SimWorker {
            index,
            url: url.to_string(),
            world: args.workers,
            epochs: args.epochs,
            shards: shards.clone(),
            shared: shared.clone(),
            barrier: barrier.clone(),
        };
        let (ready, ended) = (ready_tx.clone(), ended_rx.clone());
        workers.spawn(async move { sim.run(ready, ended).await.with_context(|| format!("simulated worker {index}")) });
    }
    drop(ready_tx);
    let mut ready = 0;
    while ready < args.workers {
        tokio::select! {
            r = ready_rx.recv() => {
                r.context("workers ended before the job started")?;
                ready += 1;
            }
            Some(r) = workers.join_next() => {
                r??;
                bail!("a worker ended before the job started");
            }
        }
    }

    let channel = carto_common::transport::endpoint(url, None)?.connect().await?;
    let mut jobs = JobServiceClient::new(channel);
    let spec = pb::JobSpec {
        data: data.display().to_string(),
        label_col: "label".into(),
        feature_cols: vec!["x".into()],
        model: "linear".into(),
        epochs: Some(args.epochs),
        batch_size: Some(args.workers * 4),
        seed: Some(JOB_SEED),
        workers: Some(args.workers),
        device: "cpu".into(),
        out: run_dir.join("job").display().to_string(),
        name: "load-test".into(),
        ..Default::default()
    };
    phase.store(SUBMIT, Ordering::SeqCst);
    let submitted = Instant::now();
    let job_id =
        jobs.submit_job(pb::SubmitJobRequest { spec: Some(spec) }).await.context("SubmitJob")?.into_inner().job_id;
    let submit_seconds = submitted.elapsed().as_secs_f64();

    // The status client: its own thread, runtime and connection, so its
    // latencies are the coordinator's and not this process's scheduling.
    let poller = {
        let (url, every, shared, ended) =
            (url.to_string(), Duration::from_millis(args.status_every_ms), shared.clone(), ended.clone());
        let job_id = job_id.clone();
        std::thread::spawn(move || poll_status(&url, &job_id, every, &shared, &ended))
    };
    let mut failure = None;
    while let Some(r) = workers.join_next().await {
        // Workers return once the job ended, or with an error.
        if let Err(e) = r.map_err(anyhow::Error::from).and_then(|r| r) {
            failure.get_or_insert(e);
            ended.send_replace(true);
        }
    }
    let polled = tokio::task::spawn_blocking(move || poller.join().expect("status thread")).await?;
    if let Some(e) = failure {
        return Err(e);
    }
    let (job, status, status_errors) = polled?;
    let job_seconds = submitted.elapsed().as_secs_f64();
    let state = pb::JobState::try_from(job.state).unwrap_or(pb::JobState::Unspecified);
    ensure!(state == pb::JobState::Succeeded, "job {job_id} ended {state:?}: {}", job.error);
    let epochs = shared.epochs.lock().unwrap().clone();
    Ok(RunResult {
        chunks_sent: shared.chunks_sent.load(Ordering::Relaxed),
        ipc_bytes_sent: shared.ipc_bytes_sent.load(Ordering::Relaxed),
        submit_seconds,
        job_seconds,
        epochs,
        job,
        status,
        status_errors,
    })
}

/// Calls GetJob every `every` until the job ends (then tells the workers
/// they may leave) or `ended` is set. Returns the last job seen, and each
/// call's phase and latency.
fn poll_status(
    url: &str,
    job_id: &str,
    every: Duration,
    shared: &Shared,
    ended: &tokio::sync::watch::Sender<bool>,
) -> anyhow::Result<(pb::Job, Vec<StatusCall>, usize)> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let result = rt.block_on(async {
        let channel = carto_common::transport::endpoint(url, None)?.connect().await?;
        let mut jobs = JobServiceClient::new(channel);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut samples = Vec::with_capacity(1 << 16);
        let mut errors = 0;
        let mut last = pb::Job::default();
        while !*ended.borrow() {
            tick.tick().await;
            let phase = shared.phase.load(Ordering::SeqCst);
            let t = Instant::now();
            match jobs.get_job(pb::GetJobRequest { job_id: job_id.to_string() }).await {
                Ok(job) => {
                    samples.push(StatusCall { phase, at: t, latency: t.elapsed() });
                    last = job.into_inner();
                    if carto_coordinator::remote::is_terminal(&last) {
                        break;
                    }
                }
                Err(s) => {
                    errors += 1;
                    if errors > 100 {
                        bail!("GetJob keeps failing: {}", s.message());
                    }
                }
            }
        }
        Ok((last, samples, errors))
    });
    ended.send_replace(true);
    result
}

/// One simulated worker: the real protocol, no training.
struct SimWorker {
    index: u32,
    url: String,
    world: u32,
    epochs: u32,
    shards: Arc<Shards>,
    shared: Arc<Shared>,
    barrier: Arc<tokio::sync::Barrier>,
}

impl SimWorker {
    async fn run(
        self,
        ready: tokio::sync::mpsc::Sender<()>,
        mut ended: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let channel: Channel = carto_common::transport::endpoint(&self.url, None)?.connect().await?;
        let mut client = WorkerServiceClient::new(channel);
        let reg = client
            .register(pb::RegisterRequest {
                protocol_version: PROTOCOL_VERSION,
                hostname: "localhost".into(),
                devices: vec!["cpu".into()],
                advertise_host: "127.0.0.1".into(),
                name: format!("load-{}", self.index),
                rendezvous_port: 29_500 + self.index,
            })
            .await
            .context("Register")?
            .into_inner();
        let progress: Arc<Mutex<Option<pb::WorkerProgress>>> = Arc::default();
        let _heartbeat = AbortOnDrop(tokio::spawn(heartbeat_loop(
            client.clone(),
            reg.worker_id.clone(),
            reg.worker_secret.clone(),
            progress.clone(),
            Duration::from_millis(reg.heartbeat_interval_ms.max(100) as u64),
        )));
        let mut orders =
            client.orders(pb::OrdersRequest { worker_id: reg.worker_id.clone(), worker_secret: reg.worker_secret.clone() }).await.context("Orders")?.into_inner();
        // The order stream is open: the coordinator may schedule this worker.
        ready.send(()).await?;
        drop(ready);
        let a = loop {
            let order = tokio::select! {
                o = orders.message() => o.context("order stream")?,
                _ = ended.wait_for(|e| *e) => bail!("the job ended before this worker got an assignment"),
            };
            match order.and_then(|o| o.kind) {
                Some(pb::order::Kind::Assignment(a)) => break a,
                Some(pb::order::Kind::Abort(a)) => bail!("aborted before starting: {}", a.reason),
                Some(pb::order::Kind::Shutdown(s)) => bail!("shut down before starting: {}", s.reason),
                None => bail!("the order stream ended before an assignment"),
            }
        };
        ensure!(a.world_size == self.world, "assigned world {} (expected {})", a.world_size, self.world);
        ensure!(a.start_epoch == 0, "assigned start epoch {}: the job was re-formed", a.start_epoch);

        let result = self.epochs(&mut client, &a, &progress).await;
        // Keep registered (heartbeating, order stream open) until the job ended.
        if result.is_ok() {
            let _ = ended.wait_for(|e| *e).await;
        }
        result
    }

    async fn epochs(
        &self,
        client: &mut WorkerServiceClient<Channel>,
        a: &pb::Assignment,
        progress: &Mutex<Option<pb::WorkerProgress>>,
    ) -> anyhow::Result<()> {
        for epoch in a.start_epoch..self.epochs {
            self.barrier.wait().await;
            let start = Instant::now();
            {
                let mut times = self.shared.epochs.lock().unwrap();
                let t = &mut times[epoch as usize];
                t.start = Some(t.start.map_or(start, |s| s.min(start)));
            }
            self.shared.phase.fetch_max(INGEST, Ordering::SeqCst);
            let report = self.shards.take(epoch, a.rank).await?;
            let (rows, loss_sum, correct) = (report.rows, report.loss_sum, report.correct);
            *progress.lock().unwrap() = Some(pb::WorkerProgress {
                job_id: a.job_id.clone(),
                generation: a.generation,
                rank: a.rank,
                epoch,
                samples_done: rows,
                loss_sum,
                correct,
                train_seconds: start.elapsed().as_secs_f64(),
            });
            self.shared.chunks_sent.fetch_add(report.chunks.len(), Ordering::Relaxed);
            self.shared.ipc_bytes_sent.fetch_add(report.chunks.iter().map(Vec::len).sum(), Ordering::Relaxed);
            let messages = pb::EpochChunk::report(&a.job_id, a.generation, a.rank, &a.lease, epoch, report.chunks);
            let staged = client
                .report_epoch(tokio_stream::iter(messages))
                .await
                .with_context(|| format!("ReportEpoch of epoch {epoch}"))?
                .into_inner()
                .rows;
            ensure!(staged == rows, "epoch {epoch}: the coordinator staged {staged} of {rows} rows");
            let reported = Instant::now();
            if epoch + 1 == self.epochs && self.shared.last_reports_left.fetch_sub(1, Ordering::SeqCst) == 1 {
                self.shared.phase.store(FINISH, Ordering::SeqCst);
            }
            let done = client
                .epoch_done(pb::EpochDoneRequest {
                    job_id: a.job_id.clone(),
                    generation: a.generation,
                    rank: a.rank,
                    epoch,
                    samples: rows,
                    loss_sum,
                    correct,
                    train_seconds: start.elapsed().as_secs_f64(),
                    rows_sent: rows,
                    lease: a.lease.clone(),
                    ..Default::default()
                })
                .await
                .with_context(|| format!("EpochDone of epoch {epoch}"))?
                .into_inner();
            let finished = Instant::now();
            {
                let mut times = self.shared.epochs.lock().unwrap();
                let t = &mut times[epoch as usize];
                t.first_report_in = Some(t.first_report_in.map_or(reported, |r| r.min(reported)));
                t.reports_in = Some(t.reports_in.map_or(reported, |r| r.max(reported)));
                t.done = Some(t.done.map_or(finished, |d| d.max(finished)));
                t.rows += rows;
            }
            ensure!(!done.stop || epoch + 1 == self.epochs, "told to stop after epoch {epoch}");
        }
        Ok(())
    }
}

/// Stops the heartbeat when the worker is done, on every path.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn heartbeat_loop(
    mut client: WorkerServiceClient<Channel>,
    worker_id: String,
    worker_secret: String,
    progress: Arc<Mutex<Option<pb::WorkerProgress>>>,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let p = progress.lock().unwrap().clone();
        // A missed beat is the coordinator's problem to tolerate; the run's checks catch the rest.
        let _ = client.heartbeat(pb::HeartbeatRequest { worker_id: worker_id.clone(), progress: p, worker_secret: worker_secret.clone() }).await;
    }
}

// ----------------------------------------------------------------- report

/// Nearest-rank percentiles of latencies, in milliseconds.
fn latency_summary(mut ms: Vec<f64>) -> serde_json::Value {
    if ms.is_empty() {
        return json!({ "count": 0 });
    }
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
    json!({
        "count": ms.len(),
        "p50_ms": round3(at(0.50)),
        "p99_ms": round3(at(0.99)),
        "max_ms": round3(*ms.last().unwrap()),
    })
}

/// The five slowest status calls, placed against the epochs: seconds
/// after the epoch's first report, or into its commit.
fn slowest_calls(calls: &[StatusCall], epochs: &[EpochTimes]) -> Vec<serde_json::Value> {
    let mut slow: Vec<&StatusCall> = calls.iter().collect();
    slow.sort_by(|a, b| b.latency.cmp(&a.latency));
    slow.iter()
        .take(5)
        .map(|c| {
            let place = epochs.iter().enumerate().rev().find_map(|(e, t)| {
                let (start, reports_in) = (t.start?, t.reports_in?);
                if c.at >= reports_in {
                    Some(format!("epoch {e} commit +{:.2} s", (c.at - reports_in).as_secs_f64()))
                } else if c.at >= start {
                    Some(format!("epoch {e} reports +{:.2} s", (c.at - start).as_secs_f64()))
                } else {
                    None
                }
            });
            json!({
                "ms": round3(c.latency.as_secs_f64() * 1e3),
                "phase": PHASES[c.phase as usize],
                "at": place.unwrap_or_else(|| "before the first report".into()),
            })
        })
        .collect()
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

fn report(
    args: &Args,
    prepare_seconds: f64,
    run: &RunResult,
    hwm: u64,
    memory: &Memory,
    metrics_rows: u64,
    run_dir: &Path,
) {
    let n = args.samples as f64;
    let per_sample = |bytes: u64| round3(bytes as f64 / n);
    let epochs: Vec<serde_json::Value> = run
        .epochs
        .iter()
        .enumerate()
        .map(|(e, t)| {
            let (start, reports_in, done) = (t.start.unwrap(), t.reports_in.unwrap(), t.done.unwrap());
            let ingest = (reports_in - start).as_secs_f64();
            let coordinator = run.job.epochs.get(e);
            json!({
                "epoch": e,
                "rows": t.rows,
                "ingest_seconds": round3(ingest),
                "first_report_in_seconds": round3((t.first_report_in.unwrap() - start).as_secs_f64()),
                "rows_per_sec": (t.rows as f64 / ingest).round(),
                // After the last report: the commit (fold, rename); for the last
                // epoch also metrics.parquet, the data map and suspects.csv.
                "commit_seconds": round3((done - reports_in).as_secs_f64()),
                "wall_seconds": round3((done - start).as_secs_f64()),
                "coordinator_wall_seconds": coordinator.map(|c| round3(c.wall_seconds)),
            })
        })
        .collect();
    let total_rows: u64 = run.epochs.iter().map(|t| t.rows).sum();
    let ingest_seconds: f64 = run.epochs.iter().map(|t| (t.reports_in.unwrap() - t.start.unwrap()).as_secs_f64()).sum();
    let last = run.epochs.last().unwrap();
    let finish_seconds = (last.done.unwrap() - last.reports_in.unwrap()).as_secs_f64();

    // The coordinator's per-sample tables, from the aggregator's layout.
    let accumulators = SampleAccumulators::BYTES_PER_SAMPLE as f64;
    let labels = std::mem::size_of::<i64>() as f64;
    // owner u16, gold_prob f64, margin f64, el2n f32, flags u8, one mark bit.
    let stage = 2.0 + 8.0 + 8.0 + 4.0 + 1.0 + 0.125;
    let dynamics = run_dir.join("job").join("dynamics");
    let part_bytes_per_epoch = dir_bytes(&dynamics) as f64 / args.epochs as f64;
    let ingest_rss = memory.rss_max[INGEST as usize];
    let status_in = |p: u8| {
        latency_summary(run.status.iter().filter(|s| s.phase == p).map(|s| s.latency.as_secs_f64() * 1e3).collect())
    };
    let ingest_status = status_in(INGEST);
    let phases = |v: &[f64; 4]| -> serde_json::Value {
        PHASES.iter().zip(v).map(|(name, x)| (name.to_string(), json!(round3(*x)))).collect()
    };
    let out = json!({
        "samples": args.samples,
        "workers": args.workers,
        "epochs": args.epochs,
        "classes": args.classes,
        "rows_source": match args.rows { RowSource::Ahead => "ahead", RowSource::Live => "live" },
        "prepare_seconds": round3(prepare_seconds),
        "ipc_chunks": run.chunks_sent,
        "ipc_bytes": run.ipc_bytes_sent,
        "max_chunk_bytes": MAX_CHUNK_BYTES,
        "submit_seconds": round3(run.submit_seconds),
        "job_seconds": round3(run.job_seconds),
        "ingest_rows_per_sec": (total_rows as f64 / ingest_seconds).round(),
        "finish_seconds": round3(finish_seconds),
        "per_epoch": epochs,
        "peak_rss_bytes": hwm,
        "peak_rss_bytes_per_sample": per_sample(hwm),
        "rss_max_bytes_per_sample_by_phase": PHASES.iter().zip(memory.rss_max).map(|(p, b)| (p.to_string(), json!(per_sample(b)))).collect::<serde_json::Map<_, _>>(),
        "accumulator_bytes_per_sample": accumulators,
        "breakdown_bytes_per_sample": {
            "accumulators": accumulators,
            "labels": labels,
            "epoch_stage": stage,
            "resident_tables": accumulators + labels + stage,
            "dynamics_part_files_per_epoch_on_disk": round3(part_bytes_per_epoch / n),
            "ingest_rest": round3(ingest_rss as f64 / n - (accumulators + labels + stage)),
        },
        "coordinator_cpu_seconds": phases(&memory.coordinator_cpu),
        "load_test_cpu_seconds": phases(&memory.load_test_cpu),
        "status_rpc": {
            "every_ms": args.status_every_ms,
            "ingest": ingest_status,
            "finish": status_in(FINISH),
            "all": latency_summary(run.status.iter().map(|s| s.latency.as_secs_f64() * 1e3).collect()),
            "slowest": slowest_calls(&run.status, &run.epochs),
            "errors": run.status_errors,
        },
        "job_state": "succeeded",
        "metrics_rows": metrics_rows,
    });

    println!(
        "carto load test: {} samples, {} workers, {} epochs, {} classes",
        args.samples, args.workers, args.epochs, args.classes
    );
    println!(
        "  rows: synthetic, IPC chunks built {} ({:.1} s)",
        match args.rows {
            RowSource::Ahead => "before the job (not timed)",
            RowSource::Live => "by each worker as its epoch starts (timed)",
        },
        prepare_seconds
    );
    println!(
        "  submit (dataset load): {:.2} s; job from submit to succeeded: {:.1} s",
        run.submit_seconds, run.job_seconds
    );
    for e in &epochs {
        println!(
            "  epoch {}: {} rows in {:.2} s = {:.0} rows/s; commit {:.2} s; wall {:.2} s",
            e["epoch"],
            e["rows"],
            e["ingest_seconds"].as_f64().unwrap(),
            e["rows_per_sec"].as_f64().unwrap(),
            e["commit_seconds"].as_f64().unwrap(),
            e["wall_seconds"].as_f64().unwrap()
        );
    }
    println!(
        "  ingest: {:.0} rows/s over all epochs; finish (metrics, data map, suspects): {:.1} s",
        total_rows as f64 / ingest_seconds,
        finish_seconds
    );
    println!(
        "  coordinator peak RSS {:.0} MiB = {:.1} B/sample (ingest phase max {:.1} B/sample); accumulators {} B/sample",
        hwm as f64 / (1 << 20) as f64,
        hwm as f64 / n,
        ingest_rss as f64 / n,
        SampleAccumulators::BYTES_PER_SAMPLE
    );
    println!(
        "    per-sample tables while ingesting: accumulators {accumulators} + labels {labels} + epoch stage {stage} = {} B; rest {:.1} B",
        accumulators + labels + stage,
        ingest_rss as f64 / n - (accumulators + labels + stage)
    );
    let ms = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    println!(
        "  GetJob every {} ms while ingesting: {} calls, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        args.status_every_ms,
        ingest_status["count"],
        ms(&ingest_status, "p50_ms"),
        ms(&ingest_status, "p99_ms"),
        ms(&ingest_status, "max_ms")
    );
    println!("  metrics.parquet: {metrics_rows} rows");
    println!("{out}");
}
