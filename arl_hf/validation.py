"""Checks of the data contract: class indices and batches; a bad value is a ``ValueError`` naming the field.

:func:`class_indices` is the one place labels are normalised (the transform, the collator and
the metrics call it); :func:`check_inputs` is the one structural check of model inputs (the
model's ``forward`` calls it); :func:`validate_batch` checks a collated batch before a training
step (:func:`check_inputs`, then the values: finite inputs within :data:`MAX_INPUT_MAGNITUDE`,
labels in range).
"""

from __future__ import annotations

from typing import Any, Callable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from .kinds import FLOAT_KINDS, INPUT_FIELDS, KINDS, describe_kinds, dtype_class

__all__ = ["class_indices", "check_inputs", "validate_batch", "MAX_INPUT_MAGNITUDE"]


def class_indices(values: Any, field: str = "labels") -> np.ndarray:
    """``values`` (a sequence, array or tensor of class indices) as a 1-D ``int64`` array.

    Integer values are kept; floats are accepted only when whole (``2.0`` -> ``2``).

    Raises:
        ValueError: not 1-D, or values that are not whole numbers (names ``field``).
    """
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{field}: expected a 1-D array of class indices, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if arr.dtype == object:
            try:
                arr = arr.astype(np.float64)
            except (TypeError, ValueError):
                raise ValueError(f"{field}: expected integer class indices, got {values[:3]!r}...") from None
        if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number) or not np.all(np.equal(np.mod(arr, 1), 0)):
            raise ValueError(f"{field}: expected integer class indices, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def check_inputs(inputs: Mapping[str, Any], modalities: Sequence[str], labels: Any = None, *,
                 expected: Optional[str] = None, unknown: str = "ignore",
                 check_input: Optional[Callable[[str, torch.Tensor], None]] = None,
                 kinds: Optional[Mapping[str, Sequence[str]]] = None) -> int:
    """Check the structure of one batch of model inputs; returns the batch size.

    Every name of ``modalities`` must be in ``inputs`` as a tensor of a dtype its encoder takes
    (``kinds``; floating point by default) with a non-empty batch axis, or, for an encoder that takes
    the ``fields`` kind, a dict of such named tensors (each name's dtype:
    :data:`arl_hf.kinds.INPUT_FIELDS`), all with the same batch size; ``labels``, when given, a
    ``(B,)`` tensor. Reads no values (no host sync).

    Args:
        inputs: modality name -> tensor (other keys: see ``unknown``).
        modalities: the modality names expected.
        labels: the labels of the batch, or ``None`` (not checked).
        expected: what the message of a missing modality says is expected (default: the keys
            the batch has).
        unknown: ``"ignore"`` other keys of ``inputs``, or ``"raise"`` for a key that is not one
            of ``modalities``.
        check_input: called as ``check_input(name, tensor)`` on each modality tensor after the
            type checks (e.g. an encoder's shape check).
        kinds: modality -> the modality kinds (:data:`arl_hf.kinds.KINDS`) its encoder takes
            (:func:`arl_hf.kinds.accepted_kinds` of the model); a modality not in it takes the
            floating-point kinds. The dtypes of those kinds pass (token ids for ``tokens``).

    Raises:
        ValueError: naming the offending field (the modality, or ``labels``).
    """
    missing = [m for m in modalities if m not in inputs]
    if missing:
        hint = expected if expected is not None else f"the batch has keys {sorted(inputs)}"
        raise ValueError(f"{missing[0]}: missing modality input; {hint}")
    if unknown == "raise":
        extra = [k for k in inputs if k not in modalities]
        if extra:
            raise ValueError(f"{extra[0]}: not a modality of this model; expected one of {list(modalities)}")
    batch = None
    for m in modalities:
        x = inputs[m]
        if isinstance(x, Mapping):
            parts = _check_fields(m, x, (kinds or {}).get(m))
        elif not isinstance(x, torch.Tensor):
            raise ValueError(f"{m}: expected a torch.Tensor, got {type(x).__name__}")
        else:
            _check_dtype(m, x, (kinds or {}).get(m))
            parts = [(m, x)]
        if check_input is not None:
            check_input(m, x)
        for name, t in parts:
            if t.dim() == 0 or t.shape[0] == 0:
                raise ValueError(f"{name}: the batch is empty (shape {tuple(t.shape)})")
            if batch is None:
                batch = int(t.shape[0])
            elif t.shape[0] != batch:
                raise ValueError(f"{name}: batch size {t.shape[0]} differs from {modalities[0]}'s {batch}")
    if labels is not None and (not isinstance(labels, torch.Tensor) or tuple(labels.shape) != (batch,)):
        got = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"labels: expected shape ({batch},), got {got}")
    return batch


def _check_fields(name: str, x: Mapping[str, Any],
                  accepted: Optional[Sequence[str]]) -> List[Tuple[str, torch.Tensor]]:
    """The ``(field, tensor)`` pairs of a ``fields`` input (a dict of named model inputs); ``ValueError``
    when its encoder takes no such input, for an empty dict, a value that is no tensor, or a known input
    name (:data:`arl_hf.kinds.INPUT_FIELDS`) of another dtype."""
    accepted = tuple(accepted or FLOAT_KINDS)
    if "fields" not in accepted:
        raise ValueError(f"{name}: expected a torch.Tensor, got a dict of {sorted(x)}; its encoder takes "
                         f"{describe_kinds(accepted)} inputs")
    if not x:
        raise ValueError(f"{name}: expected a dict of named input tensors, got an empty dict")
    parts = []
    for key, t in x.items():
        field = f"{name}[{key!r}]"
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{field}: expected a torch.Tensor, got {type(t).__name__}")
        want, got = INPUT_FIELDS.get(str(key)), dtype_class(t)
        if (want is not None and got != want) or (want is None and got not in ("float", "int")):
            expected = {"int": "an integer", "float": "a floating-point", "bool": "a bool"}.get(want or "",
                                                                                          "a floating-point or integer")
            raise ValueError(f"{field}: expected {expected} tensor, got dtype {t.dtype}")
        parts.append((field, t))
    return parts


def _check_dtype(name: str, x: torch.Tensor, accepted: Optional[Sequence[str]]) -> None:
    """``ValueError`` unless the dtype of ``x`` is that of one of the ``accepted`` kinds (default: float)."""
    accepted = tuple(accepted or FLOAT_KINDS)
    if any(KINDS[k].dtype == dtype_class(x) for k in accepted if k in KINDS):
        return
    if any(KINDS[k].dtype == "float" for k in accepted if k in KINDS):
        raise ValueError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
    raise ValueError(
        f"{name}: expected a tensor of its encoder's kinds ({describe_kinds(accepted)}), got dtype {x.dtype}"
    )


#: the largest input magnitude :func:`validate_batch` accepts: the square of such a value (a variance,
#: a norm, a squared error) stays finite in float32 with room for sums of them (1e36 < 3.4e38)
MAX_INPUT_MAGNITUDE = 1e18


def validate_batch(batch: Mapping[str, Any], modalities: Sequence[str], num_labels: Optional[int], *,
                   pending: Optional[torch.Tensor] = None,
                   kinds: Optional[Mapping[str, Sequence[str]]] = None,
                   structure: bool = True) -> Optional[List[int]]:
    """Check modality tensors and labels of one batch.

    Raises ``ValueError`` for a missing modality, a non-tensor input or one of a dtype its
    encoder does not take (``kinds``, see :func:`check_inputs`; float by default), an
    empty batch, batch sizes that differ (:func:`check_inputs`), non-finite values, values
    beyond :data:`MAX_INPUT_MAGNITUDE` in absolute value, or labels that are not integers in
    ``[0, num_labels)``. Value checks need one host sync on an accelerator.

    Args:
        pending: an int64 tensor of values to read in the same host transfer (the trainer's
            record of non-finite steps); its host values are returned.
        kinds: modality -> the kinds its encoder takes (:func:`arl_hf.kinds.accepted_kinds`).
        structure: run :func:`check_inputs`; ``False`` where the model checks the structure of
            its inputs itself in ``forward``: then only the presence of every modality is checked
            here, the values of the real-valued tensors, and the labels; the model reports
            anything else (types, dtypes, shapes, batch sizes) before any loss is computed.

    Returns:
        ``pending``'s values as a list of ints, or ``None`` without ``pending``.
    """
    if structure:
        check_inputs(batch, modalities, kinds=kinds)
    else:
        missing = [m for m in modalities if m not in batch]
        if missing:
            raise ValueError(f"{missing[0]}: missing modality input; the batch has keys {sorted(batch)}")
    labels = batch.get("labels")
    if not isinstance(labels, torch.Tensor):
        raise ValueError(f"labels: expected a torch.Tensor of class indices, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels: expected integer class indices, got dtype {labels.dtype}")
    if labels.dim() != 1 or labels.shape[0] == 0:
        raise ValueError(f"labels: expected a non-empty (B,) tensor, got shape {tuple(labels.shape)}")
    # one fused reduction per modality (min and max: NaN propagates, inf exceeds the bound) -> one host sync
    flags = []
    for _, x in _value_tensors(batch, modalities):
        if x.numel():
            lo, hi = torch.aminmax(x)  # compared in float32: the bound is infinite in float16
            flags.append((lo.float() >= -MAX_INPUT_MAGNITUDE) & (hi.float() <= MAX_INPUT_MAGNITUDE))
    lo, hi = labels.min(), labels.max()
    ok = torch.stack([f.to(lo.device) for f in flags]).all() if flags else torch.ones_like(lo, dtype=torch.bool)
    parts = [ok.long(), lo.long(), hi.long()]
    if pending is not None:
        parts.extend(pending.to(lo.device).long().reshape(-1).unbind())
    checks = torch.stack(parts).cpu().tolist()
    if not checks[0]:
        _raise_for_values(batch, modalities)
    if checks[1] < 0 or (num_labels is not None and checks[2] >= num_labels):
        raise ValueError(
            f"labels: expected class indices in [0, {num_labels}), got values in [{checks[1]}, {checks[2]}]"
        )
    return checks[3:] if pending is not None else None


def _value_tensors(batch: Mapping[str, Any], modalities: Sequence[str]) -> List[Tuple[str, torch.Tensor]]:
    """``(field, tensor)`` of the inputs of ``batch`` whose values can be checked: real-valued tensors
    (a ``fields`` input: each of its tensors)."""
    out = []
    for m in modalities:
        x = batch.get(m)
        pairs = [(f"{m}[{k!r}]", v) for k, v in x.items()] if isinstance(x, Mapping) else [(m, x)]
        out.extend((n, t) for n, t in pairs if isinstance(t, torch.Tensor) and not t.is_complex()
                   and t.dtype != torch.bool)
    return out


def _raise_for_values(batch: Mapping[str, Any], modalities: Sequence[str]) -> None:
    """The error of the first modality with a non-finite value or one beyond the bound."""
    for m, x in _value_tensors(batch, modalities):
        if not x.numel():
            continue
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{m}: input contains NaN or infinite values")
        peak = float(x.detach().abs().max())
        if peak > MAX_INPUT_MAGNITUDE:
            raise ValueError(f"{m}: input values reach {peak:.4g} in absolute value; expected |x| <= "
                             f"{MAX_INPUT_MAGNITUDE:.0e} (their squares, in variances and norms, overflow float32)")
