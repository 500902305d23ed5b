#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine, for testing carto.sbatch:
# installs Debian's slurm-wlm and munge (root and apt needed), starts munged,
# slurmctld and slurmd with a throwaway configuration, and submits
# deploy/slurm/carto.sbatch with two CPU tasks on a real dataset. Then, in a
# second job, preempts it with SIGUSR1 mid-run (what --signal=B:USR1@90 sends
# before the time limit) and checks that the requeued job resumes and finishes.
#
#   deploy/slurm/test-local.sh      (after scripts/test.sh or a release build)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="${CARTO_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release}"
[ -x "$BIN/carto" ] && [ -x "$BIN/carto-worker" ] || { echo "build first: cargo build --release --workspace --bins" >&2; exit 2; }
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  [ "$(id -u)" = 0 ] || { echo "slurm-wlm and munge are not installed, and installing needs root" >&2; exit 2; }
  echo "== installing slurm-wlm and munge"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null 2>&1 || {
    apt-get update -q >/dev/null 2>&1; DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null; }
fi

WORK="$(mktemp -d /tmp/carto-slurm.XXXXXX)"
cleanup() {
  pkill -f "slurmctld -D -f $WORK" 2>/dev/null || true
  pkill -f "slurmd -D -f $WORK" 2>/dev/null || true
  [ -n "${MUNGED_PID:-}" ] && kill "$MUNGED_PID" 2>/dev/null || true
}
trap cleanup EXIT
HOST="$(hostname -s)"
CPUS="$(nproc)"
MEM="$(awk '/MemTotal/ {print int($2/1024) - 512}' /proc/meminfo)"

echo "== munge"
mkdir -p "$WORK/munge" /run/munge
dd if=/dev/urandom of="$WORK/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$WORK/munge/munge.key"
munged --key-file="$WORK/munge/munge.key" --socket="$WORK/munge/socket" --pid-file="$WORK/munge/pid" \
  --log-file="$WORK/munge/log" --seed-file="$WORK/munge/seed" --force
MUNGED_PID="$(cat "$WORK/munge/pid")"

echo "== slurm ($HOST, $CPUS CPUs)"
mkdir -p "$WORK/state" "$WORK/spool" "$WORK/log"
cat > "$WORK/slurm.conf" <<CONF
ClusterName=carto-test
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$WORK/munge/socket
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
StateSaveLocation=$WORK/state
SlurmdSpoolDir=$WORK/spool
SlurmctldPidFile=$WORK/slurmctld.pid
SlurmdPidFile=$WORK/slurmd.pid
SlurmctldLogFile=$WORK/log/slurmctld.log
SlurmdLogFile=$WORK/log/slurmd.log
SlurmctldPort=$(( 20000 + RANDOM % 20000 ))
SlurmdPort=$(( 40000 + RANDOM % 20000 ))
ReturnToService=2
JobRequeue=1
SchedulerType=sched/backfill
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
export SLURM_CONF="$WORK/slurm.conf"
slurmctld -D -f "$WORK/slurm.conf" >"$WORK/log/slurmctld.out" 2>&1 &
slurmd -D -f "$WORK/slurm.conf" >"$WORK/log/slurmd.out" 2>&1 &
for _ in $(seq 1 60); do sinfo -h -o %T 2>/dev/null | grep -q idle && break; sleep 1; done
sinfo -h -o "%P %T %D %C" || { tail -20 "$WORK/log/"*; exit 1; }

run_job() {  # name epochs -> slurm job id
  local name=$1 epochs=$2
  mkdir -p "$WORK/$name"
  cat > "$WORK/$name/job.toml" <<JOB
name = "slurm-$name"
data = "$ROOT/examples/fashion_mnist/fashion-2k.parquet"
label_col = "label"
features_col = "pixels"
model = "mlp"
hidden = 64
epochs = $epochs
batch_size = 16
workers = 2
threads_per_worker = 1
out = "$WORK/$name/out"
JOB
  (cd "$WORK/$name" && sbatch --parsable --ntasks=2 --cpus-per-task=1 \
    --export=ALL,CARTO_JOB="$WORK/$name/job.toml",CARTO_BIN="$BIN",CARTO_DEVICE=cpu,CARTO_PORT=$(( 30000 + RANDOM % 20000 )),CARTO_STATE="$WORK/$name/state" \
    "$ROOT/deploy/slurm/carto.sbatch")
}
wait_done() {  # slurm job id -> final state
  local id=$1
  for _ in $(seq 1 600); do
    st="$(scontrol show job "$id" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')"
    case "$st" in COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY) echo "$st"; return;; esac
    sleep 1
  done
  echo TIMEOUT_WAITING
}
check_out() {  # dir
  "${CARTO_PYTHON:-python3}" - "$1" <<'PY'
import json, sys
job = json.load(open(sys.argv[1] + "/job.json"))
assert job["state"] == "succeeded", job["state"]
assert len(job["workers"]) == 2, job["workers"]
assert len(job["epochs"]) == job["spec"]["epochs"], len(job["epochs"])
print(f"ok: {job['id']} succeeded, {len(job['epochs'])} epochs on {len(job['workers'])} workers, restarts {job['restarts']}, generation {job['generation']}")
PY
}

echo "== job 1: runs to completion"
ID=$(run_job plain 3)
ST=$(wait_done "$ID")
echo "slurm job $ID: $ST"
[ "$ST" = COMPLETED ] || { cat "$WORK/plain/carto-$ID.log"; exit 1; }
check_out "$WORK/plain/out"
[ -f "$WORK/plain/out/metrics.parquet" ]

echo "== job 2: preempted with SIGUSR1 mid-run, requeued, resumed"
ID=$(run_job preempt 40)
for _ in $(seq 1 300); do [ -d "$WORK/preempt/out/dynamics/epoch=2" ] && break; sleep 0.5; done
scancel --batch --signal=USR1 "$ID"
ST=$(wait_done "$ID")
echo "slurm job $ID: $ST (restarts: $(scontrol show job "$ID" | sed -n 's/.*Restarts=\([0-9]*\).*/\1/p'))"
grep -q "preempted; requeueing" "$WORK/preempt/carto-$ID.log" || { cat "$WORK/preempt/carto-$ID.log"; exit 1; }
[ "$ST" = COMPLETED ] || { cat "$WORK/preempt/carto-$ID.log"; exit 1; }
check_out "$WORK/preempt/out"
grep -q '"the coordinator restarted"' "$WORK/preempt/out/job.json" || { echo "the job did not resume from its state" >&2; exit 1; }
echo "slurm: all good"
