//! The worker registry: registration, heartbeats, order streams and leases.
//!
//! Each registration gets a fresh secret that the worker's later calls
//! (Heartbeat, Orders) must carry, and each assignment a lease (job,
//! generation, rank and a secret) that every report for that rank must
//! carry: holding the worker token lets a process join as a worker, not act
//! for another worker's rank.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use carto_common::proto::v1 as pb;
use carto_common::proto::{MAX_CHUNK_BYTES, PROTOCOL_VERSION};
use carto_common::{CartoError, Result};
use tokio::sync::mpsc;
use tonic::Status;
use tracing::{info, warn};

use crate::auth::constant_time_eq;
use crate::effects::Effect;
use crate::placement::FreeWorker;

/// The device an external training loop's ranks register with.
pub const EXTERNAL_DEVICE: &str = "external";

pub type ControlSender = mpsc::Sender<std::result::Result<pb::Order, Status>>;
pub type ControlReceiver = mpsc::Receiver<std::result::Result<pb::Order, Status>>;

/// 244 random bits from the OS, as 64 hex characters.
pub fn new_secret() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

/// A short random id with a prefix (`job-…`, `w-…`).
pub fn short_id(prefix: &str) -> String {
    let u = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &u[..10])
}

/// What a worker holds while assigned: every report for its rank carries `secret`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub job_id: String,
    pub generation: u64,
    pub rank: u32,
    pub secret: String,
}

#[derive(Debug)]
pub struct Worker {
    pub id: String,
    secret: String,
    pub hostname: String,
    pub devices: Vec<String>,
    pub advertise_host: String,
    pub rendezvous_port: u32,
    last_seen: Instant,
    control: Option<ControlSender>,
    pub lease: Option<Lease>,
    /// It was a rank of a generation that failed and has not called since:
    /// it may be what failed, so it is not placed until it is heard from.
    held_back: bool,
}

impl Worker {
    pub fn has_cuda(&self) -> bool {
        self.devices.iter().any(|d| d.starts_with("cuda"))
    }

    /// A rank of the user's own training loop (registered with device
    /// "external"): it joins its job, and is never assigned carto's.
    pub fn is_external(&self) -> bool {
        self.devices.iter().any(|d| d == EXTERNAL_DEVICE)
    }

    fn stream_open(&self) -> bool {
        self.control.as_ref().is_some_and(|c| !c.is_closed())
    }
}

/// A worker that stopped heartbeating or closed its order stream.
#[derive(Debug)]
pub struct LostWorker {
    pub id: String,
    pub hostname: String,
    pub lease: Option<Lease>,
}

#[derive(Debug, Default)]
pub struct WorkerRegistry {
    workers: BTreeMap<String, Worker>,
}

impl WorkerRegistry {
    pub fn register(&mut self, req: pb::RegisterRequest, heartbeat_interval: Duration) -> Result<pb::RegisterResponse> {
        if req.protocol_version != PROTOCOL_VERSION {
            return Err(CartoError::FailedPrecondition(format!(
                "worker speaks protocol {}, this coordinator {}: use the same carto version",
                req.protocol_version, PROTOCOL_VERSION
            )));
        }
        if req.hostname.len() > 255 || req.advertise_host.len() > 255 || req.devices.len() > 64 {
            return Err(CartoError::invalid("Register: hostname, advertise_host or devices too long"));
        }
        let id = short_id("w");
        let secret = new_secret();
        info!(worker = %id, host = %req.hostname, devices = ?req.devices, "worker registered");
        self.workers.insert(
            id.clone(),
            Worker {
                id: id.clone(),
                secret: secret.clone(),
                advertise_host: if req.advertise_host.is_empty() { req.hostname.clone() } else { req.advertise_host },
                rendezvous_port: req.rendezvous_port,
                hostname: req.hostname,
                devices: req.devices,
                last_seen: Instant::now(),
                control: None,
                lease: None,
                held_back: false,
            },
        );
        Ok(pb::RegisterResponse {
            worker_id: id,
            heartbeat_interval_ms: heartbeat_interval.as_millis() as u32,
            max_chunk_bytes: MAX_CHUNK_BYTES as u32,
            worker_secret: secret,
        })
    }

    /// Checks that `secret` is worker `id`'s.
    pub fn authenticate(&mut self, id: &str, secret: &str) -> Result<()> {
        self.authenticated(id, secret).map(|_| ())
    }

    /// The worker `id`, if `secret` is the one it was given at registration.
    fn authenticated(&mut self, id: &str, secret: &str) -> Result<&mut Worker> {
        let w = self
            .workers
            .get_mut(id)
            .ok_or_else(|| CartoError::NotFound(format!("no worker '{id}': register again")))?;
        if !constant_time_eq(w.secret.as_bytes(), secret.as_bytes()) {
            return Err(CartoError::Unauthenticated(format!("worker '{id}': wrong worker secret")));
        }
        if w.held_back {
            // A call after the fault: the process is alive, whatever failed.
            w.held_back = false;
            info!(worker = %id, "worker heard from after a fault: placeable again");
        }
        Ok(w)
    }

    /// Holds worker `id` back from placement until it calls again (see
    /// [`WorkerRegistry::authenticate`]): it was a rank of a generation that
    /// just failed, and a worker killed without a word is still registered
    /// until its heartbeat timeout. Returns whether it is registered.
    pub fn hold_back(&mut self, id: &str) -> bool {
        match self.workers.get_mut(id) {
            Some(w) => {
                w.held_back = true;
                true
            }
            None => false,
        }
    }

    /// Whether worker `id` is registered and held back since a fault.
    pub fn is_held_back(&self, id: &str) -> bool {
        self.workers.get(id).is_some_and(|w| w.held_back)
    }

    /// Opens the worker's order stream. A second stream while the first is
    /// open is refused: one worker, one stream.
    pub fn open_orders(&mut self, id: &str, secret: &str, tx: ControlSender) -> Result<()> {
        let w = self.authenticated(id, secret)?;
        if w.stream_open() {
            return Err(CartoError::FailedPrecondition(format!("worker '{id}' already has an open order stream")));
        }
        w.control = Some(tx);
        w.last_seen = Instant::now();
        Ok(())
    }

    /// A heartbeat: returns the worker's lease, if assigned.
    pub fn heartbeat(&mut self, id: &str, secret: &str) -> Result<Option<Lease>> {
        let w = self.authenticated(id, secret)?;
        w.last_seen = Instant::now();
        Ok(w.lease.clone())
    }

    pub fn get(&self, id: &str) -> Option<&Worker> {
        self.workers.get(id)
    }

    /// Workers that can take an assignment now, in a stable order.
    pub fn free(&self) -> Vec<FreeWorker> {
        self.workers
            .values()
            .filter(|w| w.lease.is_none() && !w.held_back && w.stream_open() && !w.is_external())
            .map(|w| FreeWorker { id: w.id.clone(), cuda: w.has_cuda() })
            .collect()
    }

    /// Gives worker `id` the lease of (job, generation, rank); returns the lease's secret.
    pub fn lease(&mut self, id: &str, job_id: &str, generation: u64, rank: u32) -> Option<String> {
        let w = self.workers.get_mut(id)?;
        let secret = new_secret();
        w.lease = Some(Lease { job_id: job_id.into(), generation, rank, secret: secret.clone() });
        Some(secret)
    }

    /// Whether `secret` is the lease of (job, generation, rank) held by worker `id`.
    pub fn holds_lease(&self, id: &str, job_id: &str, generation: u64, rank: u32, secret: &str) -> bool {
        self.workers.get(id).and_then(|w| w.lease.as_ref()).is_some_and(|l| {
            l.job_id == job_id
                && l.generation == generation
                && l.rank == rank
                && constant_time_eq(l.secret.as_bytes(), secret.as_bytes())
        })
    }

    /// Ends worker `id`'s lease on `job_id`, if it holds one.
    pub fn release(&mut self, id: &str, job_id: &str) -> bool {
        match self.workers.get_mut(id) {
            Some(w) if w.lease.as_ref().is_some_and(|l| l.job_id == job_id) => {
                w.lease = None;
                true
            }
            _ => false,
        }
    }

    /// An order to worker `id`, to be sent once the state lock is released.
    pub fn order(&self, id: &str, kind: pb::order::Kind) -> Option<Effect> {
        let w = self.workers.get(id)?;
        let to = w.control.clone()?;
        Some(Effect::Send { worker: id.to_string(), to, order: kind })
    }

    /// Orders every unassigned worker to exit (`carto run` once no job is left).
    pub fn shutdown_free(&self, reason: &str) -> Vec<Effect> {
        let free: Vec<String> = self.workers.values().filter(|w| w.lease.is_none()).map(|w| w.id.clone()).collect();
        free.iter()
            .filter_map(|id| self.order(id, pb::order::Kind::Shutdown(pb::Shutdown { reason: reason.into() })))
            .collect()
    }

    /// Closes every order stream (server shutdown); with `exit`, each
    /// worker is first told to exit. Returns the orders to send.
    pub fn close_streams(&mut self, exit: Option<&str>) -> Vec<Effect> {
        let mut effects = Vec::new();
        for w in self.workers.values_mut() {
            if let (Some(reason), Some(to)) = (exit, w.control.clone()) {
                effects.push(Effect::Send {
                    worker: w.id.clone(),
                    to,
                    order: pb::order::Kind::Shutdown(pb::Shutdown { reason: reason.into() }),
                });
            }
            w.control = None;
        }
        effects
    }

    /// Removes and returns the workers silent for `timeout` or whose order stream closed.
    pub fn reap(&mut self, timeout: Duration) -> Vec<LostWorker> {
        let lost: Vec<String> = self
            .workers
            .values()
            .filter(|w| w.last_seen.elapsed() > timeout || w.control.as_ref().is_some_and(|c| c.is_closed()))
            .map(|w| w.id.clone())
            .collect();
        lost.into_iter()
            .filter_map(|id| self.workers.remove(&id))
            .map(|w| {
                match &w.lease {
                    None => info!(worker = %w.id, host = %w.hostname, "worker left"),
                    Some(l) => warn!(worker = %w.id, host = %w.hostname, job = %l.job_id, rank = l.rank, "worker lost"),
                }
                LostWorker { id: w.id, hostname: w.hostname, lease: w.lease }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(r: &mut WorkerRegistry) -> pb::RegisterResponse {
        r.register(
            pb::RegisterRequest { protocol_version: PROTOCOL_VERSION, hostname: "h".into(), devices: vec!["cpu".into()], ..Default::default() },
            Duration::from_millis(500),
        )
        .unwrap()
    }

    #[test]
    fn calls_must_carry_the_secret_of_the_registration() {
        let mut r = WorkerRegistry::default();
        let a = reg(&mut r);
        assert_eq!(a.worker_secret.len(), 64);
        assert!(r.heartbeat(&a.worker_id, &a.worker_secret).is_ok());
        assert!(matches!(r.heartbeat(&a.worker_id, "guess"), Err(CartoError::Unauthenticated(_))));
        assert!(matches!(r.heartbeat(&a.worker_id, ""), Err(CartoError::Unauthenticated(_))));
        assert!(matches!(r.heartbeat("w-nobody", &a.worker_secret), Err(CartoError::NotFound(_))));
        let (tx, _rx) = mpsc::channel(1);
        assert!(matches!(r.open_orders(&a.worker_id, "guess", tx), Err(CartoError::Unauthenticated(_))));
    }

    #[test]
    fn a_second_order_stream_is_refused_while_the_first_is_open() {
        let mut r = WorkerRegistry::default();
        let a = reg(&mut r);
        let (tx1, rx1) = mpsc::channel(1);
        r.open_orders(&a.worker_id, &a.worker_secret, tx1).unwrap();
        let (tx2, _rx2) = mpsc::channel(1);
        let err = r.open_orders(&a.worker_id, &a.worker_secret, tx2.clone()).unwrap_err();
        assert!(err.to_string().contains("already has an open order stream"), "{err}");
        drop(rx1);
        r.open_orders(&a.worker_id, &a.worker_secret, tx2).expect("the first stream closed: a new one opens");
    }

    #[test]
    fn leases_name_one_job_generation_and_rank() {
        let mut r = WorkerRegistry::default();
        let a = reg(&mut r);
        let (tx, _rx) = mpsc::channel(1);
        r.open_orders(&a.worker_id, &a.worker_secret, tx).unwrap();
        assert_eq!(r.free().len(), 1);
        let secret = r.lease(&a.worker_id, "job-1", 2, 0).unwrap();
        assert!(r.free().is_empty());
        assert!(r.holds_lease(&a.worker_id, "job-1", 2, 0, &secret));
        assert!(!r.holds_lease(&a.worker_id, "job-1", 1, 0, &secret), "another generation");
        assert!(!r.holds_lease(&a.worker_id, "job-1", 2, 1, &secret), "another rank");
        assert!(!r.holds_lease(&a.worker_id, "job-1", 2, 0, &a.worker_secret), "the worker secret is not a lease");
        assert!(!r.release(&a.worker_id, "job-2"));
        assert!(r.release(&a.worker_id, "job-1"));
        assert!(!r.holds_lease(&a.worker_id, "job-1", 2, 0, &secret));
    }

    #[test]
    fn silent_workers_and_closed_streams_are_reaped_with_their_lease() {
        let mut r = WorkerRegistry::default();
        let a = reg(&mut r);
        let b = reg(&mut r);
        let (tx, rx) = mpsc::channel(1);
        r.open_orders(&a.worker_id, &a.worker_secret, tx).unwrap();
        r.lease(&a.worker_id, "job-1", 1, 0).unwrap();
        drop(rx);
        let lost = r.reap(Duration::from_secs(60));
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].id, a.worker_id);
        assert_eq!(lost[0].lease.as_ref().unwrap().job_id, "job-1");
        assert!(r.get(&b.worker_id).is_some(), "b has no stream yet but is not silent");
        assert_eq!(r.reap(Duration::ZERO).len(), 1, "b silent past a zero timeout");
    }

    #[test]
    fn a_worker_held_back_after_a_fault_is_placeable_again_once_it_calls() {
        let mut r = WorkerRegistry::default();
        let a = reg(&mut r);
        let (tx, _rx) = mpsc::channel(1);
        r.open_orders(&a.worker_id, &a.worker_secret, tx).unwrap();
        assert!(r.hold_back(&a.worker_id));
        assert!(r.is_held_back(&a.worker_id));
        assert!(r.free().is_empty(), "registered and streaming, but not heard from since the fault");
        assert!(r.heartbeat(&a.worker_id, "guess").is_err());
        assert!(r.is_held_back(&a.worker_id), "a call without its secret proves nothing");
        r.heartbeat(&a.worker_id, &a.worker_secret).unwrap();
        assert!(!r.is_held_back(&a.worker_id));
        assert_eq!(r.free().len(), 1);
        assert!(!r.hold_back("w-nobody"), "a lost worker is not held, it is gone");
    }
}
