"""Accuracy and macro-F1 of the fused head and of each unimodal head, in NumPy.

No scikit-learn at evaluation (a machine with only torch, transformers, timm and
accelerate evaluates), and no ``evaluate`` (its metric code is fetched from the Hub).
The values equal scikit-learn's ``accuracy_score`` and
``f1_score(average="macro", zero_division=0)``: macro-F1 averages the per-class
``2 TP / (2 TP + FP + FN)`` over the classes present in the labels *or* the predictions,
so a class absent from a split and never predicted does not count, and one predicted
but absent counts with F1 0 (tested against scikit-learn).

``ARLTrainer(compute_metrics=...)`` takes any other function of an ``EvalPrediction``: its
``predictions`` are the fused logits ``(N, C)``, and the trainer adds the per-modality metrics
(:mod:`arl_hf.predictions`).
"""

from __future__ import annotations

from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .validation import class_indices as _as_labels

__all__ = ["METRIC_NAMES", "accuracy", "macro_f1", "classification_metrics", "multimodal_metrics", "modality_metrics",
           "make_compute_metrics", "compute_classification_metrics", "metric_key", "parse_metric_key",
           "metric_modalities", "split_metrics"]

#: the metrics computed for the fused head and for each modality's head
METRIC_NAMES = ("accuracy", "macro_f1")


def metric_key(name: str, modality: Optional[str] = None) -> str:
    """The key of a metric: ``name`` for the fused head, ``<name>_<modality>`` for a modality's head.

    Raises:
        ValueError: ``name`` is not one of :data:`METRIC_NAMES`, or ``modality`` is empty.
    """
    if name not in METRIC_NAMES:
        raise ValueError(f"name: expected one of {METRIC_NAMES}, got {name!r}")
    if modality is None:
        return name
    if not modality:
        raise ValueError("modality: expected a modality name or None (the fused head), got ''")
    return f"{name}_{modality}"


def parse_metric_key(key: str, prefix: Optional[str] = None) -> Tuple[str, Optional[str]]:
    """``(name, modality or None)`` of a key written by :func:`metric_key` (after an optional
    ``<prefix>_`` such as ``eval``), e.g. ``"eval_macro_f1_audio"`` -> ``("macro_f1", "audio")``.

    Raises:
        ValueError: the key is not a metric key (or lacks the prefix).
    """
    rest = key
    if prefix:
        if not key.startswith(f"{prefix}_"):
            raise ValueError(f"key: expected a metric key starting with {prefix + '_'!r}, got {key!r}")
        rest = key[len(prefix) + 1:]
    for name in sorted(METRIC_NAMES, key=len, reverse=True):  # macro_f1 before a shorter name could match
        if rest == name:
            return name, None
        if rest.startswith(f"{name}_") and len(rest) > len(name) + 1:
            return name, rest[len(name) + 1:]
    raise ValueError(f"key: expected '<metric>' or '<metric>_<modality>' with a metric in {METRIC_NAMES}, got {key!r}")


def metric_modalities(metrics: Mapping[str, object], name: str = "accuracy") -> List[str]:
    """The modalities with a ``<name>_<modality>`` key in ``metrics``, in key order (other keys,
    such as ``probe_accuracy_<m>`` or ``loss``, are skipped)."""
    out: List[str] = []
    for key in metrics:
        try:
            metric, modality = parse_metric_key(key)
        except ValueError:
            continue
        if metric == name and modality is not None and modality not in out:
            out.append(modality)
    return out


def _check_pair(labels: np.ndarray, preds: np.ndarray) -> None:
    if labels.shape != preds.shape:
        raise ValueError(f"predictions: expected {labels.shape[0]} predictions (one per label), got {preds.shape[0]}")
    if labels.size == 0:
        raise ValueError("labels: expected at least one example, got an empty array")


def accuracy(labels, preds) -> float:
    """Share of ``preds`` equal to ``labels`` (scikit-learn's ``accuracy_score``)."""
    labels, preds = _as_labels(labels, "labels"), _as_labels(preds, "predictions")
    _check_pair(labels, preds)
    return float(np.mean(labels == preds))


def macro_f1(labels, preds) -> float:
    """Unweighted mean of the per-class F1 over the classes seen in ``labels`` or ``preds``
    (scikit-learn's ``f1_score(average="macro", zero_division=0)``)."""
    labels, preds = _as_labels(labels, "labels"), _as_labels(preds, "predictions")
    _check_pair(labels, preds)
    classes, index = np.unique(np.concatenate([labels, preds]), return_inverse=True)
    n = labels.shape[0]
    y, p = index[:n], index[n:]
    k = classes.shape[0]
    tp = np.bincount(y[y == p], minlength=k).astype(np.float64)
    support = np.bincount(y, minlength=k).astype(np.float64)      # TP + FN
    predicted = np.bincount(p, minlength=k).astype(np.float64)    # TP + FP
    denom = support + predicted                                   # 2 TP + FP + FN
    f1 = np.divide(2.0 * tp, denom, out=np.zeros(k), where=denom > 0)
    return float(f1.mean())


def classification_metrics(logits: np.ndarray, labels: np.ndarray, field: str = "logits") -> Dict[str, float]:
    """``{"accuracy", "macro_f1"}`` of argmax predictions of ``(N, C)`` logits.

    Raises:
        ValueError: logits not ``(N, C)``, or holding NaN or infinite values (the argmax of NaN
            logits is class 0: metrics of them would be meaningless); ``field`` names them.
    """
    logits = np.asarray(logits)
    if logits.ndim != 2:
        raise ValueError(f"{field}: expected shape (N, C), got {logits.shape}")
    if np.issubdtype(logits.dtype, np.floating) and not np.isfinite(logits).all():
        rows = int((~np.isfinite(logits)).any(axis=1).sum())
        raise ValueError(f"{field}: {rows} of {logits.shape[0]} examples have NaN or infinite logits; expected "
                         "finite logits (the model's weights or inputs are not finite)")
    preds = logits.argmax(-1)
    return {"accuracy": accuracy(labels, preds), "macro_f1": macro_f1(labels, preds)}


def multimodal_metrics(predictions: np.ndarray, labels: np.ndarray, modalities: Sequence[str]) -> Dict[str, float]:
    """Metrics of stacked predictions ``(N, 1 + M, C)``: fused first, then each modality.

    Keys: ``accuracy``, ``macro_f1`` (fused), ``accuracy_<m>``, ``macro_f1_<m>``.
    """
    predictions = np.asarray(predictions)
    if predictions.ndim != 3 or predictions.shape[1] != 1 + len(modalities):
        raise ValueError(
            f"predictions: expected shape (N, {1 + len(modalities)}, C) (fused + {list(modalities)}), "
            f"got {predictions.shape}"
        )
    out = classification_metrics(predictions[:, 0], labels, "predictions (fused head)")
    out.update(modality_metrics(predictions[:, 1:], labels, modalities))
    return out


def modality_metrics(modal: np.ndarray, labels: np.ndarray, modalities: Sequence[str]) -> Dict[str, float]:
    """``accuracy_<m>``, ``macro_f1_<m>`` of per-modality logits ``(N, M, C)`` (modalities in order)."""
    out: Dict[str, float] = {}
    for i, m in enumerate(modalities):
        for k, v in classification_metrics(modal[:, i], labels, f"predictions ({m!r} head)").items():
            out[metric_key(k, m)] = v
    return out


def compute_classification_metrics(eval_pred) -> Dict[str, float]:
    """``ARLTrainer``'s default ``compute_metrics``: accuracy and macro-F1 of the fused logits
    ``(N, C)`` (``eval_pred.predictions``; the trainer adds the per-modality metrics)."""
    preds = eval_pred.predictions
    if isinstance(preds, tuple):
        preds = preds[0]
    return classification_metrics(preds, eval_pred.label_ids, "predictions (fused head)")


def make_compute_metrics(modalities: Sequence[str]) -> Callable:
    """A ``compute_metrics`` of stacked predictions ``(N, 1 + M, C)`` (:func:`multimodal_metrics`),
    e.g. ``np.concatenate([fused[:, None], per_modality], 1)`` of
    ``ARLTrainer.predict(..., return_modality_logits=True)``; given fused logits ``(N, C)`` (what
    ``ARLTrainer`` hands ``compute_metrics``), the fused metrics only."""
    mods = list(modalities)

    def compute_metrics(eval_pred) -> Dict[str, float]:
        preds, labels = eval_pred.predictions, eval_pred.label_ids
        if isinstance(preds, tuple):
            preds = preds[0]
        if np.ndim(preds) == 2:
            return classification_metrics(preds, labels, "predictions (fused head)")
        return multimodal_metrics(preds, labels, mods)

    return compute_metrics


def split_metrics(metrics: Mapping[str, float], prefix: str) -> Dict[str, float]:
    """``{prefix}_accuracy...`` -> ``accuracy...``: only loss, accuracy and macro-F1 entries."""
    out = {}
    for k, v in metrics.items():
        if k.startswith(prefix + "_"):
            key = k[len(prefix) + 1:]
            if key in ("loss", "accuracy", "macro_f1") or key.startswith(("accuracy_", "macro_f1_")):
                out[key] = float(v)
    return out
