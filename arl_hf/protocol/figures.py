"""Figures of the comparison protocol, drawn so that differences of a point are visible.

* :func:`accuracy_figure` (``results.png``): every seed's fused accuracy as a dot, the mean and
  its 95 % interval, on an axis zoomed to the data; beside it each method minus concatenation,
  paired by seed, with the interval of the paired differences and the zero line.
* :func:`suppression_figure` (``suppression.png``): per modality, the in-model head and probe
  accuracy of every method (mean, std error bars) against the modality's unimodal bound (its
  std as a band), one y-axis per modality shared by every method, and the chance level.
* :func:`sweep_figure` (``avdigits_sweep.json``): each method minus concatenation with its 95 %
  interval against concatenation's suppression gap, one point per imbalance level, and the table.
* :func:`sensitivity_figure` (``arl_sensitivity.json``): heat maps of the validation and test
  accuracy over the ``T x gamma`` grid, the paper's values and the tuned point marked.

All accuracies come as fractions (as in ``results.json``) and are drawn in %.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence

from ..strategies import strategy_labels
from .stats import stat

__all__ = ["accuracy_figure", "suppression_figure", "sweep_figure", "sensitivity_figure"]

#: the paper's values (Sec. 4.1): T 4 to 8, gamma 4
PAPER_TEMPERATURES = (4.0, 8.0)
PAPER_GAMMA = 4.0


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _label(name: str) -> str:
    return strategy_labels().get(name, name)


def _ci_err(s: Mapping[str, Any], scale: float = 100.0) -> List[List[float]]:
    """Asymmetric error bar (``[[below], [above]]``) of a stat's 95 % interval (0 where undefined)."""
    lo, hi = (s.get("ci95") or [None, None])
    mean = s["mean"]
    if lo is None or hi is None:
        return [[0.0], [0.0]]
    return [[scale * (mean - lo)], [scale * (hi - mean)]]


def _chance_line(ax, chance: Optional[float], lo: float, hi: float) -> bool:
    """The chance level as a dotted line when it lies in ``[lo, hi]`` (in %); returns whether drawn."""
    if chance is None or not lo <= 100 * chance <= hi:
        return False
    ax.axhline(100 * chance, color="grey", ls=":", lw=1, label=f"chance ({100 * chance:.0f} %)")
    return True


def accuracy_figure(results: Mapping[str, Any], path: str) -> str:
    """``results.png``: fused accuracy per seed (dots), mean and 95 % CI, zoomed; and the paired
    differences to concatenation (when it was run). Returns ``path``."""
    plt = _plt()
    methods = list(results["methods"])
    chance = results.get("chance_accuracy")
    has_base = "none" in results["methods"] and len(methods) > 1
    fig, axes = plt.subplots(1, 2 if has_base else 1, figsize=(max(6.0, 0.7 * len(methods)) * (2 if has_base else 1),
                                                                 3.8), squeeze=False)
    ax = axes[0][0]
    values = []
    for i, m in enumerate(methods):
        acc = results["methods"][m]["accuracy"]
        ys = [100 * v for v in acc["values"]]
        values += ys
        offsets = [(j - (len(ys) - 1) / 2) * 0.06 for j in range(len(ys))]
        ax.scatter([i - 0.15 + o for o in offsets], ys, s=12, color="tab:blue", alpha=0.7,
                   label="seed" if i == 0 else None)
        ax.errorbar([i + 0.15], [100 * acc["mean"]], yerr=_ci_err(acc), fmt="o", color="k", capsize=3,
                    label="mean, 95 % CI" if i == 0 else None)
    lo, hi = min(values), max(values)
    pad = max(1.0, 0.15 * (hi - lo))
    ax.set_ylim(max(0.0, lo - pad), min(100.0, hi + pad))
    drawn = _chance_line(ax, chance, *ax.get_ylim())
    ax.set_xticks(range(len(methods)))
    ax.set_xticklabels([_label(m) for m in methods], rotation=30, ha="right")
    note = "" if drawn or chance is None else f" (chance {100 * chance:.0f} %, below the axis)"
    ax.set_ylabel(f"fused {results['split']} accuracy (%){note}", fontsize=8)
    ax.legend(fontsize=7)
    if has_base:
        ax = axes[0][1]
        base = results["methods"]["none"]["accuracy"]["values"]
        others = [m for m in methods if m != "none"]
        for i, m in enumerate(others):
            d = [100 * (a - b) for a, b in zip(results["methods"][m]["accuracy"]["values"], base)]
            ax.scatter([i - 0.15] * len(d), d, s=12, color="tab:blue", alpha=0.7)
            s = stat([x / 100 for x in d])
            ax.errorbar([i + 0.15], [100 * s["mean"]], yerr=_ci_err(s), fmt="o", color="k", capsize=3)
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set_xticks(range(len(others)))
        ax.set_xticklabels([_label(m) for m in others], rotation=30, ha="right")
        ax.set_ylabel("minus concatenation, same seed (points)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def suppression_figure(results: Mapping[str, Any], path: str) -> Optional[str]:
    """``suppression.png`` (None without unimodal bounds): per modality, head and probe of every
    method with std error bars against the bound (std band) and chance. Returns ``path``."""
    bounds = results.get("unimodal_bounds") or {}
    if not bounds:
        return None
    plt = _plt()
    methods = list(results["methods"])
    chance = results.get("chance_accuracy")
    fig, axes = plt.subplots(1, len(bounds), figsize=(4.4 * len(bounds), 3.9), squeeze=False)
    for ax, (mod, b) in zip(axes[0], bounds.items()):
        for key, marker, shift, label in (("accuracy_", "o", -0.12, "unimodal head"),
                                          ("probe_accuracy_", "s", 0.12, "linear probe")):
            xs, ys, es = [], [], []
            for i, m in enumerate(methods):
                s = results["methods"][m].get(key + mod)
                if s:
                    xs.append(i + shift)
                    ys.append(100 * s["mean"])
                    es.append(100 * (s["std"] or 0.0))
            ax.errorbar(xs, ys, yerr=es, fmt=marker, capsize=2, label=label)
        mean, std = 100 * b["mean"], 100 * (b["std"] or 0.0)
        ax.axhline(mean, color="k", ls="--", label=f"bound ({mean:.1f} ± {std:.1f} %)")
        ax.axhspan(mean - std, mean + std, color="k", alpha=0.08)
        ax.set_ylim(0, 100)
        _chance_line(ax, chance, 0, 100)
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels([_label(m) for m in methods], rotation=45, ha="right", fontsize=7)
        ax.set_title(f"{mod}: in-model accuracy vs its unimodal bound", fontsize=9)
        ax.set_ylabel("% (mean ± std over seeds)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _gap_of(level: Mapping[str, Any]) -> Dict[str, Any]:
    """Concatenation's largest suppression gap (by probe) of a sweep level, as a stat."""
    gaps = level["suppression_gap"]["none"]
    return max(gaps.values(), key=lambda s: s["mean"])


def sweep_table(sweep: Mapping[str, Any]) -> List[List[str]]:
    """Rows ``[level, gap, <method - none> ...]`` of the sweep (in points, mean and 95 % CI)."""
    methods = [m for m in dict.fromkeys(m for lv in sweep["levels"] for m in lv["methods"]) if m != "none"]
    rows = [["level", "concat gap (probe)"] + [f"{_label(m)} − concat" for m in methods]]
    for lv in sweep["levels"]:
        g = _gap_of(lv)
        name = f"{lv['target']}: {lv['name']}" if lv.get("target") else lv["name"]
        row = [name, f"{100 * g['mean']:.1f} ± {100 * (g['std'] or 0):.1f}"]
        for m in methods:
            d = (lv["methods"].get(m) or {}).get("diff_vs_none")
            if not d:
                row.append("–")
                continue
            lo, hi = d["ci95"]
            ci = "" if lo is None else f" [{100 * lo:+.1f}, {100 * hi:+.1f}]"
            row.append(f"{100 * d['mean']:+.1f}{ci}")
        rows.append(row)
    return rows


def sweep_figure(sweep: Mapping[str, Any], path: str) -> str:
    """Each method minus concatenation (95 % CI) against concatenation's gap, and the table."""
    plt = _plt()
    rows = sweep_table(sweep)
    fig, (ax, tab) = plt.subplots(1, 2, figsize=(12.0, 4.2), gridspec_kw={"width_ratios": [1.1, 1.0]})
    methods = [m for m in dict.fromkeys(m for lv in sweep["levels"] for m in lv["methods"]) if m != "none"]
    for k, m in enumerate(methods):
        xs, ys, err = [], [], [[], []]
        for lv in sweep["levels"]:
            d = (lv["methods"].get(m) or {}).get("diff_vs_none")
            if not d:
                continue
            xs.append(100 * _gap_of(lv)["mean"] + 0.15 * (k - (len(methods) - 1) / 2))
            ys.append(100 * d["mean"])
            e = _ci_err(d)
            err[0] += e[0]
            err[1] += e[1]
        ax.errorbar(xs, ys, yerr=err, fmt="o-", capsize=3, label=_label(m))
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xlabel("concatenation's suppression gap, by probe (points)")
    ax.set_ylabel("fused accuracy minus concatenation (points, 95 % CI)")
    ax.legend(fontsize=8)
    tab.axis("off")
    table = tab.table(cellText=rows[1:], colLabels=rows[0], loc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(7)
    table.scale(1.0, 1.4)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _position(value: float, grid: Sequence[float]) -> float:
    """Index position of ``value`` among the sorted ``grid`` values, interpolated on a log scale."""
    logs = [math.log(g) for g in grid]
    x = math.log(value)
    if x <= logs[0]:
        return 0.0 if len(logs) == 1 else (x - logs[0]) / (logs[1] - logs[0])
    for i in range(len(logs) - 1):
        if x <= logs[i + 1]:
            return i + (x - logs[i]) / (logs[i + 1] - logs[i])
    return len(logs) - 1 + (x - logs[-1]) / (logs[-1] - logs[-2]) if len(logs) > 1 else 0.0


def sensitivity_figure(sens: Mapping[str, Any], path: str) -> str:
    """Heat maps of validation and test accuracy (mean ± std) over ``T x gamma``; the paper's cells
    (T 4-8, gamma 4) outlined, the tuned point (``sens["tuned"]``, when given) starred."""
    plt = _plt()
    from matplotlib.patches import Rectangle

    temps = sorted({float(c["arl_temperature"]) for c in sens["grid"]})
    gammas = sorted({float(c["arl_gamma"]) for c in sens["grid"]})
    cell = {(float(c["arl_temperature"]), float(c["arl_gamma"])): c for c in sens["grid"]}
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 4.2))
    for ax, key, title in ((axes[0], "validation_accuracy", "validation"), (axes[1], "accuracy", "test")):
        grid = [[100 * cell[(t, g)][key]["mean"] if (t, g) in cell else float("nan") for g in gammas] for t in temps]
        im = ax.imshow(grid, origin="lower", cmap="viridis", aspect="auto")
        fig.colorbar(im, ax=ax, label=f"{title} accuracy (%)")
        for i, t in enumerate(temps):
            for j, g in enumerate(gammas):
                c = cell.get((t, g))
                if c:
                    s = c[key]
                    ax.text(j, i, f"{100 * s['mean']:.1f}\n± {100 * (s['std'] or 0):.1f}", ha="center",
                            va="center", fontsize=7, color="w")
                if PAPER_TEMPERATURES[0] <= t <= PAPER_TEMPERATURES[1] and g == PAPER_GAMMA:
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="r", lw=2,
                                           label=None if ax.patches else "paper (T 4–8, γ 4)"))
        tuned = sens.get("tuned") or {}
        if tuned.get("arl_temperature") and tuned.get("arl_gamma"):
            ax.plot([_position(float(tuned["arl_gamma"]), gammas)], [_position(float(tuned["arl_temperature"]), temps)],
                    marker="*", ms=16, color="orange", mec="k", ls="none",
                    label=f"tuned (T {float(tuned['arl_temperature']):.2g}, γ {float(tuned['arl_gamma']):.2g})")
        ax.set_xticks(range(len(gammas)))
        ax.set_xticklabels([f"{g:g}" for g in gammas])
        ax.set_yticks(range(len(temps)))
        ax.set_yticklabels([f"{t:g}" for t in temps])
        ax.set_xlabel("γ (arl_gamma)")
        ax.set_ylabel("T (arl_temperature)")
        n = len(sens.get("seeds", []))
        ax.set_title(f"ARL {title} accuracy, mean ± std over {n} seeds", fontsize=9)
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
