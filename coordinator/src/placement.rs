//! Where a shard is assigned: which free workers start which queued job.
//! A pure function of the free workers and the queue, so the policy is
//! tested without a coordinator, a clock or a network.
//!
//! Policy: jobs in submission order; a job starts when enough matching
//! workers are free (a CUDA job needs CUDA workers); a job that does not fit
//! lets smaller ones behind it start. A job re-forming after a lost rank
//! waits `rejoin_wait` for its full world, then goes on with the workers it
//! can have, as many as split its global batch evenly (the global batch,
//! and so the training, stays the same). It never shrinks while a rank of
//! its failed generation may still come back (held back until heard from,
//! or declared lost: see `WorkerRegistry::hold_back`). Workers beyond what
//! the queue needs stay free: spares that a re-forming job takes at once.

use std::time::Duration;

/// A worker with an open order stream and no assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreeWorker {
    pub id: String,
    pub cuda: bool,
}

/// A job waiting for workers.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedJob {
    pub id: String,
    /// Its world size.
    pub want: usize,
    pub cuda: bool,
    pub global_batch: usize,
    /// How long it has waited to be re-formed (None: never started).
    pub recovering_for: Option<Duration>,
    /// Ranks of its failed generation not heard from since the fault: not
    /// free, not yet lost either.
    pub awaiting: usize,
}

/// One job to start, with its workers by rank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub job: String,
    pub workers: Vec<String>,
}

/// The jobs that start now, and on which workers.
pub fn place(free: &[FreeWorker], queue: &[QueuedJob], rejoin_wait: Duration) -> Vec<Placement> {
    let mut taken = vec![false; free.len()];
    let mut placed = Vec::new();
    for job in queue {
        if job.want == 0 {
            continue;
        }
        let mut picks: Vec<usize> =
            (0..free.len()).filter(|&i| !taken[i] && (!job.cuda || free[i].cuda)).take(job.want).collect();
        if picks.len() < job.want {
            // Shrinking without a rank that is only slow to answer would
            // lose it for the rest of the job; its heartbeat timeout bounds the wait.
            let waited = job.awaiting == 0 && job.recovering_for.is_some_and(|w| w >= rejoin_wait);
            if !waited {
                continue;
            }
            let Some(world) = (1..=picks.len()).rev().find(|w| job.global_batch % w == 0) else { continue };
            picks.truncate(world);
        }
        for &i in &picks {
            taken[i] = true;
        }
        placed.push(Placement { job: job.id.clone(), workers: picks.iter().map(|&i| free[i].id.clone()).collect() });
    }
    placed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workers(n: usize, cuda: bool) -> Vec<FreeWorker> {
        (0..n).map(|i| FreeWorker { id: format!("w{i}"), cuda }).collect()
    }

    fn job(id: &str, want: usize) -> QueuedJob {
        QueuedJob { id: id.into(), want, cuda: false, global_batch: 64, recovering_for: None, awaiting: 0 }
    }

    const WAIT: Duration = Duration::from_secs(10);

    #[test]
    fn jobs_start_in_order_when_they_fit_and_smaller_ones_pass_a_big_one() {
        let placed = place(&workers(3, false), &[job("big", 4), job("a", 2), job("b", 1)], WAIT);
        assert_eq!(
            placed,
            vec![
                Placement { job: "a".into(), workers: vec!["w0".into(), "w1".into()] },
                Placement { job: "b".into(), workers: vec!["w2".into()] },
            ]
        );
        assert!(place(&[], &[job("a", 1)], WAIT).is_empty());
    }

    #[test]
    fn spares_stay_free_for_later() {
        let placed = place(&workers(5, false), &[job("a", 2)], WAIT);
        assert_eq!(placed.len(), 1);
        assert_eq!(placed[0].workers, vec!["w0", "w1"]);
    }

    #[test]
    fn a_reforming_job_waits_then_shrinks_to_a_world_that_splits_the_batch() {
        let mut j = job("a", 4);
        j.global_batch = 6;
        j.recovering_for = Some(Duration::from_secs(3));
        assert!(place(&workers(3, false), std::slice::from_ref(&j), WAIT).is_empty(), "still waiting for its full world");
        j.recovering_for = Some(WAIT);
        let placed = place(&workers(3, false), std::slice::from_ref(&j), WAIT);
        assert_eq!(placed[0].workers.len(), 3, "6 % 3 == 0");
        j.global_batch = 8;
        let placed = place(&workers(3, false), std::slice::from_ref(&j), WAIT);
        assert_eq!(placed[0].workers.len(), 2, "8 % 3 != 0: two ranks keep the batch even");
        // A rank of the failed generation not heard from yet: it waits on.
        j.awaiting = 1;
        assert!(place(&workers(3, false), std::slice::from_ref(&j), WAIT).is_empty(), "waits for the silent rank");
        let placed = place(&workers(4, false), std::slice::from_ref(&j), WAIT);
        assert_eq!(placed[0].workers.len(), 4, "but a full world goes at once, on spares");
        j.awaiting = 0;
        // A never-started job does not shrink, however long it waited.
        let mut fresh = job("b", 4);
        fresh.recovering_for = None;
        assert!(place(&workers(3, false), &[fresh], WAIT).is_empty());
    }

    #[test]
    fn cuda_jobs_take_only_cuda_workers() {
        let mut free = workers(2, false);
        free.push(FreeWorker { id: "g0".into(), cuda: true });
        let mut j = job("gpu", 1);
        j.cuda = true;
        let placed = place(&free, &[j.clone()], WAIT);
        assert_eq!(placed[0].workers, vec!["g0"]);
        j.want = 2;
        assert!(place(&free, &[j], WAIT).is_empty());
    }

    #[test]
    fn a_cancelled_job_is_not_in_the_queue_and_its_workers_go_to_the_next() {
        // The job manager builds the queue from queued jobs only: a job
        // cancelled while re-forming is simply absent.
        let placed = place(&workers(2, false), &[job("next", 2)], WAIT);
        assert_eq!(placed[0].job, "next");
    }
}
