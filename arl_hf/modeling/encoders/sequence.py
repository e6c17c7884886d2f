"""The feature-sequence families ``"transformer"`` and ``"lstm"``: ``(B, L, D)`` inputs such as MOSI's
audio/visual/text features (paper Table 2), mean-pooled over time."""

from __future__ import annotations

from typing import Any, Dict

import torch
from torch import nn

from .base import EncoderFamily, positive_int, register_encoder


class _SequenceEncoder(EncoderFamily, nn.Module):
    """Shared input check, stage loop and mean pooling of the feature-sequence encoders."""

    input_kinds = ("sequence",)
    default_for = ("sequence",)

    channel_axis = -1
    stages: nn.ModuleList
    DEFAULTS: Dict[str, Any] = {}

    def _setup(self, modality: str, spec: Dict[str, Any]) -> Dict[str, Any]:
        """Record modality and ``input_dim``; return the spec's options over :attr:`DEFAULTS`."""
        self.modality = modality
        self.input_dim = int(spec["input_dim"])
        return {**self.DEFAULTS, **{k: v for k, v in spec.items() if k in self.DEFAULTS}}

    def check_input(self, x: torch.Tensor, field: str) -> None:
        if x.dim() != 3 or x.shape[-1] != self.input_dim or x.shape[1] < 1:
            raise ValueError(
                f"{field}: expected a feature sequence (B, L, {self.input_dim}) with L >= 1, got {tuple(x.shape)}"
            )

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.forward_stem(x)
        for i in range(self.num_stages):
            h = self.forward_stage(i, h)
        return self.forward_pool(h)


@register_encoder("transformer")
class TransformerSequenceEncoder(_SequenceEncoder):
    """Pre-norm Transformer encoder over a feature sequence, mean-pooled over time.

    ``(B, L, input_dim)`` -> Linear to ``d_model`` + learned positions -> ``num_layers``
    ``nn.TransformerEncoderLayer`` (one stage each) -> LayerNorm -> mean over L.
    """

    DEFAULTS = {"d_model": 64, "num_layers": 2, "num_heads": 4, "dim_feedforward": None, "dropout": 0.1, "max_len": 512}
    OPTIONS = ("input_dim",) + tuple(DEFAULTS)

    @classmethod
    def validate_spec(cls, spec: Dict[str, Any], field: str) -> None:
        """Known options only; positive ints; ``num_heads`` divides ``d_model``; ``dropout`` in [0, 1)."""
        super().validate_spec(spec, field)
        positive_int(spec, "input_dim", field, required=True)
        for key in ("d_model", "num_layers", "num_heads", "dim_feedforward", "max_len"):
            positive_int(spec, key, field)
        d_model = spec.get("d_model", cls.DEFAULTS["d_model"])
        heads = spec.get("num_heads", cls.DEFAULTS["num_heads"])
        if d_model % heads != 0:
            raise ValueError(f"{field}['num_heads']: must divide d_model={d_model}, got {heads}")
        dropout = spec.get("dropout", 0.1)
        if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"{field}['dropout']: expected a number in [0, 1), got {dropout!r}")

    def __init__(self, modality: str, spec: Dict[str, Any]):
        super().__init__()
        opts = self._setup(modality, spec)
        d = int(opts["d_model"])
        self.max_len = int(opts["max_len"])
        self.proj = nn.Linear(self.input_dim, d)
        self.pos = nn.Parameter(torch.zeros(1, self.max_len, d))
        nn.init.normal_(self.pos, std=0.02)
        self.stages = nn.ModuleList(
            nn.TransformerEncoderLayer(
                d,
                int(opts["num_heads"]),
                dim_feedforward=int(opts["dim_feedforward"] or 4 * d),
                dropout=float(opts["dropout"]),
                batch_first=True,
                norm_first=True,
            )
            for _ in range(int(opts["num_layers"]))
        )
        self.norm = nn.LayerNorm(d)
        self.out_dim = d
        self.stage_dims = [d] * len(self.stages)

    def check_input(self, x: torch.Tensor, field: str) -> None:
        super().check_input(x, field)
        if x.shape[1] > self.max_len:
            raise ValueError(f"{field}: sequence length {x.shape[1]} exceeds max_len={self.max_len} of its encoder")

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x) + self.pos[:, : x.shape[1]]

    def forward_stage(self, i: int, h: torch.Tensor) -> torch.Tensor:
        return self.stages[i](h)

    def forward_pool(self, h: torch.Tensor) -> torch.Tensor:
        return self.norm(h).mean(dim=1)


@register_encoder("lstm")
class LSTMSequenceEncoder(_SequenceEncoder):
    """Stacked LSTM over a feature sequence (one layer per stage), mean-pooled over time."""

    DEFAULTS = {"hidden_dim": 64, "num_layers": 1, "bidirectional": False}
    OPTIONS = ("input_dim",) + tuple(DEFAULTS)

    @classmethod
    def validate_spec(cls, spec: Dict[str, Any], field: str) -> None:
        """Known options only; positive ints; ``bidirectional`` a bool."""
        super().validate_spec(spec, field)
        positive_int(spec, "input_dim", field, required=True)
        for key in ("hidden_dim", "num_layers"):
            positive_int(spec, key, field)
        if not isinstance(spec.get("bidirectional", False), bool):
            raise ValueError(f"{field}['bidirectional']: expected a bool, got {spec.get('bidirectional')!r}")

    def __init__(self, modality: str, spec: Dict[str, Any]):
        super().__init__()
        opts = self._setup(modality, spec)
        hidden, bi = int(opts["hidden_dim"]), bool(opts["bidirectional"])
        width = hidden * (2 if bi else 1)
        self.stages = nn.ModuleList(
            nn.LSTM(self.input_dim if i == 0 else width, hidden, batch_first=True, bidirectional=bi)
            for i in range(int(opts["num_layers"]))
        )
        self.out_dim = width
        self.stage_dims = [width] * len(self.stages)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward_stage(self, i: int, h: torch.Tensor) -> torch.Tensor:
        return self.stages[i](h)[0]

    def forward_pool(self, h: torch.Tensor) -> torch.Tensor:
        return h.mean(dim=1)
