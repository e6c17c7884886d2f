"""ARL: modality statistics, modulation coefficients and the ARL strategy.

Implements the paper's modality analysis and asymmetric learning (Eq. 4, 17, 18),
the gradient modulation of Eq. 19-20 (``g + g * a_m``) and the total loss of
Eq. 22 (``CE(fused) + gamma * sum_m CE(unimodal_m)``), plus the authors' released
code formula as ``variant="official"`` (see docs/official.md).

Statistics and coefficients are separate steps so that the statistics (sums and
counts) can be all-reduced across processes before the coefficients are formed:

>>> stats = arl_statistics([la, lv], labels, "paper")        # doctest: +SKIP
>>> stats = stats.all_reduce()                                # every rank the same
>>> a = coefficients_from_statistics(stats, temperature=4.0, variant="paper")

Definitions (``p_m = softmax(logits_m)``, means over the batch):

* ``"paper"``: ``H_m = -mean_i sum_j p_mij log p_mij`` so Eq. 17's
  ``q_m = 1 / mean_i(sum_j p log p) = -1 / H_m``; dependency ``d_m = mean_i p_m[i, y_i]``
  (Eq. 4). For M = 2, ``a = softmax([T * q_0/q_1, T * d_0/d_1])`` exactly as Eq. 18.
  This formula is *not symmetric in the modality order*: swapping the two modalities
  does not swap the coefficients (``q_0/q_1`` always sits in the first entry). The
  first modality in ``MultimodalConfig.modalities`` is ``m_0``.
* ``"official"``: normalised entropies ``H'_m = H_m / sum H`` clamped below at
  ``0.6 / M`` (= 0.3 for M = 2, the code's constant), inverted and renormalised into
  ``q_m``; dependency ``d_m`` = share of ``sum_j mean_i |logit_mij|`` (no labels);
  ``a = softmax(T * [q_m * prod_{j != m} d_j])``, identical to the code at M = 2.

More than two modalities (order-independent, documented generalisations). Let
``kappa_m = (1/H_m) / sum_k (1/H_k)`` be the inverse-variance share and
``delta_m = d_m / sum_k d_k`` the dependency share.

* ``"paper"``, M > 2: ``a = softmax_m(T * kappa_m / delta_m)``. All coefficients are
  equal exactly when ``delta = kappa`` (the fixed point of Eq. 18) and a modality whose
  dependency share is below its inverse-variance share gets a larger coefficient
  (Eq. 18's direction). At M = 2 the sign of ``a_0 - a_1`` agrees with Eq. 18.
* ``"official"``, M > 2: ``a = softmax_m(T * (M^M / 4) * q_m * prod_{j != m} d_j)``
  with the clamp at ``0.6 / M``. The factor ``M^M / 4`` is 1 at M = 2 (exact code
  formula) and keeps the entries' scale at balance (``T / 4``) constant as M grows,
  so T means the same thing for any M; a fixed 0.3 clamp would exceed the mean share
  ``1/M`` for M >= 4, hence ``0.6 / M``.

Numerics: ``log_softmax`` runs in float32 at least whatever the input dtype, and the
statistics are accumulated in float64 (float32 on MPS); entropies are clamped below at
``ENTROPY_EPS`` and probabilities/dependencies at ``PROB_EPS`` before division, so the
coefficients are finite for any finite logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from ..distributed import all_reduce_sum
from .base import Strategy, StrategyOutput, register_strategy
from .options import StrategyOptions

VARIANTS = ("paper", "official")
ENTROPY_EPS = 1e-12  #: lower clamp of a mean entropy before it is inverted
PROB_EPS = 1e-12  #: lower clamp of a dependency before it is a divisor
OFFICIAL_CLAMP_AT_TWO = 0.3  #: the authors' clamp on normalised entropies (M = 2)

LogitsInput = Union[Sequence[torch.Tensor], Mapping[str, torch.Tensor]]


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"arl_variant must be one of {VARIANTS}, got {variant!r}")


def _as_list(unimodal_logits: LogitsInput) -> list:
    if isinstance(unimodal_logits, Mapping):
        return list(unimodal_logits.values())
    return list(unimodal_logits)


@dataclass
class ARLStatistics:
    """Per-modality sums over a batch, ready to be all-reduced.

    Attributes:
        neg_entropy_sum: ``(M,)`` sum over samples of ``sum_j p log p`` (<= 0), float64.
        dependency_sum: ``(M,)`` sum over samples of the dependency term
            (true-class probability for ``"paper"``, ``sum_j |logit_j|`` for ``"official"``).
        count: number of samples summed (a 0-d float tensor).
    """

    neg_entropy_sum: torch.Tensor
    dependency_sum: torch.Tensor
    count: torch.Tensor

    @property
    def num_modalities(self) -> int:
        return int(self.neg_entropy_sum.shape[0])

    def flatten(self) -> torch.Tensor:
        """One ``(2M + 1,)`` tensor, so a single collective reduces everything."""
        return torch.cat([self.neg_entropy_sum, self.dependency_sum, self.count.reshape(1)])

    @classmethod
    def unflatten(cls, flat: torch.Tensor) -> "ARLStatistics":
        m = (flat.shape[0] - 1) // 2
        return cls(flat[:m], flat[m : 2 * m], flat[2 * m])

    def all_reduce(self) -> "ARLStatistics":
        """Sum the statistics over all processes (a no-op when not distributed)."""
        return ARLStatistics.unflatten(all_reduce_sum(self.flatten()))

    def means(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(mean entropy H_m, mean dependency d_m)``, both ``(M,)``."""
        count = self.count.clamp_min(1.0)
        entropy = (-self.neg_entropy_sum / count).clamp_min(ENTROPY_EPS)
        dependency = (self.dependency_sum / count).clamp_min(PROB_EPS)
        return entropy, dependency


def arl_statistics(
    unimodal_logits: LogitsInput,
    labels: Optional[torch.Tensor],
    variant: str = "paper",
) -> ARLStatistics:
    """Batch statistics of ARL's modality analysis (detached, float32).

    Args:
        unimodal_logits: M tensors ``(B, C)`` in modality order (or a dict in order).
        labels: ``(B,)`` class indices; required by ``variant="paper"`` (Eq. 4),
            unused by ``"official"``.
        variant: ``"paper"`` or ``"official"``.
    """
    _check_variant(variant)
    logits = _as_list(unimodal_logits)
    if len(logits) < 2:
        raise ValueError(f"unimodal_logits: expected at least 2 modalities, got {len(logits)}")
    first = logits[0]
    for i, lg in enumerate(logits):
        if lg.dim() != 2 or lg.shape != first.shape:
            raise ValueError(
                f"unimodal_logits[{i}]: expected a (B, C) tensor of shape {tuple(first.shape)}, "
                f"got {tuple(lg.shape)}"
            )
    batch, num_classes = first.shape
    if batch == 0:
        raise ValueError("unimodal_logits: the batch is empty (B = 0)")
    if variant == "paper":
        if labels is None:
            raise ValueError("labels: required by arl_variant='paper' (Eq. 4 uses the true class)")
        if labels.shape != (batch,):
            raise ValueError(f"labels: expected shape ({batch},), got {tuple(labels.shape)}")
    with torch.no_grad():
        # log-softmax in float32 at least (float16/bfloat16 promoted, float64 kept);
        # sums accumulated in float64 (float32 on MPS, which has no float64) so that
        # huge finite logits cannot overflow them
        dtype = torch.promote_types(first.dtype, torch.float32)
        acc = torch.float32 if first.device.type == "mps" else torch.float64
        stacked = torch.stack([lg.detach().to(dtype) for lg in logits])  # (M, B, C)
        log_p = F.log_softmax(stacked, dim=-1)
        p = log_p.exp()
        # sum_j p log p, with 0 * log 0 = 0 (log_softmax is finite for finite logits)
        neg_entropy_sum = (p * log_p).sum(dim=-1).to(acc).sum(dim=-1)  # (M,)
        if variant == "paper":
            idx = labels.to(stacked.device).long().view(1, batch, 1).expand(stacked.shape[0], batch, 1)
            dependency_sum = p.gather(-1, idx).squeeze(-1).to(acc).sum(dim=-1)
        else:
            dependency_sum = stacked.abs().to(acc).sum(dim=(-1, -2))
        # torch.full launches a fill; torch.tensor(..., device=cuda) would copy from the host and sync
        count = torch.full((), float(batch), device=stacked.device, dtype=acc)
    return ARLStatistics(neg_entropy_sum, dependency_sum, count)


def modality_shares(stats: ARLStatistics, variant: str = "paper") -> Tuple[torch.Tensor, torch.Tensor]:
    """``(dependency shares, inverse-variance shares)``, each ``(M,)`` summing to 1.

    These are the two quantities ARL aligns (the paper's Fig. 3 plots their ratios):
    ``delta_m = d_m / sum d`` and ``kappa_m = (1/H_m) / sum 1/H``. For the official
    variant ``kappa`` is the clamped, renormalised inverse entropy share.
    """
    _check_variant(variant)
    entropy, dependency = stats.means()
    delta = dependency / dependency.sum()
    if variant == "paper":
        inv = 1.0 / entropy
        kappa = inv / inv.sum()
    else:
        m = entropy.shape[0]
        normalised = (entropy / entropy.sum()).clamp_min(_official_clamp(m))
        inv = 1.0 / normalised
        kappa = inv / inv.sum()
    return delta, kappa


def _official_clamp(num_modalities: int) -> float:
    return OFFICIAL_CLAMP_AT_TWO * 2.0 / num_modalities


def coefficients_from_statistics(
    stats: ARLStatistics, temperature: float, variant: str = "paper"
) -> torch.Tensor:
    """The modulation coefficients ``a_m`` (``(M,)``, float64 — float32 on MPS — summing to 1).

    Args:
        stats: output of :func:`arl_statistics`, possibly all-reduced.
        temperature: ``T > 0`` of Eq. 18.
        variant: ``"paper"`` or ``"official"``.
    """
    _check_variant(variant)
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"arl_temperature: expected a finite number > 0, got {temperature!r}")
    return _coefficients(stats, temperature, variant)


def _coefficients(stats: ARLStatistics, temperature: float, variant: str) -> torch.Tensor:
    """:func:`coefficients_from_statistics` without its argument checks (the strategy's options
    were checked when they were constructed)."""
    m = stats.num_modalities
    entropy, dependency = stats.means()
    if variant == "paper":
        if m == 2:
            # q_0/q_1 = (-1/H_0)/(-1/H_1) = H_1/H_0 ; d_0/d_1 from Eq. 4
            logits = torch.stack([entropy[1] / entropy[0], dependency[0] / dependency[1]])
        else:
            delta, kappa = modality_shares(stats, variant)
            logits = kappa / delta.clamp_min(PROB_EPS)
        return torch.softmax(temperature * logits, dim=0)
    delta, q = modality_shares(stats, variant)
    # entry_m = q_m * prod_{j != m} d_j, computed as q_m * exp(sum_j log d_j - log d_m)
    log_d = delta.clamp_min(PROB_EPS).log()
    others = torch.exp(log_d.sum() - log_d)
    scale = (m**m) / 4.0
    return torch.softmax(temperature * scale * q * others, dim=0)


def arl_coefficients(
    unimodal_logits: LogitsInput,
    labels: Optional[torch.Tensor],
    temperature: float,
    variant: str = "paper",
) -> torch.Tensor:
    """Convenience: :func:`arl_statistics` then :func:`coefficients_from_statistics` (no all-reduce)."""
    return coefficients_from_statistics(arl_statistics(unimodal_logits, labels, variant), temperature, variant)


@dataclass
class ARLOptions(StrategyOptions):
    """Options of ARL (:class:`ARLStrategy`)."""

    arl_temperature: float = field(
        default=4.0, metadata={"help": "ARL temperature T of Eq. 18 (> 0). Paper: 8 for CREMA-D, 4 otherwise."}
    )
    arl_gamma: float = field(
        default=4.0, metadata={"help": "ARL weight gamma of the unimodal losses in Eq. 22 (>= 0)."}
    )
    arl_variant: str = field(
        default="paper",
        metadata={
            "help": "Coefficient formula: 'paper' (Eq. 4, 17, 18) or 'official' (the authors' released code).",
            "choices": ["paper", "official"],
        },
    )
    arl_warmup_epochs: int = field(
        default=0,
        metadata={"help": "Epochs before ARL starts: gamma = 1 and no gradient modulation (authors' code: 6)."},
    )
    arl_all_reduce: bool = field(
        default=True,
        metadata={"help": "All-reduce the ARL statistics across processes so every rank uses the same coefficients."},
    )
    arl_unimodal_loss: bool = field(
        default=True, metadata={"help": "Ablation (Table 5): include the unimodal bias regularisation (gamma term)."}
    )
    arl_asymmetric: bool = field(
        default=True, metadata={"help": "Ablation (Table 5): apply the asymmetric coefficients to encoder gradients."}
    )
    arl_residual: bool = field(
        default=True,
        metadata={"help": "Ablation (Table 5): gradient residual, g + g*a_m (True) versus g*a_m (False)."},
    )

    def check(self) -> None:
        if not (self.arl_temperature > 0 and self.arl_temperature < float("inf")):
            raise ValueError(f"arl_temperature: expected a finite number > 0, got {self.arl_temperature!r}")
        if not self.arl_gamma >= 0:
            raise ValueError(f"arl_gamma: expected a number >= 0, got {self.arl_gamma!r}")
        if self.arl_variant not in VARIANTS:
            raise ValueError(f"arl_variant: expected 'paper' or 'official', got {self.arl_variant!r}")
        if self.arl_warmup_epochs < 0:
            raise ValueError(f"arl_warmup_epochs: expected an int >= 0, got {self.arl_warmup_epochs!r}")


@register_strategy("arl", options=ARLOptions, label="ARL", prefix="arl_")
class ARLStrategy(Strategy):
    """Asymmetric Representation Learning (Algorithm 1).

    Per training micro-batch: forward with unimodal logits, loss of Eq. 22, batch
    statistics all-reduced across processes, coefficients of Eq. 18 and the encoder
    gradient scale ``1 + a_m`` (Eq. 19-20) installed before backward. Under gradient
    accumulation each micro-batch uses its own coefficients (the scale acts on the
    gradient of that micro-batch's loss only).

    Ablations (Table 5): ``arl_unimodal_loss=False`` drops the gamma term,
    ``arl_asymmetric=False`` disables the coefficients (scale 1), and
    ``arl_residual=False`` uses ``g * a_m`` instead of ``g + g * a_m``.
    Before ``arl_warmup_epochs`` gamma is 1 and no modulation is applied (as in the
    authors' code).
    """

    search_space = {"arl_temperature": (1.0, 16.0, "log"), "arl_gamma": (0.5, 8.0, "log")}

    requires_unimodal_logits = True
    min_modalities = 2
    min_modalities_reason = ("its coefficients (Eq. 18) compare the modalities' prediction variances, which a single "
                             "modality has nothing to compare with")

    def uses_gradient_scaling(self) -> bool:
        return True

    def compute_loss(self, model, inputs: Dict[str, torch.Tensor], context) -> StrategyOutput:
        args = self.options
        labels = inputs["labels"]
        outputs = self.forward(model, inputs, unimodal=True)
        warm = context.epoch < args.arl_warmup_epochs
        gamma = 1.0 if warm else args.arl_gamma
        fused_loss = F.cross_entropy(outputs.logits.float(), labels)
        uni = outputs.unimodal_logits
        uni_losses = torch.stack([F.cross_entropy(uni[m].float(), labels) for m in self.modalities])
        loss = fused_loss
        if args.arl_unimodal_loss:
            loss = loss + gamma * uni_losses.sum()
        logs: Dict[str, torch.Tensor] = {"loss_fused": fused_loss.detach()}
        for i, m in enumerate(self.modalities):
            logs[f"loss_{m}"] = uni_losses[i].detach()
        if context.training:
            stats = arl_statistics([uni[m] for m in self.modalities], labels, args.arl_variant)
            if args.arl_all_reduce:
                stats = stats.all_reduce()
            coeffs = _coefficients(stats, args.arl_temperature, args.arl_variant)
            delta, kappa = modality_shares(stats, args.arl_variant)
            if warm or not args.arl_asymmetric:
                scales = torch.ones_like(coeffs)
            elif args.arl_residual:
                scales = 1.0 + coeffs
            else:
                scales = coeffs
            self.set_gradient_scales(scales)
            for i, m in enumerate(self.modalities):
                logs[f"a_{m}"] = coeffs[i]
                logs[f"dependency_share_{m}"] = delta[i]
                logs[f"inverse_variance_share_{m}"] = kappa[i]
                logs[f"grad_scale_{m}"] = scales[i]
        return StrategyOutput(loss=loss, outputs=outputs, logs=logs)
