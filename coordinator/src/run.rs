//! `carto run`: the embedded default. An in-process coordinator on
//! 127.0.0.1:0 plus N `carto-worker` processes (the binary beside `carto`),
//! talking real gRPC over loopback; a progress bar per epoch. The embedded
//! coordinator takes only callers holding a random per-job token, which the
//! workers get through their environment (`CARTO_TOKEN`), never their command
//! line: other programs on the machine cannot join or read the job.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use carto_common::proto::v1 as pb;
use carto_common::spec::{DeviceSpec, JobSpec};
use tokio::process::{Child, Command};

use crate::outputs;
use crate::progress::Display;
use crate::config::CoordinatorConfig;
use crate::coordinator::{state_name, Coordinator};
use crate::server::{Embedded, Security};

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub spec: JobSpec,
    /// Replace the outputs of an earlier job in --out (only carto's own files).
    #[arg(long)]
    pub overwrite: bool,
    /// The worker binary [default: carto-worker beside this executable].
    #[arg(long, env = "CARTO_WORKER_BIN", value_name = "PATH")]
    pub worker_bin: Option<PathBuf>,
    /// No progress bars or epoch lines; only the final summary.
    #[arg(long, short)]
    pub quiet: bool,
    /// Restart a worker that dies, and re-form the job from its last
    /// finished epoch, at most this many times (like torchrun's --max-restarts).
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub max_restarts: u32,
    /// Serve the live page (the job's progress and its data map, redrawn after
    /// every epoch) on this loopback address [default: 127.0.0.1, any free port];
    /// its address, with a token of its own in the fragment, is printed.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:0")]
    pub ui: Option<String>,
}

/// The `carto-worker` binary to start.
fn worker_binary(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let exe = std::env::current_exe().context("locating the carto executable")?;
    let beside = exe.with_file_name("carto-worker");
    if beside.exists() {
        return Ok(beside);
    }
    bail!(
        "carto-worker not found beside {} (build it with `cargo build --release -p carto-worker`, or set CARTO_WORKER_BIN)",
        exe.display()
    )
}

/// A fresh random secret for one embedded job: 256 bits as 64 hex digits
/// (two v4 UUIDs, each 122 random bits from the OS generator, so 244 bits).
pub fn job_token() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

/// The command that starts one local worker (of `workers`): the token goes in
/// its environment, never its arguments (which any user can read in `ps`).
/// `cuda`: rank r takes GPU r (`--local-rank`), and `--local-world-size` lets
/// the worker refuse a job of more ranks than GPUs; `cuda:N`: GPU N.
pub fn worker_command(bin: &Path, url: &str, token: &str, rank: u32, workers: u32, device: &str) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env("CARTO_TOKEN", token);
    cmd.arg("--coordinator")
        .arg(url)
        .arg("--name")
        .arg(format!("local-{rank}"))
        .arg("--advertise-host")
        .arg("127.0.0.1");
    match DeviceSpec::parse(device) {
        Ok(DeviceSpec::Cuda(None)) => {
            cmd.arg("--device")
                .arg("cuda")
                .arg("--local-rank")
                .arg(rank.to_string())
                .arg("--local-world-size")
                .arg(workers.to_string());
        }
        Ok(DeviceSpec::Cuda(Some(i))) => {
            cmd.arg("--device").arg(format!("cuda:{i}"));
        }
        // Validated before any worker starts; cpu is the default.
        Ok(DeviceSpec::Cpu) | Err(_) => {
            cmd.arg("--device").arg("cpu");
        }
    }
    cmd
}

/// Refuses a GPU placement NCCL would reject (two ranks on one GPU) before
/// any worker starts. `visible`: the GPUs the workers will see, when known;
/// the workers check again with CUDA's own count.
pub fn check_gpu_placement(device: &str, workers: u32, visible: Option<usize>) -> anyhow::Result<()> {
    let spec = DeviceSpec::parse(device)?;
    match (spec, visible) {
        (DeviceSpec::Cpu, _) => {}
        (DeviceSpec::Cuda(_), Some(0)) => {
            bail!("--device {device}: no GPU is visible (nvidia-smi -L, CUDA_VISIBLE_DEVICES); use --device cpu")
        }
        (DeviceSpec::Cuda(Some(i)), _) if workers > 1 => bail!(
            "--device cuda:{i} puts all {workers} workers on GPU {i}, but NCCL needs one GPU per rank: \
             use --device cuda (rank r on GPU r) or --workers 1"
        ),
        (DeviceSpec::Cuda(Some(i)), Some(n)) if i as usize >= n => {
            bail!("--device cuda:{i}: only {n} GPU(s) visible (numbered from 0)")
        }
        (DeviceSpec::Cuda(None), Some(n)) if workers as usize > n => bail!(
            "--workers {workers} on --device cuda needs {workers} GPUs (one per rank: NCCL refuses two ranks on one GPU), \
             but {n} visible: run at most {n} (--workers {n})"
        ),
        _ => {}
    }
    Ok(())
}

/// How many GPUs local workers will see: `CUDA_VISIBLE_DEVICES` when set
/// (entries up to the first invalid one, as CUDA reads it), else the GPUs
/// `nvidia-smi -L` lists; None when neither tells.
async fn visible_gpus() -> Option<usize> {
    if let Ok(v) = std::env::var("CUDA_VISIBLE_DEVICES") {
        return Some(count_visible_devices(&v));
    }
    let out = Command::new("nvidia-smi").arg("-L").stdin(Stdio::null()).stderr(Stdio::null()).kill_on_drop(true).output();
    // A wedged driver can make nvidia-smi hang: then the workers decide.
    let out = tokio::time::timeout(Duration::from_secs(10), out).await.ok()?.ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with("GPU ")).count())
}

/// Devices in a `CUDA_VISIBLE_DEVICES` value: indices or GPU-/MIG- UUIDs;
/// CUDA ignores everything from the first entry that is neither.
pub fn count_visible_devices(value: &str) -> usize {
    value
        .split(',')
        .map(str::trim)
        .take_while(|e| {
            (!e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())) || e.starts_with("GPU-") || e.starts_with("MIG-")
        })
        .count()
}

fn spawn_worker(bin: &Path, url: &str, token: &str, rank: u32, workers: u32, device: &str) -> anyhow::Result<Child> {
    let mut cmd = worker_command(bin, url, token, rank, workers, device);
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::inherit()).kill_on_drop(true);
    die_with_parent(&mut cmd);
    cmd.spawn().with_context(|| format!("starting {}", bin.display()))
}

/// `kill_on_drop` covers a `carto run` that returns or panics; a killed one
/// runs no destructors, and its workers would train on, orphaned. On Linux
/// the kernel sends them SIGKILL when it dies (PR_SET_PDEATHSIG; the workers
/// are spawned from the runtime's long-lived threads, whose exit is the
/// signal's trigger).
#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut Command) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent died before the prctl: nobody is left to supervise.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_cmd: &mut Command) {}

/// Runs one job to its end. Returns the final job snapshot.
pub async fn run(args: RunArgs) -> anyhow::Result<pb::Job> {
    args.spec.validate()?;
    let spec = args.spec.with_defaults();
    if DeviceSpec::parse(spec.device())?.is_cuda() {
        check_gpu_placement(spec.device(), spec.workers(), visible_gpus().await)?;
    }
    let worker_bin = worker_binary(args.worker_bin.as_deref())?;
    let coord = Coordinator::new(CoordinatorConfig {
        shutdown_idle_workers: true,
        max_restarts: args.max_restarts,
        ..Default::default()
    });
    // Validates the dataset and prepares --out before any worker starts.
    let job = coord.submit(spec.clone(), args.overwrite).await?;
    let token = job_token();
    // The page's user gets a token of its own: it can read jobs, not join as a worker.
    let user_token = if args.ui.is_some() { job_token() } else { token.clone() };
    let security = Security { user_token: Some(user_token.clone()), worker_token: Some(token.clone()), tls: None };
    let server = Embedded::start_with(coord.clone(), "127.0.0.1:0", security).await?;
    let url = server.url();
    let page = match &args.ui {
        Some(addr) => {
            let page = crate::http::LivePage::start(coord.clone(), addr, Some(user_token.clone()), false).await?;
            // On the terminal only, never in a log: the token rides in the
            // fragment, which the browser keeps to itself.
            eprintln!("carto: live page at {}", page.url(Some(&user_token)));
            Some(page)
        }
        None => None,
    };
    let mut children = Vec::new();
    for rank in 0..spec.workers() {
        children.push(spawn_worker(&worker_bin, &url, &token, rank, spec.workers(), spec.device())?);
    }

    let mut restarts_left = args.max_restarts;
    let mut rx = coord.watch(&job.id)?;
    let mut display = Display::new(args.quiet, spec.epochs_total());
    let mut poll = tokio::time::interval(Duration::from_millis(200));
    let final_job = loop {
        let job = rx.borrow_and_update().clone();
        display.update(&job);
        if matches!(
            pb::JobState::try_from(job.state),
            Ok(pb::JobState::Succeeded | pb::JobState::Failed | pb::JobState::Cancelled)
        ) {
            break job;
        }
        tokio::select! {
            changed = rx.changed() => { changed.context("coordinator stopped")?; }
            _ = poll.tick() => {
                // Supervise like torchrun: a worker that dies is restarted
                // (the coordinator re-forms the job from its last finished
                // epoch), within the restart budget.
                let mut alive = 0;
                let mut last_status = None;
                for (rank, c) in children.iter_mut().enumerate() {
                    match c.try_wait()? {
                        None => alive += 1,
                        Some(status) if restarts_left > 0 => {
                            restarts_left -= 1;
                            tracing::warn!(rank, %status, restarts_left, "worker exited; starting another");
                            *c = spawn_worker(&worker_bin, &url, &token, rank as u32, spec.workers(), spec.device())?;
                            alive += 1;
                        }
                        Some(status) => last_status = Some(status),
                    }
                }
                if alive == 0 {
                    let _ = coord.cancel(&job.id);
                    display.clear();
                    bail!(
                        "every worker exited ({}) before the job finished, {} restart(s) used; see their messages above",
                        last_status.map(|s| s.to_string()).unwrap_or_default(),
                        args.max_restarts
                    );
                }
            }
        }
    };
    display.clear();
    // Workers were told to shut down; give them a moment, then make sure.
    for c in children.iter_mut() {
        if tokio::time::timeout(Duration::from_secs(10), c.wait()).await.is_err() {
            let _ = c.kill().await;
        }
    }
    if let Some(page) = page {
        page.shutdown().await?;
    }
    server.shutdown().await?;
    Ok(final_job)
}

/// The human summary printed after a successful job.
pub fn summary(job: &pb::Job) -> String {
    let out = Path::new(&job.out);
    let secs = (job.finished_unix_ms - job.started_unix_ms) as f64 / 1000.0;
    let mut s = format!(
        "carto: job {} {} in {:.1} s: {} samples × {} epochs, {} worker(s)\n",
        job.id,
        state_name(pb::JobState::try_from(job.state).unwrap_or(pb::JobState::Unspecified)),
        secs,
        job.num_samples,
        job.epochs.len(),
        job.workers.len()
    );
    s += &format!("  metrics   {}\n", out.join(outputs::METRICS_FILE).display());
    s += &format!("  dynamics  {}/  (Hive-partitioned: epoch=K/part-R.parquet)\n", out.join(outputs::DYNAMICS_DIR).display());
    s += &format!("  job       {}", out.join(outputs::JOB_FILE).display());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_tokens_are_random_and_long() {
        let a = job_token();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, job_token());
    }

    #[test]
    fn the_token_reaches_workers_through_the_environment_only() {
        let cmd = worker_command(Path::new("/bin/carto-worker"), "http://127.0.0.1:1", "s3cret-token", 0, 1, "cpu");
        let cmd = cmd.as_std();
        assert!(cmd.get_args().all(|a| !a.to_string_lossy().contains("s3cret-token")));
        let env: Vec<_> = cmd.get_envs().collect();
        assert!(env.iter().any(|(k, v)| *k == "CARTO_TOKEN" && v.map(|v| v == "s3cret-token").unwrap_or(false)));
    }

    fn args_of(cmd: &Command) -> Vec<String> {
        cmd.as_std().get_args().map(|a| a.to_string_lossy().into_owned()).collect()
    }

    fn device_args(device: &str, rank: u32, workers: u32) -> Vec<String> {
        let args = args_of(&worker_command(Path::new("/bin/carto-worker"), "http://127.0.0.1:1", "t", rank, workers, device));
        let at = args.iter().position(|a| a == "--device").expect("--device is always passed");
        args[at..].to_vec()
    }

    #[test]
    fn the_worker_command_keeps_the_gpu_index() {
        assert_eq!(device_args("cuda:3", 0, 1), ["--device", "cuda:3"], "one worker on GPU 3");
        assert_eq!(device_args("cuda:0", 0, 1), ["--device", "cuda:0"]);
        assert_eq!(
            device_args("cuda", 1, 2),
            ["--device", "cuda", "--local-rank", "1", "--local-world-size", "2"],
            "rank r on GPU r, and the worker knows how many ranks share the host's GPUs"
        );
        assert_eq!(device_args("cpu", 1, 2), ["--device", "cpu"]);
    }

    #[test]
    fn two_ranks_on_one_gpu_are_refused_before_any_worker_starts() {
        let err = |d: &str, w: u32, v: Option<usize>| check_gpu_placement(d, w, v).unwrap_err().to_string();
        let e = err("cuda:0", 2, None);
        assert!(e.contains("--device cuda:0") && e.contains("one GPU per rank") && e.contains("--device cuda"), "{e}");
        let e = err("cuda", 3, Some(2));
        assert!(e.contains("--workers 3") && e.contains("2 visible") && e.contains("NCCL"), "{e}");
        assert!(err("cuda:2", 1, Some(2)).contains("only 2 GPU(s) visible"));
        assert!(err("cuda", 1, Some(0)).contains("no GPU is visible"));
        for (d, w, v) in [("cuda", 2, Some(2)), ("cuda", 2, None), ("cuda:1", 1, Some(2)), ("cuda:7", 1, None), ("cpu", 8, Some(0))] {
            check_gpu_placement(d, w, v).unwrap_or_else(|e| panic!("{d} × {w} on {v:?}: {e}"));
        }
        assert!(err("gpu", 1, None).contains("device (--device)"));
    }

    #[test]
    fn cuda_visible_devices_counts_like_cuda() {
        assert_eq!(count_visible_devices("0,1,2"), 3);
        assert_eq!(count_visible_devices("3"), 1);
        assert_eq!(count_visible_devices(""), 0);
        assert_eq!(count_visible_devices("-1"), 0, "the usual way to hide every GPU");
        assert_eq!(count_visible_devices("0,2,-1,3"), 2, "CUDA stops at the first invalid entry");
        assert_eq!(count_visible_devices("GPU-8a1b,MIG-77c2"), 2);
    }
}
