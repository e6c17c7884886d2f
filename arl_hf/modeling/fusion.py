"""Fusion registry: features of every modality -> logits, plus ARL's unimodal logits.

A late fusion maps ``{modality: (B, D_m)}`` to ``(B, C)`` logits. Its unimodal logits
for modality m are the *same* fusion path with every other modality's representation
replaced by zeros (ARL Sec. 3.2: no extra parameters). The generic implementation runs
the fusion once on an M-fold batch of zeroed copies; ``concat`` and ``sum`` compute the
identical quantity from their weights at the cost of the head alone.

Late fusions (OGM-GE's fusion modules, used by ARL's Tables 1 and 4): ``concat``,
``sum``, ``film`` and ``gated`` (the last two for exactly two modalities). The
intermediate fusions ``mmtm`` and ``cross_attention`` (Table 3) live in
:mod:`arl_hf.modeling.intermediate`, which registers them in :data:`FUSIONS` (the package
:mod:`arl_hf.modeling` imports it, so they are registered whenever fusion is).
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import Registry

FUSIONS: Registry = Registry("fusion", attribute="fusion_name")

register_fusion = FUSIONS.register


class Fusion(nn.Module):
    """Base class. Subclasses implement :meth:`forward`; :meth:`unimodal_logits` is generic."""

    fusion_name = "base"
    #: True for fusions that exchange information inside the encoders (run stage-wise)
    intermediate = False

    def __init__(self, dims: Mapping[str, int], num_labels: int, **kwargs):
        super().__init__()
        self.modalities = list(dims)
        self.dims = dict(dims)
        self.num_labels = num_labels

    def forward(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def unimodal_logits(self, features: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Logits of the fusion path with all other modalities zeroed, one batched call."""
        mods = self.modalities
        b = next(iter(features.values())).shape[0]
        batched = {}
        for j, n in enumerate(mods):
            z = features[n]
            parts = [z if i == j else torch.zeros_like(z) for i in range(len(mods))]
            batched[n] = torch.cat(parts, dim=0)
        out = self.forward(batched)
        return {m: out[i * b : (i + 1) * b] for i, m in enumerate(mods)}


@register_fusion("concat")
class ConcatFusion(Fusion):
    """``Linear([z_0; z_1; ...])``: the paper's vanilla fusion (Eq. 3)."""

    def __init__(self, dims: Mapping[str, int], num_labels: int, **kwargs):
        super().__init__(dims, num_labels)
        if kwargs:
            raise ValueError(f"fusion_kwargs: 'concat' takes no options, got {sorted(kwargs)}")
        self.fc = nn.Linear(sum(self.dims.values()), num_labels)

    def forward(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.fc(torch.cat([features[m] for m in self.modalities], dim=-1))

    def unimodal_logits(self, features: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        out, start = {}, 0
        for m in self.modalities:
            d = self.dims[m]
            out[m] = F.linear(features[m], self.fc.weight[:, start : start + d], self.fc.bias)
            start += d
        return out


def _check_two(name: str, dims: Mapping[str, int]) -> None:
    if len(dims) != 2:
        raise ValueError(
            f"fusion: {name!r} is defined for exactly two modalities, got {len(dims)} ({list(dims)}); "
            "use 'concat' or 'sum' for more"
        )


def _pick_modality(kwargs: Dict, key: str, name: str, dims: Mapping[str, int]) -> str:
    chosen = kwargs.pop(key, None)
    if chosen is None:
        return list(dims)[0]
    if chosen not in dims:
        raise ValueError(f"fusion_kwargs[{key!r}]: {chosen!r} is not a modality; expected one of {list(dims)}")
    return chosen


def _no_kwargs(name: str, kwargs: Dict) -> None:
    if kwargs:
        raise ValueError(f"fusion_kwargs: unknown option(s) {sorted(kwargs)} for fusion {name!r}")


@register_fusion("sum")
class SumFusion(Fusion):
    """``sum_m (W_m z_m + b_m)``: one linear head per modality, logits summed (OGM-GE's SumFusion).

    Unimodal logits: ``W_m z_m + sum_j b_j`` (the other heads see zeros).
    """

    def __init__(self, dims: Mapping[str, int], num_labels: int, **kwargs):
        super().__init__(dims, num_labels)
        _no_kwargs("sum", kwargs)
        self.heads = nn.ModuleDict({m: nn.Linear(d, num_labels) for m, d in self.dims.items()})

    def forward(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return sum(self.heads[m](features[m]) for m in self.modalities)

    def unimodal_logits(self, features: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        bias = sum(self.heads[m].bias for m in self.modalities)
        return {m: F.linear(features[m], self.heads[m].weight, bias) for m in self.modalities}


@register_fusion("film")
class FiLMFusion(Fusion):
    """FiLM (OGM-GE's FiLM fusion), two modalities.

    The ``condition`` modality c (default: the first) produces ``gamma, beta =
    split(Linear(z_c))``; the other modality t is modulated:
    ``logits = Linear(gamma * z_t + beta)``. Unimodal logits (others zeroed):
    ``c`` alone gives ``Linear(beta(z_c))``; ``t`` alone gives ``Linear(b_gamma * z_t +
    b_beta)``, which carries no information about ``z_t`` while ``b_gamma = 0`` (e.g.
    ``init="authors"`` zeroes biases): see docs/fusions.md.

    fusion_kwargs: ``condition`` (modality name).
    """

    def __init__(self, dims: Mapping[str, int], num_labels: int, **kwargs):
        super().__init__(dims, num_labels)
        _check_two("film", self.dims)
        self.condition = _pick_modality(kwargs, "condition", "film", self.dims)
        _no_kwargs("film", kwargs)
        self.target = next(m for m in self.modalities if m != self.condition)
        d_t = self.dims[self.target]
        self.film = nn.Linear(self.dims[self.condition], 2 * d_t)
        self.fc_out = nn.Linear(d_t, num_labels)

    def forward(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        gamma, beta = self.film(features[self.condition]).chunk(2, dim=-1)
        return self.fc_out(gamma * features[self.target] + beta)


@register_fusion("gated")
class GatedFusion(Fusion):
    """Gated fusion (OGM-GE's GatedFusion; ARL's Table 4 with Swin-Base), two modalities.

    ``logits = fc_out(sigmoid(fc_g(z_g)) * fc_o(z_o))`` with ``g`` the ``gate``
    modality (default: the first) and ``o`` the other. Unimodal logits (others
    zeroed): ``o`` alone gives ``fc_out(sigmoid(b_g) * fc_o(z_o))`` (a fixed gate, a
    full linear classifier of ``z_o``); ``g`` alone gives
    ``fc_out(sigmoid(fc_g(z_g)) * b_o)``, whose only path for ``z_g`` runs through the
    bias ``b_o`` -- it is the constant ``fc_out.bias`` for every sample when ``b_o = 0``. What
    ARL's statistics mean for the gate modality is documented in docs/fusions.md.

    fusion_kwargs: ``gate`` (modality name), ``hidden_dim`` (default: ``D`` of the
    gated modality).
    """

    def __init__(self, dims: Mapping[str, int], num_labels: int, **kwargs):
        super().__init__(dims, num_labels)
        _check_two("gated", self.dims)
        self.gate = _pick_modality(kwargs, "gate", "gated", self.dims)
        self.other = next(m for m in self.modalities if m != self.gate)
        hidden = kwargs.pop("hidden_dim", None) or self.dims[self.other]
        if not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"fusion_kwargs['hidden_dim']: expected a positive int, got {hidden!r}")
        _no_kwargs("gated", kwargs)
        self.fc_gate = nn.Linear(self.dims[self.gate], hidden)
        self.fc_other = nn.Linear(self.dims[self.other], hidden)
        self.fc_out = nn.Linear(hidden, num_labels)

    def forward(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        gate = torch.sigmoid(self.fc_gate(features[self.gate]))
        return self.fc_out(gate * self.fc_other(features[self.other]))


def build_fusion(
    name: str, dims: Mapping[str, int], num_labels: int, encoders: Optional[Mapping[str, nn.Module]] = None, **kwargs
) -> Fusion:
    """Instantiate the registered fusion ``name``.

    ``encoders`` (the model's encoders, by modality) is passed to intermediate fusions
    only, which read their stage layout (they do not keep a reference to them).
    """
    if name not in FUSIONS:
        raise ValueError(f"fusion: unknown fusion {name!r}; expected one of {sorted(FUSIONS)}")
    cls = FUSIONS[name]
    if cls.intermediate:
        if encoders is None:
            raise ValueError(
                f"fusion: {name!r} is an intermediate fusion and needs the encoders (build it via MultimodalModel)"
            )
        return cls(dims, num_labels, encoders=encoders, **kwargs)
    return cls(dims, num_labels, **kwargs)

