"""Finite numerics of a training run: options, steps, parameters and predictions.

A run whose weights turn into NaN must fail, naming where, instead of reporting success
(``argmax`` of NaN logits is class 0, and ``Trainer``'s ``logging_nan_inf_filter`` hides NaN
losses). Four guards, each raising ``ValueError``:

* :func:`check_finite_fields`: every float option of a dataclass (``ARLConfig`` and every
  strategy's options; also the floats of a list or mapping option) is finite and within
  float32's range (``|x| <= 3.4e38``): training arithmetic is float32, where a larger value is
  already infinite. A finite option whose *use* overflows (``arl_gamma=1e38`` times a
  unimodal loss of 5) is caught by the step guard at the first step, naming the loss.
* :class:`StepGuard`: the first optimizer step whose loss or gradient norm was non-finite,
  recorded on the device (no host synchronisation) and read where the trainer synchronises
  anyway: the input check of the next micro-batch, a logging step, a save, an evaluation,
  the end of training.
* :func:`first_nonfinite`: the first parameter holding a NaN or infinite value (one fused
  reduction, at saves, evaluations and the end of training).
* :func:`check_finite_predictions`: predictions handed to ``compute_metrics`` are finite.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .kinds import accepted_kinds
from .validation import validate_batch

__all__ = ["FLOAT32_MAX", "check_finite_fields", "StepGuard", "first_nonfinite", "check_finite_predictions",
           "finite_metrics"]

#: the largest finite float32 value
FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def _float_values(name: str, value: Any, depth: int = 0) -> Iterator[Tuple[str, float]]:
    """``(label, value)`` of every non-integer real number in ``value`` (itself, or the items of a
    list, tuple or mapping, one level deep)."""
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        yield name, float(value)
    elif depth == 0 and isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _float_values(f"{name}[{i}]", v, 1)
    elif depth == 0 and isinstance(value, Mapping):
        for k, v in value.items():
            yield from _float_values(f"{name}[{k!r}]", v, 1)


def check_finite_fields(options: Any) -> None:
    """Raise ``ValueError`` naming the first float field of the dataclass ``options`` (or float in
    a list or mapping field) that is NaN, infinite or beyond float32's range."""
    for f in dataclasses.fields(options):
        for label, v in _float_values(f.name, getattr(options, f.name, None)):
            if not (math.isfinite(v) and abs(v) <= FLOAT32_MAX):
                raise ValueError(f"{label}: expected a finite number within float32's range "
                                 f"(|x| <= {FLOAT32_MAX:.4g}), got {v!r}")


class StepGuard:
    """The first training step whose loss, or whose gradient norm, was NaN or infinite.

    :meth:`record` keeps, on the value's device, the minimum over the recorded steps of
    ``step if the value is non-finite else NONE`` (three small kernels, no host
    synchronisation); :meth:`pending` is that state as one ``(2,)`` int64 tensor to read at a
    point that synchronises anyway, and :meth:`failure` turns the read values into a message.
    """

    #: "no non-finite value recorded"
    NONE = 2 ** 62
    KINDS = ("loss", "gradient norm")

    def __init__(self) -> None:
        self._first: List[Optional[Union[torch.Tensor, int]]] = [None, None]

    def reset(self) -> None:
        self._first = [None, None]

    def record(self, kind: str, value: Union[torch.Tensor, float], step: int) -> None:
        """Record ``value`` (``kind`` is ``"loss"`` or ``"gradient norm"``) of training step ``step``."""
        i = self.KINDS.index(kind)
        if callable(getattr(value, "full_tensor", None)):  # a DTensor (the gradient norm under FSDP2)
            value = value.full_tensor()
        if isinstance(value, torch.Tensor):
            bad = torch.where(torch.isfinite(value.detach()).all(), self.NONE, step)
        else:
            bad = self.NONE if math.isfinite(float(value)) else step
        prev = self._first[i]
        if prev is None:
            self._first[i] = bad
        elif isinstance(prev, torch.Tensor) or isinstance(bad, torch.Tensor):
            device = prev.device if isinstance(prev, torch.Tensor) else bad.device
            self._first[i] = torch.minimum(torch.as_tensor(prev, device=device), torch.as_tensor(bad, device=device))
        else:
            self._first[i] = min(prev, bad)

    def pending(self, device: Optional[torch.device] = None) -> Optional[torch.Tensor]:
        """The state as a ``(2,)`` int64 tensor (``[loss step, gradient step]``, ``NONE`` where
        finite) on ``device``, or ``None`` when nothing was recorded."""
        if self._first[0] is None and self._first[1] is None:
            return None
        if device is None:
            device = next((t.device for t in self._first if isinstance(t, torch.Tensor)), torch.device("cpu"))
        parts = [torch.as_tensor(self.NONE if t is None else t, device=device).to(torch.int64).reshape(())
                 for t in self._first]
        return torch.stack(parts)

    def read(self) -> Optional[Tuple[str, int]]:
        """``(kind, step)`` of the first non-finite value (one host synchronisation), or ``None``."""
        pending = self.pending()
        return None if pending is None else self.failure(pending.cpu().tolist())

    def failure(self, values: Sequence[int]) -> Optional[Tuple[str, int]]:
        """``(kind, step)`` from the host values of :meth:`pending` (the loss first on a tie)."""
        loss_step, grad_step = int(values[0]), int(values[1])
        if min(loss_step, grad_step) >= self.NONE:
            return None
        return ("loss", loss_step) if loss_step <= grad_step else ("gradient norm", grad_step)


def _local(t: torch.Tensor) -> torch.Tensor:
    to_local = getattr(t, "to_local", None)  # an FSDP2-sharded DTensor: this rank's shard
    return to_local() if callable(to_local) else t


def first_nonfinite(named: Iterable[Tuple[str, torch.Tensor]]) -> Optional[str]:
    """Name of the first tensor holding a NaN or infinite value (each process checks its own
    shard of a sharded tensor), or ``None``; one host synchronisation."""
    names, flags = [], []
    for name, t in named:
        t = _local(t.detach())
        if t.is_floating_point() and t.numel():
            names.append(name)
            flags.append(torch.isfinite(t).all())
    if not flags:
        return None
    device = flags[0].device
    ok = torch.stack([f.to(device) for f in flags]).cpu().tolist()
    return next((n for n, good in zip(names, ok) if not good), None)


def check_finite_predictions(predictions: Any, heads: Optional[Sequence[str]] = None) -> None:
    """Raise ``ValueError`` unless every array of ``predictions`` (an array or a tuple of them)
    is finite; for a stacked ``(N, H, C)`` array the head is named (``heads[h]``, e.g. ``"fused"``)."""
    arrays = predictions if isinstance(predictions, (tuple, list)) else (predictions,)
    for i, a in enumerate(arrays):
        a = np.asarray(a)
        if not np.issubdtype(a.dtype, np.floating) or np.isfinite(a).all():
            continue
        where = f"predictions[{i}]" if len(arrays) > 1 else "predictions"
        if a.ndim == 3 and heads is not None and a.shape[1] == len(heads):
            bad = [h for j, h in enumerate(heads) if not np.isfinite(a[:, j]).all()]
            where += f" ({bad[0]} head)"
        rows = int((~np.isfinite(a.reshape(a.shape[0], -1))).any(axis=1).sum()) if a.ndim else 1
        raise ValueError(f"{where}: {rows} of {a.shape[0] if a.ndim else 1} examples have NaN or infinite logits; "
                         "metrics of their argmax would be meaningless (the model's weights or inputs are "
                         "not finite)")


def finite_metrics(compute_metrics: Callable, heads: Optional[Sequence[str]] = None) -> Callable:
    """``compute_metrics`` preceded by :func:`check_finite_predictions` on ``eval_pred.predictions``."""

    def checked(eval_pred):
        check_finite_predictions(eval_pred.predictions, heads)
        return compute_metrics(eval_pred)

    checked.__wrapped__ = compute_metrics
    return checked


def batch_size_of(batch: Any) -> Optional[int]:
    """Examples in a collated batch: the length of its labels (``labels``, ``label`` or
    ``label_ids``), else of its first tensor; ``None`` when it has neither. Reads shapes only."""
    if not isinstance(batch, Mapping):
        return None
    for key in ("labels", "label", "label_ids"):
        v = batch.get(key)
        if isinstance(v, torch.Tensor) and v.dim() >= 1:
            return int(v.shape[0])
        if isinstance(v, (list, tuple)):
            return len(v)
    first = next((v for v in batch.values() if isinstance(v, torch.Tensor) and v.dim() >= 1), None)
    return None if first is None else int(first.shape[0])


class FiniteTrainingMixin:
    """``ARLTrainer``'s numerics: the loss of an accumulation window normalised by its example
    count, and the finite-value guards (``ARLConfig.check_finite``) on steps, parameters and
    predictions. Mixed in before ``transformers.Trainer``."""

    # ---- gradient accumulation: every micro-batch's loss is its sum / the window's examples ----
    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> Optional[int]:
        """Examples in the accumulation window on this process, from the batch shapes (no host
        synchronisation); ``Trainer`` hands it to ``training_step`` and ``compute_loss``."""
        sizes = [batch_size_of(b) for b in batch_samples]
        if not sizes or any(s is None for s in sizes):
            return None
        return int(sum(sizes))

    def _window_loss(self, loss: torch.Tensor, batch_size: int, num_items_in_batch: Any) -> torch.Tensor:
        """The micro-batch's share of the window's mean loss: ``loss`` (a mean over its
        ``batch_size`` examples) times ``batch_size / num_items_in_batch``. A window of equal
        micro-batches divides by their number, exactly as ``Trainer`` does."""
        steps = int(getattr(self, "current_gradient_accumulation_steps", 1) or 1)
        if num_items_in_batch is None:
            return loss / steps
        items = int(num_items_in_batch)
        if items == batch_size * steps:
            return loss / steps
        return loss * (batch_size / items)

    # ---- the step guard -------------------------------------------------------------------------
    @property
    def step_guard(self) -> StepGuard:
        guard = getattr(self, "_step_guard", None)
        if guard is None:
            guard = self._step_guard = StepGuard()
        return guard

    def _guarding(self) -> bool:
        return bool(getattr(self.args, "check_finite", True))

    def _record_step_value(self, kind: str, value: Any) -> None:
        if self._guarding() and value is not None:
            self.step_guard.record(kind, value, int(self.state.global_step) + 1)

    def _get_grad_norm(self, model, grad_norm=None):
        grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        scaler = getattr(self.accelerator, "scaler", None)
        # under a float16 GradScaler an infinite gradient is expected: the scaler skips that step
        if not (scaler is not None and scaler.is_enabled()):
            self._record_step_value("gradient norm", grad_norm)
        return grad_norm

    def _validate_batch(self, inputs: Mapping[str, Any], training_step: bool) -> None:
        """:func:`~arl_hf.validation.validate_batch`; the check of a training micro-batch also reads
        the step guard, in the same host transfer."""
        pending = self.step_guard.pending() if training_step and self._guarding() else None
        steps = validate_batch(inputs, self.modalities, self._num_labels, pending=pending,
                               kinds=accepted_kinds(self.model))
        if steps is not None:
            self._raise_for_steps(steps)

    def _raise_for_steps(self, values: Optional[Sequence[int]] = None) -> None:
        """Raise if a recorded step had a non-finite loss or gradient norm (``values``: the
        guard's state already read on the host; otherwise it is read here)."""
        if not self._guarding():
            return
        guard = self.step_guard
        failure = guard.read() if values is None else guard.failure(values)
        if failure is None:
            return
        kind, step = failure
        guard.reset()
        if kind == "loss":
            raise ValueError(f"training step {step}: the loss is NaN or infinite; training stopped (check the "
                             "learning rate, the loss weights such as arl_gamma, and the inputs)")
        bad = first_nonfinite(self.model.named_parameters())
        made = ""
        if bad and int(self.state.global_step) == step:  # read right after that update
            made = f"; the first parameter it made non-finite: {bad}"
        elif bad:  # read at a later logging step (validate_inputs=False): later steps spread the NaN
            made = f"; the first non-finite parameter at step {self.state.global_step}: {bad}"
        raise ValueError(f"training step {step}: the gradient norm is NaN or infinite{made}; training stopped "
                         "(check the learning rate, the loss weights and the inputs)")

    def raise_if_not_finite(self, when: str) -> None:
        """Raise ``ValueError`` if a training step recorded a non-finite loss or gradient norm, or a
        parameter holds NaN or infinite values (``when``: "save", "evaluation", ...). Skipped
        with ``ARLConfig(check_finite=False)``."""
        if not self._guarding():
            return
        self._raise_for_steps()
        bad = first_nonfinite(self.model.named_parameters())
        if bad is not None:
            raise ValueError(f"{when} at step {self.state.global_step}: parameter {bad} holds NaN or infinite "
                             "values; expected finite weights")

    # ---- where the guards are read: logging, saves, evaluations, the end of training ----------------
    def train(self, *args: Any, **kwargs: Any):
        self.step_guard.reset()
        result = super().train(*args, **kwargs)
        self.raise_if_not_finite("end of training")
        return result

    def log(self, logs: Dict[str, float], start_time: Optional[float] = None) -> None:
        if self.model.training:
            self._raise_for_steps()  # a logging step synchronises anyway (Trainer reads the loss)
        super().log(logs, start_time)

    def save_model(self, output_dir: Optional[str] = None, _internal_call: bool = False) -> None:
        self.raise_if_not_finite("save")
        super().save_model(output_dir, _internal_call)

    def evaluation_loop(self, *args: Any, **kwargs: Any):
        self.raise_if_not_finite("evaluation")
        metrics_fn = self.compute_metrics
        if self._guarding() and metrics_fn is not None:
            heads = ["fused"] + [repr(m) for m in getattr(self, "modalities", [])]
            self.compute_metrics = finite_metrics(metrics_fn, heads)
        try:
            return super().evaluation_loop(*args, **kwargs)
        finally:
            self.compute_metrics = metrics_fn
