"""Evaluation of a trained run: the metrics of its splits, and their plain-text table.

:func:`evaluate_splits` measures the validation and test splits with a trainer's current
model (the checkpoint selected on validation, after training); :func:`format_results` prints
them. (``arl-hf evaluate``, a saved checkpoint on one split, is :mod:`arl_hf.scripts.evaluate`.)
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

from transformers import Trainer

from .metrics import metric_modalities, split_metrics

__all__ = ["evaluate_splits", "format_results"]


def evaluate_splits(trainer: Trainer, dataset: Mapping[str, Any],
                    splits: Sequence[str] = ("validation", "test")) -> Dict[str, Dict[str, float]]:
    """``{split: metrics}`` of the trainer's current model on each of ``splits`` the dataset has
    (``metric_key_prefix`` = the split name; see :func:`split_metrics`)."""
    metrics: Dict[str, Dict[str, float]] = {}
    for split in splits:
        if split in dataset:
            raw = trainer.evaluate(eval_dataset=dataset[split], metric_key_prefix=split)
            metrics[split] = split_metrics(raw, split)
    return metrics


def format_results(metrics: Mapping[str, Mapping[str, float]], modalities: Optional[Sequence[str]] = None) -> str:
    """A plain-text table: one row per split, fused and per-modality accuracy / macro-F1 (%)."""
    rows = []
    for split, m in metrics.items():
        mods = list(modalities) if modalities else sorted(metric_modalities(m))
        heads = [("fused", "")] + [(x, f"_{x}") for x in mods]
        cells = []
        for head, suffix in heads:
            acc, f1 = m.get(f"accuracy{suffix}"), m.get(f"macro_f1{suffix}")
            if acc is None:
                continue
            cells.append(f"{head}: acc {100 * acc:6.2f}  F1 {100 * (f1 or 0):6.2f}")
        rows.append(f"[{split} split] " + " | ".join(cells))
    return "\n".join(rows)
