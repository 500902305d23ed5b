//! Collectives between the ranks of one job: PyTorch's own c10d process
//! groups (Gloo on CPU, NCCL on GPU — the engine of torch DDP) through the
//! C++ shim in `csrc/c10d_shim.cpp`. One rank needs none ([`Single`]).

use std::ffi::{c_char, c_int, c_void, CString};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tch::{Device, Kind, Tensor};

use crate::WorkerError;

pub trait Collective: Send {
    fn rank(&self) -> usize;
    fn world_size(&self) -> usize;
    /// In-place sum of `t` over all ranks.
    fn all_reduce_sum(&self, t: &mut Tensor) -> Result<(), WorkerError>;
    /// Overwrites `t` with rank `root`'s value.
    fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<(), WorkerError>;
    /// Every rank's `t` (same shape on all ranks), stacked along dim 0 in rank order.
    fn all_gather(&self, t: &Tensor) -> Result<Tensor, WorkerError>;
    /// Waits until every rank arrives.
    fn barrier(&self) -> Result<(), WorkerError>;
}

/// The world of one.
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn all_reduce_sum(&self, _t: &mut Tensor) -> Result<(), WorkerError> {
        Ok(())
    }
    fn broadcast(&self, _t: &mut Tensor, _root: usize) -> Result<(), WorkerError> {
        Ok(())
    }
    fn all_gather(&self, t: &Tensor) -> Result<Tensor, WorkerError> {
        Ok(t.copy())
    }
    fn barrier(&self) -> Result<(), WorkerError> {
        Ok(())
    }
}

extern "C" {
    fn carto_group_new(
        backend: *const c_char,
        master_host: *const c_char,
        master_port: c_int,
        listen_fd: c_int,
        rank: c_int,
        world: c_int,
        prefix: *const c_char,
        bind_host: *const c_char,
        timeout_ms: c_int,
        cuda_device: c_int,
        out: *mut *mut c_void,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    fn carto_group_allreduce_sum(group: *mut c_void, tensor: *mut c_void, err: *mut c_char, errlen: usize) -> c_int;
    fn carto_group_broadcast(group: *mut c_void, tensor: *mut c_void, root: c_int, err: *mut c_char, errlen: usize) -> c_int;
    fn carto_group_allgather(
        group: *mut c_void,
        input: *mut c_void,
        output: *mut c_void,
        err: *mut c_char,
        errlen: usize,
    ) -> c_int;
    fn carto_group_barrier(group: *mut c_void, err: *mut c_char, errlen: usize) -> c_int;
    fn carto_group_abort(group: *mut c_void);
    fn carto_group_free(group: *mut c_void);
    fn carto_nccl_configure();
    fn carto_nccl_compiled() -> c_int;
}

/// Whether this build has ProcessGroupNCCL, which GPU jobs of more than one
/// rank need (build.rs compiles it in wherever the torch wheel ships NCCL).
pub const NCCL: bool = cfg!(carto_nccl);

/// The NCCL version compiled in, or why there is none (`carto-worker --version`).
pub const NCCL_VERSION: &str = env!("CARTO_NCCL_VERSION");

/// Whether the C++ side was compiled with NCCL (agrees with [`NCCL`]; the
/// tests check that the cfg and the shim's define come from the same decision).
pub fn nccl_compiled_in_shim() -> bool {
    unsafe { carto_nccl_compiled() != 0 }
}

/// Puts NCCL in blocking-wait mode (errors and timeouts become errors, not a
/// torn-down process; see csrc/c10d_shim.cpp). Call at start, while the
/// process has one thread: it sets environment variables.
pub fn configure_nccl() {
    unsafe { carto_nccl_configure() }
}

/// One line for the job's failure when `--device cuda` meets a build without NCCL.
pub fn no_nccl_message(world: usize) -> String {
    format!(
        "this carto-worker was built without NCCL ({NCCL_VERSION}), so it cannot train {world} ranks on cuda: \
         install the CUDA headers into the torch environment (pip install -r scripts/requirements.txt) and rebuild \
         (cargo build --release -p carto-worker), or run on one GPU (--workers 1)"
    )
}

/// Calls a shim function with an error buffer; -1 becomes a [`WorkerError::Collective`].
fn checked(what: &str, f: impl FnOnce(*mut c_char, usize) -> c_int) -> Result<(), WorkerError> {
    let mut buf = vec![0u8; 1024];
    if f(buf.as_mut_ptr() as *mut c_char, buf.len()) == 0 {
        return Ok(());
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Err(collective_error(what, &String::from_utf8_lossy(&buf[..end])))
}

/// A failed collective as an error. NCCL refusing two ranks on one GPU is a
/// placement mistake that re-forming the job cannot fix: it becomes
/// [`WorkerError::Unsupported`], which fails the job with this line.
pub fn collective_error(what: &str, message: &str) -> WorkerError {
    if message.contains("Duplicate GPU detected") {
        return WorkerError::Unsupported(format!(
            "{what}: two ranks of this job are on the same GPU, and NCCL needs one GPU per rank ({message}); \
             start at most one worker per GPU (--device cuda:N, or --device cuda with distinct --local-rank)"
        ));
    }
    WorkerError::Collective(format!("{what}: {message}"))
}

/// Where and how the ranks of one generation meet.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub backend: &'static str,
    /// This rank's device; NCCL binds the group to its GPU.
    pub device: Device,
    /// Rank 0's store address.
    pub master_host: String,
    pub master_port: u16,
    pub rank: usize,
    pub world: usize,
    /// Key prefix in the store: one namespace per job generation.
    pub prefix: String,
    /// The address this rank's Gloo device binds (this host, reachable by peers).
    pub bind_host: String,
    pub timeout: Duration,
}

/// A c10d process group.
pub struct C10dGroup {
    ptr: *mut c_void,
    rank: usize,
    world: usize,
    /// Shared with [`GroupAborter`]s: the pointer while the group lives, null after.
    live: Arc<Mutex<LivePtr>>,
}

// The group is used from one thread at a time (the training thread); other
// threads only reach it through a GroupAborter.
unsafe impl Send for C10dGroup {}

struct LivePtr(*mut c_void);
// Only dereferenced under the mutex, which Drop takes before freeing.
unsafe impl Send for LivePtr {}

/// Aborts a group's collectives from another thread (the coordinator ended
/// the generation while the training thread waits in NCCL, which notices a
/// lost peer on the same host only at the collective timeout). Does nothing
/// once the group is gone, and nothing on Gloo.
#[derive(Clone)]
pub struct GroupAborter(Arc<Mutex<LivePtr>>);

impl GroupAborter {
    pub fn abort(&self) {
        let live = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !live.0.is_null() {
            unsafe { carto_group_abort(live.0) }
        }
    }
}

impl C10dGroup {
    /// Joins the group; rank 0 hosts the store, on `listener`'s socket when
    /// given (no port race), else on `master_port`. Blocks until every rank
    /// has joined or the timeout passes.
    pub fn new(cfg: &GroupConfig, listener: Option<TcpListener>) -> Result<Self, WorkerError> {
        let cstr = |s: &str| CString::new(s).map_err(|_| WorkerError::Collective(format!("'{s}' contains a NUL byte")));
        let backend = cstr(cfg.backend)?;
        let host = cstr(&cfg.master_host)?;
        let prefix = cstr(&cfg.prefix)?;
        let bind = cstr(&cfg.bind_host)?;
        let fd: c_int = match &listener {
            Some(l) if cfg.rank == 0 => {
                use std::os::fd::AsRawFd;
                // The store takes the socket over; it must stay open until then.
                l.as_raw_fd()
            }
            _ => -1,
        };
        let mut ptr: *mut c_void = std::ptr::null_mut();
        let timeout_ms = cfg.timeout.as_millis().min(i32::MAX as u128) as c_int;
        let cuda_device = match cfg.device {
            Device::Cuda(i) => i as c_int,
            _ => -1,
        };
        checked("joining the process group", |err, len| unsafe {
            carto_group_new(
                backend.as_ptr(),
                host.as_ptr(),
                cfg.master_port as c_int,
                fd,
                cfg.rank as c_int,
                cfg.world as c_int,
                prefix.as_ptr(),
                bind.as_ptr(),
                timeout_ms,
                cuda_device,
                &mut ptr,
                err,
                len,
            )
        })?;
        if fd >= 0 {
            // The TCPStore owns the descriptor now; do not close it twice.
            std::mem::forget(listener);
        }
        Ok(C10dGroup { ptr, rank: cfg.rank, world: cfg.world, live: Arc::new(Mutex::new(LivePtr(ptr))) })
    }

    /// A handle that aborts this group from another thread.
    pub fn aborter(&self) -> GroupAborter {
        GroupAborter(self.live.clone())
    }
}

impl Drop for C10dGroup {
    fn drop(&mut self) {
        // Under the aborters' lock, so none of them is inside the group while it goes.
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.0 = std::ptr::null_mut();
        unsafe { carto_group_free(self.ptr) }
    }
}

impl Collective for C10dGroup {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.world
    }
    fn all_reduce_sum(&self, t: &mut Tensor) -> Result<(), WorkerError> {
        checked("all-reduce", |err, len| unsafe {
            carto_group_allreduce_sum(self.ptr, t.as_mut_ptr() as *mut c_void, err, len)
        })
    }
    fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<(), WorkerError> {
        checked("broadcast", |err, len| unsafe {
            carto_group_broadcast(self.ptr, t.as_mut_ptr() as *mut c_void, root as c_int, err, len)
        })
    }
    fn all_gather(&self, t: &Tensor) -> Result<Tensor, WorkerError> {
        let mut input = t.contiguous();
        let mut shape = t.size();
        if shape.is_empty() {
            shape.push(1);
            input = input.view([1]);
        }
        shape[0] *= self.world as i64;
        let mut out = Tensor::empty(shape.as_slice(), (t.kind(), t.device()));
        checked("all-gather", |err, len| unsafe {
            carto_group_allgather(self.ptr, input.as_mut_ptr() as *mut c_void, out.as_mut_ptr() as *mut c_void, err, len)
        })?;
        Ok(out)
    }
    fn barrier(&self) -> Result<(), WorkerError> {
        checked("barrier", |err, len| unsafe { carto_group_barrier(self.ptr, err, len) })
    }
}

/// The process-group backend for a device: NCCL for GPUs, Gloo otherwise.
pub fn backend_for(device: Device) -> &'static str {
    match device {
        Device::Cuda(_) => "nccl",
        _ => "gloo",
    }
}

/// Sums sparse row gradients over ranks: every rank contributes (row ids, rows)
/// for the rows its batch touched; all ranks get the same union of row ids
/// (sorted) and the summed gradient of each.
pub fn all_reduce_rows(c: &dyn Collective, ids: &Tensor, grad: &Tensor) -> Result<(Tensor, Tensor), WorkerError> {
    let device = ids.device();
    let k = ids.size()[0];
    let counts = c.all_gather(&Tensor::from_slice(&[k]).to_device(device))?;
    let counts: Vec<i64> = Vec::<i64>::try_from(counts.to_device(Device::Cpu))
        .map_err(|e| WorkerError::Collective(format!("row counts: {e}")))?;
    let max = counts.iter().copied().max().unwrap_or(0);
    if max == 0 {
        return Ok((ids.shallow_clone(), grad.shallow_clone()));
    }
    let dim = grad.size()[1];
    let pad = max - k;
    let ids_p = Tensor::cat(&[ids.shallow_clone(), Tensor::zeros([pad], (Kind::Int64, device))], 0);
    let grad_p = Tensor::cat(&[grad.shallow_clone(), Tensor::zeros([pad, dim], (grad.kind(), device))], 0);
    let all_ids = c.all_gather(&ids_p)?;
    let all_grads = c.all_gather(&grad_p)?;
    let mut id_parts = Vec::new();
    let mut grad_parts = Vec::new();
    for (r, &n) in counts.iter().enumerate() {
        id_parts.push(all_ids.narrow(0, r as i64 * max, n));
        grad_parts.push(all_grads.narrow(0, r as i64 * max, n));
    }
    let ids_all = Tensor::cat(&id_parts, 0);
    let grads_all = Tensor::cat(&grad_parts, 0);
    let (uniq, inverse) = ids_all.internal_unique(true, true);
    let summed = Tensor::zeros([uniq.size()[0], dim], (grad.kind(), device)).index_add(0, &inverse, &grads_all);
    Ok((uniq, summed))
}
