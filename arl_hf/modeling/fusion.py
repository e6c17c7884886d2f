"""Fusion registry: features of every modality -> logits, plus ARL's unimodal logits.

A fusion module maps ``{modality: (B, D_m)}`` to ``(B, C)`` logits. Its unimodal logits
for modality m are the *same* fusion path with every other modality's representation
replaced by zeros (ARL Sec. 3.2: no extra parameters). The generic implementation runs
the fusion once on an M-fold batch of zeroed copies; ``concat`` computes the identical
quantity from weight slices (``W_m z_m + b``) at the cost of the head alone.
"""

from __future__ import annotations

from typing import Dict, Mapping

import torch
import torch.nn.functional as F
from torch import nn

FUSIONS: Dict[str, type] = {}


def register_fusion(name: str):
    """Decorator registering a :class:`Fusion` subclass under ``name``."""

    def deco(cls):
        FUSIONS[name] = cls
        cls.fusion_name = name
        return cls

    return deco


class Fusion(nn.Module):
    """Base class. Subclasses implement :meth:`forward`; :meth:`unimodal_logits` is generic."""

    fusion_name = "base"

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


def build_fusion(name: str, dims: Mapping[str, int], num_labels: int, **kwargs) -> Fusion:
    """Instantiate the registered fusion ``name``."""
    if name not in FUSIONS:
        raise ValueError(f"fusion: unknown fusion {name!r}; expected one of {sorted(FUSIONS)}")
    return FUSIONS[name](dims, num_labels, **kwargs)
