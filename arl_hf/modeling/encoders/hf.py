"""The ``"hf:"`` family: any transformers ``AutoModel`` checkpoint as a modality encoder.

``{"encoder": "hf:<Hub id or local folder>"}`` builds the checkpoint's ``AutoModel`` (BERT, RoBERTa,
ViT, Swin, ConvNeXt, AST, wav2vec2, HuBERT, a CLIP vision tower saved with its ``CLIPVisionConfig``...)
and pools its output to a ``(B, D)`` feature vector.

Spec options:

* ``"pooling"``: ``"auto"`` (default): ``pooler_output`` when the model returns one and the checkpoint
  holds the pooler's trained weights, else the masked mean of ``last_hidden_state``; ``"pooler"``,
  ``"mean"`` (mask: the ``attention_mask`` given) or ``"cls"`` (the first token).
* ``"pretrained"``: load the checkpoint's weights when the model is built (default ``True``); ``False``
  builds the architecture with random weights.

Recorded when the config is built (:meth:`HFEncoder.complete_spec`), so that a saved model rebuilds
from its own folder alone: ``"hf_config"`` (the checkpoint's ``config.to_dict()``) and
``"pooler_weights"`` (whether the checkpoint holds trained pooler weights; ``None`` when the model
has no pooler with parameters).

Inputs: a modality's batch value is a dict of the model's keyword inputs (``{"input_ids",
"attention_mask"}``, ``{"input_values", "attention_mask"}``, ``{"pixel_values"}``: the kind
``fields``), or one tensor passed as the model's main input (``pixel_values`` of ``(B, C, H, W)``,
``input_ids`` of ``(B, L)``), or ``tokens`` ``(B, 2, L)`` (ids and attention mask) for a text model.

An encoder-decoder checkpoint (BART, T5, Whisper) contributes its encoder (``get_encoder()``).
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import json
import os
from typing import Any, Dict, Iterator, List, Mapping, Optional, Set

import torch
from torch import nn

from ...kinds import KINDS
from ...log import get_logger
from .base import EncoderFamily, register_encoder

logger = get_logger(__name__)

__all__ = ["HFEncoder", "POOLINGS", "no_pretrained_weights", "loads_pretrained_weights"]

POOLINGS = ("auto", "pooler", "mean", "cls")
_SKIP_WEIGHTS: contextvars.ContextVar = contextvars.ContextVar("arl_hf_skip_pretrained", default=False)


@contextlib.contextmanager
def no_pretrained_weights() -> Iterator[None]:
    """Inside this context, encoders are built from their recorded config without loading any
    checkpoint (a model rebuilt from its own saved weights, or a twin used for initial values)."""
    token = _SKIP_WEIGHTS.set(True)
    try:
        yield
    finally:
        _SKIP_WEIGHTS.reset(token)


def loads_pretrained_weights() -> bool:
    """Whether an encoder built now loads its checkpoint: not under :func:`no_pretrained_weights`
    nor under a meta-device context (``from_pretrained`` builds there and loads the saved weights)."""
    return not _SKIP_WEIGHTS.get() and torch.empty(0).device.type != "meta"


def _source(spec: Mapping[str, Any]) -> str:
    return str(spec["encoder"]).partition(":")[2]


def _is_local(source: str) -> bool:
    return source.startswith((".", "/", "~")) or os.path.isdir(os.path.expanduser(source))


def _config_from_dict(d: Mapping[str, Any], field: str):
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    return CONFIG_MAPPING[d["model_type"]].from_dict(dict(d))  # checked by HFEncoder.validate_spec


def _model_class(config, field: str):
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    towers = sorted(getattr(config, "sub_configs", None) or {})
    if towers and not getattr(config, "is_encoder_decoder", False):
        raise ValueError(f"{field}['encoder']: the checkpoint is a composite {config.model_type!r} model with "
                         f"{', '.join(towers)}; an hf: encoder is one tower: save the one you want with its own "
                         "config (e.g. CLIPVisionModel.from_pretrained(checkpoint).save_pretrained(folder)) and name "
                         "that folder")
    try:
        return MODEL_MAPPING[type(config)]
    except KeyError:
        raise ValueError(f"{field}['encoder']: transformers' AutoModel has no model for config "
                         f"{type(config).__name__} (model_type {config.model_type!r})") from None


def _checkpoint_keys(source: str, field: str) -> Optional[Set[str]]:
    """The tensor names of the checkpoint's safetensors file(s), read from their headers (``None``:
    the checkpoint has no safetensors weights)."""
    from safetensors import safe_open
    from transformers.utils import cached_file

    def find(name):
        if _is_local(source):
            path = os.path.join(os.path.expanduser(source), name)
            return path if os.path.isfile(path) else None
        return cached_file(source, name, _raise_exceptions_for_missing_entries=False)

    index = find("model.safetensors.index.json")
    if index:
        with open(index, encoding="utf-8") as f:
            return set(json.load(f).get("weight_map", {}))
    single = find("model.safetensors")
    if not single:
        return None
    with safe_open(single, framework="pt") as f:
        return set(f.keys())


def _pooler_params(model_cls, config) -> List[str]:
    """Names of the parameters of the model's ``pooler`` submodules (built on the meta device)."""
    if getattr(config, "is_encoder_decoder", False):
        return []  # the encoder of an encoder-decoder model is used: no pooler
    with torch.device("meta"):
        model = model_cls(config)
    return [n for n, _ in model.named_parameters() if "pooler" in n.split(".")]


class HFEncoder(EncoderFamily, nn.Module):
    """A transformers ``AutoModel`` returning pooled ``(B, D)`` features (see the module docstring).

    ``model`` is the transformers model (``encoders[m].model``: LoRA, freezing, its own methods).
    """

    input_kinds = tuple(KINDS)
    name_hint = "<Hub id or local folder>"
    OPTIONS = ("pooling", "pretrained", "hf_config", "pooler_weights")
    #: hf models expose no stage outputs: intermediate fusion refuses them
    stage_error = ("hf encoders expose no stage outputs; intermediate fusion (mmtm, cross_attention) cannot run "
                   "them: use a late fusion (concat, sum, film, gated)")
    has_stages = False

    # ---- spec ----------------------------------------------------------------------------------
    @classmethod
    def spec_for_input(cls, encoder: str, kind: str, shape: Any, args: Any) -> Dict[str, Any]:
        """No spec keys from the input: the checkpoint's config gives the model (``complete_spec``)."""
        return {}

    @classmethod
    def validate_spec(cls, spec: Dict[str, Any], field: str) -> None:
        """The source is named, ``pooling`` one of :data:`POOLINGS`, ``pretrained`` a bool,
        ``hf_config`` a config dict, ``pooler_weights`` a bool or ``None``."""
        super().validate_spec(spec, field)
        if not _source(spec):
            raise ValueError(f"{field}['encoder']: expected 'hf:<Hub id or local folder>', got {spec['encoder']!r}")
        if spec.get("pooling", "auto") not in POOLINGS:
            raise ValueError(f"{field}['pooling']: expected one of {list(POOLINGS)}, got {spec.get('pooling')!r}")
        if not isinstance(spec.get("pretrained", True), bool):
            raise ValueError(f"{field}['pretrained']: expected True or False, got {spec.get('pretrained')!r}")
        if "hf_config" in spec:
            from transformers.models.auto.configuration_auto import CONFIG_MAPPING

            hf_config = spec["hf_config"]
            model_type = hf_config.get("model_type") if isinstance(hf_config, Mapping) else None
            if model_type not in CONFIG_MAPPING:
                raise ValueError(f"{field}['hf_config']: expected a transformers config dict with a known "
                                 f"'model_type', got {type(hf_config).__name__} with model_type {model_type!r}")
        if spec.get("pooler_weights") not in (None, True, False):
            raise ValueError(f"{field}['pooler_weights']: expected True, False or None, got {spec['pooler_weights']!r}")
        if spec.get("pooling") == "pooler" and spec.get("pooler_weights") is False:
            raise ValueError(f"{field}['pooling']: 'pooler' asked, but checkpoint {_source(spec)!r} holds no trained "
                             "pooler weights (transformers would initialise them randomly); use 'mean' or 'cls'")

    @classmethod
    def complete_spec(cls, spec: Dict[str, Any], field: str) -> Dict[str, Any]:
        """``spec`` with the checkpoint's config (``hf_config``) and whether it holds trained pooler
        weights (``pooler_weights``) recorded; a spec that records them already is returned as is.

        Raises:
            FileNotFoundError: a local folder that does not exist or has no ``config.json``.
            ValueError: the checkpoint's config is no ``AutoModel`` config; ``pooling="pooler"`` for a
                checkpoint without trained pooler weights.
        """
        if "hf_config" in spec:
            return spec
        from transformers import AutoConfig

        source = _source(spec)
        if _is_local(source) and not os.path.isfile(os.path.join(os.path.expanduser(source), "config.json")):
            raise FileNotFoundError(f"{field}['encoder']: no checkpoint folder with a config.json at {source!r}")
        try:
            config = AutoConfig.from_pretrained(source)
        except OSError as err:  # offline without a cached copy, an unknown Hub id, no network
            raise FileNotFoundError(f"{field}['encoder']: cannot read the config of checkpoint {source!r} (a local "
                                    f"folder or a Hub id): {str(err).splitlines()[0]}") from None
        model_cls = _model_class(config, field)
        out = dict(spec, hf_config=config.to_dict())
        pooler = _pooler_params(model_cls, config)
        if pooler:
            keys = _checkpoint_keys(source, field) if spec.get("pretrained", True) else set()
            if keys is None:
                logger.warning("%s: checkpoint %r has no safetensors weights to read the pooler's from; pooling "
                               "from last_hidden_state", field, source)
                keys = set()
            trained = all(any(k == p or k.endswith("." + p) for k in keys) for p in pooler)
            out["pooler_weights"] = bool(trained)
        else:
            out["pooler_weights"] = None
        cls.validate_spec(out, field)
        return out

    # ---- module --------------------------------------------------------------------------------
    def __init__(self, modality: str, spec: Dict[str, Any]):
        super().__init__()
        field = f"modalities[{modality!r}]"
        self.modality = modality
        self.source = _source(spec)
        if "hf_config" not in spec:
            spec = self.complete_spec(spec, field)
        config = _config_from_dict(spec["hf_config"], field)
        model_cls = _model_class(config, field)
        self.pooling = spec.get("pooling", "auto")
        self.pooler_weights = spec.get("pooler_weights")
        kwargs = {}
        if self.pooler_weights is False or self.pooling in ("mean", "cls"):
            if "add_pooling_layer" in inspect.signature(model_cls.__init__).parameters:
                kwargs["add_pooling_layer"] = False  # no pooler left unused (and without gradient under DDP)
        if spec.get("pretrained", True) and loads_pretrained_weights():
            if _is_local(self.source) and not os.path.isdir(os.path.expanduser(self.source)):
                raise FileNotFoundError(
                    f"{field}['encoder']: checkpoint folder {self.source!r} does not exist; set "
                    f"{field}['pretrained'] = False to build the recorded architecture with random weights")
            try:
                self.model = model_cls.from_pretrained(self.source, config=config, use_safetensors=True, **kwargs)
            except OSError as err:
                raise FileNotFoundError(
                    f"{field}['encoder']: cannot load safetensors weights of checkpoint {self.source!r} (a local "
                    "folder or a Hub id; pickled .bin weights are not loaded: save the model with save_pretrained; "
                    f"{field}['pretrained'] = False builds it with random weights): {str(err).splitlines()[0]}"
                ) from None
            logger.info("%s: loaded %s weights from %s", modality, model_cls.__name__, self.source)
        else:
            self.model = model_cls(config, **kwargs)
        if getattr(config, "is_encoder_decoder", False) and callable(getattr(self.model, "get_encoder", None)):
            self.model = self.model.get_encoder()  # an encoder-decoder checkpoint (BART, T5, Whisper): its encoder
        self.main_input = str(getattr(self.model, "main_input_name", "input_ids"))
        self.model_inputs = set(inspect.signature(self.model.forward).parameters) - {"kwargs", "args"}
        self.out_dim = self._out_dim(config, field)

    @staticmethod
    def _out_dim(config, field: str) -> int:
        sizes = getattr(config, "hidden_sizes", None)
        for value in (sizes[-1] if sizes else None, getattr(config, "hidden_size", None)):
            if isinstance(value, int) and value > 0:
                return value
        raise ValueError(f"{field}['hf_config']: found neither hidden_size nor hidden_sizes to size the features")

    # ---- inputs ----------------------------------------------------------------------------------
    def _kwargs(self, x: Any) -> Dict[str, torch.Tensor]:
        if isinstance(x, Mapping):
            return dict(x)
        if self.main_input == "input_ids" and x.dim() == 3 and x.shape[1] == 2 and not x.is_floating_point():
            return {"input_ids": x[:, 0], "attention_mask": x[:, 1]}  # the tokens kind
        return {self.main_input: x}

    def check_input(self, x: Any, field: str) -> None:
        """``ValueError`` naming ``field`` for keys the model does not take, or an integer tensor
        given to a model whose main input is not ``input_ids``."""
        kwargs = self._kwargs(x)
        unknown = sorted(set(kwargs) - self.model_inputs)
        if unknown:
            raise ValueError(f"{field}[{unknown[0]!r}]: {type(self.model).__name__} takes no input {unknown[0]!r}; "
                             f"expected keys of {sorted(self.model_inputs)}")
        if self.main_input not in kwargs and "inputs_embeds" not in kwargs:
            raise ValueError(f"{field}: {type(self.model).__name__} needs {self.main_input!r}; got keys "
                             f"{sorted(kwargs)}")
        main = kwargs.get(self.main_input)
        if isinstance(main, torch.Tensor) and self.main_input != "input_ids" and not main.is_floating_point():
            raise ValueError(f"{field}: {type(self.model).__name__} takes floating-point {self.main_input!r}, got "
                             f"dtype {main.dtype}")

    # ---- forward ---------------------------------------------------------------------------------
    def forward(self, x: Any) -> torch.Tensor:
        kwargs = self._kwargs(x)
        out = self.model(**kwargs, return_dict=True)
        pooled = getattr(out, "pooler_output", None)
        if self.pooling == "pooler" or (self.pooling == "auto" and pooled is not None
                                        and self.pooler_weights is not False):
            if pooled is None:
                raise ValueError(f"modalities[{self.modality!r}]['pooling']: {type(self.model).__name__} returns no "
                                 "pooler_output; use 'mean' or 'cls'")
            return pooled.flatten(1)
        hidden = out.last_hidden_state
        if hidden.dim() == 4:  # (B, C, H, W) maps of convolutional models
            return hidden.mean(dim=(2, 3))
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = kwargs.get("attention_mask")
        if mask is not None and mask.shape[-1] != hidden.shape[1]:
            reduce = getattr(self.model, "_get_feature_vector_attention_mask", None)  # audio: samples -> frames
            mask = reduce(hidden.shape[1], mask) if reduce is not None else None
        if mask is None:
            return hidden.mean(dim=1)
        weights = mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)

    # ---- activation checkpointing -----------------------------------------------------------------
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """The model's own layer-wise activation checkpointing (non-reentrant); ``NotImplementedError``
        for a model that has none (it is then recomputed whole)."""
        if not getattr(self.model, "supports_gradient_checkpointing", False):
            raise NotImplementedError(type(self.model).__name__)
        if enable:
            self.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            self.model.activation_checkpointing_disable()


register_encoder("hf:")(HFEncoder)
