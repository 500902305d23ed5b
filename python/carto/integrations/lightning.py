"""carto for PyTorch Lightning.

    from carto.integrations.lightning import CartoCallback

    class Model(L.LightningModule):
        def training_step(self, batch, batch_idx):
            ids, x, y = batch                        # the dataset yields each row's 0-based sample id
            logits = self(x)
            loss = F.cross_entropy(logits, y)
            return {"loss": loss, "logits": logits, "ids": ids, "labels": y}

    cb = CartoCallback(out="OUT", num_samples=len(ds), num_classes=10)
    L.Trainer(max_epochs=5, callbacks=[cb]).fit(Model(), loader)
    cb.result.metrics()                              # OUT/metrics.parquet, datamap.png, ...

Contract (what `on_train_batch_end` reads, in this order):
- logits [B, K]: `outputs["logits"]` (the dict `training_step` returned),
  else the attribute `pl_module.carto_logits` that `training_step` set.
- ids [B]: `outputs["ids"]`, else the batch: `batch["ids"]` for a dict
  batch, `batch[0]` for a tuple/list batch `(ids, x, ..., y)`.
- labels [B]: `outputs["labels"]`, else `batch["labels"]` (or `"label"`,
  `"y"`) for a dict batch, `batch[-1]` for a tuple/list batch.
The logits are those of the training forward pass, taken before the
optimizer step, as the paper's code records them. The Recorder starts in
`on_train_start`, ends each epoch in `on_train_epoch_end` and finishes in
`on_train_end`; `callback.result` is then the `RecordResult`. An exception
during fit is reported to the coordinator (`on_exception`).

Several processes (`strategy="ddp"`, `devices=N`): the Recorder starts after
Lightning has set up torch.distributed, so rank 0 hosts the embedded
coordinator and each rank records its own batches (a DistributedSampler's
padded repeats count once). Tested with one process (`devices=1`).
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional, Union

try:
    import lightning.pytorch as pl
except ImportError:  # the older package name
    import pytorch_lightning as pl  # type: ignore[no-redef]

from ..errors import CartoError
from ..recorder import Recorder, RecordResult

__all__ = ["CartoCallback"]

_LABEL_KEYS = ("labels", "label", "y")


class CartoCallback(pl.Callback):
    """Records the training dynamics of a Lightning `fit` with carto.

    `out`, `num_samples`, `num_classes` and `**recorder_kwargs` are those of
    `carto.Recorder` (`label_names=`, `data=`, `coordinator=`, `job=`,
    `token=`, ...).
    """

    def __init__(
        self,
        out: Union[str, "os.PathLike[str]"],
        num_samples: int,
        num_classes: int,
        **recorder_kwargs: Any,
    ) -> None:
        super().__init__()
        self.out = out
        self.num_samples = int(num_samples)
        self.num_classes = int(num_classes)
        self.recorder_kwargs = recorder_kwargs
        self.recorder: Optional[Recorder] = None
        self.result: Optional[RecordResult] = None
        self._batches = 0

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if self.recorder is not None:
            raise CartoError("carto: CartoCallback records one fit; make a new one for another")
        self.recorder = Recorder(self.out, self.num_samples, self.num_classes, **self.recorder_kwargs)
        self._batches = 0

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.recorder is None:
            return
        out = outputs if isinstance(outputs, Mapping) else {}
        logits = out.get("logits")
        if logits is None:
            logits = getattr(pl_module, "carto_logits", None)
            if logits is None:
                raise CartoError(
                    "carto: training_step must return a dict with 'logits' (and 'loss'), or set self.carto_logits"
                )
            pl_module.carto_logits = None  # never record the same logits twice
        ids = out.get("ids")
        labels = out.get("labels")
        if ids is None or labels is None:
            if isinstance(batch, Mapping):
                ids = ids if ids is not None else batch.get("ids")
                if labels is None:
                    labels = next((batch[k] for k in _LABEL_KEYS if k in batch), None)
            elif isinstance(batch, (tuple, list)) and len(batch) >= 3:
                ids = ids if ids is not None else batch[0]
                labels = labels if labels is not None else batch[-1]
        if ids is None or labels is None:
            raise CartoError(
                "carto: cannot find this batch's sample ids and labels: return 'ids' and 'labels' from training_step, "
                "or make the batch (ids, x, y) or a dict with 'ids' and 'labels'"
            )
        self.recorder.record(ids, logits, labels)
        self._batches += 1

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self.recorder is None:
            return
        self.recorder.end_epoch()
        self._batches = 0

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if self.recorder is None:
            return
        if self._batches:  # stopped inside an epoch (max_steps) without its epoch end
            self.recorder.end_epoch()
        rec, self.recorder = self.recorder, None
        self.result = rec.finish()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if self.recorder is not None:
            self.recorder.fail(f"{type(exception).__name__}: {exception}", invalid_input=isinstance(exception, ValueError))
            self.recorder.close()
            self.recorder = None
