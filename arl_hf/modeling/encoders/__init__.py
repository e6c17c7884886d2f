"""Encoder families: one module per modality that maps an input to a pooled feature vector.

Families (one file each): ``"timm:<model name>"`` (:mod:`.timm`, any timm backbone, frames folded
into the batch and averaged over time as in the paper's encoders), ``"cnn"`` (:mod:`.cnn`, a small
conv stack), ``"mlp"`` (:mod:`.mlp`, Linear+ReLU, no normalisation layers), and the
feature-sequence encoders ``"transformer"`` and ``"lstm"`` (:mod:`.sequence`) for ``(B, L, D)``
inputs such as MOSI's audio/visual/text features (paper Table 2), and ``"hf:<Hub id or folder>"``
(:mod:`.hf`, any transformers ``AutoModel`` checkpoint: BERT, ViT, AST, wav2vec2...).

A family registers a name or a prefix with :func:`register_encoder`, validates its own spec,
declares the modality kinds it takes (:mod:`arl_hf.kinds`) and the spec an input of a kind needs
(:class:`EncoderFamily`); the model, the batch validator and ``arl_hf.building.modality_specs``
ask the registry, so a new family is one file.

Every built-in encoder but ``hf:`` can also run *stage by stage* (``forward_stem``,
``forward_stage(i, h)``, ``forward_pool``), which is what intermediate fusion
(:mod:`arl_hf.modeling.intermediate`, paper Table 3) needs to exchange information
between the encoders' intermediate feature maps.
"""

from .base import (
    ENCODERS,
    EncoderFamily,
    build_encoder,
    complete_encoder_spec,
    default_encoder,
    encoder_spec_for_input,
    family_of,
    input_kinds_of,
    register_encoder,
    run_stage,
    stageless_reason,
    supports_stages,
    validate_encoder_spec,
)

# The families register in import order, which is the order default_encoder() searches: keep it.
# isort: off
from .timm import TIMM_OWN_KEYS, TimmEncoder
from .mlp import MLPEncoder
from .sequence import LSTMSequenceEncoder, TransformerSequenceEncoder
from .cnn import CNNEncoder
from .hf import HFEncoder, no_pretrained_weights
# isort: on

__all__ = ["ENCODERS", "EncoderFamily", "register_encoder", "family_of", "validate_encoder_spec", "build_encoder",
           "input_kinds_of", "default_encoder", "encoder_spec_for_input", "run_stage", "supports_stages",
           "TIMM_OWN_KEYS", "TimmEncoder", "MLPEncoder", "TransformerSequenceEncoder", "LSTMSequenceEncoder",
           "CNNEncoder", "HFEncoder", "no_pretrained_weights", "complete_encoder_spec", "stageless_reason"]
