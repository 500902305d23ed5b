//! The worker's gRPC session with the coordinator: register, heartbeat with
//! progress, follow the coordinator's orders (assignments, aborts, shutdown),
//! and report each epoch — its dynamics as Arrow IPC chunks, then its summary.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use carto_common::cluster_env::{ClusterEnv, Launcher};
use carto_common::dataset;
use carto_common::dynamics::DynamicsColumns;
use carto_common::ipc;
use carto_common::proto::v1 as pb;
use carto_common::proto::v1::worker_service_client::WorkerServiceClient;
use carto_common::proto::{MAX_CHUNK_BYTES, PROTOCOL_VERSION};
use carto_common::sampler::ShardPlan;
use carto_common::spec::{DeviceSpec, JobSpec};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tracing::{info, info_span, warn};

use crate::collective::{self, backend_for, C10dGroup, Collective, GroupAborter, GroupConfig, Single};
use crate::data::{TextEncoder, TrainData};
use crate::transformer::{Arch, Pretrained};
use crate::trainer::{self, EpochReport, Reporter, StepProgress, TrainJob};
use crate::WorkerError;

#[derive(Debug, Clone, clap::Parser)]
#[command(name = "carto-worker", version = VERSION, about = "A carto training worker: one process per device.")]
pub struct WorkerArgs {
    /// Coordinator URL, e.g. http://10.0.0.1:7070 [default: port CARTO_PORT (7070)
    /// on the first node of a Slurm job, or on torchrun's MASTER_ADDR].
    #[arg(long, env = "CARTO_COORDINATOR")]
    pub coordinator: Option<String>,
    /// Shared secret sent with every call (prefer --token-file or CARTO_TOKEN:
    /// flags show in `ps`).
    #[arg(long, env = "CARTO_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the secret (a trailing newline is ignored).
    #[arg(long, env = "CARTO_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<std::path::PathBuf>,
    /// CA certificate (PEM) to verify an https:// coordinator [default: the system's roots].
    #[arg(long, env = "CARTO_CA")]
    pub ca: Option<std::path::PathBuf>,
    /// Device this worker trains on: cpu, cuda:N, or cuda (then the GPU is
    /// --local-rank modulo the visible GPUs).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// This process's index on its host, for --device cuda [default: SLURM_LOCALID or LOCAL_RANK].
    #[arg(long)]
    pub local_rank: Option<u32>,
    /// How many workers on this host share the GPUs it sees (`carto run` sets
    /// it; torchrun's LOCAL_WORLD_SIZE): with --device cuda, a job of several
    /// ranks is refused when they outnumber the GPUs, since NCCL cannot put
    /// two ranks on one GPU.
    #[arg(long, env = "LOCAL_WORLD_SIZE", value_name = "N")]
    pub local_world_size: Option<u32>,
    /// Host name or address other ranks use to reach this one [default: this host's name].
    #[arg(long, env = "CARTO_ADVERTISE_HOST")]
    pub advertise_host: Option<String>,
    /// A name shown in the coordinator's logs.
    #[arg(long)]
    pub name: Option<String>,
    /// How long to keep trying to reach the coordinator at start.
    #[arg(long, default_value_t = 60)]
    pub connect_timeout_secs: u64,
    /// How long to keep trying to reach a coordinator that went away (it
    /// resumes its jobs from its state directory when it comes back).
    #[arg(long, default_value_t = 600)]
    pub reconnect_timeout_secs: u64,
    /// How long a collective (or joining the group) may wait for the other ranks.
    #[arg(long, default_value_t = 300)]
    pub collective_timeout_secs: u64,
}

/// Adds the bearer token to every call.
#[derive(Clone)]
pub struct Auth(Option<MetadataValue<Ascii>>);

impl Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

type Client = WorkerServiceClient<InterceptedService<Channel, Auth>>;

/// `carto-worker --version`: also says whether multi-GPU jobs (NCCL) can run.
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (NCCL ", env!("CARTO_NCCL_VERSION"), ")");

/// How long a short call (register, heartbeat, failure report) may take: a
/// coordinator that does not answer by then is treated as gone.
const UNARY_DEADLINE: Duration = Duration::from_secs(30);
/// EpochDone of the last epoch waits for the metrics, maps and report to be
/// written: generous, but not forever.
const COMMIT_DEADLINE: Duration = Duration::from_secs(3600);

fn deadline<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(timeout);
    req
}

/// Runs the worker until the coordinator says shut down. A coordinator that
/// goes away is waited for (`--reconnect-timeout-secs`) and rejoined.
pub fn run(args: WorkerArgs) -> anyhow::Result<()> {
    // Sets environment variables: before the runtime starts its threads.
    collective::configure_nccl();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(worker_main(args))
}

/// What ended a session with the coordinator.
enum End {
    Shutdown,
    Lost(String),
}

/// The flags, completed from the launcher's environment (Slurm, torchrun,
/// Kubernetes Indexed Jobs): coordinator, local rank, name, advertise host.
fn with_cluster_defaults(mut args: WorkerArgs) -> anyhow::Result<WorkerArgs> {
    let env = ClusterEnv::detect()?;
    if args.coordinator.is_none() {
        let port: u16 = std::env::var("CARTO_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(7070);
        args.coordinator = Some(env.coordinator_url(port).ok_or_else(|| {
            carto_common::CartoError::invalid("--coordinator (or CARTO_COORDINATOR) is required outside Slurm and torchrun")
        })?);
    }
    args.local_rank = Some(args.local_rank.unwrap_or(env.local_rank));
    if args.name.is_none() {
        args.name = env.process_name();
    }
    if args.advertise_host.is_none() {
        args.advertise_host = env.node_name.clone();
    }
    if env.launcher != Launcher::None {
        info!(launcher = ?env.launcher, rank = ?env.rank, local_rank = env.local_rank, "cluster environment");
    }
    Ok(args)
}

async fn worker_main(args: WorkerArgs) -> anyhow::Result<()> {
    let args = with_cluster_defaults(args)?;
    if DeviceSpec::parse(&args.device)?.is_cuda() && !collective::NCCL {
        warn!("this carto-worker was built without NCCL: it trains GPU jobs of one rank only");
    }
    let coordinator = args.coordinator.clone().expect("set by with_cluster_defaults");
    let token = match worker_token(&args)? {
        Some(t) => Some(
            format!("Bearer {t}")
                .parse()
                .map_err(|_| carto_common::CartoError::invalid("--token holds characters not allowed in a header"))?,
        ),
        None => None,
    };
    let host = hostname::get().map(|h| h.to_string_lossy().into_owned()).unwrap_or_else(|_| "localhost".into());
    let advertise_host = args.advertise_host.clone().unwrap_or_else(|| host.clone());
    // A port held for hosting the collectives' store if this worker becomes
    // rank 0: the store takes this very socket over, so no other process can
    // take the port in between.
    let store_listener = bind_advertised(&advertise_host, 0)?;
    let store_port = store_listener.local_addr()?.port();
    let rendezvous = Arc::new(Rendezvous {
        advertise_host: advertise_host.clone(),
        port: store_port,
        listener: Mutex::new(Some(store_listener)),
        timeout: Duration::from_secs(args.collective_timeout_secs),
    });
    let mut wait = Duration::from_secs(args.connect_timeout_secs);
    loop {
        let channel = connect(&coordinator, args.ca.as_deref(), wait).await?;
        let client: Client = WorkerServiceClient::with_interceptor(channel, Auth(token.clone()));
        match session(&args, client, &host, rendezvous.clone()).await? {
            End::Shutdown => return Ok(()),
            End::Lost(why) => {
                warn!("lost the coordinator ({why}); reconnecting");
                wait = Duration::from_secs(args.reconnect_timeout_secs);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// The secret from --token-file, else --token / CARTO_TOKEN. An empty one is
/// an error, never "no authentication".
fn worker_token(args: &WorkerArgs) -> Result<Option<String>, carto_common::CartoError> {
    use carto_common::CartoError;
    let token = match &args.token_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .map_err(|e| CartoError::invalid(format!("--token-file {}: {e}", f.display())))?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
        ),
        None => args.token.clone(),
    };
    if token.as_deref() == Some("") {
        return Err(CartoError::invalid("the token is empty (--token, --token-file or CARTO_TOKEN): set a real secret or leave it unset"));
    }
    Ok(token)
}

async fn connect(url: &str, ca: Option<&std::path::Path>, timeout: Duration) -> anyhow::Result<Channel> {
    let endpoint = carto_common::transport::endpoint(url, ca)?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut wait = Duration::from_millis(100);
    loop {
        match endpoint.connect().await {
            Ok(ch) => return Ok(ch),
            Err(e) if tokio::time::Instant::now() + wait < deadline => {
                warn!("coordinator {url} not reachable yet ({e}); retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                let mut cause = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    cause = s.to_string();
                    source = s.source();
                }
                anyhow::bail!("cannot reach the coordinator at {url}: {cause}")
            }
        }
    }
}

enum Order {
    Assign(pb::Assignment),
    Shutdown,
    Lost(String),
}

/// The assignment being trained and whether the coordinator aborted it.
#[derive(Default)]
struct Current {
    job: Mutex<Option<(String, u64)>>,
    aborted: AtomicBool,
    /// The assignment's process group, so an abort can end a collective the
    /// training thread is blocked in.
    group: Mutex<Option<GroupAborter>>,
}

impl Current {
    /// Ends a blocked NCCL collective of the aborted generation on a blocking
    /// thread (aborting a communicator can take a while).
    fn abort_group(&self) {
        if let Some(g) = self.group.lock().unwrap().clone() {
            tokio::task::spawn_blocking(move || g.abort());
        }
    }
}

/// One registration with the coordinator: follow its orders until it says
/// shut down or goes away.
async fn session(args: &WorkerArgs, mut client: Client, host: &str, rendezvous: Arc<Rendezvous>) -> anyhow::Result<End> {
    let reg = client
        .register(deadline(
            pb::RegisterRequest {
                protocol_version: PROTOCOL_VERSION,
                hostname: host.to_string(),
                devices: vec![args.device.clone()],
                advertise_host: rendezvous.advertise_host.clone(),
                name: args.name.clone().unwrap_or_default(),
                rendezvous_port: rendezvous.port as u32,
            },
            UNARY_DEADLINE,
        ))
        .await
        .map_err(|s| anyhow::anyhow!("registering with {}: {}", args.coordinator.as_deref().unwrap_or_default(), s.message()))?
        .into_inner();
    let worker_id = reg.worker_id.clone();
    info!(worker = %worker_id, "registered");

    let progress: Arc<Mutex<Option<pb::WorkerProgress>>> = Arc::default();
    let heartbeat = tokio::spawn(heartbeat_loop(
        client.clone(),
        worker_id.clone(),
        reg.worker_secret.clone(),
        progress.clone(),
        Duration::from_millis(reg.heartbeat_interval_ms.max(100) as u64),
    ));

    let mut control = client.orders(pb::OrdersRequest { worker_id: worker_id.clone(), worker_secret: reg.worker_secret.clone() }).await?.into_inner();
    let current = Arc::new(Current::default());
    let (tx, mut orders) = tokio::sync::mpsc::unbounded_channel();
    let current_c = current.clone();
    tokio::spawn(async move {
        loop {
            match control.message().await {
                Ok(Some(pb::Order { kind: Some(kind) })) => match kind {
                    pb::order::Kind::Assignment(a) => {
                        let _ = tx.send(Order::Assign(a));
                    }
                    pb::order::Kind::Abort(a) => {
                        let cur = current_c.job.lock().unwrap().clone();
                        if cur.is_some_and(|(job, gen)| job == a.job_id && gen <= a.generation) {
                            info!(job = %a.job_id, reason = %a.reason, "abort");
                            current_c.aborted.store(true, Ordering::SeqCst);
                            current_c.abort_group();
                        }
                    }
                    pb::order::Kind::Shutdown(s) => {
                        info!(reason = %s.reason, "shutdown");
                        current_c.aborted.store(true, Ordering::SeqCst);
                        let _ = tx.send(Order::Shutdown);
                        break;
                    }
                },
                Ok(Some(pb::Order { kind: None })) => {}
                Ok(None) => {
                    // Whatever this worker trains now cannot be reported.
                    current_c.aborted.store(true, Ordering::SeqCst);
                    let _ = tx.send(Order::Lost("the coordinator closed the order stream".into()));
                    break;
                }
                Err(s) => {
                    current_c.aborted.store(true, Ordering::SeqCst);
                    let _ = tx.send(Order::Lost(format!("order stream: {}", s.message())));
                    break;
                }
            }
        }
    });

    let result = loop {
        match orders.recv().await {
            Some(Order::Assign(a)) => {
                *current.job.lock().unwrap() = Some((a.job_id.clone(), a.generation));
                current.aborted.store(false, Ordering::SeqCst);
                let link = GrpcReporter {
                    client: client.clone(),
                    handle: tokio::runtime::Handle::current(),
                    job_id: a.job_id.clone(),
                    generation: a.generation,
                    rank: a.rank,
                    lease: a.lease.clone(),
                    max_chunk: (reg.max_chunk_bytes as usize).clamp(64 * 1024, MAX_CHUNK_BYTES),
                    progress: progress.clone(),
                    current: current.clone(),
                };
                let place = Placement {
                    flag: args.device.clone(),
                    local_rank: args.local_rank.unwrap_or(0),
                    local_world_size: args.local_world_size,
                };
                let (job_id, generation, rank, lease) = (a.job_id.clone(), a.generation, a.rank, a.lease.clone());
                let rdv = rendezvous.clone();
                let outcome = tokio::task::spawn_blocking(move || {
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_assignment(a, &place, &rdv, &link)))
                })
                .await;
                *progress.lock().unwrap() = None;
                *current.group.lock().unwrap() = None;
                let aborted = current.aborted.load(Ordering::SeqCst);
                let failure = match outcome {
                    Ok(Ok(Ok(()))) => None,
                    // A collective that failed after the coordinator ended the
                    // generation failed because of that (its group was aborted,
                    // or a peer left): nothing to report.
                    Ok(Ok(Err(e))) if e.generation_ended() || (aborted && matches!(e, WorkerError::Collective(_))) => {
                        info!(job = %job_id, generation, "generation ended: {e}");
                        None
                    }
                    Ok(Ok(Err(e))) => Some((e.to_string(), e.is_invalid_input())),
                    Ok(Err(panic)) => Some((panic_message(panic), false)),
                    Err(join) => Some((format!("training thread failed: {join}"), false)),
                };
                if let Some((message, invalid_input)) = failure {
                    warn!(job = %job_id, %message, "job failed on this worker");
                    let failure = pb::ReportFailureRequest {
                        worker_id: worker_id.clone(),
                        job_id,
                        generation,
                        rank,
                        message,
                        invalid_input,
                        lease,
                    };
                    let _ = client.report_failure(deadline(failure, UNARY_DEADLINE)).await;
                }
                *current.job.lock().unwrap() = None;
            }
            Some(Order::Shutdown) => break Ok(End::Shutdown),
            Some(Order::Lost(why)) => break Ok(End::Lost(why)),
            None => break Ok(End::Lost("the order stream ended".into())),
        }
    };
    heartbeat.abort();
    result
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    let text = p
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into());
    // libtorch errors carry a C++ backtrace after the first line.
    format!("worker crashed: {}", text.lines().next().unwrap_or_default())
}

async fn heartbeat_loop(
    mut client: Client,
    worker_id: String,
    worker_secret: String,
    progress: Arc<Mutex<Option<pb::WorkerProgress>>>,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let p = progress.lock().unwrap().clone();
        let beat = pb::HeartbeatRequest { worker_id: worker_id.clone(), progress: p, worker_secret: worker_secret.clone() };
        if let Err(s) = client.heartbeat(deadline(beat, every.max(Duration::from_secs(5)))).await {
            warn!("heartbeat failed: {}", s.message());
        }
    }
}

/// How this worker meets its peers.
struct Rendezvous {
    advertise_host: String,
    /// The port registered with the coordinator for hosting the store.
    port: u16,
    /// The socket held on that port, until a store takes it over.
    listener: Mutex<Option<std::net::TcpListener>>,
    timeout: Duration,
}

impl Rendezvous {
    /// Joins the process group of assignment `a` (world size > 1).
    fn join(&self, a: &pb::Assignment, device: tch::Device) -> Result<C10dGroup, WorkerError> {
        let cfg = GroupConfig {
            backend: backend_for(device),
            device,
            master_host: a.rendezvous_host.clone(),
            master_port: a.rendezvous_port as u16,
            rank: a.rank as usize,
            world: a.world_size as usize,
            prefix: format!("{}/{}", a.job_id, a.generation),
            bind_host: self.advertise_host.clone(),
            timeout: self.timeout,
        };
        let listener = if a.rank == 0 {
            match self.listener.lock().unwrap().take() {
                Some(l) if a.rendezvous_port as u16 == self.port => Some(l),
                // Taken over by an earlier job's store: bind the port again.
                _ => Some(bind_advertised(&self.advertise_host, a.rendezvous_port as u16).map_err(|e| {
                    WorkerError::Collective(format!("binding the store port {}: {e}", a.rendezvous_port))
                })?),
            }
        } else {
            None
        };
        C10dGroup::new(&cfg, listener)
    }
}

/// Listens on `port` of the address the advertised host resolves to, not on
/// every interface: the collectives' store is unauthenticated, so it is
/// reachable only where peers are told to reach it.
fn bind_advertised(host: &str, port: u16) -> std::io::Result<std::net::TcpListener> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<std::net::SocketAddr> = (host, port).to_socket_addrs()?.collect();
    let mut last = None;
    for addr in &addrs {
        match std::net::TcpListener::bind(addr) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    let why = last.map(|e| e.to_string()).unwrap_or_else(|| "it resolves to no address".into());
    Err(std::io::Error::other(format!(
        "cannot listen on the advertised host {host} ({addrs:?}): {why}; set --advertise-host to an address of this machine"
    )))
}

/// This worker's device flags, for choosing an assignment's device.
struct Placement {
    /// --device: cpu, cuda or cuda:N.
    flag: String,
    local_rank: u32,
    local_world_size: Option<u32>,
}

/// The device this worker trains an assignment of `world` ranks on, from the
/// job's `device` and this worker's flags; `visible`: the GPUs CUDA reports;
/// `nccl`: whether this build has NCCL. GPU jobs of several ranks need NCCL
/// and one GPU per rank; a refusal is one line, which fails the job.
fn rank_device(job_device: &str, place: &Placement, visible: usize, world: u32, nccl: bool) -> Result<String, WorkerError> {
    if DeviceSpec::parse(job_device)? == DeviceSpec::Cpu {
        return Ok("cpu".into());
    }
    let flag = DeviceSpec::parse(&place.flag)?;
    if flag == DeviceSpec::Cpu {
        return Err(WorkerError::Unsupported(format!(
            "the job asks for --device {job_device} but this worker was started with --device cpu"
        )));
    }
    if world > 1 && !nccl {
        return Err(WorkerError::Unsupported(collective::no_nccl_message(world as usize)));
    }
    match flag {
        DeviceSpec::Cuda(Some(i)) => Ok(format!("cuda:{i}")),
        _ => {
            if let Some(n) = place.local_world_size.filter(|&n| world > 1 && n as usize > visible && visible > 0) {
                return Err(WorkerError::Unsupported(format!(
                    "{n} workers on this host share its {visible} visible GPU(s), but NCCL needs one GPU per rank: \
                     start at most {visible} workers here (--workers {visible}) or make more GPUs visible"
                )));
            }
            // The local rank modulo the visible GPUs (ClusterEnv::gpu_index):
            // with one GPU visible per process (Slurm's --gpus-per-task,
            // Kubernetes), every rank takes its own GPU 0.
            Ok(format!("cuda:{}", place.local_rank as usize % visible.max(1)))
        }
    }
}

/// Loads the data and trains one assignment on this thread (blocking).
fn run_assignment(a: pb::Assignment, place: &Placement, rdv: &Rendezvous, link: &GrpcReporter) -> Result<(), WorkerError> {
    let spec: JobSpec = a.spec.clone().unwrap_or_default().into();
    let _span = info_span!("job", job = %a.job_id, generation = a.generation, rank = a.rank).entered();
    let visible = if DeviceSpec::parse(spec.device())?.is_cuda() { tch::Cuda::device_count().max(0) as usize } else { 0 };
    let device = trainer::parse_device(&rank_device(spec.device(), place, visible, a.world_size, collective::NCCL)?)?;
    let shard = a.shard.ok_or_else(|| WorkerError::Internal("assignment without a shard plan".into()))?;
    let plan = ShardPlan {
        num_samples: shard.num_samples,
        seed: shard.seed,
        world_size: shard.world_size,
        rank: shard.rank,
        global_batch: shard.global_batch,
    };
    tch::set_num_threads(spec.threads_per_worker() as i32);
    let ds = dataset::load(&spec.dataset_spec()?)?;
    if ds.num_classes != a.num_classes as usize {
        return Err(WorkerError::Invalid(format!(
            "{}: {} classes here but {} at the coordinator",
            ds.path.display(),
            ds.num_classes,
            a.num_classes
        )));
    }
    let encoder = match (Arch::from_model(spec.model()), spec.pretrained.as_deref()) {
        (Some(arch), Some(dir)) => {
            TextEncoder::Pretrained(Arc::new(Pretrained::open(std::path::Path::new(dir), arch, spec.max_len() as usize)?))
        }
        (Some(_), None) => {
            return Err(WorkerError::Invalid(format!("model '{}' needs --pretrained DIR", spec.model())))
        }
        (None, _) => TextEncoder::Hashed(spec.hash_bits()),
    };
    let data = TrainData::encoded(ds, encoder, device)?;
    let eval = match spec.eval_dataset_spec()? {
        Some(e) => Some(data.held_out(dataset::load(&e)?)?),
        None => None,
    };
    let collective: Box<dyn Collective> = if a.world_size == 1 {
        Box::new(Single)
    } else {
        let group = rdv.join(&a, device)?;
        let aborter = group.aborter();
        *link.current.group.lock().unwrap() = Some(aborter.clone());
        // Aborted while joining: end at once rather than at the first step.
        if link.current.aborted.load(Ordering::SeqCst) {
            aborter.abort();
        }
        Box::new(group)
    };
    let job = TrainJob {
        job_id: &a.job_id,
        generation: a.generation,
        spec: &spec,
        plan,
        start_epoch: a.start_epoch,
        device,
        resume_from: (!a.checkpoint.is_empty()).then(|| std::path::PathBuf::from(&a.checkpoint)),
        checkpoint_dir: (!a.checkpoint_dir.is_empty()).then(|| std::path::PathBuf::from(&a.checkpoint_dir)),
    };
    trainer::train(&job, &data, eval.as_ref(), collective.as_ref(), link)?;
    Ok(())
}

/// The trainer's link to the coordinator, used from the blocking training thread.
struct GrpcReporter {
    client: Client,
    handle: tokio::runtime::Handle,
    job_id: String,
    generation: u64,
    rank: u32,
    /// The assignment's lease: every report carries it.
    lease: String,
    max_chunk: usize,
    progress: Arc<Mutex<Option<pb::WorkerProgress>>>,
    current: Arc<Current>,
}

impl Reporter for GrpcReporter {
    fn progress(&self, p: StepProgress) {
        *self.progress.lock().unwrap() = Some(pb::WorkerProgress {
            job_id: self.job_id.clone(),
            generation: self.generation,
            rank: self.rank,
            epoch: p.epoch,
            samples_done: p.samples_done,
            loss_sum: p.loss_sum,
            correct: p.correct,
            train_seconds: p.train_seconds,
        });
    }

    fn aborted(&self) -> bool {
        self.current.aborted.load(Ordering::SeqCst)
    }

    fn dynamics(&self, epoch: u32, rows: &DynamicsColumns) -> Result<u64, WorkerError> {
        let chunks = ipc::encode_dynamics(rows, self.max_chunk)?;
        let messages = pb::EpochChunk::report(&self.job_id, self.generation, self.rank, &self.lease, epoch, chunks);
        let mut client = self.client.clone();
        let resp = self.handle.block_on(client.report_epoch(tokio_stream::iter(messages)))?;
        Ok(resp.into_inner().rows)
    }

    fn epoch_done(&self, r: EpochReport) -> Result<bool, WorkerError> {
        let mut client = self.client.clone();
        let resp = self.handle.block_on(client.epoch_done(deadline(pb::EpochDoneRequest {
            job_id: self.job_id.clone(),
            generation: self.generation,
            rank: self.rank,
            epoch: r.epoch,
            samples: r.samples,
            loss_sum: r.loss_sum,
            correct: r.correct,
            train_seconds: r.train_seconds,
            rows_sent: r.rows_sent,
            eval_samples: r.eval_samples,
            eval_loss_sum: r.eval_loss_sum,
            eval_correct: r.eval_correct,
            lease: self.lease.clone(),
        }, COMMIT_DEADLINE)))?;
        Ok(resp.into_inner().stop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_listens_only_on_the_advertised_address() {
        let l = bind_advertised("127.0.0.1", 0).unwrap();
        let addr = l.local_addr().unwrap();
        assert!(addr.ip().is_loopback(), "bound to {addr}, not every interface");
        let err = bind_advertised("192.0.2.1", 0).unwrap_err().to_string();
        assert!(err.contains("--advertise-host"), "{err}");
    }

    #[test]
    fn coordinator_errors_keep_their_status_code() {
        let e = WorkerError::from(tonic::Status::failed_precondition("stale generation 1 for job j (current 2)"));
        assert!(matches!(e, WorkerError::Rpc { code: tonic::Code::FailedPrecondition, .. }));
        assert!(e.generation_ended(), "a stale generation is not a failure to report");
        let e = WorkerError::from(tonic::Status::unavailable("connection reset"));
        assert!(!e.generation_ended());
        assert!(e.to_string().contains("Unavailable"), "{e}");
    }

    #[test]
    fn an_empty_token_is_refused() {
        use clap::Parser;
        let args = WorkerArgs::parse_from(["carto-worker", "--token", ""]);
        assert!(worker_token(&args).unwrap_err().to_string().contains("empty"));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t");
        std::fs::write(&f, "s3cret\n").unwrap();
        let args = WorkerArgs::parse_from(["carto-worker", "--token-file", f.to_str().unwrap()]);
        assert_eq!(worker_token(&args).unwrap().as_deref(), Some("s3cret"));
    }

    fn place(flag: &str, local_rank: u32, local_world_size: Option<u32>) -> Placement {
        Placement { flag: flag.into(), local_rank, local_world_size }
    }

    #[test]
    fn gpu_jobs_of_several_ranks_need_nccl_and_a_gpu_per_rank() {
        // (job device, worker flags, visible GPUs, world, NCCL) -> device
        assert_eq!(rank_device("cpu", &place("cuda", 0, None), 2, 2, false).unwrap(), "cpu");
        assert_eq!(rank_device("cuda:3", &place("cuda:3", 0, None), 4, 1, false).unwrap(), "cuda:3", "one rank needs no NCCL");
        assert_eq!(rank_device("cuda", &place("cuda", 5, None), 4, 1, false).unwrap(), "cuda:1");
        assert_eq!(rank_device("cuda", &place("cuda", 1, Some(2)), 2, 2, true).unwrap(), "cuda:1", "rank r on GPU r");
        // One GPU visible per process (Slurm --gpus-per-task): GPU 0 each, however high the local rank.
        assert_eq!(rank_device("cuda", &place("cuda", 3, None), 1, 8, true).unwrap(), "cuda:0");

        let no_nccl = rank_device("cuda", &place("cuda", 0, Some(2)), 2, 2, false).unwrap_err();
        let msg = no_nccl.to_string();
        assert!(no_nccl.is_invalid_input(), "fails the job instead of retrying: {msg}");
        assert!(msg.contains("without NCCL") && msg.contains("pip install") && msg.contains("cargo build"), "{msg}");
        assert!(!msg.contains('\n'), "one line: {msg}");
        // More local ranks than GPUs: every rank refuses (NCCL would reject the duplicate).
        for r in 0..3 {
            let e = rank_device("cuda", &place("cuda", r, Some(3)), 2, 3, true).unwrap_err();
            assert!(e.is_invalid_input() && e.to_string().contains("one GPU per rank"), "{e}");
        }
        let e = rank_device("cuda", &place("cpu", 0, None), 0, 1, true).unwrap_err();
        assert!(e.to_string().contains("started with --device cpu"), "{e}");
        let e = rank_device("cuda", &place("gpu0", 0, None), 1, 1, true).unwrap_err();
        assert!(e.is_invalid_input() && e.to_string().contains("device (--device)"), "{e}");
    }

    #[test]
    fn nccl_refusing_two_ranks_on_one_gpu_fails_the_job() {
        let e = collective::collective_error(
            "joining the process group",
            "NCCL error in: ProcessGroupNCCL.cpp:1912, invalid usage (run with NCCL_DEBUG=WARN for details), NCCL version 2.29.7 \
             (Duplicate GPU detected : rank 1 and rank 0 both on CUDA device 1b000)",
        );
        assert!(e.is_invalid_input(), "{e}");
        assert!(e.to_string().contains("one GPU per rank") && e.to_string().contains("rank 1 and rank 0"), "{e}");
        let e = collective::collective_error("all-reduce", "Connection closed by peer [127.0.0.1]:4242");
        assert!(matches!(e, WorkerError::Collective(_)) && !e.is_invalid_input(), "a lost peer re-forms the job: {e}");
    }

    #[test]
    fn the_version_says_whether_nccl_is_compiled_in() {
        assert!(VERSION.starts_with(env!("CARGO_PKG_VERSION")) && VERSION.contains("(NCCL "), "{VERSION}");
        // build.rs decides once, for the Rust cfg and the shim's define alike.
        assert_eq!(collective::NCCL, collective::nccl_compiled_in_shim());
        assert_eq!(collective::NCCL, collective::NCCL_VERSION.starts_with(|c: char| c.is_ascii_digit()), "{}", collective::NCCL_VERSION);
    }
}
