"""The ``"cnn"`` family, a small convolutional encoder: Conv3x3/stride-2 + BatchNorm + ReLU blocks and
global average pooling. Cheap enough to train many seeds on a CPU (the ``avdigits_bench``
preset); each block is one stage, so it takes part in intermediate fusion.
"""

from __future__ import annotations

from typing import Any, Dict, List

import torch
from torch import nn

from ...kinds import IMAGE_KINDS
from .base import EncoderFamily, register_encoder

DEFAULT_CHANNELS = (16, 32, 64)


@register_encoder("cnn")
class CNNEncoder(EncoderFamily, nn.Module):
    """``(B, C, H, W)`` or ``(B, T, C, H, W)`` -> ``(B, channels[-1])``; frames are folded into the
    batch and their pooled features averaged over T, as :class:`TimmEncoder` does.

    Spec: ``{"encoder": "cnn", "in_chans": 1, "channels": [16, 32, 64]}``.
    """

    input_kinds = IMAGE_KINDS
    OPTIONS = ("in_chans", "channels")
    channel_axis = 1

    @classmethod
    def validate_spec(cls, spec: Dict[str, Any], field: str) -> None:
        """Known options only; ``in_chans`` a positive int; ``channels`` a non-empty list of positive ints."""
        super().validate_spec(spec, field)
        chans = spec.get("in_chans", 1)
        if not isinstance(chans, int) or isinstance(chans, bool) or chans < 1:
            raise ValueError(f"{field}['in_chans']: expected a positive int, got {chans!r}")
        widths = spec.get("channels", list(DEFAULT_CHANNELS))
        if (not isinstance(widths, (list, tuple)) or not widths
                or not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths)):
            raise ValueError(f"{field}['channels']: expected a non-empty list of positive ints, got {widths!r}")

    def __init__(self, modality: str, spec: Dict[str, Any]):
        super().__init__()
        self.modality = modality
        self.in_chans = int(spec.get("in_chans", 1))
        widths: List[int] = [int(w) for w in spec.get("channels", DEFAULT_CHANNELS)]
        blocks, prev = [], self.in_chans
        for w in widths:
            blocks.append(nn.Sequential(nn.Conv2d(prev, w, 3, stride=2, padding=1, bias=False),
                                        nn.BatchNorm2d(w), nn.ReLU(inplace=True)))
            prev = w
        self.blocks = nn.ModuleList(blocks)
        self.out_dim = prev
        self.stage_dims = widths
        self.num_stages = len(widths)

    def check_input(self, x: torch.Tensor, field: str) -> None:
        if x.dim() not in (4, 5) or x.shape[-3] != self.in_chans:
            raise ValueError(
                f"{field}: expected (B, {self.in_chans}, H, W) or (B, T, {self.in_chans}, H, W), "
                f"got shape {tuple(x.shape)}"
            )

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward_stage(self, i: int, h: torch.Tensor) -> torch.Tensor:
        return self.blocks[i](h)

    def forward_pool(self, h: torch.Tensor) -> torch.Tensor:
        return h.mean(dim=(-2, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.shape[1] if x.dim() == 5 else 0
        h = x.flatten(0, 1) if frames else x
        for block in self.blocks:
            h = block(h)
        z = self.forward_pool(h)
        return z.view(x.shape[0], frames, -1).mean(1) if frames else z
