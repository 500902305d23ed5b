"""carto for the Hugging Face `transformers.Trainer`.

    from carto.integrations.hf import CartoCallback, CartoTrainer

    train = train.map(lambda row, i: {"carto_id": i}, with_indices=True)   # 0-based sample ids
    trainer = CartoTrainer(model=model, args=args, train_dataset=train,
                           callbacks=[CartoCallback(out="OUT", num_samples=len(train), num_classes=2)])
    trainer.train()        # OUT/metrics.parquet, datamap.png, ... are written when training ends

Design. A callback alone cannot see a batch's logits: the Trainer hands
callbacks neither the inputs nor the model's outputs of a training step. The
one place that has both, during the training forward pass and before the
optimizer step, is `Trainer.compute_loss`. So:

- `CartoTrainer` (= `CartoTrainerMixin` + `Trainer`; put the mixin first in
  your own Trainer subclass's bases to keep it) overrides `compute_loss`: it
  pops the id column from the inputs (the model never sees it), runs the
  usual `compute_loss` with `return_outputs=True`, and, when the model is in
  training mode (not for evaluation), records `(ids, outputs.logits, labels)`.
  Each process records only its own local batch, so under `torchrun` /
  `accelerate launch` every rank records its share (the Recorder joins the
  ranks; samples a sampler repeats to even out the ranks count once).
- `CartoCallback` owns the `carto.Recorder`: it starts it in `on_train_begin`
  (when torch.distributed is set up), ends each epoch in `on_epoch_end` and
  finishes in `on_train_end`; `callback.result` is then the `RecordResult`.

Sample ids travel through the dataset as a column (`id_column`, default
`"carto_id"`): integers in `[0, num_samples)`, usually the row index.
The Trainer drops the columns the model's `forward` does not accept
(`remove_unused_columns=True`, the default); `CartoTrainer` adds the id
column to the kept ones, so that setting can stay as it is.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Union

from transformers import Trainer, TrainerCallback

from ..errors import CartoError
from ..recorder import Recorder, RecordResult

__all__ = ["CartoCallback", "CartoTrainer", "CartoTrainerMixin"]

DEFAULT_ID_COLUMN = "carto_id"


class CartoCallback(TrainerCallback):
    """Records the training dynamics of a `CartoTrainer` run with carto.

    `out`, `num_samples`, `num_classes` and `**recorder_kwargs` are those of
    `carto.Recorder` (`label_names=`, `data=`, `coordinator=`, `job=`,
    `token=`, ...). `num_classes` defaults to the model's
    `config.num_labels`. `id_column` names the dataset column holding each
    row's 0-based sample id.
    """

    def __init__(
        self,
        out: Union[str, "os.PathLike[str]"],
        num_samples: int,
        num_classes: Optional[int] = None,
        *,
        id_column: str = DEFAULT_ID_COLUMN,
        **recorder_kwargs: Any,
    ) -> None:
        self.out = out
        self.num_samples = int(num_samples)
        self.num_classes = num_classes
        self.id_column = id_column
        self.recorder_kwargs = recorder_kwargs
        self.recorder: Optional[Recorder] = None
        self.result: Optional[RecordResult] = None
        self._batches = 0  # recorded in the current epoch

    # ---- called by CartoTrainerMixin -----------------------------------------
    def record(self, ids: Any, logits: Any, labels: Any) -> None:
        if self.recorder is None:
            raise CartoError("carto: CartoCallback has no Recorder: training has not begun (on_train_begin)")
        self.recorder.record(ids, logits, labels)
        self._batches += 1

    def fail(self, exc: BaseException) -> None:
        """Reports a failed training run to the coordinator and stops the Recorder."""
        if self.recorder is not None:
            self.recorder.fail(f"{type(exc).__name__}: {exc}", invalid_input=isinstance(exc, ValueError))
            self.recorder.close()
            self.recorder = None

    # ---- TrainerCallback ------------------------------------------------------
    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if self.recorder is not None:
            raise CartoError("carto: CartoCallback records one training run; make a new one for another train()")
        num_classes = self.num_classes
        if num_classes is None:
            num_classes = getattr(getattr(model, "config", None), "num_labels", None)
            if num_classes is None:
                raise CartoError("carto: CartoCallback needs num_classes= (the model has no config.num_labels)")
        self.recorder = Recorder(self.out, self.num_samples, int(num_classes), **self.recorder_kwargs)
        self._batches = 0

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.recorder is None:
            return
        if self._batches == 0 and self.recorder.world_size == 1:
            raise CartoError(
                "carto: no batch was recorded this epoch: train with carto.integrations.hf.CartoTrainer "
                "(or put CartoTrainerMixin first in your Trainer subclass's bases), which records in compute_loss"
            )
        self.recorder.end_epoch()
        self._batches = 0

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.recorder is None:
            return
        if self._batches:  # training stopped inside an epoch after its on_epoch_end
            self.recorder.end_epoch()
        rec, self.recorder = self.recorder, None
        self.result = rec.finish()


def _logits(outputs: Any) -> Any:
    if isinstance(outputs, dict):
        if "logits" not in outputs:
            raise CartoError(f"carto: the model's outputs have no logits (keys: {', '.join(outputs.keys())})")
        return outputs["logits"]
    # A tuple: (loss, logits, ...) when the model was given labels.
    return outputs[1] if len(outputs) > 1 else outputs[0]


class CartoTrainerMixin:
    """Records each training batch's `(ids, logits, labels)` in `compute_loss`
    into the `CartoCallback` among the Trainer's callbacks. Use it before
    `Trainer` (or your Trainer subclass) in the bases: `class T(CartoTrainerMixin, MyTrainer)`."""

    def _carto_callback(self) -> Optional[CartoCallback]:
        for cb in self.callback_handler.callbacks:  # type: ignore[attr-defined]
            if isinstance(cb, CartoCallback):
                return cb
        return None

    def _set_signature_columns_if_needed(self) -> None:
        # The Trainer keeps only the columns model.forward accepts (and labels);
        # keep the id column too, or remove_unused_columns would drop it.
        super()._set_signature_columns_if_needed()  # type: ignore[misc]
        cb = self._carto_callback()
        cols = self._signature_columns  # type: ignore[attr-defined]
        if cb is not None and cols is not None and cb.id_column not in cols:
            cols.append(cb.id_column)

    def compute_loss(self, model: Any, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None) -> Any:
        cb = self._carto_callback()
        if cb is None:
            return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)  # type: ignore[misc]
        inputs = dict(inputs)
        ids = inputs.pop(cb.id_column, None)
        if not model.training:  # evaluation / prediction: nothing to record
            return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)  # type: ignore[misc]
        if ids is None:
            raise CartoError(
                f"carto: the training batch has no {cb.id_column!r} column: add each row's 0-based sample id to the "
                f"train dataset under that name (or pass CartoCallback(id_column=...))"
            )
        names = getattr(self, "label_names", None) or ["labels"]
        labels = inputs.get(names[0]) if len(names) == 1 else None
        if labels is None:
            raise CartoError(f"carto: the training batch has no labels (looked for {names[0]!r})")
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)  # type: ignore[misc]
        cb.record(ids, _logits(outputs), labels)
        return (loss, outputs) if return_outputs else loss

    def prediction_step(self, model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        cb = self._carto_callback()
        if cb is not None and cb.id_column in inputs:  # an eval set that carries ids too
            inputs = {k: v for k, v in inputs.items() if k != cb.id_column}
        return super().prediction_step(model, inputs, *args, **kwargs)  # type: ignore[misc]

    def train(self, *args: Any, **kwargs: Any) -> Any:
        cb = self._carto_callback()
        if cb is None:
            raise CartoError("carto: CartoTrainer needs a CartoCallback in callbacks=[...]")
        try:
            return super().train(*args, **kwargs)  # type: ignore[misc]
        except BaseException as e:
            cb.fail(e)
            raise


class CartoTrainer(CartoTrainerMixin, Trainer):
    """`transformers.Trainer` that records each training batch into its `CartoCallback`."""
