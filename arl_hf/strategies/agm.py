"""AGM: Adaptive Gradient Modulation (Li et al., ICCV 2023).

Per micro-batch, Shapley-style mono-modal contributions of the fused output
``f = f(all)`` are formed from the unimodal outputs ``u_m`` (the fusion path with the other
modalities absent) and combined as ``m_i = u_i + (f - sum_j u_j) / M``; for two modalities
this is AGM's ``m_a = (f(a,v) - f(0,v) + f(a,0)) / 2``, and ``sum_i m_i = f``. The loss is
``CE(sum_i m_i)`` where each ``m_i`` passes through an identity whose backward multiplies by
``coeff_i``. With ``s_i`` = mean CE of ``m_i`` (all-reduced over ranks) and ``s̄_i`` its
running mean over the *previous* training iterations (0 before the first; this step's
score is added after its coefficients are formed, as in the released code),

    ratio_i  = exp(mean_{j != i} s_j - s_i),      target_i = exp(mean_{j != i} s̄_j - s̄_i),
    coeff_i  = exp(agm_alpha * min(target_i - ratio_i, 10)),

which for M = 2 is AGM's rule. For a ``concat`` head this scales encoder ``i``'s gradient
by exactly ``coeff_i``.

Deviations from the released code (documented in docs/strategies.md):
* a modality is made absent by zeroing its *features* (the harness's unimodal logits, one
  forward, DDP-safe) rather than by re-running the model on zeroed inputs in eval mode
  (two extra forwards); for ``concat`` this gives ``m_a = W_a z_a + b/2``, the peers'
  unimodal output;
* the code's global-norm clipping when the fusion gradients leave [-1, 1] is not applied
  (set ``max_grad_norm`` if wanted);
* the running mean is over micro-batches (iterations of the accumulation window).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

import torch
import torch.nn.functional as F

from ..distributed import all_reduce_sum
from .base import Strategy, StrategyOutput, register_strategy
from .common import grad_scale
from .options import StrategyOptions, finite, need
from .state import StrategyState

RATIO_CLAMP = 10.0  #: AGM's clamp of ``target - ratio`` inside the exponential


def shapley_contributions(fused: torch.Tensor, unimodal: List[torch.Tensor]) -> List[torch.Tensor]:
    """``m_i = u_i + (f - sum_j u_j) / M`` (``= (f - u_other + u_i) / 2`` for M = 2)."""
    m = len(unimodal)
    rest = (fused - torch.stack(unimodal).sum(0)) / m
    return [u + rest for u in unimodal]


def agm_coefficients(scores: torch.Tensor, running: torch.Tensor, alpha: float) -> torch.Tensor:
    """``(M,)`` AGM coefficients from this step's scores ``s`` and their running means ``s̄``."""
    m = scores.shape[0]
    other = (scores.sum() - scores) / max(m - 1, 1)
    other_bar = (running.sum() - running) / max(m - 1, 1)
    ratio = torch.exp(other - scores)
    target = torch.exp(other_bar - running)
    return torch.exp(alpha * torch.clamp(target - ratio, max=RATIO_CLAMP))


@dataclass
class AGMOptions(StrategyOptions):
    """Options of AGM (:class:`AGM`)."""

    agm_alpha: float = field(
        default=1.5, metadata={"help": "AGM: alpha of coeff = exp(alpha * min(target - ratio, 10))."}
    )

    def check(self) -> None:
        need(finite(self.agm_alpha) and self.agm_alpha >= 0, self, "agm_alpha", "a finite number >= 0")


@register_strategy("agm", options=AGMOptions, label="AGM", prefix="agm_")
class AGM(Strategy):
    """AGM (see module docstring). Hyper-parameter: ``agm_alpha``. State (buffers of
    ``model.strategy_state``): ``score_sum`` (float64, the running score sums) and ``iterations``."""

    search_space = {"agm_alpha": (0.1, 3.0, "log")}

    requires_unimodal_logits = True

    min_modalities = 2
    min_modalities_reason = (
        "its coefficients compare each modality's score with the others', and a "
        "single modality's gradient would be rescaled against nothing")

    def build_state(self, model) -> StrategyState:
        state = StrategyState(self.name)
        state.add_buffer("score_sum", torch.zeros(len(self.modalities), dtype=torch.float64))
        state.add_buffer("iterations", torch.zeros((), dtype=torch.int64))
        return state

    @property
    def score_sum(self) -> torch.Tensor:
        """Sums of the scores of the previous iterations (float64, on the CPU)."""
        return self.state_module.score_sum.detach().cpu()

    @property
    def iterations(self) -> int:
        return int(self.state_module.iterations)

    def compute_loss(self, model, inputs: Dict[str, torch.Tensor], context) -> StrategyOutput:
        labels = inputs["labels"]
        out = self.forward(model, inputs, unimodal=True)
        uni = [out.unimodal_logits[m].float() for m in self.modalities]
        contrib = shapley_contributions(out.logits.float(), uni)
        fused_loss = F.cross_entropy(out.logits.float(), labels)
        logs: Dict[str, torch.Tensor] = {"loss_fused": fused_loss.detach()}
        if not context.training:
            return StrategyOutput(loss=fused_loss, outputs=out, logs=logs)
        with torch.no_grad():
            ce_sums = torch.stack([F.cross_entropy(c, labels, reduction="sum") for c in contrib])
            count = torch.tensor([float(labels.shape[0])], device=ce_sums.device)
            reduced = all_reduce_sum(torch.cat([ce_sums, count]))
            scores = (reduced[:-1] / reduced[-1]).double().cpu()
            score_sum, iterations = self.score_sum, self.iterations
            running = score_sum / max(iterations, 1)
            coeff = agm_coefficients(scores, running, self.options.agm_alpha).float()
            self.state_module.score_sum.copy_(score_sum + scores)
            self.state_module.iterations.add_(1)
        dev = out.logits.device
        total = sum(grad_scale(c, coeff[i].to(dev)) for i, c in enumerate(contrib))
        loss = F.cross_entropy(total, labels)
        for i, m in enumerate(self.modalities):
            logs[f"coeff_{m}"] = coeff[i].to(dev)
            logs[f"score_{m}"] = scores[i].float().to(dev)
        return StrategyOutput(loss=loss, outputs=out, logs=logs)
