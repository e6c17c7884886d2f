"""Encoder registry: one module per modality that maps an input to a pooled feature vector.

Registered names: ``"timm:<model name>"`` (any timm backbone, frames folded into the
batch and averaged over time as in the paper's encoders) and ``"mlp"`` (Linear+ReLU,
no normalisation layers). Add your own with :func:`register_encoder`.
"""

from __future__ import annotations

from typing import Any, Callable, Dict

import torch
from torch import nn

ENCODERS: Dict[str, Callable[[str, Dict[str, Any]], nn.Module]] = {}


def register_encoder(name: str):
    """Decorator registering an encoder builder ``builder(modality, spec) -> nn.Module``.

    The module must expose ``out_dim`` (int) and ``check_input(x, field)`` raising
    ``ValueError`` for a malformed input.
    """

    def deco(builder):
        ENCODERS[name] = builder
        return builder

    return deco


def _family(encoder: str) -> str:
    return "timm" if encoder.startswith("timm:") else encoder


def validate_encoder_spec(modality: str, spec: Dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the field when ``spec`` cannot build an encoder."""
    field = f"modalities[{modality!r}]"
    if not isinstance(spec, dict) or "encoder" not in spec:
        raise ValueError(f"{field}: expected a dict with an 'encoder' key, got {spec!r}")
    enc = spec["encoder"]
    if not isinstance(enc, str) or _family(enc) not in ENCODERS:
        raise ValueError(
            f"{field}['encoder']: unknown encoder {enc!r}; expected 'timm:<model name>' or one of "
            f"{sorted(k for k in ENCODERS if k != 'timm')}"
        )
    if _family(enc) == "timm":
        name = enc[len("timm:") :]
        import timm

        if not name or not timm.is_model(name.split(".")[0]):
            raise ValueError(f"{field}['encoder']: timm has no model named {name!r}")
        if not isinstance(spec.get("in_chans", 3), int) or spec.get("in_chans", 3) < 1:
            raise ValueError(f"{field}['in_chans']: expected a positive int, got {spec.get('in_chans')!r}")
    if enc == "mlp":
        if not isinstance(spec.get("input_dim"), int) or spec["input_dim"] < 1:
            raise ValueError(f"{field}['input_dim']: expected a positive int, got {spec.get('input_dim')!r}")
        dims = spec.get("hidden_dims", [])
        if not isinstance(dims, (list, tuple)) or len(dims) == 0 or not all(isinstance(d, int) and d > 0 for d in dims):
            raise ValueError(f"{field}['hidden_dims']: expected a non-empty list of positive ints, got {dims!r}")


def build_encoder(modality: str, spec: Dict[str, Any]) -> nn.Module:
    """Build the encoder of ``modality`` from its spec (see :class:`MultimodalConfig`)."""
    validate_encoder_spec(modality, spec)
    return ENCODERS[_family(spec["encoder"])](modality, spec)


class TimmEncoder(nn.Module):
    """A timm backbone without classifier, returning pooled ``(B, D)`` features.

    Accepts ``(B, C, H, W)`` or ``(B, T, C, H, W)``; frames are folded into the batch
    and their pooled features averaged over T (= 3-D average pooling of the paper's
    visual encoder, since every frame has the same spatial size). Pooling is timm's
    own (handles NCHW CNNs and NHWC/token transformers such as Swin and ViT).
    """

    def __init__(self, modality: str, spec: Dict[str, Any]):
        super().__init__()
        import timm

        kwargs = {k: v for k, v in spec.items() if k not in ("encoder", "in_chans")}
        self.modality = modality
        self.in_chans = int(spec.get("in_chans", 3))
        self.backbone = timm.create_model(
            spec["encoder"][len("timm:") :], pretrained=False, num_classes=0, in_chans=self.in_chans, **kwargs
        )
        self.out_dim = int(self.backbone.num_features)

    def check_input(self, x: torch.Tensor, field: str) -> None:
        if x.dim() not in (4, 5):
            raise ValueError(
                f"{field}: expected (B, C, H, W) or (B, T, C, H, W) with C={self.in_chans}, got shape {tuple(x.shape)}"
            )
        channels = x.shape[-3]
        if channels != self.in_chans:
            raise ValueError(f"{field}: expected {self.in_chans} channels (dim -3), got {channels} in shape {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 5:
            b, t = x.shape[:2]
            feats = self.backbone(x.flatten(0, 1))
            return feats.view(b, t, -1).mean(dim=1)
        return self.backbone(x)


class MLPEncoder(nn.Module):
    """Linear + ReLU layers (no normalisation), ``(B, input_dim) -> (B, hidden_dims[-1])``."""

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

    def check_input(self, x: torch.Tensor, field: str) -> None:
        if x.dim() != 2 or x.shape[-1] != self.input_dim:
            raise ValueError(f"{field}: expected shape (B, {self.input_dim}), got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


register_encoder("timm")(TimmEncoder)
register_encoder("mlp")(MLPEncoder)
