"""Gradient-Blending, online variant (Wang, Tran & Feiszli, CVPR 2020).

K = M + 1 heads: the model's fused head and one strategy-owned ``Linear(D_m, C)`` per
modality on the encoder features. Loss ``sum_k w_k L_k`` (cross-entropies). Every
``gblending_interval_epochs`` epochs (at the start of epochs 0, N, 2N, ...) each head's
loss is measured in eval mode on the **validation split** (``L^V_k``) and on a seeded
training subset of the same size (``L^T_k``). From two consecutive measurements ``n`` and
``n + N``,

    dG_k = L^V_k(n) - L^V_k(n+N)                              (generalisation gain)
    dO_k = (L^V_k(n+N) - L^T_k(n+N)) - (L^V_k(n) - L^T_k(n))  (change of the overfitting gap)
    w_k  = max(dG_k, 0) / (dO_k^2 + eps),   normalised to sum 1,

used for the next window (paper Eq. 8 / Alg. 1 "online G-Blend"; uniform weights for the
first window; if no head improved, the previous weights are kept). The paper's online
variant holds out part of the training set; here the validation split plays that role
(never the test split). Prediction uses the fused head.

Added parameters: ``heads`` (a ``ModuleDict`` of M ``Linear(D_m, C)``), in the optimizer via
:meth:`extra_parameters`, saved in ``strategy_state.pt`` with the weights and last measurement.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F

from ..distributed import all_reduce_sum
from .base import StrategyOutput, register_strategy
from .common import (
    StatefulStrategy,
    average_gradients_across_ranks,
    epoch_index,
    iterate_split,
    load_module_state,
    module_state,
    training_subset,
    unimodal_heads,
    validation_dataset,
)

EPS = 1e-8


def blending_weights(prev_train: torch.Tensor, prev_val: torch.Tensor, cur_train: torch.Tensor,
                     cur_val: torch.Tensor, previous: Optional[torch.Tensor] = None) -> torch.Tensor:
    """G-Blending weights ``w_k ∝ max(dG_k, 0) / dO_k^2`` (normalised); ``previous`` if no gain."""
    gain = (prev_val - cur_val).clamp_min(0.0)
    d_over = (cur_val - cur_train) - (prev_val - prev_train)
    raw = gain / (d_over.pow(2) + EPS)
    if not torch.isfinite(raw).all() or raw.sum() <= 0:
        k = prev_val.shape[0]
        return previous.clone() if previous is not None else torch.full((k,), 1.0 / k)
    return raw / raw.sum()


@register_strategy("gblending")
class GradientBlending(StatefulStrategy):
    """Online G-Blending (see module docstring). Hyper-parameter: ``gblending_interval_epochs``."""

    def __init__(self, args, modalities):
        super().__init__(args, modalities)
        self.heads = None
        k = len(self.modalities) + 1
        self.weights = torch.full((k,), 1.0 / k)  # order: fused, then modalities
        self.last_measure: Optional[Dict[str, torch.Tensor]] = None
        self.last_epoch = -1

    def setup(self, trainer, model) -> None:
        super().setup(trainer, model)
        self.heads = unimodal_heads(model, self.modalities, seed=self.args.seed)

    def extra_parameters(self):
        return list(self.heads.parameters())

    def owned_modules(self):
        return list(self.heads.values())

    def head_keys(self):
        return ["fused"] + list(self.modalities)

    def losses(self, out, labels, reduction="mean") -> torch.Tensor:
        per = [F.cross_entropy(out.logits.float(), labels, reduction=reduction)]
        for m in self.modalities:
            per.append(F.cross_entropy(self.heads[m](out.features[m]).float(), labels, reduction=reduction))
        return torch.stack(per)

    def compute_loss(self, model, inputs: Dict[str, torch.Tensor], context) -> StrategyOutput:
        labels = inputs["labels"]
        out = self.forward(model, inputs, unimodal=False)
        per = self.losses(out, labels)
        w = self.weights.to(per.device)
        loss = (w * per).sum()
        logs = {f"loss_{k}": per[i].detach() for i, k in enumerate(self.head_keys())}
        logs.update({f"w_{k}": w[i] for i, k in enumerate(self.head_keys())})
        return StrategyOutput(loss=loss, outputs=out, logs=logs)

    def after_backward(self, model, context) -> None:
        super().after_backward(model, context)
        average_gradients_across_ranks(self.extra_parameters(), self._trainer)

    # ---- periodic re-estimation on the validation split ---------------------------------------
    def on_epoch_begin(self, trainer, model, context) -> None:
        e = epoch_index(context.epoch)
        if e == self.last_epoch or e % self.args.gblending_interval_epochs != 0:
            return
        measure = self.measure(trainer, model, e)
        if self.last_measure is not None:
            self.weights = blending_weights(
                self.last_measure["train"], self.last_measure["val"], measure["train"], measure["val"], self.weights
            )
        self.last_measure = measure
        self.last_epoch = e

    @torch.no_grad()
    def split_losses(self, trainer, model, dataset) -> torch.Tensor:
        """Mean loss of every head on ``dataset`` (eval mode, summed over ranks)."""
        was = model.training
        model.eval()
        self.heads.eval()
        total, count = None, 0.0
        try:
            for batch in iterate_split(trainer, dataset):
                out = model(**{m: batch[m] for m in self.modalities})
                s = self.losses(out, batch["labels"], reduction="sum")
                total = s if total is None else total + s
                count += float(batch["labels"].shape[0])
        finally:
            model.train(was)
            self.heads.train(was)
        flat = all_reduce_sum(torch.cat([total.float(), torch.tensor([count], device=total.device)]))
        return (flat[:-1] / flat[-1]).cpu()

    def measure(self, trainer, model, epoch: int) -> Dict[str, torch.Tensor]:
        val = validation_dataset(trainer, "gblending")
        n = len(val) / max(len(trainer.train_dataset), 1)
        train = training_subset(trainer, min(1.0, n), self.args.seed + 15485863 * (epoch + 1))
        return {"val": self.split_losses(trainer, model, val), "train": self.split_losses(trainer, model, train)}

    def state_dict(self) -> Dict[str, Any]:
        return {
            "heads": module_state(self.heads),
            "weights": self.weights.clone(),
            "last_measure": None if self.last_measure is None else {k: v.clone() for k, v in self.last_measure.items()},
            "last_epoch": self.last_epoch,
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        load_module_state(self.heads, state["heads"])
        self.weights = state["weights"].clone()
        self.last_measure = state["last_measure"]
        self.last_epoch = int(state["last_epoch"])
