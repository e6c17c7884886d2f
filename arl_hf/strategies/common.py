"""Helpers shared by the comparison strategies (OGM-GE, AGM, PMR, G-Blending, MMPareto, MLA, D&R).

Nothing here is method-specific: epoch bookkeeping, strategy-owned heads (created on the
model's device, identical on every rank, gradients averaged across ranks), passes over a
split without touching the global RNG (held-out estimates use the *validation* split via
``trainer.get_eval_dataloader``), feature collection, cross-rank gathering and an
in-graph gradient multiplier.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn
from transformers import TrainerCallback
from ..log import get_logger

from ..distributed import all_reduce_sum, broadcast_, is_distributed, world_size
from .base import Strategy

if TYPE_CHECKING:  # pragma: no cover
    from ..trainer import ARLTrainer

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


def average_gradients_across_ranks(params: Sequence[nn.Parameter], trainer: Optional["ARLTrainer"]) -> None:
    """DDP averages the wrapped model's gradients; strategy-owned parameters live outside it,
    so their accumulated gradients are averaged here on the synchronising micro-batch."""
    if not is_distributed() or not is_sync_step(trainer):
        return
    from ..fsdp import is_dtensor

    # FSDP-sharded heads (DTensor gradients) were already reduce-scattered by FSDP
    grads = [p.grad for p in params if p.grad is not None and not is_dtensor(p.grad)]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1).float() for g in grads])
    flat = all_reduce_sum(flat) / world_size()
    i = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[i : i + n].view_as(g).to(g.dtype))
        i += n


def is_sync_step(trainer: Optional["ARLTrainer"]) -> bool:
    """Whether the micro-batch just run is the last of its accumulation window (True without a trainer)."""
    if trainer is None:
        return True
    return bool(trainer.accelerator.sync_gradients)


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
def validation_dataset(trainer: "ARLTrainer", field: str):
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


def training_subset(trainer: "ARLTrainer", fraction: float, seed: int, minimum: int = 1):
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


def iterate_split(trainer: "ARLTrainer", dataset) -> Iterator[Dict[str, Any]]:
    """Batches of ``dataset`` through the trainer's evaluation loader (sequential, sharded across
    ranks, same collator), moved to the device, with ``labels`` normalised."""
    with torch.random.fork_rng(devices=[]):  # a DataLoader iterator draws a seed from the global RNG
        loader = trainer.get_eval_dataloader(dataset)
        for batch in loader:
            batch = trainer._prepare_inputs(batch)
            yield trainer._strategy_inputs(batch)


@torch.no_grad()
def collect_features(
    trainer: "ARLTrainer", model: nn.Module, dataset, modalities: Sequence[str]
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


# ---- state across `load_best_model_at_end` --------------------------------------------------
class _StrategyStateCallback(TrainerCallback):
    """Keeps strategy-owned parameters and state in step with the Trainer.

    * After each optimizer step the Trainer zeroes the *model's* gradients only; the
      gradients of the strategy's own parameters (heads) are cleared here.
    * With ``load_best_model_at_end`` the Trainer reloads the best checkpoint's model
      weights; the strategy state saved beside them (heads, prototypes, running
      statistics) is reloaded here.
    """

    def __init__(self, strategy: Strategy):
        self.strategy = strategy

    def on_step_end(self, args, state, control, **kwargs):
        for p in self.strategy.extra_parameters():
            p.grad = None

    def on_train_end(self, args, state, control, **kwargs):
        best = state.best_model_checkpoint
        if not (args.load_best_model_at_end and best):
            return
        from ..trainer import STRATEGY_STATE_NAME

        path = os.path.join(best, STRATEGY_STATE_NAME)
        if os.path.isfile(path):
            self.strategy.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            logger.info(f"{self.strategy.name}: strategy state restored from {path}")


class StatefulStrategy(Strategy):
    """A strategy with state worth checkpointing: keeps the trainer, clears its own parameters'
    gradients after each optimizer step and restores its state from the best checkpoint when
    the Trainer reloads the best model (:class:`_StrategyStateCallback`)."""

    def setup(self, trainer, model) -> None:
        super().setup(trainer, model)
        self._trainer = trainer
        if trainer is not None:
            trainer.add_callback(_StrategyStateCallback(self))


def module_state(module: nn.Module) -> Dict[str, torch.Tensor]:
    """Full CPU copies of a module's state. FSDP-sharded entries (``DTensor``) are gathered, so
    every rank must call it when the module is sharded."""
    from ..fsdp import is_dtensor

    out = {}
    for k, v in module.state_dict().items():
        if is_dtensor(v):
            v = v.full_tensor()
        out[k] = v.detach().cpu().clone()
    return out


def load_module_state(module: nn.Module, state: Dict[str, torch.Tensor]) -> None:
    """Load full tensors (what :func:`module_state` returns) into a plain or FSDP-sharded module:
    a sharded entry keeps this rank's shard of the full tensor."""
    from ..fsdp import is_dtensor

    dev = model_device(module)
    current = module.state_dict()
    fixed = {}
    for k, v in state.items():
        cur = current.get(k)
        if is_dtensor(cur):
            from torch.distributed.tensor import distribute_tensor

            fixed[k] = distribute_tensor(v.to(device=cur.device, dtype=cur.dtype), cur.device_mesh, cur.placements,
                                         src_data_rank=None)  # every rank holds the full tensor: no communication
        else:
            fixed[k] = v.to(dev)
    module.load_state_dict(fixed)


def check_peer_fields(args: Any) -> None:
    """Validate the comparison methods' ``ARLConfig`` fields (``ValueError`` naming the field)."""

    def need(ok: bool, name: str, expected: str) -> None:
        if not ok:
            raise ValueError(f"{name}: expected {expected}, got {getattr(args, name)!r}")

    def finite(x) -> bool:
        return isinstance(x, (int, float)) and math.isfinite(x)

    need(finite(args.ogm_alpha) and args.ogm_alpha >= 0, "ogm_alpha", "a finite number >= 0")
    need(isinstance(args.ogm_start_epoch, int) and args.ogm_start_epoch >= 0, "ogm_start_epoch", "an int >= 0")
    need(isinstance(args.ogm_end_epoch, int) and args.ogm_end_epoch >= args.ogm_start_epoch,
         "ogm_end_epoch", "an int >= ogm_start_epoch")
    need(finite(args.agm_alpha) and args.agm_alpha >= 0, "agm_alpha", "a finite number >= 0")
    need(finite(args.pmr_alpha) and args.pmr_alpha >= 0, "pmr_alpha", "a finite number >= 0")
    need(finite(args.pmr_momentum) and 0 <= args.pmr_momentum <= 1, "pmr_momentum", "a number in [0, 1]")
    need(finite(args.pmr_proto_fraction) and 0 < args.pmr_proto_fraction <= 1, "pmr_proto_fraction", "a number in (0, 1]")
    for name in ("pmr_interval_epochs", "gblending_interval_epochs", "dr_interval_epochs"):
        need(isinstance(getattr(args, name), int) and getattr(args, name) >= 1, name, "an int >= 1")
    need(finite(args.mmpareto_gamma) and args.mmpareto_gamma > 0, "mmpareto_gamma", "a finite number > 0")
    need(finite(args.mla_alpha) and 0 < args.mla_alpha, "mla_alpha", "a finite number > 0")
    need(finite(args.dr_lambda) and args.dr_lambda >= 0, "dr_lambda", "a finite number >= 0")
    need(isinstance(args.dr_max_times, int) and args.dr_max_times >= 0, "dr_max_times", "an int >= 0")
    fm = args.fixed_multipliers
    if fm is not None:
        values = list(fm.values()) if isinstance(fm, dict) else list(fm) if isinstance(fm, (list, tuple)) else None
        need(values is not None and len(values) > 0 and all(finite(v) and v >= 0 for v in values),
             "fixed_multipliers", "a non-empty list of finite numbers >= 0 (one per modality, in order)")
