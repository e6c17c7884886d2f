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
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F

from ..distributed import all_reduce_sum
from .base import StrategyOutput, register_strategy
from .common import StatefulStrategy, collect_features, epoch_index, num_labels_of, training_subset


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


@register_strategy("pmr")
class PMR(StatefulStrategy):
    """PMR (see module docstring). Hyper-parameters: ``pmr_alpha``, ``pmr_momentum``,
    ``pmr_proto_fraction``, ``pmr_interval_epochs``. State: the prototypes."""

    search_space = {"pmr_alpha": (0.1, 3.0, "log")}

    def __init__(self, args, modalities):
        super().__init__(args, modalities)
        self.prototypes: Dict[str, torch.Tensor] = {}
        self.last_epoch: int = -1

    def on_epoch_begin(self, trainer, model, context) -> None:
        e = epoch_index(context.epoch)
        if e == self.last_epoch or e % self.args.pmr_interval_epochs != 0:
            return
        self.update_prototypes(trainer, model, e)
        self.last_epoch = e

    @torch.no_grad()
    def update_prototypes(self, trainer, model, epoch: int) -> None:
        c = num_labels_of(model)
        subset = training_subset(trainer, self.args.pmr_proto_fraction, self.args.seed + 104729 * (epoch + 1), minimum=c)
        feats, labels = collect_features(trainer, model, subset, self.modalities)
        for m in self.modalities:
            sums, counts = class_means(feats[m], labels, c)
            flat = all_reduce_sum(torch.cat([sums.reshape(-1), counts]))
            sums, counts = flat[: sums.numel()].view_as(sums), flat[sums.numel() :]
            self.prototypes[m] = blend_prototypes(self.prototypes.get(m), sums, counts, self.args.pmr_momentum)

    def compute_loss(self, model, inputs: Dict[str, torch.Tensor], context) -> StrategyOutput:
        labels = inputs["labels"]
        out = self.forward(model, inputs, unimodal=False)
        fused = F.cross_entropy(out.logits.float(), labels)
        logs: Dict[str, torch.Tensor] = {"loss_fused": fused.detach()}
        if not context.training or len(self.prototypes) < len(self.modalities):
            return StrategyOutput(loss=fused, outputs=out, logs=logs)
        plog = {m: prototype_logits(out.features[m], self.prototypes[m]) for m in self.modalities}
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
                loss = loss + self.args.pmr_alpha * pce
            logs[f"loss_proto_{m}"] = pce.detach()
            logs[f"rho_{m}"] = rho[i]
            logs[f"weak_{m}"] = torch.tensor(float(weak), device=fused.device)
        return StrategyOutput(loss=loss, outputs=out, logs=logs)

    def state_dict(self) -> Dict[str, Any]:
        return {"prototypes": {m: p.detach().cpu().clone() for m, p in self.prototypes.items()},
                "last_epoch": self.last_epoch}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.prototypes = {m: p.clone() for m, p in state["prototypes"].items()}
        self.last_epoch = int(state["last_epoch"])
