"""carto: Dataset Cartography for your own training loop.

    from carto import Recorder
    rec = Recorder(out="out", num_samples=N, num_classes=K)
    for epoch in range(E):
        for ids, x, y in loader:
            logits = model(x)
            rec.record(ids, logits, y)
            ...
        rec.end_epoch()
    result = rec.finish()
    carto.read_metrics("out")
"""

from .errors import CartoBinaryNotFound, CartoError, CoordinatorError, JobAborted, JobFailed
from .metrics import read_metrics, read_metrics_table, select
from .recorder import Recorder, RecordResult

__all__ = [
    "Recorder",
    "RecordResult",
    "read_metrics",
    "read_metrics_table",
    "select",
    "CartoError",
    "CartoBinaryNotFound",
    "CoordinatorError",
    "JobAborted",
    "JobFailed",
]
__version__ = "0.1.0"
