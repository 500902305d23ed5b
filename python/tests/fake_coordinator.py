"""A coordinator double in Python that speaks the external-job protocol as
the Recorder expects it, and records every call (for tests that run before
the Rust side implements external jobs)."""

from __future__ import annotations

import queue
import threading
from concurrent import futures
from typing import Any, Dict, List, Optional, Tuple

import grpc
import numpy as np
import pyarrow as pa

from carto import _wire
from carto._proto import carto_pb2 as pb
from carto._proto import carto_pb2_grpc as pb_grpc

TOKEN = "secret-token"


class State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: List[str] = []
        self.spec: Optional[Any] = None
        self.orders: Dict[str, "queue.Queue[Optional[Any]]"] = {}
        self.rows: Dict[Tuple[int, int], List[pa.Table]] = {}  # (epoch, rank) -> tables
        self.done: List[Any] = []
        self.reports: Dict[Tuple[int, int], int] = {}
        self.failures: List[Any] = []
        self.lease = "lease-0"
        self.heartbeats = 0

    def log(self, name: str) -> None:
        with self.lock:
            self.calls.append(name)


def _auth(context: Any) -> None:
    md = dict(context.invocation_metadata())
    if md.get("authorization") != f"Bearer {TOKEN}":
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong token")


class Jobs(pb_grpc.JobServiceServicer):
    def __init__(self, s: State) -> None:
        self.s = s

    def SubmitJob(self, req: Any, context: Any) -> Any:
        _auth(context)
        self.s.log("SubmitJob")
        self.s.spec = req.spec
        return pb.SubmitJobResponse(job_id="job-1")


class Workers(pb_grpc.WorkerServiceServicer):
    def __init__(self, s: State) -> None:
        self.s = s

    def Register(self, req: Any, context: Any) -> Any:
        _auth(context)
        self.s.log("Register")
        assert req.protocol_version == 2 and list(req.devices) == ["external"]
        wid = f"w{len(self.s.orders)}"
        self.s.orders[wid] = queue.Queue()
        return pb.RegisterResponse(worker_id=wid, heartbeat_interval_ms=50, max_chunk_bytes=20 * 1024, worker_secret="ws-" + wid)

    def Orders(self, req: Any, context: Any) -> Any:
        _auth(context)
        self.s.log("Orders")
        assert req.worker_secret == "ws-" + req.worker_id
        q = self.s.orders[req.worker_id]
        context.send_initial_metadata(())
        while context.is_active():
            try:
                o = q.get(timeout=0.05)
            except queue.Empty:
                continue
            if o is None:
                return
            yield o

    def Heartbeat(self, req: Any, context: Any) -> Any:
        _auth(context)
        assert req.worker_secret == "ws-" + req.worker_id
        self.s.heartbeats += 1
        return pb.HeartbeatResponse()

    def JoinExternal(self, req: Any, context: Any) -> Any:
        _auth(context)
        self.s.log("JoinExternal")
        assert req.job_id == "job-1" and req.worker_secret == "ws-" + req.worker_id
        return pb.Assignment(job_id=req.job_id, generation=1, rank=req.rank, world_size=req.world_size, lease=self.s.lease)

    def ReportEpoch(self, request_iterator: Any, context: Any) -> Any:
        _auth(context)
        self.s.log("ReportEpoch")
        n = 0
        key = None
        tables = []
        for chunk in request_iterator:
            assert chunk.lease == self.s.lease and chunk.generation == 1 and chunk.job_id == "job-1"
            assert len(chunk.arrow_ipc) <= 20 * 1024
            key = (chunk.epoch, chunk.rank)
            t = _wire.decode_chunk(chunk.arrow_ipc)
            assert t.schema.names == ["sample_id", "label", "logits"]
            tables.append(t)
            n += t.num_rows
        if key in self.s.rows:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"epoch {key[0]} of rank {key[1]} already reported")
        if key is not None:
            self.s.rows[key] = tables
        return pb.ReportEpochResponse(rows=n)

    def EpochDone(self, req: Any, context: Any) -> Any:
        _auth(context)
        self.s.log(f"EpochDone:{req.epoch}")
        assert req.lease == self.s.lease
        self.s.done.append(req)
        return pb.EpochDoneResponse(stop=False)

    def ReportFailure(self, req: Any, context: Any) -> Any:
        _auth(context)
        self.s.log("ReportFailure")
        self.s.failures.append(req)
        return pb.ReportFailureResponse()

    def FinishExternal(self, req: Any, context: Any) -> Any:
        _auth(context)
        self.s.log("FinishExternal")
        assert req.lease == self.s.lease
        epochs = [pb.EpochSummary(epoch=d.epoch, samples=d.samples) for d in self.s.done]
        return pb.Job(id=req.job_id, state=pb.JOB_STATE_SUCCEEDED, epochs=epochs, out=self.s.spec.out if self.s.spec else "")

    def confidence(self, num_samples: int) -> np.ndarray:
        """Mean gold softmax probability per sample over the reported epochs."""
        total = np.zeros(num_samples)
        count = np.zeros(num_samples)
        for tables in self.s.rows.values():
            t = pa.concat_tables(tables)
            z = np.stack(t.column("logits").to_numpy(zero_copy_only=False)).astype(np.float64)
            y = t.column("label").to_numpy()
            ids = t.column("sample_id").to_numpy()
            p = np.exp(z - z.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            np.add.at(total, ids, p[np.arange(len(y)), y])
            np.add.at(count, ids, 1)
        return total / count


class FakeCoordinator:
    def __init__(self) -> None:
        self.state = State()
        self.workers = Workers(self.state)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        pb_grpc.add_JobServiceServicer_to_server(Jobs(self.state), self.server)
        pb_grpc.add_WorkerServiceServicer_to_server(self.workers, self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.url = f"http://127.0.0.1:{port}"
        self.server.start()

    def send_order(self, order: Any) -> None:
        for q in self.state.orders.values():
            q.put(order)

    def stop(self) -> None:
        for q in self.state.orders.values():
            q.put(None)
        self.server.stop(0)
