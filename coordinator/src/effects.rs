//! What a state transition asks the world to do: send orders, write a job
//! record, tell watchers, remove directories, reset an aggregator. The
//! job manager and the worker registry return these instead of doing them,
//! so the state lock is never held across file I/O; the [`Executor`] carries
//! them out afterwards, one batch at a time in the order the transitions
//! happened (so a job's record on disk never goes back in time, and an
//! assignment never overtakes the abort of the generation before it).

use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};

use carto_common::proto::v1 as pb;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::warn;

use crate::aggregator::Aggregator;
use crate::locking::{assert_no_state_lock, lock};
use crate::record::JobRecord;
use crate::registry::ControlSender;

// An Assignment order is large; effects are moved once, never stored in bulk.
#[allow(clippy::large_enum_variant)]
pub enum Effect {
    /// An order on a worker's stream.
    Send { worker: String, to: ControlSender, order: pb::order::Kind },
    /// `job.json`, to each path.
    WriteRecord { record: Box<JobRecord>, paths: Vec<PathBuf> },
    /// A new snapshot for the job's watchers (after its record is written).
    Notify { watch: watch::Sender<pb::Job>, job: Box<pb::Job> },
    RemoveDir(PathBuf),
    /// Drops the unfinished epoch's stage of a generation that ended.
    DiscardStage { aggregator: Arc<Mutex<Aggregator>>, generation: u64 },
    /// Opens the stage of a new generation's first epoch.
    BeginGeneration { aggregator: Arc<Mutex<Aggregator>>, world: u32, epoch: u32, generation: u64 },
}

impl std::fmt::Debug for Effect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Effect::Send { worker, order, .. } => write!(f, "Send({worker}, {order:?})"),
            Effect::WriteRecord { record, paths } => write!(f, "WriteRecord({}, {:?}, {paths:?})", record.id, record.state),
            Effect::Notify { job, .. } => write!(f, "Notify({}, state {})", job.id, job.state),
            Effect::RemoveDir(p) => write!(f, "RemoveDir({})", p.display()),
            Effect::DiscardStage { generation, .. } => write!(f, "DiscardStage(generation {generation})"),
            Effect::BeginGeneration { world, epoch, generation, .. } => {
                write!(f, "BeginGeneration(world {world}, epoch {epoch}, generation {generation})")
            }
        }
    }
}

/// Effects of one or more transitions, in order.
#[derive(Debug, Default)]
#[must_use = "effects must be handed to the executor"]
pub struct Effects(pub Vec<Effect>);

impl Effects {
    pub fn push(&mut self, e: Effect) {
        self.0.push(e);
    }
    pub fn push_opt(&mut self, e: Option<Effect>) {
        self.0.extend(e);
    }
    pub fn extend(&mut self, other: Effects) {
        self.0.extend(other.0);
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<Effect>> for Effects {
    fn from(v: Vec<Effect>) -> Self {
        Effects(v)
    }
}

struct Batch {
    effects: Effects,
    done: Option<oneshot::Sender<()>>,
}

/// Carries out effect batches on one thread, in submission order.
pub struct Executor {
    queue: Mutex<std_mpsc::Sender<Batch>>,
}

/// A submitted batch; wait on it to know its effects were carried out.
pub struct Pending(Option<oneshot::Receiver<()>>);

impl Pending {
    /// Waits from async code.
    pub async fn done(self) {
        if let Some(rx) = self.0 {
            let _ = rx.await;
        }
    }
}

impl Executor {
    pub fn new() -> Executor {
        let (tx, rx) = std_mpsc::channel::<Batch>();
        std::thread::Builder::new()
            .name("carto-effects".into())
            .spawn(move || {
                while let Ok(batch) = rx.recv() {
                    for e in batch.effects.0 {
                        carry_out(e);
                    }
                    if let Some(done) = batch.done {
                        let _ = done.send(());
                    }
                }
            })
            .expect("spawning the effects thread");
        Executor { queue: Mutex::new(tx) }
    }

    /// Queues a batch. Call it while still holding the state lock, so batches
    /// queue in the order of the transitions that made them; the returned
    /// handle can be waited on after the lock is released.
    pub fn submit(&self, effects: Effects) -> Pending {
        if effects.is_empty() {
            return Pending(None);
        }
        let (done, rx) = oneshot::channel();
        if lock(&self.queue).send(Batch { effects, done: Some(done) }).is_err() {
            warn!("the effects thread is gone; effects dropped");
            return Pending(None);
        }
        Pending(Some(rx))
    }
}

impl Default for Executor {
    fn default() -> Self {
        Self::new()
    }
}

fn carry_out(e: Effect) {
    match e {
        Effect::Send { worker, to, order } => match to.try_send(Ok(pb::Order { kind: Some(order) })) {
            Ok(()) => {}
            // A worker that already left is reaped by the monitor.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(_)) => warn!(worker = %worker, "order stream full; order dropped"),
        },
        Effect::WriteRecord { record, paths } => {
            for path in paths {
                if let Err(e) = record.write(&path) {
                    warn!(job = %record.id, "writing {}: {e}", path.display());
                }
            }
        }
        Effect::Notify { watch, job } => {
            watch.send_replace(*job);
        }
        Effect::RemoveDir(dir) => {
            assert_no_state_lock("removing a directory");
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    warn!("removing {}: {e}", dir.display());
                }
            }
        }
        Effect::DiscardStage { aggregator, generation } => {
            assert_no_state_lock("discarding a stage");
            let mut agg = lock(&aggregator);
            // A later generation's stage is not this transition's to drop.
            if agg.current_generation().is_some_and(|g| g <= generation) {
                agg.discard_stage();
            }
        }
        Effect::BeginGeneration { aggregator, world, epoch, generation } => {
            let mut agg = lock(&aggregator);
            agg.set_world(world);
            agg.begin_epoch(epoch, generation);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notify(watch: &watch::Sender<pb::Job>, id: &str) -> Effect {
        Effect::Notify { watch: watch.clone(), job: Box::new(pb::Job { id: id.into(), ..Default::default() }) }
    }

    #[tokio::test]
    async fn batches_are_carried_out_in_submission_order() {
        let exec = Executor::new();
        let (watch, mut rx) = watch::channel(pb::Job::default());
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        std::fs::create_dir_all(gone.join("inner")).unwrap();
        let mut last = None;
        for i in 0..50 {
            last = Some(exec.submit(Effects(vec![notify(&watch, &format!("j{i}"))])));
        }
        let removed = exec.submit(Effects(vec![Effect::RemoveDir(gone.clone()), notify(&watch, "after-remove")]));
        last.unwrap().done().await;
        removed.done().await;
        assert_eq!(rx.borrow_and_update().id, "after-remove", "the last batch submitted is the last carried out");
        assert!(!gone.exists());
        // An empty batch completes at once.
        exec.submit(Effects::default()).done().await;
    }

    #[tokio::test]
    async fn orders_reach_the_stream_and_a_closed_stream_is_no_error() {
        let exec = Executor::new();
        let (to, mut rx) = mpsc::channel(1);
        let order = pb::order::Kind::Shutdown(pb::Shutdown { reason: "done".into() });
        exec.submit(Effects(vec![Effect::Send { worker: "w".into(), to: to.clone(), order: order.clone() }])).done().await;
        let got = rx.recv().await.unwrap().unwrap();
        assert!(matches!(got.kind, Some(pb::order::Kind::Shutdown(_))));
        drop(rx);
        exec.submit(Effects(vec![Effect::Send { worker: "w".into(), to, order }])).done().await;
    }
}
