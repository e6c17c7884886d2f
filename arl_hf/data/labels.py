"""Labels and splits of a plain ``DatasetDict``: the label column moved to ``labels`` as class ids
(:func:`normalise_labels`) and a validation split held out of train (:func:`hold_out_validation`,
``--validation_split_percentage``). Nothing is written to disk."""

from __future__ import annotations

from typing import Any, List, Optional, Sequence

import numpy as np

from ..log import get_logger
from .features import label_column_of, label_record

logger = get_logger(__name__)

__all__ = ["LABEL_SOURCE", "VALIDATION_SPLIT_SEED", "normalise_labels", "hold_out_validation"]

#: attribute of a DatasetDict whose labels :func:`normalise_labels` moved or mapped: where they came from
LABEL_SOURCE = "arl_hf_label_source"
#: the seed of the validation part held out of train (:func:`hold_out_validation`)
VALIDATION_SPLIT_SEED = 0


def normalise_labels(ds: Any, label_column: Optional[str] = None, class_names: Optional[Sequence[str]] = None) -> Any:
    """``ds`` (a ``DatasetDict``) with its labels in a ``labels`` column of class ids: the label column
    (``label_column``, else ``labels``, else ``label``) renamed; string labels mapped to ids in sorted
    order (a ``ClassLabel`` of those names, the same for every split). Nothing is written to disk.

    ``class_names``: the classes of a trained model (``id2label`` in order). String labels and a
    ``ClassLabel``'s names are then mapped to the model's ids by name, whatever their order or
    subset in this dataset (evaluating a model on another dataset of the same classes).

    Raises:
        ValueError: no label column, labels that are no class ids (names the column and the flag),
            or a class name the model does not know.
    """
    import datasets

    first = ds["train"] if "train" in ds else next(iter(ds.values()))
    column = label_column_of(first.features, label_column)
    info = label_record(ds, column)
    if class_names is not None and info["type"] in ("string", "ClassLabel") \
            and list(info["names"]) != list(class_names):
        return _by_model_names(ds, column, info, list(class_names))
    if column == "labels" and info["type"] != "string":
        return ds
    out = datasets.DatasetDict()
    for split, part in ds.items():
        if column not in part.column_names:
            raise ValueError(f"dataset[{split!r}]: no label column {column!r} (columns: {part.column_names})")
        if column != "labels" and "labels" in part.column_names:
            part = part.remove_columns("labels")
        if info["type"] == "string":
            feature = datasets.ClassLabel(names=info["names"])
            ids = [feature.str2int(str(v)) for v in part.with_format(None)[column]]
            part = part.remove_columns(column).add_column("labels", ids, feature=feature)
        else:
            part = part.rename_column(column, "labels")
        out[split] = part
    setattr(out, LABEL_SOURCE, {"column": column, "type": info["type"]})
    if column != "labels":
        logger.info("labels: column %r used as the labels", column)
    return out


def _by_model_names(ds: Any, column: str, info: Any, names: List[str]) -> Any:
    """``ds`` with ``labels`` the model's class ids of each example's class name (see :func:`normalise_labels`)."""
    import datasets

    unknown = sorted(set(info["names"]) - set(names))
    if unknown:
        raise ValueError(f"{column}: class names {unknown} are not classes of the model (its id2label: {names}); "
                         "expected a dataset of the model's classes")
    to_model = {n: names.index(n) for n in info["names"]}
    feature = datasets.ClassLabel(names=names)
    out = datasets.DatasetDict()
    for split, part in ds.items():
        if column not in part.column_names:
            raise ValueError(f"dataset[{split!r}]: no label column {column!r} (columns: {part.column_names})")
        values = part.with_format(None)[column]
        if info["type"] == "ClassLabel":
            values = [info["names"][int(v)] for v in values]
        ids = [to_model[str(v)] for v in values]
        part = part.remove_columns([c for c in (column, "labels") if c in part.column_names])
        out[split] = part.add_column("labels", ids, feature=feature)
    setattr(out, LABEL_SOURCE, {"column": column, "type": info["type"]})
    logger.info("labels: column %r mapped to the model's classes by name", column)
    return out


def hold_out_validation(ds: Any, percentage: Optional[int], seed: int = VALIDATION_SPLIT_SEED) -> Any:
    """``ds`` with a ``validation`` split of ``percentage`` percent of ``train`` (a seeded permutation,
    stratified by label for a ``ClassLabel``: each class held out in proportion), when it has none
    and ``percentage`` is given (``--validation_split_percentage``, the transformers example
    scripts' convention). Nothing is written to disk.

    Raises:
        ValueError: ``percentage`` outside 1..99, no ``train`` split, or too few examples.
    """
    import datasets

    if percentage is None:
        return ds
    if isinstance(percentage, bool) or not isinstance(percentage, int) or not 0 < percentage < 100:
        raise ValueError(f"validation_split_percentage: expected a whole percentage in 1..99, got {percentage!r}")
    if "validation" in ds:
        logger.info("validation_split_percentage: the dataset has a validation split; nothing held out")
        return ds
    if "train" not in ds:
        raise ValueError(f"validation_split_percentage: the dataset has no 'train' split to hold out from "
                         f"(splits: {sorted(ds)})")
    train = ds["train"]
    if len(train) < 2:
        raise ValueError(f"validation_split_percentage: 'train' has {len(train)} example(s); need at least 2")
    size = max(1, int(round(len(train) * percentage / 100)))
    order = np.random.default_rng(seed).permutation(len(train))
    if type(train.features.get("labels")).__name__ == "ClassLabel":  # stratified: classes interleaved in proportion
        labels = np.asarray(train.with_format(None)["labels"])[order]
        key = np.empty(len(order))
        for c in np.unique(labels):
            at = np.flatnonzero(labels == c)
            key[at] = (np.arange(len(at)) + 0.5) / len(at)
        order = order[np.argsort(key, kind="stable")]
    held, kept = np.sort(order[:size]), np.sort(order[size:])
    parts = {"train": train.select(kept), "test": train.select(held)}
    out = datasets.DatasetDict({**{k: v for k, v in ds.items() if k != "train"}, "train": parts["train"],
                                "validation": parts["test"]})
    if hasattr(ds, LABEL_SOURCE):
        setattr(out, LABEL_SOURCE, getattr(ds, LABEL_SOURCE))
    logger.info("validation: %d%% of train held out (seed %d): %d train, %d validation examples", percentage, seed,
                len(out["train"]), len(out["validation"]))
    return out
