"""Modality suppression: how far a jointly trained encoder falls short of its unimodal bound.

The paper's premise (Sec. 1) is that joint training leaves a modality's encoder short of
what it learns alone. Two in-model measures are compared with the *unimodal bound* (the
test accuracy of that modality's encoder trained alone with the same recipe):

* a **linear probe**: logistic regression fitted on the frozen encoder's features of the
  training split, scored on the evaluation split (:func:`probe_accuracy`);
* the model's **unimodal head**: the fusion head with the other modalities' features zeroed
  (``eval_accuracy_<m>``, what ARL's regulariser sees).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Sequence, Tuple

import numpy as np
import torch


@torch.no_grad()
def encoder_features(model: Any, dataset: Any, collator: Callable, modalities: Sequence[str],
                     batch_size: int = 256) -> Tuple[Dict[str, np.ndarray], np.ndarray]:
    """``({m: (N, D_m) features}, (N,) labels)`` of ``model.encoders[m]`` over ``dataset`` (eval mode)."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    feats: Dict[str, list] = {m: [] for m in modalities}
    labels = []
    try:
        for start in range(0, len(dataset), batch_size):
            batch = collator(_rows(dataset, start, min(start + batch_size, len(dataset))))
            for m in modalities:
                if m not in batch:
                    raise ValueError(f"modalities: {m!r} is not in the collated batch (keys {sorted(batch)})")
                x = batch[m]  # a tensor, or a dict of named input tensors (hf: encoders)
                x = {k: v.to(device) for k, v in x.items()} if isinstance(x, Mapping) else x.to(device)
                feats[m].append(model.encoders[m](x).float().cpu().numpy())
            labels.append(batch["labels"].cpu().numpy())
    finally:
        model.train(was)
    return {m: np.concatenate(v) for m, v in feats.items()}, np.concatenate(labels)


def _rows(dataset: Any, start: int, stop: int) -> list:
    """Examples ``start:stop`` as a list of dicts: one sliced read of a ``datasets.Dataset`` (a per-row
    read costs ~10 ms of Arrow decoding per example), row by row for anything else."""
    if hasattr(dataset, "column_names") and hasattr(dataset, "_data"):
        cols = dataset[start:stop]
        keys = list(cols)
        return [dict(zip(keys, values)) for values in zip(*(cols[k] for k in keys))]
    return [dataset[i] for i in range(start, stop)]


def probe_accuracy(train_x: np.ndarray, train_y: np.ndarray, eval_x: np.ndarray, eval_y: np.ndarray,
                   seed: int = 0, max_iter: int = 2000) -> float:
    """Accuracy on ``eval`` of a logistic-regression probe fitted on standardised ``train`` features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(train_x) != len(train_y) or len(eval_x) != len(eval_y):
        raise ValueError(f"probe_accuracy: features and labels differ in length ({len(train_x)} vs {len(train_y)}, "
                         f"{len(eval_x)} vs {len(eval_y)})")
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, random_state=seed))
    clf.fit(train_x, train_y)
    return float(np.mean(clf.predict(eval_x) == eval_y))


def deterministic(dataset: Any) -> Any:
    """``dataset`` with its training-time augmentation switched off (a split formatted with an
    arl_hf :class:`~arl_hf.data.MultimodalTransform` with ``train=True``), else ``dataset`` itself:
    probes are fitted on the features of the unaugmented training examples."""
    fmt = getattr(dataset, "format", None) or {}
    transform = (fmt.get("format_kwargs") or {}).get("transform")
    if not getattr(transform, "train", False) or not hasattr(dataset, "with_format"):
        return dataset
    import copy

    frozen = copy.copy(transform)
    frozen.train = False
    return dataset.with_format(fmt["type"], columns=fmt.get("columns"), output_all_columns=fmt.get(
        "output_all_columns", False), transform=frozen)


def probe_accuracies(model: Any, train_dataset: Any, eval_datasets: Dict[str, Any], collator: Callable,
                     modalities: Sequence[str], seed: int = 0) -> Dict[str, Dict[str, float]]:
    """``{split: {m: probe accuracy}}`` of every modality's frozen encoder, fitted once on
    ``train_dataset`` and scored on each of ``eval_datasets`` (see :func:`probe_accuracy`)."""
    tr, ytr = encoder_features(model, deterministic(train_dataset), collator, modalities)
    out = {}
    for split, ds in eval_datasets.items():
        ev, yev = encoder_features(model, ds, collator, modalities)
        out[split] = {m: probe_accuracy(tr[m], ytr, ev[m], yev, seed=seed) for m in modalities}
    return out
