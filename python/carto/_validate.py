"""Turning one `record(ids, logits, labels)` call into host arrays, and
checking it.

numpy arrays (and anything `numpy.asarray` takes) and CPU tensors are copied
and checked at once. CUDA tensors are only checked by shape here: their copy
to pinned host memory is started without blocking, a CUDA event is recorded
behind it, and the background sender waits on that event and checks the
values (a fault then surfaces at the next `record` or `end_epoch`). The
training stream is never synchronised.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Optional, Tuple

import numpy as np


class BatchError(ValueError):
    """A recorded batch is wrong; its epoch is discarded."""

    def __init__(self, epoch: int, batch: int, fault: str) -> None:
        self.epoch = epoch
        self.batch = batch
        self.fault = fault
        super().__init__(
            f"carto: epoch {epoch}, batch {batch}: {fault}; epoch {epoch} is discarded "
            f"(none of its rows are committed)"
        )


def _torch() -> Any:
    return sys.modules.get("torch")


def _is_tensor(x: Any) -> bool:
    torch = _torch()
    return torch is not None and isinstance(x, torch.Tensor)


def _shape(x: Any) -> Tuple[int, ...]:
    return tuple(int(d) for d in x.shape)


def _kind(x: Any) -> str:
    """'i' (integer), 'f' (floating), 'b' (bool) or something else."""
    if _is_tensor(x):
        if x.dtype.is_floating_point:
            return "f"
        if x.dtype == _torch().bool:
            return "b"
        if x.dtype.is_complex:
            return "c"
        return "i"
    return np.asarray(x).dtype.kind.replace("u", "i")


def check_shapes(ids: Any, logits: Any, labels: Any, num_classes: int) -> Optional[str]:
    """The fault in the shapes and types of a batch, if any."""
    si, sl, sy = _shape(ids), _shape(logits), _shape(labels)
    if len(si) != 1:
        return f"ids must have shape [B], got {list(si)}"
    if len(sy) != 1:
        return f"labels must have shape [B], got {list(sy)}"
    if len(sl) != 2:
        return f"logits must have shape [B, K], got {list(sl)}"
    if not (si[0] == sl[0] == sy[0]):
        return f"shapes disagree: ids {list(si)}, logits {list(sl)}, labels {list(sy)}"
    if sl[1] != num_classes:
        return f"logits have {sl[1]} columns, but the job has num_classes = {num_classes}"
    if _kind(ids) != "i":
        return "ids must be integers"
    if _kind(labels) != "i":
        return "labels must be integers (class indices)"
    if _kind(logits) != "f":
        return "logits must be floating point"
    return None


def check_values(ids: np.ndarray, logits: np.ndarray, labels: np.ndarray, num_samples: int, num_classes: int) -> Optional[str]:
    """The fault in the values of a batch (host arrays), if any."""
    if len(ids):
        bad = np.flatnonzero((ids < 0) | (ids >= num_samples))
        if len(bad):
            return f"sample id {int(ids[bad[0]])} (row {int(bad[0])}) is outside [0, {num_samples})"
        bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
        if len(bad):
            return f"label {int(labels[bad[0]])} (row {int(bad[0])}, sample {int(ids[bad[0]])}) is outside [0, {num_classes})"
        finite = np.isfinite(logits)
        if not finite.all():
            r, c = np.argwhere(~finite)[0]
            return f"logits of row {int(r)} (sample {int(ids[r])}) are not finite ({logits[r, c]} in column {int(c)})"
    return None


@dataclass
class HostBatch:
    """One recorded batch on its way to the sender."""

    epoch: int
    index: int
    ids: Any
    logits: Any
    labels: Any
    event: Any = None  # a torch.cuda.Event the copies are behind, if any
    checked: bool = True

    def arrays(self, num_samples: int, num_classes: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Host numpy arrays; waits on the CUDA copy and checks deferred values.
        Raises BatchError."""
        if self.event is not None:
            self.event.synchronize()
            self.event = None
        ids, logits, labels = (_numpy(x) for x in (self.ids, self.logits, self.labels))
        if not self.checked:
            fault = check_values(ids, logits, labels, num_samples, num_classes)
            if fault:
                raise BatchError(self.epoch, self.index, fault)
            self.checked = True
        return ids, logits, labels


def _numpy(x: Any) -> np.ndarray:
    if _is_tensor(x):
        return x.numpy()
    return np.asarray(x)


def _host_copy(x: Any, floating: bool) -> Any:
    """A CPU copy of `x`: a numpy array; CUDA tensors start a non-blocking copy
    to pinned memory and stay tensors."""
    if _is_tensor(x):
        torch = _torch()
        t = x.detach()
        if floating and t.dtype not in (torch.float32, torch.float64):
            t = t.float()  # half, bfloat16
        if t.is_cuda:
            return t.to("cpu", non_blocking=True)
        return t.numpy().copy() if t.dtype != torch.bfloat16 else t.float().numpy()
    a = np.array(x, copy=True)
    if floating and a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float32)
    return a


_HOST_FLOATS = ("torch.float32", "torch.float64")


def _cpu_tensors(
    epoch: int, index: int, ids: Any, logits: Any, labels: Any, num_samples: int, num_classes: int
) -> Optional[HostBatch]:
    """The common case in few steps: three CPU torch tensors of the usual
    dtypes (the per-batch cost is most of what recording costs a small model).
    None: not that case, take the general path."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    T = torch.Tensor
    if not (type(logits) is T or isinstance(logits, T)) or not isinstance(ids, T) or not isinstance(labels, T):
        return None
    if logits.is_cuda or ids.is_cuda or labels.is_cuda or str(logits.dtype) not in _HOST_FLOATS:
        return None
    if ids.dtype.is_floating_point or labels.dtype.is_floating_point or ids.dim() != 1 or labels.dim() != 1 or logits.dim() != 2:
        return None
    b = ids.shape[0]
    if logits.shape[0] != b or labels.shape[0] != b or logits.shape[1] != num_classes:
        return None
    hid = ids.detach().numpy().astype(np.int64)  # copies: the caller may reuse its tensors
    hlab = labels.detach().numpy().astype(np.int64)
    hlog = logits.detach().numpy().copy()
    fault = check_values(hid, hlog, hlab, num_samples, num_classes)
    if fault:
        raise BatchError(epoch, index, fault)
    return HostBatch(epoch, index, hid, hlog, hlab)


def prepare(
    epoch: int,
    index: int,
    ids: Any,
    logits: Any,
    labels: Any,
    num_samples: int,
    num_classes: int,
) -> HostBatch:
    """Checks a batch and starts its move to host memory. Raises BatchError."""
    fast = _cpu_tensors(epoch, index, ids, logits, labels, num_samples, num_classes)
    if fast is not None:
        return fast
    if not _is_tensor(ids) and not hasattr(ids, "shape"):
        ids = np.asarray(ids)
    if not _is_tensor(labels) and not hasattr(labels, "shape"):
        labels = np.asarray(labels)
    if not _is_tensor(logits) and not hasattr(logits, "shape"):
        logits = np.asarray(logits)
    fault = check_shapes(ids, logits, labels, num_classes)
    if fault:
        raise BatchError(epoch, index, fault)
    on_gpu = any(_is_tensor(x) and x.is_cuda for x in (ids, logits, labels))
    hid = _host_copy(ids, False)
    hlog = _host_copy(logits, True)
    hlab = _host_copy(labels, False)
    if on_gpu:
        torch = _torch()
        event = torch.cuda.Event()
        event.record()  # on the current stream, behind the copies
        return HostBatch(epoch, index, hid, hlog, hlab, event=event, checked=False)
    batch = HostBatch(epoch, index, hid, hlog, hlab)
    fault = check_values(hid.astype(np.int64, copy=False), hlog, hlab.astype(np.int64, copy=False), num_samples, num_classes)
    if fault:
        raise BatchError(epoch, index, fault)
    return batch
