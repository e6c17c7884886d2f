"""Batch checks run before a step: a bad batch is a ``ValueError`` naming the field."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch


def validate_batch(batch: Mapping[str, Any], modalities: Sequence[str], num_labels: Optional[int]) -> None:
    """Check modality tensors and labels of one batch.

    Raises ``ValueError`` for a missing modality, a non-tensor or non-float input, an
    empty batch, non-finite values, or labels that are not integers in
    ``[0, num_labels)``. Value checks need one host sync on an accelerator.
    """
    for m in modalities:
        if m not in batch:
            raise ValueError(f"{m}: missing modality input; the batch has keys {sorted(batch)}")
        x = batch[m]
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{m}: expected a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise ValueError(f"{m}: expected a floating-point tensor, got dtype {x.dtype}")
        if x.dim() == 0 or x.shape[0] == 0:
            raise ValueError(f"{m}: the batch is empty (shape {tuple(x.shape)})")
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
