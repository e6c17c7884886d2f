"""arl-hf: multimodal learning under modality imbalance with ARL, on the HuggingFace stack.

Public API: :class:`MultimodalConfig`, :class:`MultimodalModel` (registered with
``AutoConfig`` / ``AutoModel``), :class:`ARLConfig`, :class:`ARLTrainer` and the
strategies in :mod:`arl_hf.strategies`; the ``multimodal-classification`` pipeline
(:mod:`arl_hf.pipeline`), registered with transformers' ``pipeline()``.
"""

from transformers import AutoConfig, AutoModel

from .config import ARLConfig
from .modeling import MultimodalConfig, MultimodalModel, MultimodalOutput, load_backbone_weights
from .modeling.configuration import LegacyMultimodalConfig
from .pipeline import register_pipeline
from .strategies import arl_coefficients, arl_statistics, coefficients_from_statistics
from .trainer import ARLTrainer
from .version import __version__

AutoConfig.register(MultimodalConfig.model_type, MultimodalConfig, exist_ok=True)
AutoModel.register(MultimodalConfig, MultimodalModel, exist_ok=True)
# checkpoints saved with the legacy model type load as MultimodalConfig / MultimodalModel
AutoConfig.register(LegacyMultimodalConfig.model_type, LegacyMultimodalConfig, exist_ok=True)
register_pipeline()

__all__ = [
    "ARLConfig",
    "ARLTrainer",
    "MultimodalConfig",
    "MultimodalModel",
    "MultimodalOutput",
    "arl_coefficients",
    "arl_statistics",
    "coefficients_from_statistics",
    "load_backbone_weights",
    "__version__",
]
