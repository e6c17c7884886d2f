"""`MultimodalModel`: one encoder per modality, a fusion head, fused and unimodal logits.

The model contract every strategy relies on (and that a user's own model may follow
instead of this class): an ``encoders`` :class:`~torch.nn.ModuleDict` keyed by modality
in order; ``forward(**{modality: tensor}, labels=None, return_unimodal_logits=False)``
returning ``logits``, ``features`` and, on request, ``unimodal_logits`` (the shared
fusion path with every other modality's representation zeroed, Sec. 3.2).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from ..kinds import KIND_TO_INPUT_MODALITY, NAME_TO_INPUT_MODALITY, accepted_kinds
from ..log import get_logger
from ..validation import check_inputs
from .configuration import MultimodalConfig
from .encoders import build_encoder, no_pretrained_weights
from .fusion import build_fusion
from .state import state_from_spec

logger = get_logger(__name__)


def input_modalities(config: MultimodalConfig) -> List[str]:
    """transformers' ``input_modalities`` (``text``, ``image``, ``video``, ``audio``, ``time``) of a config,
    in modality order without repeats: from each modality's recorded storage kind
    (``config.preprocessing``), else from its name; ``time`` (feature series) otherwise."""
    record = (getattr(config, "preprocessing", None) or {}).get("data") or {}
    kinds = record.get("modalities") if isinstance(record, Mapping) else None
    out: List[str] = []
    for m in config.modalities:
        kind = (kinds or {}).get(m, {}).get("kind") if isinstance((kinds or {}).get(m), Mapping) else None
        value = KIND_TO_INPUT_MODALITY.get(str(kind)) or NAME_TO_INPUT_MODALITY.get(m.lower(), "time")
        if value not in out:
            out.append(value)
    return out

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
    # the first modality (set per model in __init__): the batch key transformers reads as the
    # main input (batch size, input counts), as `pixel_values` / `input_values` elsewhere
    main_input_name = "audio"
    input_modalities = ["audio", "video"]
    # forward takes **inputs (one keyword per modality) but never num_items_in_batch:
    # tell Trainer so that it divides the loss by the accumulation steps itself.
    accepts_loss_kwargs = False
    # device_map="auto" keeps each modality encoder whole on one device (the fusion reads all
    # of them); the model adds the class of any other registered encoder it holds
    _no_split_modules = ["TimmEncoder", "CNNEncoder", "MLPEncoder", "TransformerSequenceEncoder",
                         "LSTMSequenceEncoder"]
    supports_gradient_checkpointing = True
    #: ``forward`` checks the structure of its inputs (:func:`arl_hf.validation.check_inputs`), so the
    #: trainer's batch check reads only their values
    checks_inputs = True

    def _set_gradient_checkpointing(self, enable: bool = True, gradient_checkpointing_func: Callable = checkpoint,
                                    every_n_layers: int = 1) -> None:
        """Activation checkpointing of the encoders (``activation_checkpointing_enable()``, its
        alias ``gradient_checkpointing_enable()``, ``--activation_checkpointing`` /
        ``--gradient_checkpointing``).

        timm backbones and hf encoders checkpoint their own layers (``set_grad_checkpointing``); the other
        encoders are recomputed whole in backward, and with intermediate fusion every stage
        is. Gradients are unchanged (tested). BatchNorm layers run forward twice, so their
        running statistics take two momentum updates per step (as with any recomputation).
        """
        encoders = getattr(self, "encoders", None)
        if not isinstance(encoders, nn.ModuleDict):
            raise ValueError(f"{type(self).__name__} has no `encoders` ModuleDict to checkpoint")
        if enable and getattr(gradient_checkpointing_func, "keywords", {}).get("use_reentrant"):
            raise ValueError(
                "activation_checkpointing_kwargs['use_reentrant']: expected False (or unset); the reentrant "
                "variant runs the checkpointed forward without autograd, which drops the gradient modulation "
                "of ARL and the other strategies")
        if enable and every_n_layers != 1:
            logger.warning("activation checkpointing: every_n_layers=%s is not supported here; every encoder "
                           "is checkpointed", every_n_layers)
        for enc in encoders.values():
            enc.gradient_checkpointing = bool(enable)
            enc._gradient_checkpointing_func = gradient_checkpointing_func
            own = getattr(enc, "set_grad_checkpointing", None) or getattr(
                getattr(enc, "backbone", None), "set_grad_checkpointing", None)
            enc._checkpoints_itself = False
            if own is not None:
                try:
                    own(enable=bool(enable))
                    enc._checkpoints_itself = bool(enable)
                except (NotImplementedError, AssertionError, TypeError):
                    enc._checkpoints_itself = False

    #: True while :meth:`init_weights` initialises a newly built model (``post_init``)
    _building = False

    def init_weights(self) -> None:
        """Initialise a newly built model (``post_init`` calls it): under ``init="timm"`` every
        module keeps its library's own initialisation, ``init="authors"`` applies the authors'
        scheme. A model that ``from_pretrained`` loads does not come here; the tensors its
        checkpoint leaves missing or mismatched are filled by :meth:`initialize_weights`."""
        self._building = True
        try:
            super().init_weights()
        finally:
            self._building = False

    def initialize_weights(self) -> None:
        """Initialise every tensor not marked as loaded (transformers' ``_is_hf_initialized``).

        After ``from_pretrained``, those are the tensors missing from the checkpoint or of
        another size (``ignore_mismatched_sizes=True``): each takes the value it has in a newly
        built model of the same config (drawn from the current torch RNG, so the same seed
        gives the same weights), whatever ``init`` says and whatever the module. Loaded
        tensors are left as they are.
        """
        self._fill_source = None
        try:
            super().initialize_weights()
        finally:
            self._fill_source = None

    def _init_weights(self, module: nn.Module) -> None:
        """A newly built model: keep each library's own init (``init="timm"``) or apply the
        authors' scheme. Otherwise (loading): fill the module's tensors that were not loaded
        from a newly built twin of the model (:meth:`initialize_weights`)."""
        if self._building:
            self._init_new_weights(module)
        else:
            self._fill_unloaded(module)

    def _init_new_weights(self, module: nn.Module) -> None:
        """``PreTrainedModel``'s default would re-draw every Conv/Linear from N(0, 0.02),
        wiping timm's initialisation; this touches nothing unless ``init="authors"``."""
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

    def _fill_unloaded(self, module: nn.Module) -> None:
        """Copy into ``module``'s own parameters and buffers that carry no ``_is_hf_initialized``
        mark the values of the same tensors in a newly built model (built once per
        :meth:`initialize_weights`, on the CPU, only when something is to be filled)."""
        own = list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False))
        pending = [(n, t) for n, t in own if t is not None and not getattr(t, "_is_hf_initialized", False)]
        if not pending:
            return
        source = getattr(self, "_fill_source", None)
        if source is None:
            with torch.device("cpu"), no_pretrained_weights():
                twin = type(self)(copy.deepcopy(self.config))
            names = {id(m): n for n, m in self.named_modules(remove_duplicate=False)}
            source = self._fill_source = (twin, names)
        twin, names = source
        path = names.get(id(module))
        twin_module = twin.get_submodule(path) if path is not None else None
        with torch.no_grad():
            for name, tensor in pending:
                field = f"{path}.{name}" if path else name
                ref = None if twin_module is None else (twin_module._parameters.get(name)
                                                         if name in twin_module._parameters
                                                         else twin_module._buffers.get(name))
                if ref is None or tuple(ref.shape) != tuple(tensor.shape):
                    raise ValueError(
                        f"{field}: not loaded and a newly built {type(self).__name__} of this config has no tensor "
                        f"of shape {tuple(tensor.shape)} there to initialise it from "
                        f"(found {None if ref is None else tuple(ref.shape)})")
                tensor.copy_(ref.detach().to(device=tensor.device, dtype=tensor.dtype))
                tensor._is_hf_initialized = True
                logger.info("%s: not in the checkpoint, initialised as in a newly built model", field)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """``PreTrainedModel.save_pretrained``; the processors recorded in ``config.preprocessing`` (those
        of ``hf:`` encoders) are written first into ``<save_directory>/processors/<modality>/``
        (:func:`arl_hf.processor_store.save_processors`), so that the folder alone rebuilds them."""
        if kwargs.get("is_main_process", True):
            from ..processor_store import save_processors

            save_processors(self, str(save_directory))
        return super().save_pretrained(save_directory, *args, **kwargs)


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
        if getattr(config, "strategy_state", None):
            # the slot holding the training strategy's heads and state, saved with the weights
            self.strategy_state = state_from_spec(config.strategy_state)
        self.main_input_name = next(iter(self.encoders))
        self.input_modalities = input_modalities(config)
        encoder_classes = {type(e).__name__ for e in self.encoders.values()}
        self._no_split_modules = sorted(set(self._no_split_modules) | encoder_classes)
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
        """The batch size of ``inputs`` after :func:`arl_hf.validation.check_inputs` (each
        encoder's own shape check and the dtypes of the kinds it takes included)."""
        return check_inputs(inputs, list(self.encoders), labels,
                            expected=f"the model expects keyword arguments {self.modalities}", unknown="raise",
                            check_input=lambda m, x: self.encoders[m].check_input(x, m),
                            kinds=accepted_kinds(self.encoders))

    def _encode(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """``encoders[modality](x)``, recomputed in backward under activation checkpointing
        (timm backbones checkpoint their own stages instead)."""
        enc = self.encoders[modality]
        if (getattr(enc, "gradient_checkpointing", False) and not getattr(enc, "_checkpoints_itself", False)
                and self.training and torch.is_grad_enabled()):
            return enc._gradient_checkpointing_func(enc.__call__, x)
        return enc(x)

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
            features = {m: self._encode(m, inputs[m]) for m in self.encoders}
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

    from .pretrained import load_timm_weights

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
