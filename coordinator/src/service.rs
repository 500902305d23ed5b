//! The gRPC services: thin adapters from the wire to [`Coordinator`]. Errors
//! leave as typed statuses (INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION…)
//! carrying one readable line, never INTERNAL with debug text.

use std::pin::Pin;
use std::sync::Arc;

use carto_common::ipc;
use carto_common::proto::v1 as pb;
use carto_common::proto::v1::job_service_server::JobService;
use carto_common::proto::v1::worker_service_server::WorkerService;
use carto_common::proto::MAX_CHUNK_BYTES;
use carto_common::CartoError;
use futures::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info_span, Instrument};

use crate::coordinator::Coordinator;
use crate::locking::lock;

/// Chunks being staged at once, process-wide: one per core. Sixty-four ranks
/// reporting together would otherwise put 64 blocking threads on the cores
/// and starve the async threads that answer status calls (load test: p99
/// GetJob 112 ms at 64 ranks without it). Waiting ranks queue without CPU.
fn staging_slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    SLOTS.get_or_init(|| {
        tokio::sync::Semaphore::new(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
    })
}

type Rpc<T> = Result<Response<T>, Status>;

pub struct JobApi(pub Arc<Coordinator>);
pub struct WorkerApi(pub Arc<Coordinator>);

fn terminal(state: i32) -> bool {
    matches!(
        pb::JobState::try_from(state),
        Ok(pb::JobState::Succeeded | pb::JobState::Failed | pb::JobState::Cancelled)
    )
}

#[tonic::async_trait]
impl JobService for JobApi {
    async fn submit_job(&self, req: Request<pb::SubmitJobRequest>) -> Rpc<pb::SubmitJobResponse> {
        let spec = req.into_inner().spec.ok_or_else(|| Status::invalid_argument("spec is required"))?;
        // A remote caller learns what is wrong with its spec, never what a
        // file on the coordinator holds (its header, its cells).
        let job = self.0.submit(spec.into(), false).await.map_err(|e| {
            let status = Status::from(e);
            Status::new(status.code(), carto_common::error::redact_for_remote(status.message()))
        })?;
        Ok(Response::new(pb::SubmitJobResponse { job_id: job.id.clone(), job: Some(job) }))
    }

    async fn get_job(&self, req: Request<pb::GetJobRequest>) -> Rpc<pb::Job> {
        Ok(Response::new(self.0.get(&req.into_inner().job_id)?))
    }

    async fn list_jobs(&self, req: Request<pb::ListJobsRequest>) -> Rpc<pb::ListJobsResponse> {
        let req = req.into_inner();
        let (jobs, next_page_token) = self.0.list_page(req.page_size, &req.page_token)?;
        Ok(Response::new(pb::ListJobsResponse { jobs, next_page_token }))
    }

    type WatchJobStream = Pin<Box<dyn Stream<Item = Result<pb::JobEvent, Status>> + Send>>;

    async fn watch_job(&self, req: Request<pb::WatchJobRequest>) -> Rpc<Self::WatchJobStream> {
        let rx = self.0.watch(&req.into_inner().job_id)?;
        // Every change, then end after the first terminal snapshot.
        let stream = futures::stream::unfold((rx, false, true), |(mut rx, done, first)| async move {
            if done {
                return None;
            }
            if !first && rx.changed().await.is_err() {
                return None;
            }
            let job = rx.borrow_and_update().clone();
            let end = terminal(job.state);
            Some((Ok(pb::JobEvent { job: Some(job) }), (rx, end, false)))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn cancel_job(&self, req: Request<pb::CancelJobRequest>) -> Rpc<pb::Job> {
        Ok(Response::new(self.0.cancel(&req.into_inner().job_id)?))
    }

    async fn get_data_map(&self, req: Request<pb::GetDataMapRequest>) -> Rpc<pb::DataMap> {
        let req = req.into_inner();
        Ok(Response::new(self.0.data_map(&req.job_id, req.with_texts).await?))
    }
}

#[tonic::async_trait]
impl WorkerService for WorkerApi {
    async fn register(&self, req: Request<pb::RegisterRequest>) -> Rpc<pb::RegisterResponse> {
        Ok(Response::new(self.0.register(req.into_inner())?))
    }

    async fn heartbeat(&self, req: Request<pb::HeartbeatRequest>) -> Rpc<pb::HeartbeatResponse> {
        self.0.heartbeat(req.into_inner())?;
        Ok(Response::new(pb::HeartbeatResponse {}))
    }

    type OrdersStream = ReceiverStream<Result<pb::Order, Status>>;

    async fn orders(&self, req: Request<pb::OrdersRequest>) -> Rpc<Self::OrdersStream> {
        let req = req.into_inner();
        let rx = self.0.open_control(&req.worker_id, &req.worker_secret)?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn report_epoch(&self, req: Request<Streaming<pb::EpochChunk>>) -> Rpc<pb::ReportEpochResponse> {
        let mut stream = req.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty epoch report: no chunks"))?;
        let span = info_span!("report", job = %first.job_id, generation = first.generation, rank = first.rank, epoch = first.epoch);
        let rows = ingest_report(&self.0, first, &mut stream).instrument(span).await?;
        Ok(Response::new(pb::ReportEpochResponse { rows }))
    }

    async fn epoch_done(&self, req: Request<pb::EpochDoneRequest>) -> Rpc<pb::EpochDoneResponse> {
        // Committing may write the metrics, the data map and the report: off the async threads.
        let coord = self.0.clone();
        let req = req.into_inner();
        let (job_id, epoch) = (req.job_id.clone(), req.epoch);
        let stop = tokio::task::spawn_blocking(move || coord.epoch_done(req))
            .await
            .map_err(|e| Status::internal(format!("committing the epoch: {e}")))??;
        // An external loop's ranks are not kept in step by carto's
        // collectives: each rank's EpochDone returns once the epoch is
        // committed, so no rank reports the next epoch before every rank
        // finished this one.
        let stop = if stop { stop } else { self.0.wait_external_commit(&job_id, epoch).await? };
        Ok(Response::new(pb::EpochDoneResponse { stop }))
    }

    async fn join_external(&self, req: Request<pb::JoinExternalRequest>) -> Rpc<pb::Assignment> {
        Ok(Response::new(self.0.join_external(req.into_inner()).await?))
    }

    async fn finish_external(&self, req: Request<pb::FinishExternalRequest>) -> Rpc<pb::Job> {
        Ok(Response::new(self.0.finish_external(req.into_inner()).await?))
    }

    async fn report_failure(&self, req: Request<pb::ReportFailureRequest>) -> Rpc<pb::ReportFailureResponse> {
        self.0.report_failure(req.into_inner())?;
        Ok(Response::new(pb::ReportFailureResponse {}))
    }
}

/// Decodes, validates and stages one rank's epoch report, chunk by chunk.
/// Any bad chunk rejects the whole report and leaves the stage as before.
/// Every chunk, and the stream's end, is checked against the job's current
/// generation and the rank's lease: a stream that outlives its generation
/// stops there, and touches nothing of the next one.
async fn ingest_report(
    coord: &Coordinator,
    first: pb::EpochChunk,
    stream: &mut Streaming<pb::EpochChunk>,
) -> Result<u64, Status> {
    let (job_id, generation, rank, epoch) = (first.job_id.clone(), first.generation, first.rank, first.epoch);
    let lease = first.lease.clone();
    let agg = coord.running(&job_id, generation, rank, &lease)?;
    let writer = lock(&agg).begin_report(epoch, rank, generation)?;
    let report = writer.id();
    // Decoding, validating, staging and writing the partition are CPU and
    // disk work: they run on the blocking pool, so the async threads keep
    // answering status calls while a large job's ranks report.
    let mut writer = Some(writer);
    let mut next = Some(first);
    let mut index = 0usize;
    let outcome: Result<(), Status> = async {
        while let Some(chunk) = next.take() {
            let what = format!("rank {rank} epoch {epoch} chunk {index}");
            if (chunk.job_id.as_str(), chunk.generation, chunk.rank, chunk.epoch, chunk.lease.as_str())
                != (job_id.as_str(), generation, rank, epoch, lease.as_str())
            {
                return Err(CartoError::invalid(format!("{what}: header differs from the report's first chunk")).into());
            }
            coord.running(&job_id, generation, rank, &lease)?;
            if chunk.arrow_ipc.len() > MAX_CHUNK_BYTES {
                return Err(Status::out_of_range(format!(
                    "{what}: {} bytes exceeds the {MAX_CHUNK_BYTES}-byte chunk limit",
                    chunk.arrow_ipc.len()
                )));
            }
            let (agg, mut w) = (agg.clone(), writer.take().expect("writer between chunks"));
            let slot = staging_slots().acquire().await.map_err(|_| Status::unavailable("shutting down"))?;
            let (w, result) = tokio::task::spawn_blocking(move || {
                let _slot = slot;
                let result = (|| -> Result<(), CartoError> {
                    for batch in ipc::decode_chunk(&chunk.arrow_ipc, &what)? {
                        // External loops send logits; the statistics are computed here.
                        let batch = if carto_common::logits::is_logits_batch(&batch) {
                            let k = lock(&agg).num_classes();
                            carto_common::logits::to_dynamics(&batch, k, &what)?
                        } else {
                            batch
                        };
                        let batch = crate::aggregator::conform(&batch, &what)?;
                        lock(&agg).ingest(&w, &batch, &what)?;
                        w.write(&batch)?;
                    }
                    Ok(())
                })();
                (w, result)
            })
            .await
            .map_err(|e| {
                coord.internal_fault(&job_id, generation, format!("rank {rank} epoch {epoch}: staging a chunk failed: {e}"));
                Status::internal("staging a chunk failed; the job's generation is re-formed")
            })?;
            writer = Some(w);
            result?;
            index += 1;
            next = stream.message().await?;
        }
        Ok(())
    }
    .await;
    // Closing the part (encoding, fsync) and unstaging a failed report (a
    // pass over every sample) are slow too: blocking pool, and the part is
    // closed before the lock is taken.
    match (outcome, writer) {
        (Ok(()), Some(mut writer)) => {
            if let Err(e) = coord.running(&job_id, generation, rank, &lease) {
                drop(writer);
                let _ = tokio::task::spawn_blocking(move || lock(&agg).abort_report(report)).await;
                return Err(e.into());
            }
            let rows = tokio::task::spawn_blocking(move || -> Result<u64, CartoError> {
                // A report that cannot be closed is taken back whole, so the
                // rank may report again.
                let finished = writer.finish().and_then(|()| lock(&agg).finish_report(writer));
                if finished.is_err() {
                    let _ = lock(&agg).abort_report(report);
                }
                finished
            })
            .await
            .map_err(|e| Status::internal(format!("finishing a report: {e}")))??;
            debug!(rows, chunks = index, "report staged");
            Ok(rows)
        }
        (outcome, writer) => {
            drop(writer);
            let _ = tokio::task::spawn_blocking(move || lock(&agg).abort_report(report)).await;
            Err(outcome.err().unwrap_or_else(|| Status::internal("the report's writer was lost")))
        }
    }
}
