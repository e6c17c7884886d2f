"""`MultimodalModel`: one encoder per modality, a fusion head, fused and unimodal logits.

The model contract every strategy relies on (and that a user's own model may follow
instead of this class): an ``encoders`` :class:`~torch.nn.ModuleDict` keyed by modality
in order; ``forward(**{modality: tensor}, labels=None, return_unimodal_logits=False)``
returning ``logits``, ``features`` and, on request, ``unimodal_logits`` (the shared
fusion path with every other modality's representation zeroed, Sec. 3.2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .configuration import MultimodalConfig
from .encoders import build_encoder
from .fusion import build_fusion

# keyword arguments HF utilities may pass that carry no modality
_IGNORED_KWARGS = ("return_dict", "output_hidden_states", "output_attentions")


@dataclass
class MultimodalOutput(ModelOutput):
    """Output of :class:`MultimodalModel`.

    Attributes:
        loss: cross-entropy of the fused logits (only when ``labels`` are given).
        logits: fused logits ``(B, C)``.
        features: modality -> pooled encoder output ``(B, D_m)``.
        unimodal_logits: modality -> ``(B, C)``, only with ``return_unimodal_logits=True``.
    """

    loss: Optional[torch.Tensor] = None
    logits: Optional[torch.Tensor] = None
    features: Optional[Dict[str, torch.Tensor]] = None
    unimodal_logits: Optional[Dict[str, torch.Tensor]] = None


class MultimodalPreTrainedModel(PreTrainedModel):
    """Weight-initialisation and loading glue shared by multimodal models."""

    config_class = MultimodalConfig
    base_model_prefix = "multimodal"
    main_input_name = "labels"
    # forward takes **inputs (one keyword per modality) but never num_items_in_batch:
    # tell Trainer so that it divides the loss by the accumulation steps itself.
    accepts_loss_kwargs = False
    _no_split_modules: list = []

    def _init_weights(self, module: nn.Module) -> None:
        """Keep each library's own init (``init="timm"``) or apply the authors' scheme.

        ``PreTrainedModel``'s default would re-draw every Conv/Linear from N(0, 0.02),
        wiping timm's initialisation; this override touches nothing unless asked to.
        """
        if getattr(self.config, "init", "timm") != "authors":
            return
        with torch.no_grad():
            if isinstance(module, nn.Linear):
                nn.init.xavier_normal_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.LayerNorm)):
                if module.weight is not None:
                    nn.init.ones_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)


class MultimodalModel(MultimodalPreTrainedModel):
    """Encoders per modality + fusion head. See :class:`MultimodalConfig`.

    ``model(audio=..., visual=..., labels=..., return_unimodal_logits=True)``.
    Pretrained backbone weights are loaded by :func:`arl_hf.modeling.load_backbone_weights`
    after construction, never in ``__init__``.
    """

    def __init__(self, config: MultimodalConfig):
        super().__init__(config)
        self.encoders = nn.ModuleDict({m: build_encoder(m, spec) for m, spec in config.modalities.items()})
        dims = {m: enc.out_dim for m, enc in self.encoders.items()}
        self.fusion = build_fusion(
            config.fusion, dims, config.num_labels, encoders=self.encoders, **(config.fusion_kwargs or {})
        )
        self.post_init()

    @property
    def modalities(self) -> list:
        return list(self.encoders.keys())

    @property
    def arl_gradient_modulation(self) -> Optional[str]:
        """``"parameters"`` for intermediate fusion (the encoders feed the fusion from inside,
        so ARL scales each encoder's parameter gradients), ``None`` (the strategy's
        default, scaling at the encoder outputs) for late fusion."""
        return "parameters" if self.fusion.intermediate else None

    def _check_inputs(self, inputs: Dict[str, torch.Tensor], labels: Optional[torch.Tensor]) -> int:
        missing = [m for m in self.encoders if m not in inputs]
        if missing:
            raise ValueError(
                f"{missing[0]}: missing modality input; the model expects keyword arguments {self.modalities}"
            )
        unknown = [k for k in inputs if k not in self.encoders]
        if unknown:
            raise ValueError(f"{unknown[0]}: not a modality of this model; expected one of {self.modalities}")
        batch = None
        for m, x in inputs.items():
            if not isinstance(x, torch.Tensor):
                raise ValueError(f"{m}: expected a torch.Tensor, got {type(x).__name__}")
            if not x.is_floating_point():
                raise ValueError(f"{m}: expected a floating-point tensor, got dtype {x.dtype}")
            self.encoders[m].check_input(x, m)
            if x.shape[0] == 0:
                raise ValueError(f"{m}: the batch is empty (B = 0)")
            if batch is None:
                batch = x.shape[0]
            elif x.shape[0] != batch:
                raise ValueError(f"{m}: batch size {x.shape[0]} differs from {self.modalities[0]}'s {batch}")
        if labels is not None and tuple(labels.shape) != (batch,):
            raise ValueError(f"labels: expected shape ({batch},), got {tuple(labels.shape)}")
        return batch

    def forward(
        self,
        labels: Optional[torch.Tensor] = None,
        return_unimodal_logits: bool = False,
        **inputs: torch.Tensor,
    ) -> MultimodalOutput:
        for k in _IGNORED_KWARGS:
            inputs.pop(k, None)
        self._check_inputs(inputs, labels)
        if self.fusion.intermediate:
            logits, features, unimodal = self.fusion.run(self.encoders, inputs, return_unimodal_logits)
        else:
            features = {m: self.encoders[m](inputs[m]) for m in self.encoders}
            logits = self.fusion(features)
            unimodal = self.fusion.unimodal_logits(features) if return_unimodal_logits else None
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        return MultimodalOutput(loss=loss, logits=logits, features=features, unimodal_logits=unimodal)


def load_backbone_weights(
    model: MultimodalModel, modality: str, path: Optional[str] = None, cache_dir: Optional[str] = None
) -> MultimodalModel:
    """Load pretrained timm weights into ``model.encoders[modality]``, offline.

    ``path``: a local weights file (``.safetensors``/``.pth``); without it the weights
    are taken from the local Hugging Face cache (``cache_dir`` or ``HF_HUB_CACHE``) under
    the timm model's Hub id. Uses timm's own loader (classifier dropped, ``in_chans``
    adapted by summing). Raises ``FileNotFoundError`` saying where to put the weights
    when they are not available locally, ``ValueError`` for a non-timm encoder.
    """
    import os

    from .encoders import load_timm_weights

    if modality not in model.encoders:
        raise ValueError(f"modality: {modality!r} is not a modality of this model; expected one of {model.modalities}")
    if path is not None and not os.path.isfile(path):
        raise FileNotFoundError(f"{modality}: pretrained weights file {path!r} does not exist")
    enc = model.encoders[modality]
    if not hasattr(enc, "backbone"):
        raise ValueError(f"{modality}: encoder {type(enc).__name__} has no timm backbone to load weights into")
    load_timm_weights(enc, path, cache_dir)
    return model


def load_pretrained_backbones(model: MultimodalModel, cache_dir: Optional[str] = None) -> MultimodalModel:
    """Load the weights named by each modality spec's ``"pretrained"`` key, offline.

    ``"pretrained": "/path/model.safetensors"`` loads that file; ``"pretrained": True``
    loads from the local Hugging Face cache. Call after construction (``from_pretrained``
    of a fine-tuned model needs no backbone weights).
    """
    for m, spec in model.config.modalities.items():
        pretrained = spec.get("pretrained", False)
        if pretrained:
            load_backbone_weights(model, m, pretrained if isinstance(pretrained, str) else None, cache_dir)
    return model
