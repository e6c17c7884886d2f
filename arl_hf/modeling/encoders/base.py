"""The encoder-family registry: how a family registers, validates its spec, declares its inputs and
says which spec a collated input of a given kind needs.

A family is registered under a name (``"mlp"``) or a prefix (``"timm:"``: every ``"timm:<model name>"``
belongs to it) with :func:`register_encoder`. The registered object is a builder
``builder(modality, spec) -> nn.Module`` (normally the module class itself); whatever it declares of
:class:`EncoderFamily` is used, the rest defaults to :class:`EncoderFamily`'s.
"""

from __future__ import annotations

from typing import Any, ClassVar, Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from ...kinds import FLOAT_KINDS, IMAGE_KINDS, KINDS, describe_kinds
from ...registry import Registry

__all__ = ["ENCODERS", "EncoderFamily", "register_encoder", "family_of", "validate_encoder_spec", "build_encoder",
           "input_kinds_of", "default_encoder", "encoder_spec_for_input", "encoders_for_kind", "run_stage",
           "supports_stages", "positive_int", "no_unknown_keys"]

#: encoder family name (a prefix family: its prefix without the colon) -> builder ``builder(modality, spec)``
ENCODERS: Registry = Registry("encoder")


class EncoderFamily:
    """What an encoder family declares (class attributes and class methods of the registered class;
    a builder that lacks one gets the default here).

    The module a family builds exposes ``out_dim`` (int) and ``check_input(x, field)`` raising
    ``ValueError`` for a malformed input. To take part in intermediate fusion it also exposes the
    stage protocol: ``num_stages``, ``stage_dims`` (channels after each stage), ``channel_axis``
    (1 for ``(B, C, ...)`` maps, -1 for channels-last tensors), ``forward_stem(x)``,
    ``forward_stage(i, h)`` and ``forward_pool(h)``, such that
    ``forward(x) == forward_pool(stage_{S-1}(...stage_0(forward_stem(x))))``.
    """

    #: the modality kinds (:data:`arl_hf.kinds.KINDS`) the family takes; their dtypes pass the batch validator
    input_kinds: ClassVar[Tuple[str, ...]] = FLOAT_KINDS
    #: the kinds this family encodes when nothing else names an encoder (the first registered family wins)
    default_for: ClassVar[Tuple[str, ...]] = ()
    #: the encoder name used as that default (a prefix family names one model: ``"timm:resnet18"``)
    default_encoder: ClassVar[Optional[str]] = None
    #: the spec keys the family takes besides ``"encoder"`` (``None``: not checked here)
    OPTIONS: ClassVar[Optional[Tuple[str, ...]]] = None

    @classmethod
    def validate_spec(cls, spec: Dict[str, Any], field: str) -> None:
        """Raise ``ValueError`` naming ``field[key]`` (``field`` is ``modalities['<modality>']``), the
        option and what was expected, when ``spec`` cannot build this family's encoder."""
        if cls.OPTIONS is not None:
            no_unknown_keys(spec, cls.OPTIONS, field)

    @classmethod
    def spec_for_input(cls, encoder: str, kind: str, shape: Tuple[int, ...], args: Any) -> Dict[str, Any]:
        """The spec keys (besides ``"encoder"``) for inputs of ``kind`` whose per-example ``shape`` is
        given; ``args`` holds the run's model options (:class:`~arl_hf.arguments.ModelArguments`).
        Default: ``in_chans`` (dim -3) for image-like kinds, else ``input_dim`` (the last dim)."""
        if kind in IMAGE_KINDS:
            return {"in_chans": int(shape[-3])}
        return {"input_dim": int(shape[-1])}


def _is_prefix(key: str, obj: Any) -> bool:
    return getattr(obj, "encoder_prefix", None) == f"{key}:"


def _declared(obj: Any, name: str) -> Any:
    return getattr(obj, name, getattr(EncoderFamily, name))


def register_encoder(name: str):
    """Decorator registering an encoder family under ``name`` (``"mine"``) or a prefix (``"mine:"``:
    the family of every ``"mine:<anything>"`` encoder name). See :class:`EncoderFamily` for what the
    registered builder or class may declare."""
    if not isinstance(name, str) or not name.rstrip(":") or ":" in name.rstrip(":") or name.endswith("::"):
        raise ValueError(f"name: expected an encoder name ('mine') or prefix ('mine:'), got {name!r}")
    key = name.rstrip(":")

    def deco(obj):
        for attr in ("input_kinds", "default_for"):
            bad = [k for k in (_declared(obj, attr) or ()) if k not in KINDS]
            if bad:
                raise ValueError(f"encoder family {name!r}: {attr} has unknown kind {bad[0]!r}; expected kinds of "
                                 f"{list(KINDS)}")
        if name.endswith(":"):
            obj.encoder_prefix = name
        ENCODERS[key] = obj
        return obj

    return deco


def _choices() -> str:
    prefixes = [f"'{k}:<model name>'" for k, v in ENCODERS.items() if _is_prefix(k, v)]
    names = sorted(k for k, v in ENCODERS.items() if not _is_prefix(k, v))
    return " or ".join(prefixes + [f"one of {names}"])


def family_of(encoder: Any, field: str) -> Tuple[str, Any]:
    """``(family name, builder)`` of an encoder name; ``ValueError`` naming ``field`` when no registered
    family has that name or prefix."""
    if isinstance(encoder, str):
        head, colon, rest = encoder.partition(":")
        obj = ENCODERS.get(head)
        if obj is not None and (_is_prefix(head, obj) == bool(colon)) and (rest or not colon):
            return head, obj
    raise ValueError(f"{field}: unknown encoder {encoder!r}; expected {_choices()}")


def validate_encoder_spec(modality: str, spec: Dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the field when ``spec`` cannot build an encoder (the family's own
    checks: :meth:`EncoderFamily.validate_spec`)."""
    field = f"modalities[{modality!r}]"
    if not isinstance(spec, dict) or "encoder" not in spec:
        raise ValueError(f"{field}: expected a dict with an 'encoder' key, got {spec!r}")
    _, family = family_of(spec["encoder"], f"{field}['encoder']")
    validate = getattr(family, "validate_spec", None)
    if validate is not None:
        validate(spec, field)


def build_encoder(modality: str, spec: Dict[str, Any]) -> nn.Module:
    """Build the encoder of ``modality`` from its spec (see :class:`MultimodalConfig`)."""
    validate_encoder_spec(modality, spec)
    return family_of(spec["encoder"], "encoder")[1](modality, spec)


def input_kinds_of(encoder: str, field: str = "encoder") -> Tuple[str, ...]:
    """The modality kinds the family of ``encoder`` takes."""
    return tuple(_declared(family_of(encoder, field)[1], "input_kinds"))


def default_encoder(kind: str) -> Optional[str]:
    """The encoder for inputs of ``kind`` when nothing names one: that of the first registered family
    whose ``default_for`` has the kind (``None`` when none has)."""
    for key, obj in ENCODERS.items():
        if kind in (_declared(obj, "default_for") or ()):
            name = _declared(obj, "default_encoder") or key
            if family_of(name, f"{key}.default_encoder")[1] is obj:
                return name
    return None


def encoder_spec_for_input(modality: str, encoder: str, kind: str, shape: Sequence[int], args: Any) -> Dict[str, Any]:
    """The spec of ``encoder`` for ``modality``'s inputs of ``kind`` (per-example ``shape``).

    Raises:
        ValueError: the encoder is unknown, or its family does not take ``kind`` (names the modality,
            the encoder, the kinds it takes and the input it got).
    """
    try:
        _, family = family_of(encoder, f"modalities[{modality!r}]['encoder']")
    except ValueError as err:
        raise ValueError(f"{err}; {_choose(modality, kind)}") from None
    accepted = tuple(_declared(family, "input_kinds"))
    shown = f"(B, {', '.join(map(str, shape))})"
    if kind not in accepted:
        raise ValueError(
            f"{modality}: encoder {encoder!r} takes {describe_kinds(accepted)} inputs; the batch holds "
            f"{describe_kinds([kind])} inputs of shape {shown}; {_choose(modality, kind)}")
    if kind in KINDS and len(shape) != KINDS[kind].dims:
        raise ValueError(f"{modality}: {kind} inputs are {KINDS[kind].layout} per example, got shape {shown}; "
                         f"{_choose(modality, kind)}")
    make = getattr(family, "spec_for_input", None) or EncoderFamily.spec_for_input
    spec = {"encoder": encoder, **make(encoder, kind, tuple(int(d) for d in shape), args)}
    try:  # the family's own checks, before any module is built
        validate_encoder_spec(modality, spec)
    except ValueError as err:
        raise ValueError(f"{err}; {_choose(modality, kind)}") from None
    return spec


def encoders_for_kind(kind: str) -> Tuple[str, ...]:
    """The encoder names whose family takes ``kind`` (a prefix family as ``'timm:<model name>'``)."""
    out = []
    for key, obj in ENCODERS.items():
        if kind in tuple(_declared(obj, "input_kinds") or ()):
            out.append(f"{key}:<model name>" if _is_prefix(key, obj) else key)
    return tuple(out)


def _choose(modality: str, kind: str) -> str:
    names = encoders_for_kind(kind)
    return (f"choose an encoder for {kind} inputs with --modality_encoders {modality}=<encoder>"
            + (f" (one of {', '.join(names)})" if names else ""))


# ---------------------------------------------------------------------------------- spec checks
def positive_int(spec: Dict[str, Any], key: str, field: str, required: bool = False) -> None:
    """``ValueError`` naming ``field[key]`` unless ``spec[key]`` is a positive int (when present or required)."""
    if key not in spec and not required:
        return
    value = spec.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{field}[{key!r}]: expected a positive int, got {value!r}")


def no_unknown_keys(spec: Dict[str, Any], allowed: Sequence[str], field: str) -> None:
    """``ValueError`` naming the first key of ``spec`` that is neither ``"encoder"`` nor in ``allowed``."""
    unknown = sorted(set(spec) - set(allowed) - {"encoder"})
    if unknown:
        raise ValueError(f"{field}[{unknown[0]!r}]: unknown option for encoder {spec['encoder']!r}; "
                         f"expected {sorted(allowed)}")


# ---------------------------------------------------------------------------------- stages
def run_stage(encoder: nn.Module, index: int, h: torch.Tensor) -> torch.Tensor:
    """``encoder.forward_stage(index, h)``, recomputed in backward when activation
    checkpointing is on (``MultimodalModel.activation_checkpointing_enable()``)."""
    func = getattr(encoder, "_gradient_checkpointing_func", None)
    if func is not None and getattr(encoder, "gradient_checkpointing", False) and encoder.training \
            and torch.is_grad_enabled():
        return func(encoder.forward_stage, index, h)
    return encoder.forward_stage(index, h)


def supports_stages(encoder: nn.Module) -> Optional[str]:
    """``None`` when ``encoder`` can run stage by stage, else the reason it cannot (an encoder may
    say why itself with a ``stage_error`` attribute)."""
    if getattr(encoder, "stage_error", None) is not None:
        return encoder.stage_error
    needed = ("num_stages", "stage_dims", "channel_axis", "forward_stem", "forward_stage", "forward_pool")
    missing = [n for n in needed if not hasattr(encoder, n)]
    if missing:
        return f"{type(encoder).__name__} lacks the stage protocol ({', '.join(missing)})"
    return None

