//! The coordinator's gRPC services in-process on 127.0.0.1:0, driven by real
//! tonic clients that speak the worker protocol: assignment, shard plans,
//! merging, and the rejection of every kind of bad report with the proper
//! status code and no change of state.

use arrow::array::{Array, Float64Array, Int32Array, Int64Array};
use carto_common::dynamics::DynamicsColumns;
use carto_common::ipc;
use carto_common::metrics::{RowStats, SampleAccumulators};
use carto_common::proto::v1 as pb;
use carto_common::proto::v1::job_service_client::JobServiceClient;
use carto_common::proto::v1::worker_service_client::WorkerServiceClient;
use carto_common::proto::PROTOCOL_VERSION;
use carto_coordinator::coordinator::{Coordinator, CoordinatorConfig};
use carto_coordinator::server::Embedded;
use tonic::transport::Channel;
use tonic::Code;

mod common;
use common::*;

#[tokio::test]
async fn a_job_is_assigned_merged_and_written() {
    let (mut f, job) = Fixture::start(1).await;
    assert_eq!(job.state, pb::JobState::Queued as i32);
    assert_eq!(job.num_samples, ROWS as u64);
    let mut rank = FakeRank::assigned(FakeRank::join(&f.server.url()).await).await;
    assert_eq!((rank.assignment.rank, rank.assignment.world_size, rank.assignment.num_classes), (0, 1, 2));
    let running = wait_state(&mut f.jobs, &job.id, pb::JobState::Running).await;
    assert_eq!(running.generation, 1);

    let mut events = f.jobs.watch_job(pb::WatchJobRequest { job_id: job.id.clone() }).await.unwrap().into_inner();
    for epoch in 0..2 {
        let samples = my_samples(&rank, epoch);
        let rows = rows_for(&samples, epoch);
        // Three chunks, to exercise the stream.
        let chunks = vec![
            rank.chunk(epoch, ipc::encode_batch(&rows.slice_to_batch(0, 10)).unwrap()),
            rank.chunk(epoch, ipc::encode_batch(&rows.slice_to_batch(10, 25)).unwrap()),
            rank.chunk(epoch, ipc::encode_batch(&rows.slice_to_batch(25, ROWS)).unwrap()),
        ];
        assert_eq!(rank.report(chunks).await.unwrap(), ROWS as u64);
        let stop = rank.done(epoch, ROWS as u64).await.unwrap();
        assert_eq!(stop, epoch == 1, "the last epoch ends the job");
    }
    let mut last = None;
    while let Some(ev) = events.message().await.unwrap() {
        last = ev.job;
    }
    let last = last.unwrap();
    assert_eq!(last.state, pb::JobState::Succeeded as i32, "{}", last.error);
    assert_eq!(last.epochs.len(), 2);
    assert!((last.epochs[0].loss - 0.5).abs() < 1e-12);

    // The metrics are exactly those of the rows sent.
    let mut acc = SampleAccumulators::new(ROWS);
    for epoch in 0..2 {
        for s in 0..ROWS {
            let r = RowStats::from_logits(&logits(s, epoch), label(s) as usize);
            acc.observe(s, epoch, r.gold_prob, r.correct, r.margin, r.el2n).unwrap();
        }
    }
    let m = read(&f.out.join("metrics.parquet"));
    let conf = m.column_by_name("confidence").unwrap().as_any().downcast_ref::<Float64Array>().unwrap();
    let var = m.column_by_name("variability").unwrap().as_any().downcast_ref::<Float64Array>().unwrap();
    let aum = m.column_by_name("aum").unwrap().as_any().downcast_ref::<Float64Array>().unwrap();
    let fl = m.column_by_name("first_learned_epoch").unwrap().as_any().downcast_ref::<Int32Array>().unwrap();
    for s in 0..ROWS {
        let want = acc.metrics(s).unwrap();
        assert_eq!(conf.value(s), want.confidence);
        assert_eq!(var.value(s), want.variability);
        assert_eq!(aum.value(s), want.aum);
        assert_eq!(fl.is_null(s), want.first_learned_epoch.is_none());
    }
    let part = read(&f.out.join("dynamics/epoch=1/part-0.parquet"));
    assert_eq!(part.num_rows(), ROWS);
    let job_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(f.out.join("job.json")).unwrap()).unwrap();
    assert_eq!(job_json["state"], "succeeded");
    f.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_reports_are_rejected_with_their_code_and_change_nothing() {
    let (mut f, job) = Fixture::start(2).await;
    let url = f.server.url();
    let (a, b) = tokio::join!(
        async { FakeRank::assigned(FakeRank::join(&url).await).await },
        async { FakeRank::assigned(FakeRank::join(&url).await).await }
    );
    let (mut r0, mut r1) = if a.assignment.rank == 0 { (a, b) } else { (b, a) };
    assert_eq!((r0.assignment.world_size, r1.assignment.rank), (2, 1));
    let mine = my_samples(&r0, 0);
    let theirs = my_samples(&r1, 0);
    assert_eq!(mine.len() + theirs.len(), ROWS);
    let good = rows_for(&mine, 0);

    let batch_with = |edit: &dyn Fn(&mut DynamicsColumns)| {
        let mut c = good.clone();
        edit(&mut c);
        ipc::encode_batch(&c.to_batch()).unwrap()
    };
    let cases: Vec<(&str, Vec<pb::EpochChunk>, Code)> = vec![
        ("another rank's sample", vec![r0.chunk(0, batch_with(&|c| c.sample_id[0] = theirs[0] as i64))], Code::InvalidArgument),
        ("sample outside the dataset", vec![r0.chunk(0, batch_with(&|c| c.sample_id[0] = 999))], Code::InvalidArgument),
        ("duplicate sample", vec![r0.chunk(0, batch_with(&|c| c.sample_id[1] = c.sample_id[0]))], Code::InvalidArgument),
        ("duplicate across chunks", vec![r0.chunk(0, batch_with(&|_| ())), r0.chunk(0, batch_with(&|_| ()))], Code::InvalidArgument),
        ("NaN margin", vec![r0.chunk(0, batch_with(&|c| c.margin[2] = f64::NAN))], Code::InvalidArgument),
        ("infinite loss", vec![r0.chunk(0, batch_with(&|c| c.loss[2] = f64::INFINITY))], Code::InvalidArgument),
        ("probability above 1", vec![r0.chunk(0, batch_with(&|c| c.gold_prob[0] = 1.5))], Code::InvalidArgument),
        ("wrong label", vec![r0.chunk(0, batch_with(&|c| c.label[0] = 1 - c.label[0]))], Code::InvalidArgument),
        ("correct disagrees with pred", vec![r0.chunk(0, batch_with(&|c| c.correct[0] = !c.correct[0]))], Code::InvalidArgument),
        ("not arrow", vec![r0.chunk(0, b"garbage".to_vec())], Code::InvalidArgument),
        ("wrong schema", vec![r0.chunk(0, ipc::encode_batch(&good.to_batch().project(&[0, 1, 2]).unwrap()).unwrap())], Code::InvalidArgument),
        ("oversized chunk", vec![r0.chunk(0, vec![0u8; 3 * 1024 * 1024])], Code::OutOfRange),
        ("wrong epoch", vec![r0.chunk(1, batch_with(&|_| ()))], Code::FailedPrecondition),
        ("stale generation", vec![pb::EpochChunk { generation: 0, ..r0.chunk(0, batch_with(&|_| ())) }], Code::FailedPrecondition),
        ("unknown job", vec![pb::EpochChunk { job_id: "job-nope".into(), ..r0.chunk(0, batch_with(&|_| ())) }], Code::NotFound),
        ("rank outside the world", vec![pb::EpochChunk { rank: 5, ..r0.chunk(0, batch_with(&|_| ())) }], Code::InvalidArgument),
    ];
    for (what, chunks, code) in cases {
        let err = r0.report(chunks).await.expect_err(what);
        assert_eq!(err.code(), code, "{what}: {}", err.message());
        assert!(!err.message().is_empty() && !err.message().contains("panicked"), "{what}: {}", err.message());
    }
    // Nothing staged: finishing now is refused (no rows arrived)…
    let err = r0.done(0, mine.len() as u64).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(!f.out.join("dynamics/epoch=0/part-0.parquet").exists());
    assert!(!f.out.join("dynamics/.epoch=0.pending/.part-0.parquet.inprogress").exists());
    assert!(!f.out.join("dynamics/.epoch=0.pending/part-0.parquet").exists());

    // …and the correct reports still go through and commit the epoch.
    assert_eq!(r0.report(vec![r0.chunk(0, ipc::encode_batch(&good.to_batch()).unwrap())]).await.unwrap(), mine.len() as u64);
    let err = r0.report(vec![r0.chunk(0, ipc::encode_batch(&good.to_batch()).unwrap())]).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "a second report of the same epoch: {}", err.message());
    assert!(!r0.done(0, mine.len() as u64).await.unwrap());
    let theirs_rows = rows_for(&theirs, 0);
    assert_eq!(r1.report(vec![r1.chunk(0, ipc::encode_batch(&theirs_rows.to_batch()).unwrap())]).await.unwrap(), theirs.len() as u64);
    assert!(!r1.done(0, theirs.len() as u64).await.unwrap());
    let j = f.jobs.get_job(pb::GetJobRequest { job_id: job.id.clone() }).await.unwrap().into_inner();
    assert_eq!(j.epochs.len(), 1, "epoch 0 committed once");
    assert_eq!(j.epochs[0].samples, ROWS as u64);
    let part = read(&f.out.join("dynamics/epoch=0/part-0.parquet"));
    let ids = part.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
    assert_eq!(ids.len(), mine.len());
    f.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn jobs_are_listed_cancelled_and_unknown_ones_are_not_found() {
    let (mut f, job) = Fixture::start(4).await;
    let list = f.jobs.list_jobs(pb::ListJobsRequest::default()).await.unwrap().into_inner();
    assert_eq!(list.jobs.len(), 1);
    assert_eq!(list.jobs[0].state, pb::JobState::Queued as i32, "no workers yet");
    let err = f.jobs.get_job(pb::GetJobRequest { job_id: "job-nope".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let bad = pb::JobSpec { data: "/nope.csv".into(), label_col: "l".into(), text_col: "t".into(), out: "/tmp/x".into(), ..Default::default() };
    let err = f.jobs.submit_job(pb::SubmitJobRequest { spec: Some(bad) }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("/nope.csv"), "{}", err.message());
    let cancelled = f.jobs.cancel_job(pb::CancelJobRequest { job_id: job.id.clone() }).await.unwrap().into_inner();
    assert_eq!(cancelled.state, pb::JobState::Cancelled as i32);
    let err = f.jobs.cancel_job(pb::CancelJobRequest { job_id: job.id.clone() }).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    f.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn health_and_reflection_answer_on_the_same_port() {
    let (f, _job) = Fixture::start(1).await;
    let channel = Channel::from_shared(f.server.url()).unwrap().connect().await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let resp = health
        .check(tonic_health::pb::HealthCheckRequest { service: "carto.v1.JobService".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let mut refl = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest { host: String::new(), message_request: Some(MessageRequest::ListServices(String::new())) };
    let mut stream = refl.server_reflection_info(tokio_stream::iter(vec![req])).await.unwrap().into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else { panic!("{resp:?}") };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in ["carto.v1.JobService", "carto.v1.WorkerService", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }
    f.server.shutdown().await.unwrap();
}

#[tokio::test]
async fn with_a_token_only_the_health_check_is_open() {
    use carto_coordinator::server::Security;
    let coord = Coordinator::new(CoordinatorConfig::default());
    let security = Security { user_token: Some("u".into()), worker_token: Some("w".into()), tls: None };
    let server = Embedded::start_with(coord, "127.0.0.1:0", security).await.unwrap();
    let channel = Channel::from_shared(server.url()).unwrap().connect().await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.expect("health needs no token");

    let mut jobs = JobServiceClient::new(channel.clone());
    let err = jobs.list_jobs(pb::ListJobsRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let mut workers = WorkerServiceClient::new(channel.clone());
    let err = workers.register(pb::RegisterRequest { protocol_version: PROTOCOL_VERSION, ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let req = || ServerReflectionRequest { host: String::new(), message_request: Some(MessageRequest::ListServices(String::new())) };
    let mut refl = ServerReflectionClient::new(channel.clone());
    let err = refl.server_reflection_info(tokio_stream::iter(vec![req()])).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    // The right tokens open the right services, and only those.
    let with = |t: &'static str| {
        move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
            Ok(r)
        }
    };
    let mut jobs = JobServiceClient::with_interceptor(channel.clone(), with("u"));
    jobs.list_jobs(pb::ListJobsRequest::default()).await.expect("user token opens JobService");
    let mut jobs_w = JobServiceClient::with_interceptor(channel.clone(), with("w"));
    assert_eq!(jobs_w.list_jobs(pb::ListJobsRequest::default()).await.unwrap_err().code(), Code::Unauthenticated);
    let mut workers = WorkerServiceClient::with_interceptor(channel.clone(), with("w"));
    workers
        .register(pb::RegisterRequest { protocol_version: PROTOCOL_VERSION, ..Default::default() })
        .await
        .expect("worker token opens WorkerService");
    server.shutdown().await.unwrap();
}
