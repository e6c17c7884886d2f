"""The ``"mlp"`` family: Linear + ReLU layers (no normalisation) over feature vectors."""

from __future__ import annotations

from typing import Any, Dict, Tuple

import torch
from torch import nn

from .base import EncoderFamily, positive_int, register_encoder


@register_encoder("mlp")
class MLPEncoder(EncoderFamily, nn.Module):
    """Linear + ReLU layers (no normalisation), ``(B, input_dim) -> (B, hidden_dims[-1])``.

    Spec: ``{"encoder": "mlp", "input_dim": D, "hidden_dims": [...]}``. Each Linear+ReLU pair is one
    stage (a ``(B, D)`` vector, channels last).
    """

    input_kinds = ("vector",)
    default_for = ("vector",)
    OPTIONS = ("input_dim", "hidden_dims")
    channel_axis = -1

    @classmethod
    def validate_spec(cls, spec: Dict[str, Any], field: str) -> None:
        """``input_dim`` a positive int, ``hidden_dims`` a non-empty list of positive ints, no other option."""
        positive_int(spec, "input_dim", field, required=True)
        dims = spec.get("hidden_dims", [])
        if (not isinstance(dims, (list, tuple)) or len(dims) == 0
                or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims)):
            raise ValueError(f"{field}['hidden_dims']: expected a non-empty list of positive ints, got {dims!r}")
        super().validate_spec(spec, field)

    @classmethod
    def spec_for_input(cls, encoder: str, kind: str, shape: Tuple[int, ...], args: Any) -> Dict[str, Any]:
        """``input_dim`` from the input, ``hidden_dims`` from ``args.mlp_hidden_dims`` (``--mlp_hidden_dims``)."""
        return {"input_dim": int(shape[-1]), "hidden_dims": list(args.mlp_hidden_dims)}

    def __init__(self, modality: str, spec: Dict[str, Any]):
        super().__init__()
        self.modality = modality
        self.input_dim = int(spec["input_dim"])
        layers = []
        prev = self.input_dim
        for d in spec["hidden_dims"]:
            layers += [nn.Linear(prev, d), nn.ReLU()]
            prev = d
        self.net = nn.Sequential(*layers)
        self.out_dim = prev
        self.stage_dims = [int(d) for d in spec["hidden_dims"]]
        self.num_stages = len(self.stage_dims)

    def check_input(self, x: torch.Tensor, field: str) -> None:
        if x.dim() != 2 or x.shape[-1] != self.input_dim:
            raise ValueError(f"{field}: expected shape (B, {self.input_dim}), got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward_stage(self, i: int, h: torch.Tensor) -> torch.Tensor:
        return self.net[2 * i + 1](self.net[2 * i](h))

    def forward_pool(self, h: torch.Tensor) -> torch.Tensor:
        return h
