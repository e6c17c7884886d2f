"""The modality kinds: the one definition of what a modality's data is, from the stored column to the
tensor an encoder takes.

A kind names the per-example layout and the dtype class of a model input (``image`` is a float
``(C, H, W)``, ``tokens`` an integer ``(2, L)``...). Datasets record the kind of each column
(:data:`STORED_KINDS`, :mod:`arl_hf.data.record`), the transforms turn a stored column into its input,
encoder families declare the kinds they take (:class:`arl_hf.modeling.encoders.EncoderFamily`), the
batch validator (:func:`arl_hf.validation.check_inputs`) lets through the dtypes those kinds have, and
:func:`arl_hf.building.modality_specs` reads the kind of each collated tensor to pick an encoder.

A leaf module: it imports nothing (not even torch), so the light data modules can use it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional, Tuple

__all__ = ["ModalityKind", "KINDS", "INPUT_FIELDS", "STORED_KINDS", "IMAGE_KINDS", "FLOAT_KINDS", "describe_kinds",
           "dtype_class", "kind_of_input", "accepted_kinds"]


@dataclasses.dataclass(frozen=True)
class ModalityKind:
    """One modality kind.

    Attributes:
        name: the kind's name (``"image"``).
        layout: the per-example layout of the model input (``"(C, H, W)"``); a batch adds ``B`` in front.
        dtype: ``"float"`` (any floating-point dtype) or ``"int"`` (any integer dtype but bool).
        stored: a dataset may record a column of this kind (``modalities[name]["kind"]``).
        inferred: the kind assumed for an input of this rank and dtype when the data records no kind.
        description: what the data is, for messages and docs.
    """

    name: str
    layout: str
    dtype: str
    stored: bool = False
    inferred: bool = False
    description: str = ""

    @property
    def dims(self) -> int:
        """Number of per-example axes (the input has one more, the batch); -1 for a dict of inputs."""
        if self.layout.startswith("{"):
            return -1
        return len([a for a in self.layout.strip("()").split(",") if a.strip()])

    def __str__(self) -> str:
        return f"{self.name} {self.layout} {self.dtype}"


def _table(*kinds: ModalityKind) -> Dict[str, ModalityKind]:
    return {k.name: k for k in kinds}


#: every modality kind, by name (stored kinds first, in the order the records have always listed them)
KINDS: Dict[str, ModalityKind] = _table(
    ModalityKind("spectrogram", "(1, F, T)", "float", stored=True,
                 description="a log-mel spectrogram, stored (F, T); the collator adds the channel axis"),
    ModalityKind("frames", "(T, C, H, W)", "float", stored=True, inferred=True,
                 description="T frames of a clip (RGB), transformed and normalised"),
    ModalityKind("flow", "(T, 2, H, W)", "float", stored=True,
                 description="T optical-flow frames (x and y planes), in [-1, 1]"),
    ModalityKind("sequence", "(L, D)", "float", stored=True, inferred=True,
                 description="a feature sequence; the transform averages it over L into a vector unless told not to"),
    ModalityKind("image", "(C, H, W)", "float", stored=True, inferred=True, description="one image"),
    ModalityKind("vector", "(D,)", "float", inferred=True, description="a feature vector"),
    ModalityKind("waveform", "(C, S)", "float", description="raw audio: C channels of S samples"),
    ModalityKind("tokens", "(2, L)", "int", inferred=True,
                 description="token ids (row 0) and their attention mask (row 1: 1 for a token, 0 for padding)"),
    ModalityKind("fields", "{name: (...)}", "mixed",
                 description="a dict of named model inputs (input_ids, attention_mask, pixel_values...), each a "
                 "(B, ...) tensor of the dtype INPUT_FIELDS gives for its name"),
)

#: the dtype class of the named inputs of a ``fields`` input (transformers' keyword inputs); a name not
#: listed takes a floating-point or an integer tensor
INPUT_FIELDS: Dict[str, str] = {
    "input_ids": "int", "attention_mask": "int", "token_type_ids": "int", "position_ids": "int",
    "pixel_mask": "int", "pixel_values": "float", "input_values": "float", "input_features": "float",
    "inputs_embeds": "float", "bool_masked_pos": "bool",
}

#: the kinds a dataset column may be recorded with (``arl_hf.data`` records and transforms)
STORED_KINDS: Tuple[str, ...] = tuple(k for k, v in KINDS.items() if v.stored)
#: the image-like kinds: what image backbones take (``--encoder`` picks their encoder)
IMAGE_KINDS: Tuple[str, ...] = ("image", "spectrogram", "frames", "flow")
#: the floating-point kinds: what an encoder that declares no kinds is taken to accept
FLOAT_KINDS: Tuple[str, ...] = tuple(k for k, v in KINDS.items() if v.dtype == "float")
#: storage kind of a modality (``arl_hf.data`` records) -> transformers' ``input_modalities`` value
KIND_TO_INPUT_MODALITY = {"spectrogram": "audio", "waveform": "audio", "audio": "audio", "frames": "video",
                          "flow": "video", "video": "video", "image": "image", "text": "text"}
#: modality name -> ``input_modalities`` value, when the data records no kind
NAME_TO_INPUT_MODALITY = {"audio": "audio", "speech": "audio", "sound": "audio", "visual": "video",
                          "video": "video", "rgb": "video", "frames": "video", "flow": "video", "image": "image",
                          "images": "image", "text": "text"}


def describe_kinds(names: Any) -> str:
    """``"image (C, H, W) float, vector (D,) float"``: the kinds named, with layout and dtype."""
    return ", ".join(str(KINDS[n]) if n in KINDS else repr(n) for n in names)


def dtype_class(x: Any) -> str:
    """``"float"`` or ``"int"`` for a tensor's dtype (bool and complex tensors: their dtype's name)."""
    if x.is_floating_point():
        return "float"
    name = str(x.dtype).replace("torch.", "")
    if x.is_complex() or name == "bool" or "int" not in name:
        return name
    return "int"


def kind_of_input(x: Any, recorded: Optional[str] = None) -> Optional[str]:
    """The kind of a collated batch tensor ``x`` (``(B, ...)``): ``recorded`` (the kind the data records)
    when its rank and dtype fit, else the inferred kind of that rank and dtype, else ``None``."""
    if isinstance(x, Mapping):
        return "fields"
    cls, dims = dtype_class(x), x.dim() - 1
    if recorded in KINDS and KINDS[recorded].dtype == cls and KINDS[recorded].dims == dims:
        return recorded
    return next((k for k, v in KINDS.items() if v.inferred and v.dtype == cls and v.dims == dims), None)


def accepted_kinds(encoders: Mapping[str, Any]) -> Dict[str, Tuple[str, ...]]:
    """Modality -> the kinds its encoder declares (``input_kinds``), :data:`FLOAT_KINDS` when it
    declares none; ``encoders`` is a model's ``encoders`` mapping (or a model that has one)."""
    encoders = getattr(encoders, "encoders", encoders)
    return {m: tuple(getattr(enc, "input_kinds", None) or FLOAT_KINDS) for m, enc in encoders.items()}
