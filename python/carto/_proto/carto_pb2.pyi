from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState

class JobSpec(_message.Message):
    __slots__ = ("data", "label_col", "text_col", "feature_cols", "features_col", "id_col", "model", "hidden", "epochs", "batch_size", "lr", "seed", "workers", "threads_per_worker", "dynamics_pass", "device", "pretrained", "max_len", "out", "embed_dim", "hash_bits", "name", "record_dynamics", "save_model", "eval_data", "trainer", "num_samples", "num_classes", "label_names", "world_size", "train_layers", "group_by_length", "threshold_samples", "suspect_epochs")
    DATA_FIELD_NUMBER: _ClassVar[int]
    LABEL_COL_FIELD_NUMBER: _ClassVar[int]
    TEXT_COL_FIELD_NUMBER: _ClassVar[int]
    FEATURE_COLS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_COL_FIELD_NUMBER: _ClassVar[int]
    ID_COL_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    LR_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    THREADS_PER_WORKER_FIELD_NUMBER: _ClassVar[int]
    DYNAMICS_PASS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    PRETRAINED_FIELD_NUMBER: _ClassVar[int]
    MAX_LEN_FIELD_NUMBER: _ClassVar[int]
    OUT_FIELD_NUMBER: _ClassVar[int]
    EMBED_DIM_FIELD_NUMBER: _ClassVar[int]
    HASH_BITS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    RECORD_DYNAMICS_FIELD_NUMBER: _ClassVar[int]
    SAVE_MODEL_FIELD_NUMBER: _ClassVar[int]
    EVAL_DATA_FIELD_NUMBER: _ClassVar[int]
    TRAINER_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    LABEL_NAMES_FIELD_NUMBER: _ClassVar[int]
    WORLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    TRAIN_LAYERS_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_LENGTH_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SUSPECT_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    data: str
    label_col: str
    text_col: str
    feature_cols: _containers.RepeatedScalarFieldContainer[str]
    features_col: str
    id_col: str
    model: str
    hidden: int
    epochs: int
    batch_size: int
    lr: float
    seed: int
    workers: int
    threads_per_worker: int
    dynamics_pass: str
    device: str
    pretrained: str
    max_len: int
    out: str
    embed_dim: int
    hash_bits: int
    name: str
    record_dynamics: bool
    save_model: bool
    eval_data: str
    trainer: str
    num_samples: int
    num_classes: int
    label_names: _containers.RepeatedScalarFieldContainer[str]
    world_size: int
    train_layers: int
    group_by_length: bool
    threshold_samples: bool
    suspect_epochs: str
    def __init__(self, data: _Optional[str] = ..., label_col: _Optional[str] = ..., text_col: _Optional[str] = ..., feature_cols: _Optional[_Iterable[str]] = ..., features_col: _Optional[str] = ..., id_col: _Optional[str] = ..., model: _Optional[str] = ..., hidden: _Optional[int] = ..., epochs: _Optional[int] = ..., batch_size: _Optional[int] = ..., lr: _Optional[float] = ..., seed: _Optional[int] = ..., workers: _Optional[int] = ..., threads_per_worker: _Optional[int] = ..., dynamics_pass: _Optional[str] = ..., device: _Optional[str] = ..., pretrained: _Optional[str] = ..., max_len: _Optional[int] = ..., out: _Optional[str] = ..., embed_dim: _Optional[int] = ..., hash_bits: _Optional[int] = ..., name: _Optional[str] = ..., record_dynamics: _Optional[bool] = ..., save_model: _Optional[bool] = ..., eval_data: _Optional[str] = ..., trainer: _Optional[str] = ..., num_samples: _Optional[int] = ..., num_classes: _Optional[int] = ..., label_names: _Optional[_Iterable[str]] = ..., world_size: _Optional[int] = ..., train_layers: _Optional[int] = ..., group_by_length: _Optional[bool] = ..., threshold_samples: _Optional[bool] = ..., suspect_epochs: _Optional[str] = ...) -> None: ...

class EpochSummary(_message.Message):
    __slots__ = ("epoch", "samples", "loss", "accuracy", "samples_per_sec", "train_seconds", "wall_seconds", "eval_loss", "eval_accuracy")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_PER_SEC_FIELD_NUMBER: _ClassVar[int]
    TRAIN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    WALL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    EVAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    EVAL_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    samples: int
    loss: float
    accuracy: float
    samples_per_sec: float
    train_seconds: float
    wall_seconds: float
    eval_loss: float
    eval_accuracy: float
    def __init__(self, epoch: _Optional[int] = ..., samples: _Optional[int] = ..., loss: _Optional[float] = ..., accuracy: _Optional[float] = ..., samples_per_sec: _Optional[float] = ..., train_seconds: _Optional[float] = ..., wall_seconds: _Optional[float] = ..., eval_loss: _Optional[float] = ..., eval_accuracy: _Optional[float] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("epoch", "samples_done", "samples_total", "loss", "accuracy", "samples_per_sec")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_DONE_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_PER_SEC_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    samples_done: int
    samples_total: int
    loss: float
    accuracy: float
    samples_per_sec: float
    def __init__(self, epoch: _Optional[int] = ..., samples_done: _Optional[int] = ..., samples_total: _Optional[int] = ..., loss: _Optional[float] = ..., accuracy: _Optional[float] = ..., samples_per_sec: _Optional[float] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "spec", "state", "epochs_total", "epochs", "progress", "generation", "error", "created_unix_ms", "started_unix_ms", "finished_unix_ms", "num_samples", "num_classes", "workers", "out")
    ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    OUT_FIELD_NUMBER: _ClassVar[int]
    id: str
    spec: JobSpec
    state: JobState
    epochs_total: int
    epochs: _containers.RepeatedCompositeFieldContainer[EpochSummary]
    progress: Progress
    generation: int
    error: str
    created_unix_ms: int
    started_unix_ms: int
    finished_unix_ms: int
    num_samples: int
    num_classes: int
    workers: _containers.RepeatedScalarFieldContainer[str]
    out: str
    def __init__(self, id: _Optional[str] = ..., spec: _Optional[_Union[JobSpec, _Mapping]] = ..., state: _Optional[_Union[JobState, str]] = ..., epochs_total: _Optional[int] = ..., epochs: _Optional[_Iterable[_Union[EpochSummary, _Mapping]]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., generation: _Optional[int] = ..., error: _Optional[str] = ..., created_unix_ms: _Optional[int] = ..., started_unix_ms: _Optional[int] = ..., finished_unix_ms: _Optional[int] = ..., num_samples: _Optional[int] = ..., num_classes: _Optional[int] = ..., workers: _Optional[_Iterable[str]] = ..., out: _Optional[str] = ...) -> None: ...

class SubmitJobRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: JobSpec
    def __init__(self, spec: _Optional[_Union[JobSpec, _Mapping]] = ...) -> None: ...

class SubmitJobResponse(_message.Message):
    __slots__ = ("job_id", "job")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    job: Job
    def __init__(self, job_id: _Optional[str] = ..., job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class GetDataMapRequest(_message.Message):
    __slots__ = ("job_id", "with_texts")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    WITH_TEXTS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    with_texts: bool
    def __init__(self, job_id: _Optional[str] = ..., with_texts: _Optional[bool] = ...) -> None: ...

class DataMap(_message.Message):
    __slots__ = ("job_id", "title", "epochs", "samples", "final", "label_names", "note", "sample_id", "label", "confidence", "variability", "correctness", "aum", "forgetting_events", "region", "suspects", "most_predicted", "ids", "texts", "density", "density_bins", "density_max_variability")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    LABEL_NAMES_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    VARIABILITY_FIELD_NUMBER: _ClassVar[int]
    CORRECTNESS_FIELD_NUMBER: _ClassVar[int]
    AUM_FIELD_NUMBER: _ClassVar[int]
    FORGETTING_EVENTS_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    SUSPECTS_FIELD_NUMBER: _ClassVar[int]
    MOST_PREDICTED_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    DENSITY_FIELD_NUMBER: _ClassVar[int]
    DENSITY_BINS_FIELD_NUMBER: _ClassVar[int]
    DENSITY_MAX_VARIABILITY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    title: str
    epochs: int
    samples: int
    final: bool
    label_names: _containers.RepeatedScalarFieldContainer[str]
    note: str
    sample_id: _containers.RepeatedScalarFieldContainer[int]
    label: _containers.RepeatedScalarFieldContainer[int]
    confidence: _containers.RepeatedScalarFieldContainer[float]
    variability: _containers.RepeatedScalarFieldContainer[float]
    correctness: _containers.RepeatedScalarFieldContainer[float]
    aum: _containers.RepeatedScalarFieldContainer[float]
    forgetting_events: bytes
    region: bytes
    suspects: _containers.RepeatedScalarFieldContainer[int]
    most_predicted: _containers.RepeatedScalarFieldContainer[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    texts: _containers.RepeatedScalarFieldContainer[str]
    density: _containers.RepeatedScalarFieldContainer[int]
    density_bins: int
    density_max_variability: float
    def __init__(self, job_id: _Optional[str] = ..., title: _Optional[str] = ..., epochs: _Optional[int] = ..., samples: _Optional[int] = ..., final: _Optional[bool] = ..., label_names: _Optional[_Iterable[str]] = ..., note: _Optional[str] = ..., sample_id: _Optional[_Iterable[int]] = ..., label: _Optional[_Iterable[int]] = ..., confidence: _Optional[_Iterable[float]] = ..., variability: _Optional[_Iterable[float]] = ..., correctness: _Optional[_Iterable[float]] = ..., aum: _Optional[_Iterable[float]] = ..., forgetting_events: _Optional[bytes] = ..., region: _Optional[bytes] = ..., suspects: _Optional[_Iterable[int]] = ..., most_predicted: _Optional[_Iterable[int]] = ..., ids: _Optional[_Iterable[str]] = ..., texts: _Optional[_Iterable[str]] = ..., density: _Optional[_Iterable[int]] = ..., density_bins: _Optional[int] = ..., density_max_variability: _Optional[float] = ...) -> None: ...

class RegisterRequest(_message.Message):
    __slots__ = ("protocol_version", "hostname", "devices", "advertise_host", "name", "rendezvous_port")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    ADVERTISE_HOST_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    RENDEZVOUS_PORT_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    hostname: str
    devices: _containers.RepeatedScalarFieldContainer[str]
    advertise_host: str
    name: str
    rendezvous_port: int
    def __init__(self, protocol_version: _Optional[int] = ..., hostname: _Optional[str] = ..., devices: _Optional[_Iterable[str]] = ..., advertise_host: _Optional[str] = ..., name: _Optional[str] = ..., rendezvous_port: _Optional[int] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("worker_id", "heartbeat_interval_ms", "max_chunk_bytes", "worker_secret")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    WORKER_SECRET_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    heartbeat_interval_ms: int
    max_chunk_bytes: int
    worker_secret: str
    def __init__(self, worker_id: _Optional[str] = ..., heartbeat_interval_ms: _Optional[int] = ..., max_chunk_bytes: _Optional[int] = ..., worker_secret: _Optional[str] = ...) -> None: ...

class WorkerProgress(_message.Message):
    __slots__ = ("job_id", "generation", "rank", "epoch", "samples_done", "loss_sum", "correct", "train_seconds")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_DONE_FIELD_NUMBER: _ClassVar[int]
    LOSS_SUM_FIELD_NUMBER: _ClassVar[int]
    CORRECT_FIELD_NUMBER: _ClassVar[int]
    TRAIN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    generation: int
    rank: int
    epoch: int
    samples_done: int
    loss_sum: float
    correct: int
    train_seconds: float
    def __init__(self, job_id: _Optional[str] = ..., generation: _Optional[int] = ..., rank: _Optional[int] = ..., epoch: _Optional[int] = ..., samples_done: _Optional[int] = ..., loss_sum: _Optional[float] = ..., correct: _Optional[int] = ..., train_seconds: _Optional[float] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("worker_id", "progress", "worker_secret")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    WORKER_SECRET_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    progress: WorkerProgress
    worker_secret: str
    def __init__(self, worker_id: _Optional[str] = ..., progress: _Optional[_Union[WorkerProgress, _Mapping]] = ..., worker_secret: _Optional[str] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ShardPlan(_message.Message):
    __slots__ = ("num_samples", "seed", "world_size", "rank", "global_batch")
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    WORLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_BATCH_FIELD_NUMBER: _ClassVar[int]
    num_samples: int
    seed: int
    world_size: int
    rank: int
    global_batch: int
    def __init__(self, num_samples: _Optional[int] = ..., seed: _Optional[int] = ..., world_size: _Optional[int] = ..., rank: _Optional[int] = ..., global_batch: _Optional[int] = ...) -> None: ...

class Assignment(_message.Message):
    __slots__ = ("job_id", "generation", "rank", "world_size", "rendezvous_host", "rendezvous_port", "spec", "shard", "start_epoch", "checkpoint", "checkpoint_dir", "num_classes", "lease")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    WORLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    RENDEZVOUS_HOST_FIELD_NUMBER: _ClassVar[int]
    RENDEZVOUS_PORT_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    START_EPOCH_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_DIR_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    generation: int
    rank: int
    world_size: int
    rendezvous_host: str
    rendezvous_port: int
    spec: JobSpec
    shard: ShardPlan
    start_epoch: int
    checkpoint: str
    checkpoint_dir: str
    num_classes: int
    lease: str
    def __init__(self, job_id: _Optional[str] = ..., generation: _Optional[int] = ..., rank: _Optional[int] = ..., world_size: _Optional[int] = ..., rendezvous_host: _Optional[str] = ..., rendezvous_port: _Optional[int] = ..., spec: _Optional[_Union[JobSpec, _Mapping]] = ..., shard: _Optional[_Union[ShardPlan, _Mapping]] = ..., start_epoch: _Optional[int] = ..., checkpoint: _Optional[str] = ..., checkpoint_dir: _Optional[str] = ..., num_classes: _Optional[int] = ..., lease: _Optional[str] = ...) -> None: ...

class Abort(_message.Message):
    __slots__ = ("job_id", "generation", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    generation: int
    reason: str
    def __init__(self, job_id: _Optional[str] = ..., generation: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class Shutdown(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class OrdersRequest(_message.Message):
    __slots__ = ("worker_id", "worker_secret")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_SECRET_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    worker_secret: str
    def __init__(self, worker_id: _Optional[str] = ..., worker_secret: _Optional[str] = ...) -> None: ...

class Order(_message.Message):
    __slots__ = ("assignment", "abort", "shutdown")
    ASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    ABORT_FIELD_NUMBER: _ClassVar[int]
    SHUTDOWN_FIELD_NUMBER: _ClassVar[int]
    assignment: Assignment
    abort: Abort
    shutdown: Shutdown
    def __init__(self, assignment: _Optional[_Union[Assignment, _Mapping]] = ..., abort: _Optional[_Union[Abort, _Mapping]] = ..., shutdown: _Optional[_Union[Shutdown, _Mapping]] = ...) -> None: ...

class EpochChunk(_message.Message):
    __slots__ = ("job_id", "generation", "rank", "epoch", "arrow_ipc", "lease")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    ARROW_IPC_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    generation: int
    rank: int
    epoch: int
    arrow_ipc: bytes
    lease: str
    def __init__(self, job_id: _Optional[str] = ..., generation: _Optional[int] = ..., rank: _Optional[int] = ..., epoch: _Optional[int] = ..., arrow_ipc: _Optional[bytes] = ..., lease: _Optional[str] = ...) -> None: ...

class ReportEpochResponse(_message.Message):
    __slots__ = ("rows",)
    ROWS_FIELD_NUMBER: _ClassVar[int]
    rows: int
    def __init__(self, rows: _Optional[int] = ...) -> None: ...

class EpochDoneRequest(_message.Message):
    __slots__ = ("job_id", "generation", "rank", "epoch", "samples", "loss_sum", "correct", "train_seconds", "rows_sent", "eval_samples", "eval_loss_sum", "eval_correct", "lease")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    LOSS_SUM_FIELD_NUMBER: _ClassVar[int]
    CORRECT_FIELD_NUMBER: _ClassVar[int]
    TRAIN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ROWS_SENT_FIELD_NUMBER: _ClassVar[int]
    EVAL_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    EVAL_LOSS_SUM_FIELD_NUMBER: _ClassVar[int]
    EVAL_CORRECT_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    generation: int
    rank: int
    epoch: int
    samples: int
    loss_sum: float
    correct: int
    train_seconds: float
    rows_sent: int
    eval_samples: int
    eval_loss_sum: float
    eval_correct: int
    lease: str
    def __init__(self, job_id: _Optional[str] = ..., generation: _Optional[int] = ..., rank: _Optional[int] = ..., epoch: _Optional[int] = ..., samples: _Optional[int] = ..., loss_sum: _Optional[float] = ..., correct: _Optional[int] = ..., train_seconds: _Optional[float] = ..., rows_sent: _Optional[int] = ..., eval_samples: _Optional[int] = ..., eval_loss_sum: _Optional[float] = ..., eval_correct: _Optional[int] = ..., lease: _Optional[str] = ...) -> None: ...

class EpochDoneResponse(_message.Message):
    __slots__ = ("stop",)
    STOP_FIELD_NUMBER: _ClassVar[int]
    stop: bool
    def __init__(self, stop: _Optional[bool] = ...) -> None: ...

class ReportFailureRequest(_message.Message):
    __slots__ = ("worker_id", "job_id", "generation", "rank", "message", "invalid_input", "lease")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    INVALID_INPUT_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    job_id: str
    generation: int
    rank: int
    message: str
    invalid_input: bool
    lease: str
    def __init__(self, worker_id: _Optional[str] = ..., job_id: _Optional[str] = ..., generation: _Optional[int] = ..., rank: _Optional[int] = ..., message: _Optional[str] = ..., invalid_input: _Optional[bool] = ..., lease: _Optional[str] = ...) -> None: ...

class ReportFailureResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FinishExternalRequest(_message.Message):
    __slots__ = ("job_id", "generation", "rank", "lease")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    generation: int
    rank: int
    lease: str
    def __init__(self, job_id: _Optional[str] = ..., generation: _Optional[int] = ..., rank: _Optional[int] = ..., lease: _Optional[str] = ...) -> None: ...

class JoinExternalRequest(_message.Message):
    __slots__ = ("worker_id", "worker_secret", "job_id", "rank", "world_size")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_SECRET_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    WORLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    worker_secret: str
    job_id: str
    rank: int
    world_size: int
    def __init__(self, worker_id: _Optional[str] = ..., worker_secret: _Optional[str] = ..., job_id: _Optional[str] = ..., rank: _Optional[int] = ..., world_size: _Optional[int] = ...) -> None: ...
