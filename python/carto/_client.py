"""The gRPC calls the recorder makes, with the bearer token on every call."""

from __future__ import annotations

import queue
import threading
from typing import Any, Iterator, Optional, Sequence, Tuple
from urllib.parse import urlparse

import grpc

from ._proto import carto_pb2 as pb
from ._proto import carto_pb2_grpc as pb_grpc
from .errors import CoordinatorError

#: The worker protocol version this package speaks (common/src/proto.rs).
PROTOCOL_VERSION = 2
#: Deadline of the short calls, seconds.
CALL_TIMEOUT = 30.0


def _target(url: str) -> Tuple[str, bool]:
    """host:port and whether to use TLS, from http(s)://host:port or host:port."""
    if "://" not in url:
        return url, False
    u = urlparse(url)
    if u.scheme not in ("http", "https") or not u.netloc:
        raise ValueError(f"coordinator URL {url!r}: expected http://HOST:PORT or https://HOST:PORT")
    return u.netloc, u.scheme == "https"


def rpc_error(what: str, e: grpc.RpcError) -> CoordinatorError:
    code = e.code() if hasattr(e, "code") else None
    details = e.details() if hasattr(e, "details") else str(e)
    name = code.name if code is not None else "UNKNOWN"
    return CoordinatorError(f"carto: {what}: {name}: {details}")


class Client:
    """A channel to one coordinator with stubs of both services."""

    def __init__(self, url: str, token: Optional[str], *, connect_timeout: float = 30.0) -> None:
        self.url = url
        target, tls = _target(url)
        options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
        if tls:
            self.channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(), options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        self.metadata: Sequence[Tuple[str, str]] = (("authorization", f"Bearer {token}"),) if token else ()
        try:
            grpc.channel_ready_future(self.channel).result(timeout=connect_timeout)
        except grpc.FutureTimeoutError:
            self.channel.close()
            raise CoordinatorError(f"carto: no coordinator answers at {url} (waited {connect_timeout:.0f} s)") from None
        self.jobs = pb_grpc.JobServiceStub(self.channel)
        self.workers = pb_grpc.WorkerServiceStub(self.channel)

    def call(self, what: str, method: Any, request: Any, timeout: Optional[float] = CALL_TIMEOUT) -> Any:
        try:
            return method(request, metadata=self.metadata, timeout=timeout)
        except grpc.RpcError as e:
            raise rpc_error(what, e) from None

    def close(self) -> None:
        self.channel.close()


class EpochStream:
    """One client-streaming ReportEpoch call: chunks are fed through a bounded
    queue to the request iterator grpc consumes."""

    def __init__(self, client: Client, make_chunk: Any, maxsize: int = 4) -> None:
        self._make = make_chunk
        self._q: "queue.Queue[Optional[bytes]]" = queue.Queue(maxsize=maxsize)
        self._closed = False
        self._future = client.workers.ReportEpoch.future(self._requests(), metadata=client.metadata)

    def _requests(self) -> Iterator[Any]:
        while True:
            chunk = self._q.get()
            if chunk is None:
                return
            yield self._make(chunk)

    def _put(self, item: Optional[bytes]) -> None:
        while True:
            if self._future.done():
                self._raise_if_failed()
                raise CoordinatorError("carto: ReportEpoch ended before the epoch's chunks were sent")
            try:
                self._q.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _raise_if_failed(self) -> None:
        try:
            self._future.result(timeout=0)
        except grpc.RpcError as e:
            raise rpc_error("ReportEpoch", e) from None
        except grpc.FutureCancelledError:
            raise CoordinatorError("carto: ReportEpoch was cancelled") from None

    def send(self, chunk: bytes) -> None:
        self._put(chunk)

    def close(self) -> int:
        """Ends the stream; the rows the coordinator acknowledged."""
        self._closed = True
        self._put(None)
        try:
            return int(self._future.result().rows)
        except grpc.RpcError as e:
            raise rpc_error("ReportEpoch", e) from None

    def cancel(self) -> None:
        self._future.cancel()
        # Unblock the request iterator if grpc is still waiting on it.
        while True:
            try:
                self._q.get_nowait()
            except queue.Empty:
                break
        try:
            self._q.put_nowait(None)
        except queue.Full:
            pass


class Lease:
    """What identifies this rank's reports: (job, generation, rank, lease)."""

    def __init__(self, assignment: Any) -> None:
        self.job_id: str = assignment.job_id
        self.generation: int = assignment.generation
        self.rank: int = assignment.rank
        self.world_size: int = assignment.world_size
        self.secret: str = assignment.lease


class GrpcTransport:
    """The sender's transport over a coordinator (see `_sender.Transport`)."""

    def __init__(self, client: Client, lease: Lease, worker_id: str) -> None:
        self.client = client
        self.lease = lease
        self.worker_id = worker_id
        self._lock = threading.Lock()

    def open_epoch(self, epoch: int) -> EpochStream:
        l = self.lease

        def chunk(b: bytes) -> Any:
            return pb.EpochChunk(job_id=l.job_id, generation=l.generation, rank=l.rank, epoch=epoch, arrow_ipc=b, lease=l.secret)

        return EpochStream(self.client, chunk)

    def epoch_done(self, stats: Any) -> bool:
        l = self.lease
        req = pb.EpochDoneRequest(
            job_id=l.job_id,
            generation=l.generation,
            rank=l.rank,
            epoch=stats.epoch,
            samples=stats.samples,
            loss_sum=stats.loss_sum,
            correct=stats.correct,
            train_seconds=stats.train_seconds,
            rows_sent=stats.rows_sent,
            lease=l.secret,
        )
        return bool(self.client.call("EpochDone", self.client.workers.EpochDone, req).stop)
