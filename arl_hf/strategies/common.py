"""Helpers shared by the comparison strategies (OGM-GE, AGM, PMR, G-Blending, MMPareto, MLA, D&R).

Nothing here is method-specific: epoch bookkeeping, strategy heads (created on the model's
device, identical on every rank, without moving the global RNG), passes over a split without
touching the global RNG (held-out estimates use the *validation* split through
:meth:`TrainerView.eval_batches`), feature collection, cross-rank gathering and an in-graph
gradient multiplier.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Iterator, List, Sequence, Tuple

import torch
from torch import nn

from ..distributed import all_reduce_sum, broadcast_, is_distributed, world_size
from ..log import get_logger
from .view import TrainerView

logger = get_logger(__name__)


def epoch_index(epoch: float) -> int:
    """0-based index of the epoch in progress from ``trainer.state.epoch`` (fractional).

    ``state.epoch`` is ``e`` exactly at the start of epoch ``e`` and ``e + k/steps`` inside it.
    """
    e = math.floor(epoch)
    if epoch - e > 1.0 - 1e-9:
        e += 1
    return int(e)


def unwrap(model: nn.Module) -> nn.Module:
    """The ``MultimodalModel`` inside a DDP / DeepSpeed / compile wrapper (accelerate's
    ``extract_model_from_parallel``). Strategy hooks that run inside the training step
    (``compute_loss``, ``after_backward``) receive the wrapped model."""
    from accelerate.utils import extract_model_from_parallel

    return extract_model_from_parallel(model, keep_torch_compile=False)


def model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """dtype of the model's first floating-point parameter (float32 if it has none): strategy-owned
    heads and buffers follow it, so a float64 model trains with float64 heads."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def encoder_dims(model: nn.Module, modalities: Sequence[str]) -> Dict[str, int]:
    """Feature size of each ``model.encoders[m]`` (its ``out_dim``, part of the encoder contract)."""
    dims = {}
    for m in modalities:
        d = getattr(model.encoders[m], "out_dim", None)
        if not isinstance(d, int) or d < 1:
            raise ValueError(
                f"encoders[{m!r}]: expected an `out_dim` int attribute (the feature size) to build the "
                f"strategy's heads, got {d!r}"
            )
        dims[m] = d
    return dims


def num_labels_of(model: nn.Module) -> int:
    n = getattr(getattr(model, "config", None), "num_labels", None)
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"model.config.num_labels: expected an int >= 2 to build the strategy's heads, got {n!r}")
    return n


def make_linear(
    in_dim: int, out_dim: int, seed: int, device: torch.device, dtype: torch.dtype = torch.float32
) -> nn.Linear:
    """``nn.Linear`` initialised from ``seed`` (PyTorch's default init, drawn in float32 and cast to
    ``dtype``) without touching the global RNG, so every rank builds the same head and the training
    RNG stream is unchanged."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layer = nn.Linear(in_dim, out_dim)
    layer = layer.to(device=device, dtype=dtype)
    for p in layer.parameters():
        broadcast_(p.data)
    return layer


def unimodal_heads(model: nn.Module, modalities: Sequence[str], seed: int) -> nn.ModuleDict:
    """One ``Linear(D_m, C)`` per modality on the encoder features (MMPareto, G-Blending)."""
    dims = encoder_dims(model, modalities)
    c = num_labels_of(model)
    dev, dt = model_device(model), model_dtype(model)
    return nn.ModuleDict(
        {m: make_linear(dims[m], c, seed + 7919 * (i + 1), dev, dt) for i, m in enumerate(modalities)}
    )


class GradScale(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``scale`` (a 0-d tensor or float)."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        s = ctx.scale
        if isinstance(s, torch.Tensor):
            return (grad.float() * s.to(grad.device)).to(grad.dtype), None
        return grad * s, None


def grad_scale(x: torch.Tensor, scale) -> torch.Tensor:
    """``x`` in the forward pass; its gradient times ``scale`` in the backward pass."""
    return GradScale.apply(x, scale)


# ---- passes over a split (validation for held-out estimates, a training subset for statistics) ----
def validation_dataset(trainer: TrainerView, field: str):
    """The trainer's validation split (``trainer.eval_dataset``); never the test split."""
    ds = trainer.eval_dataset
    if isinstance(ds, dict):
        if "validation" in ds:
            return ds["validation"]
        raise ValueError(
            f"{field}: eval_dataset is a dict {sorted(ds)}; expected a 'validation' entry (the held-out split)"
        )
    if ds is None:
        raise ValueError(
            f"{field}: this strategy needs a validation split for its held-out estimates; pass "
            "eval_dataset=<the validation split> to ARLTrainer (never the test split)"
        )
    return ds


def training_subset(trainer: TrainerView, fraction: float, seed: int, minimum: int = 1):
    """A seeded random subset (``fraction`` of the training set, at least ``minimum`` rows).

    Drawn from its own generator, so it is the same on every rank and does not move the
    global RNG (resuming reproduces the uninterrupted run).
    """
    ds = trainer.train_dataset
    if ds is None:
        raise ValueError("train_dataset: this strategy needs the training set for its statistics")
    n = len(ds)
    if fraction >= 1.0:
        return ds
    k = min(n, max(minimum, int(math.ceil(fraction * n))))
    g = torch.Generator().manual_seed(int(seed))
    idx = sorted(torch.randperm(n, generator=g)[:k].tolist())
    if hasattr(ds, "select"):
        return ds.select(idx)
    return torch.utils.data.Subset(ds, idx)


def iterate_split(trainer: TrainerView, dataset) -> Iterator[Dict[str, Any]]:
    """Batches of ``dataset`` through the trainer's evaluation loader (:meth:`TrainerView.eval_batches`)."""
    return trainer.eval_batches(dataset)


@torch.no_grad()
def collect_features(
    trainer: TrainerView, model: nn.Module, dataset, modalities: Sequence[str]
) -> Tuple[Dict[str, torch.Tensor], torch.Tensor]:
    """This rank's ``(features {m: (N, D_m)}, labels (N,))``
    on ``dataset``, in eval mode (no dropout, no BatchNorm update), restoring the mode after."""
    was_training = model.training
    model.eval()
    feats: Dict[str, List[torch.Tensor]] = {m: [] for m in modalities}
    labels: List[torch.Tensor] = []
    try:
        for batch in iterate_split(trainer, dataset):
            out = model(**{m: batch[m] for m in modalities})
            for m in modalities:
                feats[m].append(out.features[m].detach().float())
            labels.append(batch["labels"].detach())
    finally:
        model.train(was_training)
    if not labels:
        raise ValueError("dataset: no batch to compute the strategy's statistics on (empty split)")
    return {m: torch.cat(v) for m, v in feats.items()}, torch.cat(labels)


def gather_rows(t: torch.Tensor) -> torch.Tensor:
    """Concatenate ``(N_r, ...)`` tensors of every rank (sizes may differ) on every rank."""
    if not is_distributed():
        return t
    from ..distributed import rank

    all_n = torch.zeros(world_size(), device=t.device)
    all_n[rank()] = float(t.shape[0])
    all_n = all_reduce_sum(all_n)
    sizes = [int(x) for x in all_n.tolist()]
    buf = torch.zeros((sum(sizes),) + tuple(t.shape[1:]), device=t.device, dtype=torch.float32)
    start = sum(sizes[: rank()])
    buf[start : start + t.shape[0]] = t.float()
    return all_reduce_sum(buf).to(t.dtype)
