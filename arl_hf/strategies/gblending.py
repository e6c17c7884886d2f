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

Added to the model (``model.strategy_state``): the parameters ``heads`` (a ``ModuleDict`` of M
``Linear(D_m, C)``) and the buffers ``weights`` (K), ``last_train`` / ``last_val`` (the last
measurement), ``has_measure`` and ``last_epoch``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional

import torch
import torch.nn.functional as F

from ..distributed import all_reduce_sum
from .base import Strategy, StrategyOutput, register_strategy
from .common import epoch_index, iterate_split, model_device, training_subset, unimodal_heads, validation_dataset
from .options import StrategyOptions, need
from .state import StrategyState

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


@dataclass
class GBlendingOptions(StrategyOptions):
    """Options of G-Blending (:class:`GradientBlending`)."""

    gblending_interval_epochs: int = field(
        default=10,
        metadata={"help": "G-Blending: re-estimate the blending weights on the validation split every N epochs."},
    )

    def check(self) -> None:
        need(isinstance(self.gblending_interval_epochs, int) and self.gblending_interval_epochs >= 1, self,
             "gblending_interval_epochs", "an int >= 1")


@register_strategy("gblending", options=GBlendingOptions, label="G-Blending", prefix="gblending_")
class GradientBlending(Strategy):
    """Online G-Blending (see module docstring). Hyper-parameter: ``gblending_interval_epochs``."""

    def build_state(self, model) -> StrategyState:
        k = len(self.modalities) + 1
        dev = model_device(model)
        state = StrategyState(self.name)
        state.heads = unimodal_heads(model, self.modalities, seed=self.seed)
        state.add_buffer("weights", torch.full((k,), 1.0 / k, device=dev))  # order: fused, then modalities
        state.add_buffer("last_train", torch.zeros(k, device=dev))
        state.add_buffer("last_val", torch.zeros(k, device=dev))
        state.add_buffer("has_measure", torch.zeros((), dtype=torch.int64, device=dev))
        state.add_buffer("last_epoch", torch.full((), -1, dtype=torch.int64, device=dev))
        return state

    @property
    def heads(self):
        return self.state_module.heads

    @property
    def weights(self) -> torch.Tensor:
        """The blending weights (fused head first), on the CPU."""
        return self.state_module.weights.detach().cpu()

    @weights.setter
    def weights(self, value: torch.Tensor) -> None:
        self.state_module.weights.copy_(value)

    @property
    def last_measure(self) -> Optional[Dict[str, torch.Tensor]]:
        state = self.state_module
        if not int(state.has_measure):
            return None
        return {"train": state.last_train.detach().cpu(), "val": state.last_val.detach().cpu()}

    @property
    def last_epoch(self) -> int:
        return int(self.state_module.last_epoch)

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
        w = self.state_module.weights.to(per.device)
        loss = (w * per).sum()
        logs = {f"loss_{k}": per[i].detach() for i, k in enumerate(self.head_keys())}
        logs.update({f"w_{k}": w[i] for i, k in enumerate(self.head_keys())})
        return StrategyOutput(loss=loss, outputs=out, logs=logs)

    # ---- periodic re-estimation on the validation split ---------------------------------------
    def on_epoch_begin(self, trainer, model, context) -> None:
        e = epoch_index(context.epoch)
        if e == self.last_epoch or e % self.options.gblending_interval_epochs != 0:
            return
        measure = self.measure(trainer, model, e)
        last, state = self.last_measure, self.state_module
        if last is not None:
            state.weights.copy_(blending_weights(last["train"], last["val"], measure["train"], measure["val"],
                                                 self.weights))
        state.last_train.copy_(measure["train"])
        state.last_val.copy_(measure["val"])
        state.has_measure.fill_(1)
        state.last_epoch.fill_(e)

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
        train = training_subset(trainer, min(1.0, n), self.seed + 15485863 * (epoch + 1))
        return {"val": self.split_losses(trainer, model, val), "train": self.split_losses(trainer, model, train)}
