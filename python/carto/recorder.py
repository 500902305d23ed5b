"""`Recorder`: records the per-sample logits of your own training loop and
has a carto coordinator turn them into a data map."""

from __future__ import annotations

import atexit
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Sequence, Union

import grpc

from ._client import PROTOCOL_VERSION, Client, GrpcTransport, Lease, rpc_error
from ._embedded import EmbeddedCoordinator
from ._proto import carto_pb2 as pb
from ._sender import EpochStats, Sender
from ._validate import BatchError, prepare
from .errors import CartoError, CoordinatorError, JobAborted, JobFailed
from .metrics import read_metrics

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class RecordResult:
    """What `Recorder.finish` returns."""

    out: Path
    job_id: str
    state: str                 # succeeded | failed | cancelled | ...
    epochs: int                # epochs the coordinator committed
    job: Any = field(repr=False, default=None)  # the final carto.v1.Job message

    def metrics(self) -> Any:
        """OUT/metrics.parquet as a polars (else pandas) DataFrame."""
        return read_metrics(self.out)


def state_name(state: int) -> str:
    return pb.JobState.Name(state).removeprefix("JOB_STATE_").lower()


def _distributed() -> Any:
    """torch.distributed when a process group is initialised, else None."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return None
    if dist.is_available() and dist.is_initialized():
        return dist
    return None


class Recorder:
    """Records `(ids, logits, labels)` of every training batch, one epoch at a
    time, and streams them to a carto coordinator.

    With no `coordinator`, starts an embedded one (the `carto` binary from
    $CARTO_BIN or PATH) and submits an external job; under torchrun rank 0
    hosts it and the other ranks join. With `coordinator=URL` and `job=ID`,
    joins a job a user submitted with `trainer = "external"`; with
    `coordinator=URL` alone, submits one there.
    """

    def __init__(
        self,
        out: PathLike,
        num_samples: int,
        num_classes: int,
        *,
        coordinator: Optional[str] = None,
        job: Optional[str] = None,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
        token: Optional[str] = None,
        label_names: Optional[Sequence[str]] = None,
        data: Optional[PathLike] = None,
        name: Optional[str] = None,
        epochs: Optional[int] = None,
        queue_size: int = 8,
        carto_bin: Optional[str] = None,
    ) -> None:
        if int(num_samples) <= 0:
            raise ValueError(f"num_samples must be positive, got {num_samples}")
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        if label_names is not None and len(label_names) != num_classes:
            raise ValueError(f"label_names has {len(label_names)} names for num_classes = {num_classes}")
        if job is not None and coordinator is None:
            raise ValueError("job= names a job on a coordinator: pass coordinator=URL too")
        self.out = Path(out).absolute()
        self.num_samples = int(num_samples)
        self.num_classes = int(num_classes)
        self._dist = _distributed()
        self.rank = int(rank) if rank is not None else (self._dist.get_rank() if self._dist else 0)
        self.world_size = int(world_size) if world_size is not None else (self._dist.get_world_size() if self._dist else 1)
        if not (0 <= self.rank < self.world_size):
            raise ValueError(f"rank {self.rank} is outside world_size {self.world_size}")

        # Under torchrun without a coordinator, rank 0 hosts an embedded one for every rank.
        self._shared_embedded = self._dist is not None and self.world_size > 1 and coordinator is None
        self.embedded: Optional[EmbeddedCoordinator] = None
        self.client: Optional[Client] = None
        self.job_id: Optional[str] = job
        self.lease: Optional[Lease] = None
        self._sender: Optional[Sender] = None
        self._closing = threading.Event()
        self._closed = False
        self._finished = False
        self._aborted: Optional[str] = None
        self._stopped: Optional[str] = None
        self._orders_call: Any = None
        self._threads: List[threading.Thread] = []
        self._epoch = 0
        self._batch = 0
        self._rows = 0
        self._epoch_started: Optional[float] = None
        self._poisoned: Optional[BatchError] = None
        self._epochs_done = 0
        atexit.register(self.close)
        spec = pb.JobSpec(
            trainer="external",
            out=str(self.out),
            num_samples=self.num_samples,
            num_classes=self.num_classes,
            label_names=list(label_names or []),
            world_size=self.world_size,
            data=str(Path(data).absolute()) if data is not None else "",
            name=name or "",
        )
        if epochs is not None:
            spec.epochs = int(epochs)
        try:
            url, token = self._coordinator(coordinator, token, spec, carto_bin)
            if self.client is None:
                self.client = Client(url, token)
            self._join(queue_size)
        except BaseException:
            self.close()
            raise

    # ---- setup ---------------------------------------------------------------
    def _submit(self, client: Client, spec: Any) -> str:
        resp = client.call("SubmitJob", client.jobs.SubmitJob, pb.SubmitJobRequest(spec=spec))
        return str(resp.job_id)

    def _coordinator(self, url: Optional[str], token: Optional[str], spec: Any, carto_bin: Optional[str]) -> "tuple[str, Optional[str]]":
        """The coordinator's URL and token; starts one and submits the job as needed."""
        if url is not None:
            token = token if token is not None else os.environ.get("CARTO_TOKEN")
            if self.job_id is not None:
                return url, token
        shared = self._dist is not None and self.world_size > 1
        if shared and self.rank != 0:
            payload: List[Any] = [None, None, None, None]
            self._dist.broadcast_object_list(payload, src=0)
            got_url, got_token, got_job, error = payload
            if error:
                raise CoordinatorError(f"carto: rank 0 could not start the job: {error}")
            self.job_id = got_job
            return got_url, got_token
        error: Optional[BaseException] = None
        try:
            if url is None:
                self.embedded = EmbeddedCoordinator(carto_bin)
                url = self.embedded.start()
                token = self.embedded.token
            self.client = Client(url, token)
            self.job_id = self._submit(self.client, spec)
        except BaseException as e:
            error = e
        if shared:
            msg = None if error is None else str(error) or type(error).__name__
            self._dist.broadcast_object_list([url, token, self.job_id, msg], src=0)
        if error is not None:
            raise error
        assert url is not None
        return url, token

    def _join(self, queue_size: int) -> None:
        c = self.client
        assert c is not None and self.job_id is not None
        reg = c.call(
            "Register",
            c.workers.Register,
            pb.RegisterRequest(
                protocol_version=PROTOCOL_VERSION,
                hostname=socket.gethostname(),
                devices=["external"],
                name=f"python rank {self.rank} (pid {os.getpid()})",
            ),
        )
        self.worker_id: str = reg.worker_id
        self._worker_secret: str = reg.worker_secret
        self.max_chunk_bytes = int(reg.max_chunk_bytes) or 2 * 1024 * 1024
        interval = max(0.05, (reg.heartbeat_interval_ms or 1000) / 1000.0)
        opened = threading.Event()
        self._orders_call = c.workers.Orders(
            pb.OrdersRequest(worker_id=self.worker_id, worker_secret=self._worker_secret), metadata=c.metadata
        )
        self._spawn("carto-orders", self._follow_orders, opened)
        opened.wait(10.0)
        self._spawn("carto-heartbeat", self._heartbeats, interval)
        assignment = c.call(
            "JoinExternal",
            c.workers.JoinExternal,
            pb.JoinExternalRequest(
                worker_id=self.worker_id,
                worker_secret=self._worker_secret,
                job_id=self.job_id,
                rank=self.rank,
                world_size=self.world_size,
            ),
            timeout=None,  # may wait for the other ranks
        )
        self.lease = Lease(assignment)
        self.generation = self.lease.generation
        self._epoch = int(assignment.start_epoch)
        self._sender = Sender(
            GrpcTransport(c, self.lease, self.worker_id), self.num_samples, self.num_classes, self.max_chunk_bytes, queue_size
        )

    def _spawn(self, name: str, target: Any, *args: Any) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def _abort(self, reason: str) -> None:
        if self._aborted is None and not self._closing.is_set():
            self._aborted = reason

    def _follow_orders(self, opened: threading.Event) -> None:
        call = self._orders_call
        try:
            call.initial_metadata()  # the coordinator has taken the stream
            opened.set()
            for order in call:
                kind = order.WhichOneof("kind")
                if kind == "abort":
                    a = order.abort
                    if not a.job_id or a.job_id == self.job_id:
                        self._abort(f"the coordinator aborted job {a.job_id or self.job_id} (generation {a.generation}): {a.reason}")
                elif kind == "shutdown":
                    self._abort(f"the coordinator shut this worker down: {order.shutdown.reason}")
            self._abort("the coordinator closed the order stream")
        except grpc.RpcError as e:
            self._abort(str(rpc_error("the order stream", e)).removeprefix("carto: "))
        finally:
            opened.set()

    def _heartbeats(self, interval: float) -> None:
        c = self.client
        assert c is not None
        while True:
            progress = None
            if self.lease is not None:
                started = self._epoch_started
                progress = pb.WorkerProgress(
                    job_id=self.lease.job_id,
                    generation=self.lease.generation,
                    rank=self.lease.rank,
                    epoch=self._epoch,
                    samples_done=self._rows,
                    train_seconds=(time.monotonic() - started) if started is not None else 0.0,
                )
            req = pb.HeartbeatRequest(worker_id=self.worker_id, worker_secret=self._worker_secret, progress=progress)
            try:
                c.workers.Heartbeat(req, metadata=c.metadata, timeout=max(5.0, 3 * interval))
            except grpc.RpcError as e:
                if e.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                    self._abort(str(rpc_error("Heartbeat", e)).removeprefix("carto: "))
                    return
            if self._closing.wait(interval):
                return

    # ---- the training loop's calls ------------------------------------------
    def _check(self) -> Sender:
        if self._closed or self._sender is None:
            raise CartoError("carto: this Recorder is closed")
        if self._aborted is not None:
            raise JobAborted(f"carto: {self._aborted}")
        if self._stopped is not None:
            raise JobAborted(f"carto: {self._stopped}")
        return self._sender

    def _sender_error(self, e: BaseException) -> BaseException:
        """An abort explains a failed call better than the call's own error."""
        if self._aborted is not None and not isinstance(e, BatchError):
            return JobAborted(f"carto: {self._aborted}")
        return e

    def record(self, ids: Any, logits: Any, labels: Any) -> None:
        """Records one batch: sample ids [B], logits [B, K], gold labels [B]
        (torch tensors on any device, or numpy arrays). Raises ValueError
        for a bad batch (its epoch is then discarded), JobAborted when the
        coordinator has aborted the job."""
        sender = self._check()
        deferred = sender.take_deferred()
        if deferred is not None:
            self._poisoned = deferred
            raise deferred
        index = self._batch
        self._batch += 1
        if self._poisoned is not None:
            return  # the epoch is discarded already; end_epoch raises again
        if self._epoch_started is None:
            self._epoch_started = time.monotonic()
        try:
            batch = prepare(self._epoch, index, ids, logits, labels, self.num_samples, self.num_classes)
        except BatchError as e:
            self._poisoned = e
            try:
                sender.poison(self._epoch)
            except BaseException as inner:
                raise self._sender_error(inner) from e
            raise
        try:
            sender.put(batch)
        except BaseException as e:
            raise self._sender_error(e) from None
        self._rows += len(batch.ids)

    def end_epoch(self) -> EpochStats:
        """Ends the epoch: flushes its rows, closes its stream and reports it
        done. Raises the epoch's ValueError if one of its batches was bad
        (nothing of it is committed; recording starts the same epoch again)."""
        sender = self._check()
        epoch = self._epoch
        train_seconds = time.monotonic() - self._epoch_started if self._epoch_started is not None else 0.0
        bad = self._poisoned or sender.take_deferred()
        try:
            if bad is None:
                try:
                    stats = sender.end_epoch(epoch, train_seconds)
                except BatchError as e:
                    sender.take_deferred()
                    bad = e
            if bad is not None:
                sender.discard_epoch(epoch)
        except BaseException as e:
            raise self._sender_error(e) from None
        finally:
            self._batch = 0
            self._rows = 0
            self._epoch_started = None
            self._poisoned = None
        if bad is not None:
            raise BatchError(bad.epoch, bad.batch, bad.fault)
        self._epoch += 1
        self._epochs_done += 1
        if stats.stop:
            self._stopped = f"the coordinator stopped job {self.job_id} after epoch {epoch} (it ended or was cancelled)"
        return stats

    def finish(self) -> RecordResult:
        """Reports this rank done and waits until the coordinator has written
        OUT/metrics.parquet and the rest; stops the background threads and the
        embedded coordinator. Raises JobFailed when the job did not succeed."""
        if self._batch:
            raise CartoError(f"carto: epoch {self._epoch} has recorded batches: call end_epoch() before finish()")
        self._check()
        c, l = self.client, self.lease
        assert c is not None and l is not None
        try:
            job = c.call(
                "FinishExternal",
                c.workers.FinishExternal,
                pb.FinishExternalRequest(job_id=l.job_id, generation=l.generation, rank=l.rank, lease=l.secret),
                timeout=None,
            )
        except CoordinatorError as e:
            if self._aborted is not None:
                raise JobAborted(f"carto: {self._aborted}") from e
            raise
        self._finished = True
        self._closing.set()
        if self._shared_embedded:
            self._dist.barrier()  # rank 0 keeps the coordinator up until every rank has its answer
        self.close()
        state = state_name(job.state)
        if state != "succeeded":
            raise JobFailed(f"carto: job {job.id} {state}: {job.error or 'no error given'}")
        return RecordResult(
            out=Path(job.out or self.out), job_id=job.id, state=state, epochs=len(job.epochs) or self._epochs_done, job=job
        )

    def fail(self, message: str, *, invalid_input: bool = False) -> None:
        """Tells the coordinator this rank cannot go on (best effort)."""
        c, l = self.client, self.lease
        if c is None or l is None or self._finished:
            return
        req = pb.ReportFailureRequest(
            worker_id=self.worker_id,
            job_id=l.job_id,
            generation=l.generation,
            rank=l.rank,
            message=message.splitlines()[0][:500] if message else "the training loop failed",
            invalid_input=invalid_input,
            lease=l.secret,
        )
        try:
            c.workers.ReportFailure(req, metadata=c.metadata, timeout=5.0)
        except grpc.RpcError:
            pass

    def close(self) -> None:
        """Stops the background threads and the embedded coordinator
        (idempotent; `finish` calls it)."""
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        if self._sender is not None:
            self._sender.close()
        if self._orders_call is not None:
            self._orders_call.cancel()
        for t in self._threads:
            t.join(2.0)
        if self.client is not None:
            self.client.close()
        if self.embedded is not None:
            self.embedded.stop()
        try:
            atexit.unregister(self.close)
        except Exception:  # pragma: no cover
            pass

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, exc_type: Any, exc: Optional[BaseException], tb: Any) -> None:
        if exc is not None and not self._finished and not isinstance(exc, (JobAborted, JobFailed)):
            self.fail(f"{type(exc).__name__}: {exc}", invalid_input=isinstance(exc, ValueError))
        self.close()
