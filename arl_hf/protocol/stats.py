"""Statistics of the comparison table: mean ± sample std (ddof 1), a two-sided 95 % t
interval, and paired tests of a method against concatenation on the same seeds.

At n = 5 the two-sided Wilcoxon signed-rank p cannot go below 2 / 2**5 = 0.0625 (all five
differences of one sign), so it never reaches 0.05 however large the effect; the paired
t-test can.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence


def _finite(x: Optional[float]) -> Optional[float]:
    """``None`` for NaN / inf (written as JSON ``null``), else the float."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def stat(values: Sequence[float]) -> Dict[str, Any]:
    """``{"mean", "std", "ci95": [lo, hi], "values"}``: sample std (ddof 1) and the two-sided 95 %
    Student-t interval of the mean (``None`` where undefined, e.g. std and CI of one value)."""
    from scipy import stats as st

    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("values: expected at least one value")
    n = len(vals)
    mean = sum(vals) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else float("nan")
    if n > 1 and std > 0:
        lo, hi = st.t.interval(0.95, n - 1, loc=mean, scale=std / math.sqrt(n))
    elif n > 1:
        lo = hi = mean
    else:
        lo = hi = float("nan")
    return {"mean": _finite(mean), "std": _finite(std), "ci95": [_finite(lo), _finite(hi)], "values": vals}


def paired(method: Sequence[float], baseline: Sequence[float]) -> Dict[str, Optional[float]]:
    """``{"mean_diff", "p_ttest", "p_wilcoxon"}`` of ``method - baseline`` paired by seed (two-sided).
    ``None`` where a test is undefined (fewer than two pairs, or all differences zero)."""
    from scipy import stats as st

    if len(method) != len(baseline):
        raise ValueError(f"paired: expected as many values as the baseline ({len(baseline)}), got {len(method)}")
    diffs = [float(a) - float(b) for a, b in zip(method, baseline)]
    mean_diff = sum(diffs) / len(diffs) if diffs else float("nan")
    p_t = p_w = float("nan")
    if len(diffs) > 1 and any(d != 0 for d in diffs):
        p_t = float(st.ttest_rel(method, baseline).pvalue)  # NaN (-> null) when the differences are constant
        p_w = float(st.wilcoxon(diffs, alternative="two-sided").pvalue)
    return {"mean_diff": _finite(mean_diff), "p_ttest": _finite(p_t), "p_wilcoxon": _finite(p_w)}


def diffs(a: Sequence[float], b: Sequence[float]) -> List[float]:
    """Element-wise ``a - b``."""
    return [float(x) - float(y) for x, y in zip(a, b)]
