"""PMR: Prototypical Modal Rebalance (Fan et al., CVPR 2023).

Before every ``pmr_interval_epochs``-th epoch, class prototypes ``c_m[k]`` are the class
means of ``model.encoders[m]``'s features over a seeded random ``pmr_proto_fraction`` of the
training set (eval mode; sums all-reduced over ranks), blended with the previous ones:
``c <- (1 - pmr_momentum) * c_new + pmr_momentum * c_old`` (``pmr_momentum`` weights the *old*
prototypes, as in the released code; first time: ``c_new``; a class
absent from the subset keeps its old prototype). Per micro-batch, prototype logits are
``-||z_m - c_m[k]||_2``, the scores ``s_m = sum_i softmax(-d_m)_i[y_i]`` (all-reduced) give the
imbalance ``rho_m = s_m / mean_{j != m} s_j``, and the prototypical cross-entropy of every
weaker modality (``rho_m < 1``) is added with weight ``pmr_alpha``:
``L = CE(fused) + pmr_alpha * sum_{m weak} CE(-d_m, y)``.

This is the released script's rule. The paper's prototype-entropy regularisation of the
dominant modality is not in the released script and is not implemented here (see
docs/strategies.md).

State (buffers of ``model.strategy_state``): ``prototypes.<modality>`` ``(C, D_m)`` (float32),
``has_prototypes`` (0 until the first computation) and ``last_epoch``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional

import torch
import torch.nn.functional as F

from ..distributed import all_reduce_sum
from .base import Strategy, StrategyOutput, register_strategy
from .common import collect_features, encoder_dims, epoch_index, model_device, num_labels_of, training_subset
from .options import StrategyOptions, finite, need
from .state import StrategyState


@dataclass
class PMROptions(StrategyOptions):
    """Options of PMR (:class:`PMR`)."""

    pmr_alpha: float = field(
        default=1.0, metadata={"help": "PMR: weight of the prototypical cross-entropy of the weaker modality (>= 0)."}
    )
    pmr_momentum: float = field(
        default=0.2,
        metadata={"help": "PMR: weight of the old prototypes in c <- (1 - m) * c_new + m * c_old (in [0, 1])."},
    )
    pmr_proto_fraction: float = field(
        default=0.1, metadata={"help": "PMR: fraction of the training set used to compute prototypes (in (0, 1])."}
    )
    pmr_interval_epochs: int = field(default=1, metadata={"help": "PMR: recompute prototypes every N epochs."})

    def check(self) -> None:
        need(finite(self.pmr_alpha) and self.pmr_alpha >= 0, self, "pmr_alpha", "a finite number >= 0")
        need(finite(self.pmr_momentum) and 0 <= self.pmr_momentum <= 1, self, "pmr_momentum", "a number in [0, 1]")
        need(finite(self.pmr_proto_fraction) and 0 < self.pmr_proto_fraction <= 1, self, "pmr_proto_fraction",
             "a number in (0, 1]")
        need(isinstance(self.pmr_interval_epochs, int) and self.pmr_interval_epochs >= 1, self,
             "pmr_interval_epochs", "an int >= 1")


def class_means(features: torch.Tensor, labels: torch.Tensor, num_labels: int):
    """``(sums (C, D), counts (C,))`` of ``features`` per class (float32)."""
    f = features.float()
    sums = torch.zeros(num_labels, f.shape[1], device=f.device).index_add_(0, labels.long(), f)
    counts = torch.bincount(labels.long(), minlength=num_labels).float().to(f.device)
    return sums, counts


def blend_prototypes(old: Optional[torch.Tensor], sums: torch.Tensor, counts: torch.Tensor, momentum: float):
    """New prototypes ``(1 - momentum) * new + momentum * old`` (``momentum`` weights the old
    prototypes); the first call returns the class means, and classes with no sample keep ``old``."""
    new = sums / counts.clamp_min(1.0)[:, None]
    if old is None:
        return new
    old = old.to(new.device)
    blended = (1.0 - momentum) * new + momentum * old
    return torch.where(counts[:, None] > 0, blended, old)


def prototype_logits(features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """``-||z - c_k||_2`` for every class ``k``: ``(B, C)``."""
    z = features.float()
    c = prototypes.to(z.device).float()
    d2 = (z[:, None, :] - c[None, :, :]).pow(2).sum(-1)
    return -torch.sqrt(d2.clamp_min(1e-12))


@register_strategy("pmr", options=PMROptions, label="PMR", prefix="pmr_")
class PMR(Strategy):
    """PMR (see module docstring). Hyper-parameters: ``pmr_alpha``, ``pmr_momentum``,
    ``pmr_proto_fraction``, ``pmr_interval_epochs``. State: the prototypes."""

    search_space = {"pmr_alpha": (0.1, 3.0, "log")}

    def build_state(self, model) -> StrategyState:
        dims, c, dev = encoder_dims(model, self.modalities), num_labels_of(model), model_device(model)
        state = StrategyState(self.name)
        for m in self.modalities:
            state.add_buffer(f"prototypes.{m}", torch.zeros(c, dims[m], device=dev, dtype=torch.float32))
        state.add_buffer("has_prototypes", torch.zeros((), dtype=torch.int64, device=dev))
        state.add_buffer("last_epoch", torch.full((), -1, dtype=torch.int64, device=dev))
        return state

    @property
    def prototypes(self) -> Dict[str, torch.Tensor]:
        """modality -> ``(C, D_m)`` class prototypes; empty before the first computation."""
        state = self.state_module
        if state is None or not int(state.has_prototypes):
            return {}
        return {m: getattr(state.prototypes, m) for m in self.modalities}

    @prototypes.setter
    def prototypes(self, value: Dict[str, torch.Tensor]) -> None:
        """Set every modality's prototypes (``{m: (C, D_m)}``)."""
        missing = [m for m in self.modalities if m not in value]
        if missing:
            raise ValueError(f"prototypes: expected a tensor for every modality {self.modalities}, missing {missing}")
        with torch.no_grad():
            for m in self.modalities:
                getattr(self.state_module.prototypes, m).copy_(value[m])
            self.state_module.has_prototypes.fill_(1)

    @property
    def last_epoch(self) -> int:
        return int(self.state_module.last_epoch)

    def on_epoch_begin(self, trainer, model, context) -> None:
        e = epoch_index(context.epoch)
        if e == self.last_epoch or e % self.options.pmr_interval_epochs != 0:
            return
        self.update_prototypes(trainer, model, e)
        self.state_module.last_epoch.fill_(e)

    @torch.no_grad()
    def update_prototypes(self, trainer, model, epoch: int) -> None:
        c = num_labels_of(model)
        subset = training_subset(trainer, self.options.pmr_proto_fraction, self.seed + 104729 * (epoch + 1),
                                 minimum=c)
        feats, labels = collect_features(trainer, model, subset, self.modalities)
        old = self.prototypes
        for m in self.modalities:
            sums, counts = class_means(feats[m], labels, c)
            flat = all_reduce_sum(torch.cat([sums.reshape(-1), counts]))
            sums, counts = flat[: sums.numel()].view_as(sums), flat[sums.numel() :]
            new = blend_prototypes(old.get(m), sums, counts, self.options.pmr_momentum)
            getattr(self.state_module.prototypes, m).copy_(new)
        self.state_module.has_prototypes.fill_(1)

    def compute_loss(self, model, inputs: Dict[str, torch.Tensor], context) -> StrategyOutput:
        labels = inputs["labels"]
        out = self.forward(model, inputs, unimodal=False)
        fused = F.cross_entropy(out.logits.float(), labels)
        logs: Dict[str, torch.Tensor] = {"loss_fused": fused.detach()}
        prototypes = self.prototypes if context.training else {}
        if len(prototypes) < len(self.modalities):
            return StrategyOutput(loss=fused, outputs=out, logs=logs)
        plog = {m: prototype_logits(out.features[m], prototypes[m]) for m in self.modalities}
        with torch.no_grad():
            scores = torch.stack(
                [plog[m].softmax(-1).gather(1, labels.long()[:, None]).sum() for m in self.modalities]
            )
            scores = all_reduce_sum(scores)
            others = (scores.sum() - scores) / max(len(self.modalities) - 1, 1)
            rho = scores / others.clamp_min(1e-12)
        loss = fused
        for i, m in enumerate(self.modalities):
            pce = F.cross_entropy(plog[m], labels)
            weak = bool(rho[i] < 1.0)
            if weak:
                loss = loss + self.options.pmr_alpha * pce
            logs[f"loss_proto_{m}"] = pce.detach()
            logs[f"rho_{m}"] = rho[i]
            logs[f"weak_{m}"] = torch.tensor(float(weak), device=fused.device)
        return StrategyOutput(loss=loss, outputs=out, logs=logs)
