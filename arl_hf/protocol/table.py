"""The comparison table: ``results.json`` (the protocol's schema), ``results.md``,
``results.csv``, ``runs.csv`` and the plots ``results.png`` (fused accuracy) and
``suppression.png`` (unimodal bound against in-model accuracy), with the protocol's warnings
(:func:`protocol_warnings`: too few seeds, an undertrained unimodal bound).

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
        entry["runs"] = [run_entry(r, split) for r in runs]
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
    out["warnings"] = protocol_warnings(out)
    return out


def _epoch(x: Any) -> Any:
    """An epoch number as an int when it is one (``13.0`` -> ``13``), else as given."""
    return int(x) if isinstance(x, float) and x.is_integer() else x


def run_entry(record: Mapping[str, Any], split: str = "test") -> Dict[str, Any]:
    """``{"seed", "best_epoch", "epochs_run", "accuracy"}`` of one run record: the epoch of the
    checkpoint selected on validation, the epochs trained (fewer than the budget after an early
    stop) and the ``split`` accuracy (a fraction)."""
    ran = record.get("epochs_run")
    if ran is None and record.get("val_curve") is not None:  # records written before epochs_run
        ran = len(record["val_curve"])
    return {"seed": int(record["seed"]), "best_epoch": _epoch(record.get("best_epoch")), "epochs_run": _epoch(ran),
            "accuracy": float(record["metrics"][split]["accuracy"])}


#: fewer seeds than this: the paired tests and 95 % intervals are flagged as meaning little
MIN_SEEDS = 5


def protocol_warnings(results: Mapping[str, Any]) -> List[str]:
    """What makes ``results`` weak evidence, one sentence each: fewer than :data:`MIN_SEEDS` seeds,
    and a unimodal bound below a method's probe of that modality by more than the bound's spread
    (std over seeds; any amount with one seed): an undertrained bound, whose negative gap is not
    suppression."""
    out: List[str] = []
    n = len(results.get("seeds", []))
    if n < MIN_SEEDS:
        out.append(f"seeds: n = {n} < {MIN_SEEDS}; the paired p-values and 95 % intervals mean little "
                   f"(a two-sided Wilcoxon p cannot go below {2 / 2 ** n:.3g}); report more seeds")
    for m, b in (results.get("unimodal_bounds") or {}).items():
        spread = b.get("std") or 0.0
        below = [(name, e[f"probe_accuracy_{m}"]["mean"]) for name, e in results["methods"].items()
                 if f"probe_accuracy_{m}" in e and e[f"probe_accuracy_{m}"]["mean"] - b["mean"] > spread]
        if below:
            name, probe = max(below, key=lambda x: x[1])
            out.append(f"unimodal bound {m}: {100 * b['mean']:.1f} % lies below the {m} probe of "
                       f"{', '.join(label_of(x) for x, _ in below)} (up to {100 * probe:.1f} %, {label_of(name)}) by "
                       f"more than its spread ({100 * spread:.1f}): the bound is undertrained and a negative gap "
                       "there is not suppression")
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
    if results.get("chance_accuracy") is not None:
        lines += ["", f"Chance level: {100 * results['chance_accuracy']:.1f} %."]
    if results.get("warnings"):
        lines += ["", "**Warnings**", ""] + [f"- {w}" for w in results["warnings"]]
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
    """``results.png`` (fused accuracy per seed, mean and 95 % CI, differences to concatenation)
    and ``suppression.png`` (:mod:`arl_hf.protocol.figures`)."""
    from .figures import accuracy_figure, suppression_figure

    paths = [accuracy_figure(results, os.path.join(compare_dir, "results.png"))]
    sup = suppression_figure(results, os.path.join(compare_dir, "suppression.png"))
    return paths + ([sup] if sup else [])


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
