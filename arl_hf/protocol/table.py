"""The comparison table: ``results.json`` (the protocol's schema), ``results.md``,
``results.csv``, ``runs.csv`` and the plots ``results.png`` (fused accuracy) and
``suppression.png`` (unimodal bound against in-model accuracy).

Accuracies are fractions in [0, 1], as the Trainer logs them; every ``stat`` is
``{"mean", "std", "ci95": [lo, hi], "values": [...]}`` over the seeds, in seed order.
"""

from __future__ import annotations

import csv
import io
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

from ..metrics import metric_modalities
from ..safety import atomic_write_json, atomic_write_text
from ..strategies import strategy_labels
from .stats import diffs, paired, stat

BASELINE = "none"


def label_of(name: str) -> str:
    """The table label of method ``name``: its strategy's registered label, else ``name`` itself."""
    return strategy_labels().get(name, name)


def modalities_of(record: Mapping[str, Any], split: str) -> List[str]:
    """Modalities of a run, from its ``accuracy_<m>`` keys (in the order logged)."""
    return metric_modalities(record["metrics"][split])


def _by_seed(records: Sequence[Mapping[str, Any]], seeds: Sequence[int]) -> List[Mapping[str, Any]]:
    found = {int(r["seed"]): r for r in records}
    missing = [s for s in seeds if s not in found]
    if missing:
        raise ValueError(f"records: {records[0]['method'] if records else '?'} has no run for seed(s) {missing}")
    return [found[int(s)] for s in seeds]


def build_results(records: Sequence[Mapping[str, Any]], seeds: Sequence[int], split: str = "test",
                  hyperparameters: Optional[Mapping[str, Any]] = None,
                  meta: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """``results.json`` from the run records (methods and ``bound:<m>`` runs) over ``seeds``."""
    hyperparameters = hyperparameters or {}
    methods = [m for m in dict.fromkeys(r["method"] for r in records) if not m.startswith("bound:")]
    bounds_by_mod = {r["method"][len("bound:"):] for r in records if r["method"].startswith("bound:")}
    out: Dict[str, Any] = {**dict(meta or {}), "split": split, "seeds": [int(s) for s in seeds], "methods": {},
                           "unimodal_bounds": {}, "suppression_gap": {}, "suppression_gap_head": {}}
    bound_values: Dict[str, List[float]] = {}
    for m in sorted(bounds_by_mod):
        runs = _by_seed([r for r in records if r["method"] == f"bound:{m}"], seeds)
        bound_values[m] = [r["metrics"][split]["accuracy"] for r in runs]
        out["unimodal_bounds"][m] = stat(bound_values[m])
    baseline = None
    if BASELINE in methods:
        baseline = [r["metrics"][split]["accuracy"] for r in _by_seed(
            [r for r in records if r["method"] == BASELINE], seeds)]
    for method in methods:
        runs = _by_seed([r for r in records if r["method"] == method], seeds)
        mods = modalities_of(runs[0], split)
        entry: Dict[str, Any] = {"accuracy": stat([r["metrics"][split]["accuracy"] for r in runs])}
        if "macro_f1" in runs[0]["metrics"][split]:
            entry["macro_f1"] = stat([r["metrics"][split]["macro_f1"] for r in runs])
        for m in mods:
            entry[f"accuracy_{m}"] = stat([r["metrics"][split][f"accuracy_{m}"] for r in runs])
            if all(split in r.get("probe", {}) for r in runs):
                entry[f"probe_accuracy_{m}"] = stat([r["probe"][split][m] for r in runs])
        if baseline is not None and method != BASELINE:
            entry["paired_vs_none"] = paired(entry["accuracy"]["values"], baseline)
        hp = hyperparameters.get(method)
        entry["hyperparameters"] = dict(hp) if hp else None
        entry["wall_time_s"] = stat([r["wall_time_s"] for r in runs])
        out["methods"][method] = entry
        gaps, gaps_head = {}, {}
        for m in mods:
            if m not in bound_values:
                continue
            gaps_head[m] = stat(diffs(bound_values[m], entry[f"accuracy_{m}"]["values"]))
            if f"probe_accuracy_{m}" in entry:
                gaps[m] = stat(diffs(bound_values[m], entry[f"probe_accuracy_{m}"]["values"]))
        if gaps:
            out["suppression_gap"][method] = gaps
        if gaps_head:
            out["suppression_gap_head"][method] = gaps_head
    if bound_values:
        out["unimodal_bounds_hyperparameters"] = {m: hyperparameters.get(f"bound:{m}") for m in bound_values}
    return out


def _pct(s: Optional[Mapping[str, Any]]) -> str:
    if not s or s.get("mean") is None:
        return "–"
    std = s.get("std")
    return f"{100 * s['mean']:.1f} ± {100 * std:.1f}" if std is not None else f"{100 * s['mean']:.1f}"


def _p(x: Optional[float]) -> str:
    return "–" if x is None else f"{x:.3f}"


def _hp(h: Optional[Mapping[str, Any]]) -> str:
    if h and h.get("fixed"):  # fixed: not tuned, its multipliers and concatenation's learning rate
        return ", ".join(f"{k}={v}" if isinstance(v, list) else f"{k}={v:.3g}" for k, v in h["fixed"].items())
    if not h or not h.get("best"):
        return "–"
    return ", ".join(f"{k}={v:.3g}" for k, v in h["best"].items())


def to_markdown(results: Mapping[str, Any]) -> str:
    """The table of ``results`` (in %), one row per method plus the unimodal bounds."""
    methods = results["methods"]
    first = next(iter(methods.values()))
    mods = metric_modalities(first)
    n = len(results["seeds"])
    heads = (["Method", "Fused"] + [f"{m} head" for m in mods] + [f"{m} probe" for m in mods]
             + [f"gap {m} (probe)" for m in mods] + [f"gap {m} (head)" for m in mods]
             + ["Δ vs concat", "p (t)", "p (Wilcoxon)", "tuned", "wall s"])
    lines = [f"{results['split'].capitalize()} split, checkpoint selected on validation; mean ± std over {n} "
             f"seeds ({', '.join(map(str, results['seeds']))}), in %. gap = unimodal bound − in-model accuracy.",
             "", "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for name, e in methods.items():
        gp = results["suppression_gap"].get(name, {})
        gh = results["suppression_gap_head"].get(name, {})
        pv = e.get("paired_vs_none") or {}
        diff = pv.get("mean_diff")
        cells = ([label_of(name), _pct(e["accuracy"])] + [_pct(e.get(f"accuracy_{m}")) for m in mods]
                 + [_pct(e.get(f"probe_accuracy_{m}")) for m in mods] + [_pct(gp.get(m)) for m in mods]
                 + [_pct(gh.get(m)) for m in mods]
                 + ["–" if diff is None else f"{100 * diff:+.1f}", _p(pv.get("p_ttest")), _p(pv.get("p_wilcoxon")),
                    _hp(e.get("hyperparameters")), f"{e['wall_time_s']['mean']:.0f}"])
        lines.append("| " + " | ".join(cells) + " |")
    if results["unimodal_bounds"]:
        hps = results.get("unimodal_bounds_hyperparameters", {})
        lines += ["", "| Unimodal bound | test accuracy | tuned |", "|---|---|---|"]
        lines += [f"| {m} alone | {_pct(s)} | {_hp(hps.get(m))} |" for m, s in results["unimodal_bounds"].items()]
    return "\n".join(lines) + "\n"


def flat_rows(results: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """``results.csv``: one row per method, ``<metric>_mean`` / ``_std`` columns."""
    rows = []
    for name, e in results["methods"].items():
        row: Dict[str, Any] = {"strategy": name, "seeds": len(results["seeds"])}
        for k, v in e.items():
            if isinstance(v, dict) and "mean" in v:
                row[f"{k}_mean"], row[f"{k}_std"] = v["mean"], v["std"]
        for key in ("suppression_gap", "suppression_gap_head"):
            for m, v in results[key].get(name, {}).items():
                row[f"{key}_{m}_mean"], row[f"{key}_{m}_std"] = v["mean"], v["std"]
        pv = e.get("paired_vs_none") or {}
        row.update({f"paired_{k}": v for k, v in pv.items()})
        rows.append(row)
    return rows


def write_csv(path: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """``rows`` as CSV (columns in order of first appearance), written atomically."""
    fields = list(dict.fromkeys(k for r in rows for k in r))
    buffer = io.StringIO(newline="")
    w = csv.DictWriter(buffer, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def run_rows(records: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """``runs.csv``: every run, its metrics per split and its probes."""
    out = []
    for r in records:
        row: Dict[str, Any] = {"method": r["method"], "seed": r["seed"], "wall_time_s": r["wall_time_s"],
                               "best_epoch": r.get("best_epoch")}
        for split, metrics in r["metrics"].items():
            row.update({f"{split}_{k}": v for k, v in metrics.items()})
        for split, probes in (r.get("probe") or {}).items():
            row.update({f"{split}_probe_{m}": v for m, v in probes.items()})
        out.append(row)
    return out


def plots(results: Mapping[str, Any], compare_dir: str) -> List[str]:
    """``results.png`` (fused accuracy, std error bars) and ``suppression.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(results["methods"])
    names = [label_of(m) for m in methods]
    paths = []
    fig, ax = plt.subplots(figsize=(max(6.0, 0.8 * len(methods)), 3.6))
    acc = [results["methods"][m]["accuracy"] for m in methods]
    ax.bar(range(len(methods)), [100 * a["mean"] for a in acc], yerr=[100 * (a["std"] or 0) for a in acc], capsize=3)
    ax.set_xticks(range(len(methods)))
    ax.set_xticklabels(names, rotation=30, ha="right")
    ax.set_ylabel(f"fused {results['split']} accuracy (%)")
    fig.tight_layout()
    paths.append(os.path.join(compare_dir, "results.png"))
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    bounds = results["unimodal_bounds"]
    if bounds:
        fig, axes = plt.subplots(1, len(bounds), figsize=(4.2 * len(bounds), 3.8), squeeze=False)
        for ax, (m, b) in zip(axes[0], bounds.items()):
            for key, marker, label in (("accuracy_", "o", "unimodal head"), ("probe_accuracy_", "s", "linear probe")):
                ys = [100 * results["methods"][x][key + m]["mean"] if key + m in results["methods"][x] else None
                      for x in methods]
                xs = [i for i, y in enumerate(ys) if y is not None]
                ax.scatter(xs, [ys[i] for i in xs], marker=marker, label=label)
            ax.axhline(100 * b["mean"], color="k", ls="--", label=f"bound ({100 * b['mean']:.1f} %)")
            ax.set_xticks(range(len(methods)))
            ax.set_xticklabels(names, rotation=45, ha="right", fontsize=7)
            ax.set_title(f"{m}: in-model accuracy vs its unimodal bound", fontsize=9)
            ax.set_ylabel("%")
            ax.legend(fontsize=7)
        fig.tight_layout()
        paths.append(os.path.join(compare_dir, "suppression.png"))
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths


def write_outputs(records: Sequence[Mapping[str, Any]], results: Mapping[str, Any], compare_dir: str,
                  make_plots: bool = True) -> Dict[str, str]:
    """Write every output file (each atomically: a reader never sees a torn one); returns
    ``{name: path}``."""
    os.makedirs(compare_dir, exist_ok=True)
    paths = {n: os.path.join(compare_dir, n) for n in ("results.json", "results.md", "results.csv", "runs.csv")}
    atomic_write_json(paths["results.json"], results, allow_nan=False)
    atomic_write_text(paths["results.md"], to_markdown(results))
    write_csv(paths["results.csv"], flat_rows(results))
    write_csv(paths["runs.csv"], run_rows(records))
    if make_plots:
        for p in plots(results, compare_dir):
            paths[os.path.basename(p)] = p
    return paths
