"""Pretrained weights: find the local weights file of a timm model and load it into a
:class:`~arl_hf.modeling.encoders.timm.TimmEncoder` with timm's own loader (offline); which encoders
hold pretrained weights, and freezing encoders (``ARLConfig.freeze_encoders`` /
``encoder_learning_rate``)."""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

from torch import nn

from ..log import get_logger
from .encoders.timm import TimmEncoder

logger = get_logger(__name__)

__all__ = ["resolve_pretrained_file", "load_timm_weights", "freeze_encoders", "pretrained_encoder_parameters"]


def _encoders(model: nn.Module) -> Dict[str, nn.Module]:
    encoders = getattr(getattr(model, "module", model), "encoders", None)
    if not isinstance(encoders, nn.ModuleDict):
        raise ValueError(f"model: {type(model).__name__} has no `encoders` ModuleDict (one encoder per modality)")
    return dict(encoders.items())


def freeze_encoders(model: nn.Module, which: Optional[Sequence[str]]) -> List[str]:
    """Stop the encoders named in ``which`` (``["all"]``: every one; ``None``: none) from training:
    their parameters no longer require gradients. Returns the modalities frozen.

    Raises:
        ValueError: a name that is not a modality of the model (names ``freeze_encoders``).
    """
    if not which:
        return []
    encoders = _encoders(model)
    names = list(encoders) if list(which) == ["all"] else list(which)
    unknown = [m for m in names if m not in encoders]
    if unknown:
        raise ValueError(f"freeze_encoders: {unknown[0]!r} is not a modality of the model; expected 'all' or names "
                         f"of {list(encoders)}")
    for m in names:
        encoders[m].requires_grad_(False)
    logger.info("frozen encoders: %s", ", ".join(names))
    return names


def pretrained_encoder_parameters(model: nn.Module) -> List[nn.Parameter]:
    """The trainable parameters of the encoders built from pretrained weights: ``hf:`` encoders (unless
    their spec says ``"pretrained": False``) and timm encoders whose spec names ``"pretrained"`` weights."""
    specs = getattr(getattr(getattr(model, "module", model), "config", None), "modalities", None) or {}
    out = []
    for m, enc in _encoders(model).items():
        spec = specs.get(m, {})
        hf = str(spec.get("encoder", "")).startswith("hf:")
        if (hf and spec.get("pretrained", True)) or (not hf and spec.get("pretrained")):
            out.extend(p for p in enc.parameters() if p.requires_grad)
    return out


def resolve_pretrained_file(model_name: str, path: Optional[str] = None, cache_dir: Optional[str] = None) -> str:
    """Local weights file of timm model ``model_name``, without network access.

    ``path`` given: it must be an existing file. Otherwise the file is looked up in the
    local Hugging Face cache (``HF_HUB_CACHE`` / ``cache_dir``) under the model's
    ``hf_hub_id`` (e.g. ``timm/swin_base_patch4_window7_224.ms_in22k``). Raises
    ``FileNotFoundError`` saying where to put the weights, ``ValueError`` when timm has
    no pretrained configuration for the name.
    """
    if path is not None:
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"pretrained: weights file {path!r} does not exist; pass the path of a local "
                f"{model_name} checkpoint (.safetensors or .pth)"
            )
        return path
    import timm
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(model_name)
    if cfg is None:
        raise ValueError(
            f"pretrained: timm has no pretrained configuration for {model_name!r}; name a tagged model "
            "(e.g. 'swin_base_patch4_window7_224.ms_in22k') or pass a weights file path"
        )
    repo = cfg.hf_hub_id
    if not repo:
        raise ValueError(f"pretrained: {model_name!r} has no Hugging Face Hub id; pass a weights file path")
    repo = repo.split("@")[0]
    for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
        found = try_to_load_from_cache(repo, filename, cache_dir=cache_dir)
        if isinstance(found, str) and os.path.isfile(found):
            return found
    from huggingface_hub.constants import HF_HUB_CACHE

    where = cache_dir or HF_HUB_CACHE
    raise FileNotFoundError(
        f"pretrained: no local weights for {model_name!r} (offline). Either download them where the "
        f"Hugging Face cache ({where}) is visible, e.g. `hf download {repo} model.safetensors` on a machine "
        f"with network access and copy the cache over, or save the file anywhere and pass its path "
        f"(modality spec 'pretrained': '/path/model.safetensors' or load_backbone_weights(model, modality, path))"
    )


def load_timm_weights(encoder: "TimmEncoder", path: Optional[str] = None, cache_dir: Optional[str] = None) -> None:
    """Load pretrained weights into ``encoder.backbone`` offline, with timm's own loader.

    timm's ``load_pretrained`` runs on the existing backbone (no second model is built):
    the model family's checkpoint filter (``checkpoint_filter_fn`` of its timm module,
    e.g. Swin's), the adaptation of the first convolution to ``in_chans`` (RGB filters
    summed for one channel) and the removal of the classifier. The load is then checked
    strictly: every backbone tensor must come from the file except the index/mask
    buffers timm computes itself; otherwise ``ValueError`` naming the file.
    """
    import sys

    from timm.models import load_pretrained

    if not isinstance(encoder, TimmEncoder):
        raise ValueError(f"{getattr(encoder, 'modality', '?')}: encoder {type(encoder).__name__} has no timm backbone")
    file = resolve_pretrained_file(encoder.model_name, path, cache_dir)
    backbone = encoder.backbone
    cfg = dict(getattr(backbone, "pretrained_cfg", None) or {})
    for key in ("state_dict", "url", "hf_hub_id", "hf_hub_filename"):
        cfg.pop(key, None)
    cfg["file"] = file
    filter_fn = getattr(sys.modules.get(type(backbone).__module__), "checkpoint_filter_fn", None)
    captured = {}
    original = backbone.load_state_dict

    def capture(state_dict, strict=True, **kwargs):  # keep timm's own load, observe what it loaded
        captured["result"] = original(state_dict, strict=False, **kwargs)
        return captured["result"]

    backbone.load_state_dict = capture
    try:
        load_pretrained(backbone, pretrained_cfg=cfg, num_classes=0, in_chans=encoder.in_chans, filter_fn=filter_fn)
    except RuntimeError as err:
        raise ValueError(f"pretrained: weights file {file!r} does not fit {encoder.model_name!r}: {err}") from err
    finally:
        del backbone.load_state_dict
    result = captured.get("result")
    if result is None:
        raise ValueError(f"pretrained: timm did not load a state dict from {file!r} into {encoder.model_name!r}")
    missing = [k for k in result.missing_keys if k not in encoder.computed_buffers]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"pretrained: weights file {file!r} does not fit {encoder.model_name!r}: missing {missing[:5]}, "
            f"unexpected {list(result.unexpected_keys)[:5]}"
        )
    logger.info(f"{encoder.modality}: loaded pretrained {encoder.model_name} weights from {file}")
