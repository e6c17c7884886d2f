"""OGM-GE: On-the-fly Gradient Modulation with Generalisation Enhancement (Peng et al., CVPR 2022).

Per micro-batch, each modality's confidence ``s_m = sum_i softmax(u_m)_i[y_i]`` (u_m: the
unimodal logits of the shared head, summed over the global batch across ranks) gives
``rho_m = s_m / s_other`` (for M > 2: ``s_m`` over the mean of the others); the dominant
modality (``rho_m > 1``) gets ``k_m = 1 - tanh(alpha * rho_m)``, every other modality
``k_m = 1`` (paper Eq. 10). GE (Eq. 11): on the step's accumulated gradient, every encoder
parameter gets ``g <- k g + N(0, std(g))`` noise, drawn from a generator seeded by
``(seed, global_step)`` so all ranks add the same noise. Active for epochs
``ogm_start_epoch..ogm_end_epoch`` (inclusive).

Implementation notes:
* Parameters are those of the owning module ``model.encoders[m]`` (any backbone);
  ``ogm_conv_only=True`` restricts the modulation and noise to 4-D (conv kernel)
  gradients, as the released CNN code does.
* ``k_m`` is applied in-graph (:class:`~arl_hf.strategies.base.GradientModulator`), so each
  micro-batch of an accumulation window gets its own ``k``. The noise is added once per
  optimizer step, after the last micro-batch's backward (after the DDP all-reduce); its std
  is the std of the *unmodulated* gradient, estimated as ``std(sum_j k_j g_j) / mean_j k_j``
  (exact without accumulation or when ``k`` is constant over the window).
* The harness's unimodal logits are the fusion path with the other modalities zeroed
  (``W_m z_m + b`` for ``concat``); OGM-GE's paper uses ``W_m z_m + b/2``.
* FSDP shards ``p.grad``: the per-tensor std would be a shard's std (not supported).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F

from ..distributed import all_reduce_sum
from .base import Strategy, StrategyOutput, register_strategy
from .common import epoch_index, unwrap
from .options import StrategyOptions, finite, need
from .view import is_sync_step


@dataclass
class OGMGEOptions(StrategyOptions):
    """Options of OGM-GE (:class:`OGMGE`)."""

    ogm_alpha: float = field(
        default=0.8, metadata={"help": "OGM-GE: alpha of k = 1 - tanh(alpha * rho) for the dominant modality (>= 0)."}
    )
    ogm_start_epoch: int = field(default=0, metadata={"help": "OGM-GE: first epoch (0-based) of modulation."})
    ogm_end_epoch: int = field(default=50, metadata={"help": "OGM-GE: last epoch (inclusive) of modulation."})
    ogm_noise: bool = field(
        default=True, metadata={"help": "OGM-GE: add the generalisation-enhancement Gaussian noise (False: plain OGM)."}
    )
    ogm_conv_only: bool = field(
        default=False,
        metadata={"help": "OGM-GE: modulate only 4-D (conv kernel) gradients, as the released CNN code; "
                  "default False modulates every parameter of each encoder."},
    )

    def check(self) -> None:
        need(finite(self.ogm_alpha) and self.ogm_alpha >= 0, self, "ogm_alpha", "a finite number >= 0")
        need(isinstance(self.ogm_start_epoch, int) and self.ogm_start_epoch >= 0, self, "ogm_start_epoch",
             "an int >= 0")
        need(isinstance(self.ogm_end_epoch, int) and self.ogm_end_epoch >= self.ogm_start_epoch, self,
             "ogm_end_epoch", "an int >= ogm_start_epoch")


def ogm_coefficients(unimodal_logits: List[torch.Tensor], labels: torch.Tensor, alpha: float,
                     scores: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``(M,)`` OGM coefficients ``k_m`` from the batch scores ``s_m`` (Eq. 7-10).

    ``scores`` (already summed over ranks) may be passed instead of being computed from
    ``unimodal_logits``; ``rho_m = s_m / mean_{j != m} s_j``.
    """
    if scores is None:
        scores = ogm_scores(unimodal_logits, labels)
    m = scores.shape[0]
    others = (scores.sum() - scores) / max(m - 1, 1)
    rho = scores / others.clamp_min(1e-12)
    k = torch.where(rho > 1, 1.0 - torch.tanh(alpha * rho), torch.ones_like(rho))
    return k


def ogm_scores(unimodal_logits: List[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """``(M,)`` sums over the batch of the true-class softmax probability of each modality."""
    with torch.no_grad():
        stacked = torch.stack([u.detach().float() for u in unimodal_logits])  # (M, B, C)
        p = stacked.softmax(-1)
        idx = labels.long().view(1, -1, 1).expand(stacked.shape[0], -1, 1)
        return p.gather(-1, idx).squeeze(-1).sum(-1)


@register_strategy("ogm_ge", options=OGMGEOptions, label="OGM-GE", prefix="ogm_")
class OGMGE(Strategy):
    """OGM-GE (see module docstring). Hyper-parameters: ``ogm_alpha``, ``ogm_start_epoch``,
    ``ogm_end_epoch``, ``ogm_noise``, ``ogm_conv_only``."""

    #: not under FSDP2: its per-parameter gradient std would be a shard's
    supports_fsdp = False

    search_space = {"ogm_alpha": (0.05, 1.0, "log")}

    requires_unimodal_logits = True
    gradient_modulation = "output"

    min_modalities = 2
    min_modalities_reason = (
        "its coefficient compares a modality's score with the others' (rho), and "
        "a single modality would have its gradient zeroed (k = 1 - tanh(alpha * rho) = 0)")

    def __init__(self, args, modalities):
        super().__init__(args, modalities)
        self._k_sum = torch.zeros(len(self.modalities))
        self._k_n = 0
        if self.options.ogm_conv_only:
            # a subset of each encoder's parameters: scale them one by one
            self.gradient_modulation = "parameters"

    def uses_gradient_scaling(self) -> bool:
        return True

    def _setup_modulation(self, model) -> None:
        if self.options.ogm_conv_only:
            self.modulator = _ConvOnlyModulator(model, self.modalities)
        else:
            super()._setup_modulation(model)

    def active(self, epoch: float) -> bool:
        e = epoch_index(epoch)
        return self.options.ogm_start_epoch <= e <= self.options.ogm_end_epoch

    def compute_loss(self, model, inputs: Dict[str, torch.Tensor], context) -> StrategyOutput:
        labels = inputs["labels"]
        out = self.forward(model, inputs, unimodal=True)
        loss = F.cross_entropy(out.logits.float(), labels)
        logs: Dict[str, torch.Tensor] = {"loss_fused": loss.detach()}
        if context.training:
            uni = [out.unimodal_logits[m] for m in self.modalities]
            scores = all_reduce_sum(ogm_scores(uni, labels))
            if self.active(context.epoch):
                k = ogm_coefficients(uni, labels, self.options.ogm_alpha, scores=scores)
            else:
                k = torch.ones_like(scores)
            self.set_gradient_scales(k)
            self._k_sum = self._k_sum.to(k.device) + k
            self._k_n += 1
            others = (scores.sum() - scores) / max(len(self.modalities) - 1, 1)
            for i, m in enumerate(self.modalities):
                logs[f"k_{m}"] = k[i]
                logs[f"rho_{m}"] = scores[i] / others[i].clamp_min(1e-12)
        return StrategyOutput(loss=loss, outputs=out, logs=logs)

    def after_backward(self, model, context) -> None:
        super().after_backward(model, context)
        if not is_sync_step(self.trainer):
            return
        k_mean = self._k_sum / max(self._k_n, 1)
        self._k_sum = torch.zeros_like(self._k_sum)
        self._k_n = 0
        if self.options.ogm_noise and self.active(context.epoch):
            self.add_noise(model, k_mean, context.global_step)

    def noise_generator(self, device: torch.device, global_step: int) -> torch.Generator:
        """The same generator on every rank: seeded by ``(seed, global_step)``."""
        g = torch.Generator(device=device)
        g.manual_seed(int(self.seed) * 1_000_003 + int(global_step))
        return g

    @torch.no_grad()
    def add_noise(self, model, k_mean: torch.Tensor, global_step: int) -> None:
        """GE: ``g <- g + N(0, std(g_unmodulated))`` for every selected encoder parameter."""
        gens: Dict[torch.device, torch.Generator] = {}
        for i, m in enumerate(self.modalities):
            k = float(k_mean[i]) if k_mean.numel() else 1.0
            for p in _encoder_params(model, m, self.options.ogm_conv_only):
                if p.grad is None:
                    continue
                g = p.grad
                if g.device not in gens:
                    gens[g.device] = self.noise_generator(g.device, global_step)
                std = g.float().std() if g.numel() > 1 else torch.zeros((), device=g.device)
                std = std / max(k, 1e-12)
                if not torch.isfinite(std):
                    continue
                noise = torch.randn(g.shape, generator=gens[g.device], device=g.device, dtype=torch.float32)
                g.add_((noise * std).to(g.dtype))


def _encoder_params(model, modality: str, conv_only: bool):
    for p in unwrap(model).encoders[modality].parameters():
        if not p.requires_grad:
            continue
        if conv_only and p.dim() != 4:
            continue
        yield p


class _ConvOnlyModulator:
    """Scales only the 4-D (conv kernel) parameters of each encoder, with per-parameter hooks."""

    mode = "parameters"

    def __init__(self, model, modalities):
        self.modalities = list(modalities)
        self.scales: Optional[torch.Tensor] = None
        self.fired: set = set()
        self._handles = []
        for i, m in enumerate(self.modalities):
            params = list(_encoder_params(model, m, conv_only=True))
            if not params:
                raise ValueError(
                    f"ogm_conv_only: encoders[{m!r}] has no 4-D (conv kernel) parameter to modulate; "
                    "set ogm_conv_only=False to modulate all of its parameters"
                )
            for p in params:
                self._handles.append(p.register_hook(self._hook(i)))

    def _hook(self, index):
        def hook(grad):
            if self.scales is None:
                return grad
            return grad * self.scales[index].to(grad.device, grad.dtype)

        return hook

    def set_scales(self, scales):
        self.scales = None if scales is None else scales.detach().float()

    def remove(self):
        for h in self._handles:
            h.remove()
        self._handles.clear()
