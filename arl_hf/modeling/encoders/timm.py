"""The ``"timm:"`` family: any timm backbone (``"timm:<model name>"``) without classifier, returning
pooled ``(B, D)`` features of image-like inputs; frames are folded into the batch and averaged over
time as in the paper's encoders. Pretrained weights: :mod:`arl_hf.modeling.pretrained`."""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from ...kinds import IMAGE_KINDS
from .base import EncoderFamily, register_encoder

#: spec keys of timm encoders that are ours, not timm keyword arguments
TIMM_OWN_KEYS = ("encoder", "in_chans", "pretrained")


def _pool_features(x: torch.Tensor, output_fmt: str) -> torch.Tensor:
    """Average a backbone output to ``(B, D)``: NCHW over dims (2, 3), NHWC over (1, 2), NLC over 1."""
    if x.dim() == 2:
        return x
    if x.dim() == 3:
        return x.mean(dim=1)
    if x.dim() == 4:
        return x.mean(dim=(1, 2)) if output_fmt == "NHWC" else x.mean(dim=(2, 3))
    raise ValueError(f"backbone output: expected 2-D to 4-D features, got shape {tuple(x.shape)}")


class TimmEncoder(EncoderFamily, nn.Module):
    """A timm backbone without classifier, returning pooled ``(B, D)`` features.

    Accepts ``(B, C, H, W)`` or ``(B, T, C, H, W)``; frames are folded into the batch
    and their pooled features averaged over T (= 3-D average pooling of the paper's
    visual encoder, since every frame has the same spatial size). Pooling is timm's
    own global average pooling (``num_classes=0``), which averages NCHW CNN maps over
    (H, W) and NHWC maps (Swin, ``output_fmt="NHWC"``) over (H, W) as well; should a
    backbone still return a map (e.g. ``global_pool=""``), it is averaged here
    according to the backbone's ``output_fmt``.

    Stage-wise execution (intermediate fusion) is available for ResNet-like models
    (``conv1``/``layer1..4``), ``stem``+``stages`` models (ConvNeXt, ...) and
    ``patch_embed``+``layers`` models (Swin), with single-frame inputs.

    Spec: ``{"encoder": "timm:<model name>", "in_chans": 3, "pretrained": False, ...}``; every other
    key is a keyword argument of ``timm.create_model``.
    """

    input_kinds = IMAGE_KINDS
    default_for = IMAGE_KINDS
    default_encoder = "timm:resnet18"

    @classmethod
    def validate_spec(cls, spec: Dict[str, Any], field: str) -> None:
        """The model name exists in timm; ``in_chans`` is a positive int; ``pretrained`` is a bool or a path."""
        import timm

        name = spec["encoder"].partition(":")[2]
        if not name or not timm.is_model(name.split(".")[0]):
            raise ValueError(f"{field}['encoder']: timm has no model named {name!r}")
        if not isinstance(spec.get("in_chans", 3), int) or spec.get("in_chans", 3) < 1:
            raise ValueError(f"{field}['in_chans']: expected a positive int, got {spec.get('in_chans')!r}")
        pretrained = spec.get("pretrained", False)
        if not isinstance(pretrained, (bool, str)):
            raise ValueError(
                f"{field}['pretrained']: expected False, True (local HF cache) or a local weights file path, "
                f"got {pretrained!r}"
            )

    def __init__(self, modality: str, spec: Dict[str, Any]):
        super().__init__()
        import timm

        kwargs = {k: v for k, v in spec.items() if k not in TIMM_OWN_KEYS}
        self.modality = modality
        self.model_name = spec["encoder"].partition(":")[2]
        self.in_chans = int(spec.get("in_chans", 3))
        self.timm_kwargs = kwargs
        try:
            self.backbone = timm.create_model(self.model_name, pretrained=False, num_classes=0,
                                              in_chans=self.in_chans, **kwargs)
        except TypeError as err:  # an option the timm model does not take, named in one line
            found = re.search(r"unexpected keyword argument '(\w+)'", str(err))
            key = found.group(1) if found and found.group(1) in kwargs else None
            where = f"modalities[{modality!r}]" + (f"[{key!r}]" if key else "")
            raise ValueError(
                f"{where}: timm model {self.model_name!r} takes no option {key!r}" if key else
                f"{where}: timm model {self.model_name!r} rejected the options {sorted(kwargs)} ({err})") from None
        # timm's non-persistent buffers (Swin's relative position index and attention masks)
        # are saved with the model: from_pretrained builds on the meta device and could not
        # recompute them, so they must come back from the checkpoint.
        self.computed_buffers = set()
        for name, mod in self.backbone.named_modules():
            for buf in list(mod._non_persistent_buffers_set):
                if getattr(mod, buf, None) is not None:
                    self.computed_buffers.add(f"{name}.{buf}" if name else buf)
            mod._non_persistent_buffers_set.clear()
        self.out_dim = int(self.backbone.num_features)
        self.output_fmt = str(getattr(self.backbone, "output_fmt", "NCHW"))
        self._plan = self._stage_plan()

    # ---- plain forward ----------------------------------------------------------------------
    def check_input(self, x: torch.Tensor, field: str) -> None:
        if x.dim() not in (4, 5):
            raise ValueError(
                f"{field}: expected (B, C, H, W) or (B, T, C, H, W) with C={self.in_chans}, got shape {tuple(x.shape)}"
            )
        channels = x.shape[-3]
        if channels != self.in_chans:
            raise ValueError(
                f"{field}: expected {self.in_chans} channels (dim -3), got {channels} in shape {tuple(x.shape)}"
            )

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return _pool_features(self.backbone(x), self.output_fmt)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 5:
            b, t = x.shape[:2]
            feats = self._encode(x.flatten(0, 1))
            return feats.view(b, t, -1).mean(dim=1)
        return self._encode(x)

    # ---- stage protocol ---------------------------------------------------------------------
    def _stage_plan(self) -> Optional[Dict[str, Any]]:
        bb = self.backbone
        info = {f["module"]: int(f["num_chs"]) for f in getattr(bb, "feature_info", [])}
        if all(hasattr(bb, n) for n in ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")):
            names = [f"layer{i}" for i in range(1, 5)]
            stages = [getattr(bb, n) for n in names]
            kind = "resnet"
        elif hasattr(bb, "stem") and isinstance(getattr(bb, "stages", None), nn.Sequential):
            names = [f"stages.{i}" for i in range(len(bb.stages))]
            stages = list(bb.stages)
            kind = "stem_stages"
        elif hasattr(bb, "patch_embed") and isinstance(getattr(bb, "layers", None), nn.Sequential):
            names = [f"layers.{i}" for i in range(len(bb.layers))]
            stages = list(bb.layers)
            kind = "patch_layers"
        else:
            return None
        if not all(n in info for n in names):
            return None
        return {"kind": kind, "stages": stages, "dims": [info[n] for n in names]}

    @property
    def stage_error(self) -> Optional[str]:
        if self._plan is None:
            return (
                f"timm model {self.model_name!r} has no stage layout arl_hf can run stage by stage "
                "(ResNet-like conv1/layer1..4, stem+stages, or patch_embed+layers)"
            )
        return None

    @property
    def num_stages(self) -> int:
        return len(self._plan["stages"]) if self._plan else 0

    @property
    def stage_dims(self) -> List[int]:
        return list(self._plan["dims"]) if self._plan else []

    @property
    def channel_axis(self) -> int:
        return -1 if self.output_fmt == "NHWC" else 1

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        bb, kind = self.backbone, self._plan["kind"]
        if kind == "resnet":
            return bb.maxpool(bb.act1(bb.bn1(bb.conv1(x))))
        if kind == "stem_stages":
            return bb.stem(x)
        x = bb.patch_embed(x)
        if getattr(bb, "absolute_pos_embed", None) is not None:  # pragma: no cover - Swin variants with APE
            x = x + bb.absolute_pos_embed
        return x

    def forward_stage(self, i: int, h: torch.Tensor) -> torch.Tensor:
        return self._plan["stages"][i](h)

    def forward_pool(self, h: torch.Tensor) -> torch.Tensor:
        bb, kind = self.backbone, self._plan["kind"]
        if kind == "stem_stages" and hasattr(bb, "norm_pre"):
            h = bb.norm_pre(h)
        elif kind == "patch_layers" and hasattr(bb, "norm"):
            h = bb.norm(h)
        return _pool_features(bb.forward_head(h), self.output_fmt)


register_encoder("timm:")(TimmEncoder)
