"""Checks of the data contract: class indices and batches; a bad value is a ``ValueError`` naming the field.

:func:`class_indices` is the one place labels are normalised (the transform, the collator and
the metrics call it); :func:`check_inputs` is the one structural check of model inputs (the
model's ``forward`` calls it); :func:`validate_batch` checks a collated batch before a training
step (:func:`check_inputs`, then the values: finite inputs, labels in range).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import torch

__all__ = ["class_indices", "check_inputs", "validate_batch"]


def class_indices(values: Any, field: str = "labels") -> np.ndarray:
    """``values`` (a sequence, array or tensor of class indices) as a 1-D ``int64`` array.

    Integer values are kept; floats are accepted only when whole (``2.0`` -> ``2``).

    Raises:
        ValueError: not 1-D, or values that are not whole numbers (names ``field``).
    """
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{field}: expected a 1-D array of class indices, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if arr.dtype == object:
            try:
                arr = arr.astype(np.float64)
            except (TypeError, ValueError):
                raise ValueError(f"{field}: expected integer class indices, got {values[:3]!r}...") from None
        if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number) or not np.all(np.equal(np.mod(arr, 1), 0)):
            raise ValueError(f"{field}: expected integer class indices, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def check_inputs(inputs: Mapping[str, Any], modalities: Sequence[str], labels: Any = None, *,
                 expected: Optional[str] = None, unknown: str = "ignore",
                 check_input: Optional[Callable[[str, torch.Tensor], None]] = None) -> int:
    """Check the structure of one batch of model inputs; returns the batch size.

    Every name of ``modalities`` must be in ``inputs`` as a floating-point tensor with a
    non-empty batch axis, all with the same batch size; ``labels``, when given, a ``(B,)``
    tensor. Reads no values (no host sync).

    Args:
        inputs: modality name -> tensor (other keys: see ``unknown``).
        modalities: the modality names expected.
        labels: the labels of the batch, or ``None`` (not checked).
        expected: what the message of a missing modality says is expected (default: the keys
            the batch has).
        unknown: ``"ignore"`` other keys of ``inputs``, or ``"raise"`` for a key that is not one
            of ``modalities``.
        check_input: called as ``check_input(name, tensor)`` on each modality tensor after the
            type checks (e.g. an encoder's shape check).

    Raises:
        ValueError: naming the offending field (the modality, or ``labels``).
    """
    missing = [m for m in modalities if m not in inputs]
    if missing:
        hint = expected if expected is not None else f"the batch has keys {sorted(inputs)}"
        raise ValueError(f"{missing[0]}: missing modality input; {hint}")
    if unknown == "raise":
        extra = [k for k in inputs if k not in modalities]
        if extra:
            raise ValueError(f"{extra[0]}: not a modality of this model; expected one of {list(modalities)}")
    batch = None
    for m in modalities:
        x = inputs[m]
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{m}: expected a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise ValueError(f"{m}: expected a floating-point tensor, got dtype {x.dtype}")
        if check_input is not None:
            check_input(m, x)
        if x.dim() == 0 or x.shape[0] == 0:
            raise ValueError(f"{m}: the batch is empty (shape {tuple(x.shape)})")
        if batch is None:
            batch = int(x.shape[0])
        elif x.shape[0] != batch:
            raise ValueError(f"{m}: batch size {x.shape[0]} differs from {modalities[0]}'s {batch}")
    if labels is not None and (not isinstance(labels, torch.Tensor) or tuple(labels.shape) != (batch,)):
        got = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"labels: expected shape ({batch},), got {got}")
    return batch


def validate_batch(batch: Mapping[str, Any], modalities: Sequence[str], num_labels: Optional[int]) -> None:
    """Check modality tensors and labels of one batch.

    Raises ``ValueError`` for a missing modality, a non-tensor or non-float input, an
    empty batch, batch sizes that differ (:func:`check_inputs`), non-finite values, or labels
    that are not integers in ``[0, num_labels)``. Value checks need one host sync on an
    accelerator.
    """
    check_inputs(batch, modalities)
    labels = batch.get("labels")
    if not isinstance(labels, torch.Tensor):
        raise ValueError(f"labels: expected a torch.Tensor of class indices, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels: expected integer class indices, got dtype {labels.dtype}")
    if labels.dim() != 1 or labels.shape[0] == 0:
        raise ValueError(f"labels: expected a non-empty (B,) tensor, got shape {tuple(labels.shape)}")
    # one fused reduction -> one host sync
    flags = [torch.isfinite(batch[m]).all() for m in modalities]
    lo, hi = labels.min(), labels.max()
    checks = torch.stack([torch.stack(flags).all().to(lo.device).long(), lo, hi]).cpu().tolist()
    if not checks[0]:
        bad = next(m for m in modalities if not bool(torch.isfinite(batch[m]).all()))
        raise ValueError(f"{bad}: input contains NaN or infinite values")
    if checks[1] < 0 or (num_labels is not None and checks[2] >= num_labels):
        raise ValueError(
            f"labels: expected class indices in [0, {num_labels}), got values in [{checks[1]}, {checks[2]}]"
        )
