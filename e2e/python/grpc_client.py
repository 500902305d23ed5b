"""A plain grpcio client of carto's JobService, with stubs generated from
proto/ by grpcio-tools at run time (no carto code involved).

Usage: grpc_client.py PROTO_DIR COORDINATOR_HOST:PORT DATA OUT
Submits a 2-worker job, polls GetJob until it ends, prints each state change
as one JSON line, and exits 0 only if the job went QUEUED -> RUNNING
(epoch k of N) -> SUCCEEDED."""
import json
import os
import sys
import tempfile
import time

import grpc
from grpc_tools import protoc

proto_dir, target, data, out = sys.argv[1:5]
gen = tempfile.mkdtemp(prefix="carto-stubs-")
rc = protoc.main(["protoc", f"-I{proto_dir}", f"--python_out={gen}", f"--grpc_python_out={gen}",
                  os.path.join(proto_dir, "carto/v1/carto.proto")])
assert rc == 0, f"protoc failed: {rc}"
# Regular packages, first on the path: the stubs' `carto` must win over
# carto's own Python package when that is installed.
for pkg in ("carto", "carto/v1"):
    open(os.path.join(gen, pkg, "__init__.py"), "a").close()
sys.path.insert(0, gen)
from carto.v1 import carto_pb2 as pb  # noqa: E402
from carto.v1 import carto_pb2_grpc as rpc  # noqa: E402

channel = grpc.insecure_channel(target)
jobs = rpc.JobServiceStub(channel)

spec = pb.JobSpec(data=data, label_col="label", features_col="pixels", model="mlp", hidden=32,
                  epochs=3, batch_size=32, workers=2, threads_per_worker=1, out=out, name="grpcio")
job = jobs.SubmitJob(pb.SubmitJobRequest(spec=spec)).job
seen = []
deadline = time.time() + 300
while True:
    j = jobs.GetJob(pb.GetJobRequest(job_id=job.id))
    state = pb.JobState.Name(j.state)
    point = (state, j.progress.epoch if state == "JOB_STATE_RUNNING" else None)
    if not seen or seen[-1] != point:
        seen.append(point)
        print(json.dumps({"state": state, "epoch": point[1], "epochs_total": j.epochs_total,
                          "samples_done": j.progress.samples_done, "workers": list(j.workers)}), flush=True)
    if state in ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"):
        break
    if time.time() > deadline:
        sys.exit("timed out")
    time.sleep(0.05)

states = [s for s, _ in seen]
assert states[-1] == "JOB_STATE_SUCCEEDED", (states, j.error)
assert "JOB_STATE_RUNNING" in states, states
assert states[0] in ("JOB_STATE_QUEUED", "JOB_STATE_RUNNING"), states
assert len(j.workers) == 2 and len(j.epochs) == 3, (j.workers, len(j.epochs))
# Unknown jobs are NOT_FOUND, as a grpcio client sees it.
try:
    jobs.GetJob(pb.GetJobRequest(job_id="job-nope"))
    sys.exit("expected NOT_FOUND")
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.NOT_FOUND, e.code()
print("grpcio ok", flush=True)
