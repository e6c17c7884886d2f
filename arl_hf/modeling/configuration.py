"""`MultimodalConfig`: the modalities (in order), their encoders, the fusion and the head."""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional

from transformers import PreTrainedConfig

INIT_SCHEMES = ("timm", "authors")
#: the ``model_type`` checkpoints saved before it named the package; they still load
LEGACY_MODEL_TYPE = "arl_multimodal"


class MultimodalConfig(PreTrainedConfig):
    r"""Configuration of a :class:`~arl_hf.MultimodalModel`.

    Args:
        modalities: ordered mapping modality name -> encoder spec. The order is the
            modality order everywhere (``m_0`` is the first; see ARL's Eq. 18). Specs:
            ``{"encoder": "timm:<model name>", "in_chans": 3, ...timm kwargs}`` or
            ``{"encoder": "mlp", "input_dim": 76, "hidden_dims": [64, 64]}`` or
            ``{"encoder": "hf:<Hub id or folder>", "pooling": "auto"}`` (the checkpoint's config is
            recorded in the spec as ``hf_config`` when the config is built).
        num_labels: number of classes.
        fusion: fusion module name (``"concat"`` and the others registered in
            :mod:`arl_hf.modeling.fusion`).
        fusion_kwargs: extra keyword arguments of the fusion module.
        init: ``"timm"`` keeps each library's own initialisation; ``"authors"``
            reproduces the ARL authors' code: xavier-normal Linear (bias 0),
            kaiming-normal fan-out Conv, BatchNorm weight 1 / bias 0. Either way, the
            tensors ``from_pretrained`` finds missing from a checkpoint (or of another size,
            ``ignore_mismatched_sizes=True``) take the values of a newly built model.
        preprocessing: record of the data the model was trained on (saved in
            ``config.json``); its ``data`` entry, when present, is the dataset's
            preprocessing record (read by
            :meth:`arl_hf.data.PreprocessingRecord.of_model_config`).

    Example::

        MultimodalConfig(
            modalities={"audio": {"encoder": "timm:resnet18", "in_chans": 1},
                        "visual": {"encoder": "timm:resnet18", "in_chans": 3}},
            num_labels=6, fusion="concat")
    """

    #: names the package, so that transformers' "model type not recognized" error (loading
    #: without ``import arl_hf``) says what to install
    model_type = "arl_hf_multimodal"

    modalities: Optional[Dict[str, Dict[str, Any]]] = None
    fusion: str = "concat"
    fusion_kwargs: Optional[Dict[str, Any]] = None
    init: str = "timm"
    preprocessing: Optional[Dict[str, Any]] = None
    #: the modality order, kept as a list because ``config.json`` is written with sorted keys
    modality_order: Optional[List[str]] = None

    def __post_init__(self, **kwargs):
        from .encoders import complete_encoder_spec, stageless_reason, validate_encoder_spec
        from .fusion import FUSIONS

        if self.modalities is None:
            self.modalities = {
                "audio": {"encoder": "mlp", "input_dim": 16, "hidden_dims": [32]},
                "visual": {"encoder": "mlp", "input_dim": 16, "hidden_dims": [32]},
            }
        if not isinstance(self.modalities, dict) or len(self.modalities) == 0:
            raise ValueError(
                f"modalities: expected a non-empty dict modality -> encoder spec, got {self.modalities!r}"
            )
        self.modalities = {str(k): dict(v) for k, v in copy.deepcopy(self.modalities).items()}
        if self.modality_order is not None:
            if sorted(map(str, self.modality_order)) != sorted(self.modalities):
                raise ValueError(
                    f"modality_order: expected the modality names {list(self.modalities)} in some order, "
                    f"got {self.modality_order!r}"
                )
            self.modalities = {str(m): self.modalities[str(m)] for m in self.modality_order}
        self.modality_order = list(self.modalities)
        for name, spec in self.modalities.items():
            validate_encoder_spec(name, spec)
            self.modalities[name] = complete_encoder_spec(name, spec)
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion: unknown fusion {self.fusion!r}; expected one of {sorted(FUSIONS)}")
        for name, spec in self.modalities.items():
            reason = stageless_reason(spec) if FUSIONS[self.fusion].intermediate else None
            if reason:
                raise ValueError(
                    f"modalities[{name!r}]['encoder']: fusion {self.fusion!r} needs stage outputs: {reason}")
        if self.fusion_kwargs is None:
            self.fusion_kwargs = {}
        if self.init not in INIT_SCHEMES:
            raise ValueError(f"init: expected one of {INIT_SCHEMES}, got {self.init!r}")
        super().__post_init__(**kwargs)
        if self.num_labels is None or self.num_labels < 2:
            raise ValueError(f"num_labels: expected an integer >= 2, got {self.num_labels!r}")

    @classmethod
    def get_config_dict(cls, *args: Any, **kwargs: Any):
        """``PreTrainedConfig.get_config_dict``; a checkpoint of the legacy model type
        (:data:`LEGACY_MODEL_TYPE`) reads as this one."""
        config_dict, unused = super().get_config_dict(*args, **kwargs)
        if config_dict.get("model_type") == LEGACY_MODEL_TYPE:
            config_dict = {**config_dict, "model_type": cls.model_type}
        return config_dict, unused


class LegacyMultimodalConfig(MultimodalConfig):
    """``AutoConfig``'s entry for checkpoints saved with the legacy model type
    (:data:`LEGACY_MODEL_TYPE`): what it loads is a :class:`MultimodalConfig`, saved with the
    current model type."""

    model_type = LEGACY_MODEL_TYPE

    @classmethod
    def from_dict(cls, config_dict: Dict[str, Any], **kwargs: Any):
        """The :class:`MultimodalConfig` of a legacy ``config.json``."""
        return MultimodalConfig.from_dict({**config_dict, "model_type": MultimodalConfig.model_type}, **kwargs)
