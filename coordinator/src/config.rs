//! The coordinator's settings: timing, where state lives, which paths remote
//! users may touch, and the limits that keep one caller from exhausting it.

use std::path::PathBuf;
use std::time::Duration;

/// Coordinator settings.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// How often workers heartbeat.
    pub heartbeat_interval: Duration,
    /// A worker silent for this long is lost.
    pub worker_timeout: Duration,
    /// A running generation whose ranks report no training progress (no
    /// heartbeat's sample count moving, no epoch committed) for this long is
    /// re-formed: a hung training thread keeps heartbeating.
    pub progress_timeout: Duration,
    /// `carto run`: tell workers to exit once no job is left.
    pub shutdown_idle_workers: bool,
    /// Where job records and checkpoints live (`carto serve --state-dir`);
    /// without one, each job keeps its checkpoints in `OUT/.carto/`.
    pub state_dir: Option<PathBuf>,
    /// Times a job is re-formed after losing a rank before it fails.
    pub max_restarts: u32,
    /// How long a re-forming job waits for its full world before it goes on
    /// with the workers it has (keeping the global batch).
    pub rejoin_wait: Duration,
    /// `--data-root`: datasets (`data`, `eval_data`, `pretrained`) must lie
    /// under it, symlinks resolved. None: anywhere (embedded `carto run`).
    pub data_root: Option<PathBuf>,
    /// `--out-root`: output directories must lie under it.
    pub out_root: Option<PathBuf>,
    pub limits: Limits,
}

/// Bounds on what callers can make the coordinator hold.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Submits loading their dataset at once; more wait (bounded by
    /// `max_pending_submits`) and past that are refused with RESOURCE_EXHAUSTED.
    pub max_concurrent_submits: usize,
    pub max_pending_submits: usize,
    /// Queued plus running jobs; finished jobs do not count.
    pub max_active_jobs: usize,
    /// Concurrent HTTP/2 streams one connection may open.
    pub max_streams_per_connection: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_concurrent_submits: 2, max_pending_submits: 16, max_active_jobs: 256, max_streams_per_connection: 128 }
    }
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            heartbeat_interval: Duration::from_millis(500),
            worker_timeout: Duration::from_secs(15),
            progress_timeout: Duration::from_secs(600),
            shutdown_idle_workers: false,
            state_dir: None,
            max_restarts: 3,
            rejoin_wait: Duration::from_secs(10),
            data_root: None,
            out_root: None,
            limits: Limits::default(),
        }
    }
}
