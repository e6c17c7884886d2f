"""MMPareto: multimodal learning with Pareto-integrated unimodal assistance (Wei & Hu, ICML 2024).

Losses: fused cross-entropy ``L_mm`` (the model's head) and one unimodal cross-entropy ``L_m``
per modality from strategy-owned heads ``Linear(D_m, C)`` on the encoder features. For each
encoder ``m`` the two gradients over its parameters, ``g_mm = dL_mm/dθ_m`` and
``g_m = dL_m/dθ_m`` (``torch.autograd.grad``), are combined:

* ``cos(g_mm, g_m) > 0``: ``w = (1/2, 1/2)``; otherwise the two-task min-norm solution
  ``w_0 = clip(((g_m - g_mm)·g_m) / ||g_mm - g_m||^2, 0, 1)``, ``w_1 = 1 - w_0``;
* ``ĝ = 2 (w_0 g_mm + w_1 g_m)``; final gradient ``gamma * ĝ * max(1, ||g_mm + g_m|| / ||ĝ||)``
  (``gamma = mmpareto_gamma``).

Norms and the cosine are taken over all parameters of ``model.encoders[m]`` (the owning
module). The final gradient is linear in the two gradients, ``c_mm g_mm + c_m g_m``; it is
produced by one ordinary backward of ``L_mm + sum_m L_m + sum_p <p, Δ_p>`` with the constant
``Δ_p = (c_mm - 1) g_mm + (c_m - 1) g_m`` — so DDP reduces it, gradient accumulation adds it
per micro-batch, and the fused head and unimodal heads get their plain gradients. Under DDP
the two gradients are averaged over ranks before the 3 scalars per encoder
(``||g_mm||², ||g_m||², g_mm·g_m``) are taken, so every rank uses the ``c`` one process would
compute on the global batch (tested: 2-process DDP equals one process). Cost: two extra
backward passes through the encoders, and under DDP one all-reduce of twice the encoders'
gradient size per step.

Added parameters: ``heads`` (M ``Linear(D_m, C)``), in ``model.strategy_state``: trained and saved
with the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F

from ..distributed import all_reduce_mean, is_distributed
from .base import Strategy, StrategyOutput, register_strategy
from .common import unimodal_heads, unwrap
from .options import StrategyOptions, finite, need
from .state import StrategyState


def min_norm_two(gg11: torch.Tensor, gg22: torch.Tensor, gg12: torch.Tensor) -> torch.Tensor:
    """``argmin_{w in [0,1]} ||w g1 + (1-w) g2||^2`` from the Gram entries."""
    denom = gg11 + gg22 - 2 * gg12
    if float(denom) <= 0:
        return torch.tensor(0.5, dtype=gg11.dtype)
    return ((gg22 - gg12) / denom).clamp(0.0, 1.0)


def pareto_coefficients(
    gg_mm: torch.Tensor, gg_u: torch.Tensor, g_mm_u: torch.Tensor, gamma: float
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(c_mm, c_u, w_0)`` with final gradient ``c_mm g_mm + c_u g_u`` (see module docstring)."""
    cos = g_mm_u / (gg_mm.sqrt() * gg_u.sqrt()).clamp_min(1e-20)
    if float(cos) > 0:
        w0 = torch.tensor(0.5, dtype=gg_mm.dtype)
    else:
        w0 = min_norm_two(gg_mm, gg_u, g_mm_u)
    w1 = 1 - w0
    hat_sq = 4 * (w0 * w0 * gg_mm + w1 * w1 * gg_u + 2 * w0 * w1 * g_mm_u)
    sum_sq = gg_mm + gg_u + 2 * g_mm_u
    ratio = (sum_sq.clamp_min(0).sqrt() / hat_sq.clamp_min(1e-30).sqrt()) if float(hat_sq) > 0 else torch.ones(())
    k = torch.clamp(ratio, min=1.0)
    return gamma * k * 2 * w0, gamma * k * 2 * w1, w0


def mmpareto_gradient(g_mm: List[torch.Tensor], g_u: List[torch.Tensor], gamma: float) -> List[torch.Tensor]:
    """Reference: the final MMPareto gradient of one encoder (lists of per-parameter tensors)."""
    flat_mm = torch.cat([g.reshape(-1).double() for g in g_mm])
    flat_u = torch.cat([g.reshape(-1).double() for g in g_u])
    c_mm, c_u, _ = pareto_coefficients(flat_mm @ flat_mm, flat_u @ flat_u, flat_mm @ flat_u, gamma)
    return [(c_mm * a.double() + c_u * b.double()).to(a.dtype) for a, b in zip(g_mm, g_u)]


@dataclass
class MMParetoOptions(StrategyOptions):
    """Options of MMPareto (:class:`MMPareto`)."""

    mmpareto_gamma: float = field(
        default=1.5, metadata={"help": "MMPareto: gamma scaling the Pareto-combined encoder gradients (> 0)."}
    )

    def check(self) -> None:
        need(finite(self.mmpareto_gamma) and self.mmpareto_gamma > 0, self, "mmpareto_gamma", "a finite number > 0")


@register_strategy("mmpareto", options=MMParetoOptions, label="MMPareto", prefix="mmpareto_")
class MMPareto(Strategy):
    """MMPareto (see module docstring). Hyper-parameter: ``mmpareto_gamma``."""

    #: not under FSDP2: it differentiates each loss w.r.t. every whole encoder parameter (autograd.grad)
    supports_fsdp = False

    search_space = {"mmpareto_gamma": (0.5, 3.0, "log")}

    def build_state(self, model) -> StrategyState:
        state = StrategyState(self.name)
        state.heads = unimodal_heads(model, self.modalities, seed=self.seed)
        return state

    @property
    def heads(self):
        return self.state_module.heads

    def owned_modules(self):
        return list(self.heads.values())

    def _loss_scale(self) -> float:
        return float(self.trainer.loss_scale()) if self.trainer is not None else 1.0

    def compute_loss(self, model, inputs: Dict[str, torch.Tensor], context) -> StrategyOutput:
        labels = inputs["labels"]
        out = self.forward(model, inputs, unimodal=False)
        fused = F.cross_entropy(out.logits.float(), labels)
        uni = {m: F.cross_entropy(self.heads[m](out.features[m]).float(), labels) for m in self.modalities}
        loss = fused + sum(uni.values())
        logs: Dict[str, torch.Tensor] = {"loss_fused": fused.detach()}
        logs.update({f"loss_{m}": v.detach() for m, v in uni.items()})
        if not (context.training and torch.is_grad_enabled()):
            return StrategyOutput(loss=loss, outputs=out, logs=logs)
        inner = unwrap(model)
        params = {m: [p for p in inner.encoders[m].parameters() if p.requires_grad] for m in self.modalities}
        flat_params = [p for m in self.modalities for p in params[m]]
        s = self._loss_scale()
        g_mm_all = torch.autograd.grad(fused * s, flat_params, retain_graph=True, allow_unused=True)
        g_u_all = torch.autograd.grad(sum(uni.values()) * s, flat_params, retain_graph=True, allow_unused=True)
        split: Dict[str, Tuple[List, List]] = {}
        offset = 0
        for m in self.modalities:
            n = len(params[m])
            gm = [torch.zeros_like(p) if g is None else g / s for p, g in zip(params[m], g_mm_all[offset : offset + n])]
            gu = [torch.zeros_like(p) if g is None else g / s for p, g in zip(params[m], g_u_all[offset : offset + n])]
            offset += n
            split[m] = (gm, gu)
        grams = self._grams(split).cpu()
        extra = torch.zeros((), device=fused.device)
        for i, m in enumerate(self.modalities):
            c_mm, c_u, w0 = pareto_coefficients(grams[i, 0], grams[i, 1], grams[i, 2], self.options.mmpareto_gamma)
            gm, gu = split[m]
            for p, a, b in zip(params[m], gm, gu):
                delta = (float(c_mm) - 1.0) * a + (float(c_u) - 1.0) * b
                extra = extra + (p * delta.detach()).sum()
            cos = grams[i, 2] / (grams[i, 0].sqrt() * grams[i, 1].sqrt()).clamp_min(1e-20)
            dev = fused.device  # every logged value on the loss device (the trainer stacks them)
            logs[f"cos_{m}"] = cos.float().to(dev)
            logs[f"w_fused_{m}"] = w0.float().to(dev)
            logs[f"c_fused_{m}"] = torch.as_tensor(c_mm).float().to(dev)
            logs[f"c_uni_{m}"] = torch.as_tensor(c_u).float().to(dev)
        # value unchanged, gradient gains the Pareto correction
        loss = loss + (extra - extra.detach())
        return StrategyOutput(loss=loss, outputs=out, logs=logs)

    def _grams(self, split: Dict[str, Tuple[List, List]]) -> torch.Tensor:
        """``(M, 3)``: ``||g_mm||², ||g_m||², g_mm·g_m`` per encoder, of the gradients of the
        *global* batch: under DDP the two gradients are averaged over ranks first (one
        all-reduce), so the coefficients are those one process would compute on the whole batch."""
        if is_distributed():
            local = [t for m in self.modalities for part in split[m] for t in part]
            flat = all_reduce_mean(torch.cat([t.reshape(-1).float() for t in local]))
            means = iter([c.view_as(t) for c, t in zip(torch.split(flat, [t.numel() for t in local]), local)])
            split = {m: tuple([next(means) for _ in part] for part in split[m]) for m in self.modalities}
        rows = []
        for m in self.modalities:
            gm, gu = split[m]
            rows.append(torch.stack([
                sum((a.double() * a.double()).sum() for a in gm),
                sum((b.double() * b.double()).sum() for b in gu),
                sum((a.double() * b.double()).sum() for a, b in zip(gm, gu)),
            ]))
        return torch.stack(rows)
