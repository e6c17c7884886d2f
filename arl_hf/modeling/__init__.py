"""The multimodal model: configuration, encoders, fusion, model."""

from . import intermediate  # noqa: F401  (registers the intermediate fusions)
from .configuration import MultimodalConfig
from .encoders import ENCODERS, EncoderFamily, build_encoder, register_encoder
from .fusion import FUSIONS, Fusion, build_fusion, register_fusion
from .model import (
    MultimodalModel,
    MultimodalOutput,
    MultimodalPreTrainedModel,
    load_backbone_weights,
    load_pretrained_backbones,
)

__all__ = [
    "MultimodalConfig",
    "MultimodalModel",
    "MultimodalOutput",
    "MultimodalPreTrainedModel",
    "load_backbone_weights",
    "load_pretrained_backbones",
    "ENCODERS",
    "EncoderFamily",
    "FUSIONS",
    "Fusion",
    "build_encoder",
    "build_fusion",
    "register_encoder",
    "register_fusion",
]
