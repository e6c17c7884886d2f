"""Accuracy and macro-F1 of the fused head and of each unimodal head (scikit-learn).

``evaluate``'s metrics are fetched from the Hub and fail offline; these are the same
scikit-learn computations, imported lazily so the core runs without scikit-learn.
"""

from __future__ import annotations

from typing import Callable, Dict, Sequence

import numpy as np


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> Dict[str, float]:
    """``{"accuracy", "macro_f1"}`` of argmax predictions of ``(N, C)`` logits."""
    from sklearn.metrics import accuracy_score, f1_score

    preds = np.asarray(logits).argmax(-1)
    labels = np.asarray(labels)
    return {
        "accuracy": float(accuracy_score(labels, preds)),
        "macro_f1": float(f1_score(labels, preds, average="macro", zero_division=0)),
    }


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
    out = classification_metrics(predictions[:, 0], labels)
    for i, m in enumerate(modalities):
        for k, v in classification_metrics(predictions[:, i + 1], labels).items():
            out[f"{k}_{m}"] = v
    return out


def make_compute_metrics(modalities: Sequence[str]) -> Callable:
    """A ``compute_metrics`` for ``Trainer`` reading ARLTrainer's stacked predictions."""
    mods = list(modalities)

    def compute_metrics(eval_pred) -> Dict[str, float]:
        preds, labels = eval_pred.predictions, eval_pred.label_ids
        if isinstance(preds, tuple):
            preds = preds[0]
        return multimodal_metrics(preds, labels, mods)

    return compute_metrics
