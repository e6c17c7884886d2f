"""Seeded split helpers: hold a validation (or test) part out of a list of examples.

Every builder takes its validation split out of *train* with one of these (never out of
test), and records the seed and fraction in the dataset info. Stratified by label, or
group-disjoint (CREMA-D actors, UCF-101 groups) so that no identity leaks across splits.
"""

from __future__ import annotations

from typing import Hashable, List, Sequence, Tuple

import numpy as np

__all__ = ["stratified_holdout", "group_holdout"]


def _check_fraction(fraction: float, field: str = "validation_fraction") -> None:
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"{field}: expected a fraction in (0, 1), got {fraction!r}")


def stratified_holdout(labels: Sequence[int], fraction: float, seed: int,
                       field: str = "validation_fraction") -> Tuple[List[int], List[int]]:
    """Indices ``(keep, held_out)`` with ``fraction`` of the items held out, stratified by label.

    Uses scikit-learn's ``train_test_split(stratify=labels, random_state=seed)``; classes
    with a single example cannot be stratified, so then the split falls back to a plain
    seeded shuffle. Both index lists are sorted.
    """
    _check_fraction(fraction, field)
    n = len(labels)
    if n < 2:
        raise ValueError(f"{field}: need at least 2 examples to hold some out, got {n}")
    from sklearn.model_selection import train_test_split

    idx = np.arange(n)
    counts = np.bincount(np.asarray(labels, dtype=np.int64)) if n else np.zeros(0)
    n_out = max(1, int(round(fraction * n)))
    stratify = labels if counts[counts > 0].min() >= 2 and n_out >= int((counts > 0).sum()) else None
    keep, out = train_test_split(idx, test_size=n_out, random_state=seed, stratify=stratify)
    return sorted(int(i) for i in keep), sorted(int(i) for i in out)


def group_holdout(groups: Sequence[Hashable], fraction: float, seed: int,
                  field: str = "validation_fraction") -> Tuple[List[int], List[int]]:
    """Indices ``(keep, held_out)`` where whole groups (actors, recording groups) are held out.

    A seeded permutation of the distinct groups (sorted first, so the result does not
    depend on input order) is taken until at least ``fraction`` of the groups is held out.
    """
    _check_fraction(fraction, field)
    distinct = sorted(set(groups), key=lambda g: (str(type(g)), g))
    if len(distinct) < 2:
        raise ValueError(f"{field}: need at least 2 distinct groups to hold one out, got {len(distinct)}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(distinct))
    n_out = min(len(distinct) - 1, max(1, int(round(fraction * len(distinct)))))
    held = {distinct[i] for i in order[:n_out]}
    keep = [i for i, g in enumerate(groups) if g not in held]
    out = [i for i, g in enumerate(groups) if g in held]
    return keep, out
