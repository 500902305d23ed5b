//! Re-forming a job after a fault, over real gRPC: a worker of the failed
//! generation that has not spoken since is not placed again until it does.
//! A killed worker stays registered until its heartbeat timeout; placed in
//! the next generation, it would hold the live ranks in a rendezvous with a
//! dead host. In-process on 127.0.0.1:0; every wait is on an order or a job
//! event, never a fixed sleep.

use std::time::Duration;

use carto_common::proto::v1 as pb;
use carto_coordinator::coordinator::CoordinatorConfig;

mod common;
use common::*;

fn failure(rank: &FakeRank, message: &str) -> pb::ReportFailureRequest {
    pb::ReportFailureRequest {
        job_id: rank.assignment.job_id.clone(),
        generation: rank.assignment.generation,
        rank: rank.assignment.rank,
        message: message.into(),
        lease: rank.assignment.lease.clone(),
        ..Default::default()
    }
}

async fn workers_of(f: &mut Fixture, id: &str) -> Vec<String> {
    let j = f.jobs.get_job(pb::GetJobRequest { job_id: id.into() }).await.unwrap().into_inner();
    let mut w = j.workers;
    w.sort();
    w
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test]
async fn a_failed_generation_reforms_only_on_workers_heard_from_since() {
    // No worker times out during the test: only a call brings one back.
    let config = CoordinatorConfig {
        heartbeat_interval: Duration::from_millis(50),
        worker_timeout: Duration::from_secs(600),
        ..Default::default()
    };
    let (mut f, job) = Fixture::start_with(config, 2).await;
    let url = f.server.url();
    let (mut ca, mut cb) = (FakeRank::join(&url).await, FakeRank::join(&url).await);
    let ra = FakeRank::register(&mut ca).await;
    let rb = FakeRank::register(&mut cb).await;
    let (ia, ib) = ((ra.worker_id.clone(), ra.secret.clone()), (rb.worker_id.clone(), rb.secret.clone()));
    let (a, b) = tokio::join!(FakeRank::take_assignment(ca, ra), FakeRank::take_assignment(cb, rb));
    // Rank 0 (the rendezvous host) is killed: registered, silent.
    let ((silent, (silent_id, silent_secret)), (mut reporter, (reporter_id, _))) =
        if a.assignment.rank == 0 { ((a, ia), (b, ib)) } else { ((b, ib), (a, ia)) };
    let mut spare_client = FakeRank::join(&url).await;
    let spare = FakeRank::register(&mut spare_client).await;
    let spare_id = spare.worker_id.clone();

    // Rank 1 finds the collective broken: the job re-forms at once on the
    // reporter and the spare, without the silent worker.
    reporter.client.report_failure(failure(&reporter, "collective: connection reset by peer")).await.unwrap();
    let (mut reporter, spare) = tokio::join!(reporter.next_assignment(), FakeRank::take_assignment(spare_client, spare));
    assert_eq!((reporter.assignment.generation, spare.assignment.generation), (2, 2));
    assert_eq!(workers_of(&mut f, &job.id).await, sorted(vec![reporter_id.clone(), spare_id.clone()]));

    // Generation 2 fails the same way, its other rank silent too; the job
    // waits. The worker silent since generation 1 speaks at last: the
    // monitor places it, and generation 3 runs on the workers heard from.
    reporter.client.report_failure(failure(&reporter, "collective: connection reset by peer")).await.unwrap();
    let j = watch_until(&mut f.jobs, &job.id, |j| j.state == pb::JobState::Queued as i32).await;
    assert_eq!((j.generation, j.workers.len()), (2, 0));
    let mut hb = silent.client.clone();
    let beat = pb::HeartbeatRequest { worker_id: silent_id.clone(), worker_secret: silent_secret, progress: None };
    hb.heartbeat(beat).await.unwrap();
    let (reporter, silent) = tokio::join!(reporter.next_assignment(), silent.next_assignment());
    assert_eq!((reporter.assignment.generation, silent.assignment.generation), (3, 3));
    assert_eq!(workers_of(&mut f, &job.id).await, sorted(vec![reporter_id, silent_id]));
    let j = f.jobs.get_job(pb::GetJobRequest { job_id: job.id.clone() }).await.unwrap().into_inner();
    assert_eq!(j.state, pb::JobState::Running as i32);
    drop(spare);
    f.server.shutdown().await.unwrap();
}
