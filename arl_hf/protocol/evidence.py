"""The evidence files beyond the table: the imbalance sweep and ARL's sensitivity grid, their
schema checks, and the grid's runs.

* ``avdigits_sweep.json`` (:func:`sweep_results`)::

    {"levels": [{"name", "knobs": {...}, "seeds": [...],
                 "suppression_gap": {"none": {"<modality>": stat}},
                 "methods": {"<strategy>": {"accuracy": stat, "paired_vs_none": {...},
                                            "diff_vs_none": stat}}}]}

* ``arl_sensitivity.json`` (:func:`sensitivity_results`)::

    {"seeds": [...], "learning_rate", "tuned": {"arl_temperature", "arl_gamma"},
     "grid": [{"arl_temperature", "arl_gamma", "validation_accuracy": stat, "accuracy": stat}]}

Every ``stat`` is ``{"mean", "std", "ci95": [lo, hi], "values"}`` (:func:`arl_hf.protocol.stats.stat`),
accuracies and gaps as fractions, as in ``results.json``. :func:`check_results`,
:func:`check_sweep` and :func:`check_sensitivity` raise ``ValueError`` naming the first field
that breaks the schema.
"""

from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..safety import atomic_write_json
from .stats import diffs, stat

STAT_KEYS = ("mean", "std", "ci95", "values")
RUN_KEYS = ("seed", "best_epoch", "epochs_run", "accuracy")


# ---- schema checks -----------------------------------------------------------------------------
def _need(ok: bool, where: str, expected: str, found: Any) -> None:
    if not ok:
        raise ValueError(f"{where}: expected {expected}, got {found!r}"[:400])


def check_stat(s: Any, where: str, low: float = 0.0, high: float = 1.0, n: Optional[int] = None) -> None:
    """``s`` is a stat whose values lie in ``[low, high]`` (fractions by default), ``n`` of them when given,
    and whose mean is theirs."""
    _need(isinstance(s, Mapping) and set(STAT_KEYS) <= set(s), where, f"a stat with keys {list(STAT_KEYS)}", s)
    vals = s["values"]
    _need(isinstance(vals, list) and len(vals) > 0 and all(isinstance(v, (int, float)) and math.isfinite(v)
                                                            for v in vals), f"{where}.values", "finite numbers", vals)
    _need(all(low <= v <= high for v in vals), f"{where}.values", f"values in [{low}, {high}] (fractions)", vals)
    _need(n is None or len(vals) == n, f"{where}.values", f"{n} values (one per seed)", len(vals))
    _need(isinstance(s["mean"], (int, float)) and abs(s["mean"] - sum(vals) / len(vals)) < 1e-9, f"{where}.mean",
          "the mean of its values", s["mean"])
    _need(isinstance(s["ci95"], list) and len(s["ci95"]) == 2, f"{where}.ci95", "[lo, hi]", s["ci95"])


def check_results(results: Mapping[str, Any]) -> None:
    """A table's ``results.json``: the recipe (``lr_decay_epochs``, ``early_stopping``) and, per
    method, its accuracy stat and one ``runs`` entry per seed, in seed order, agreeing with it."""
    for key in ("seeds", "methods", "lr_decay_epochs", "early_stopping", "warnings"):
        _need(key in results, key, "a top-level field of results.json", sorted(results))
    seeds = results["seeds"]
    _need(isinstance(results["lr_decay_epochs"], list), "lr_decay_epochs", "a list of epochs",
          results["lr_decay_epochs"])
    es = results["early_stopping"]
    _need(es is None or (isinstance(es, Mapping) and set(es) == {"patience", "after_epoch"}), "early_stopping",
          "null or {patience, after_epoch}", es)
    for name, e in results["methods"].items():
        check_stat(e.get("accuracy"), f"methods.{name}.accuracy", n=len(seeds))
        runs = e.get("runs")
        _need(isinstance(runs, list) and len(runs) == len(seeds), f"methods.{name}.runs", f"{len(seeds)} runs", runs)
        for i, (r, seed) in enumerate(zip(runs, seeds)):
            _need(isinstance(r, Mapping) and set(r) == set(RUN_KEYS), f"methods.{name}.runs[{i}]",
                  f"keys {list(RUN_KEYS)}", r)
            _need(r["seed"] == seed, f"methods.{name}.runs[{i}].seed", f"seed {seed} (seed order)", r["seed"])
            _need(r["accuracy"] == e["accuracy"]["values"][i], f"methods.{name}.runs[{i}].accuracy",
                  "the accuracy stat's value for that seed", r["accuracy"])
            if es and r["epochs_run"] is not None:
                _need(r["epochs_run"] >= es["after_epoch"] + es["patience"] or r["epochs_run"] >=
                      results.get("num_train_epochs", math.inf), f"methods.{name}.runs[{i}].epochs_run",
                      "no stop before after_epoch + patience", r["epochs_run"])


def check_sweep(sweep: Mapping[str, Any]) -> None:
    """``avdigits_sweep.json`` (module docstring)."""
    levels = sweep.get("levels") if isinstance(sweep, Mapping) else None
    _need(isinstance(levels, list) and levels, "levels", "a non-empty list", levels)
    for i, lv in enumerate(levels):
        w = f"levels[{i}]"
        _need(isinstance(lv, Mapping) and {"name", "knobs", "suppression_gap", "methods"} <= set(lv), w,
              "keys name, knobs, suppression_gap, methods", lv)
        _need(isinstance(lv["knobs"], Mapping), f"{w}.knobs", "an object", lv["knobs"])
        gaps = lv["suppression_gap"].get("none") if isinstance(lv["suppression_gap"], Mapping) else None
        _need(isinstance(gaps, Mapping) and gaps, f"{w}.suppression_gap.none", "{modality: stat}", gaps)
        for m, s in gaps.items():
            check_stat(s, f"{w}.suppression_gap.none.{m}", -1.0, 1.0)
        _need("none" in lv["methods"], f"{w}.methods", "concatenation ('none') among the methods", list(lv["methods"]))
        n = len(lv["methods"]["none"]["accuracy"]["values"])
        for name, e in lv["methods"].items():
            check_stat(e.get("accuracy"), f"{w}.methods.{name}.accuracy", n=n)
            if name != "none":
                pv = e.get("paired_vs_none")
                _need(isinstance(pv, Mapping) and {"mean_diff", "p_ttest", "p_wilcoxon"} <= set(pv),
                      f"{w}.methods.{name}.paired_vs_none", "{mean_diff, p_ttest, p_wilcoxon}", pv)
                check_stat(e.get("diff_vs_none"), f"{w}.methods.{name}.diff_vs_none", -1.0, 1.0, n=n)


def check_sensitivity(sens: Mapping[str, Any]) -> None:
    """``arl_sensitivity.json`` (module docstring)."""
    _need(isinstance(sens, Mapping) and isinstance(sens.get("seeds"), list) and sens["seeds"], "seeds",
          "a non-empty list", sens.get("seeds") if isinstance(sens, Mapping) else sens)
    grid = sens.get("grid")
    _need(isinstance(grid, list) and grid, "grid", "a non-empty list", grid)
    n = len(sens["seeds"])
    for i, c in enumerate(grid):
        for key in ("arl_temperature", "arl_gamma"):
            _need(isinstance(c.get(key), (int, float)) and c[key] > 0, f"grid[{i}].{key}", "a number > 0", c.get(key))
        for key in ("validation_accuracy", "accuracy"):
            check_stat(c.get(key), f"grid[{i}].{key}", n=n)


# ---- writers -----------------------------------------------------------------------------------
def level_entry(name: str, knobs: Mapping[str, Any], results: Mapping[str, Any],
                methods: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """One sweep level from its table (``results.json`` with ``none`` and the unimodal bounds):
    concatenation's suppression gaps and, per method, its accuracy, the paired tests and the
    per-seed differences to concatenation as a stat."""
    table = results["methods"]
    if "none" not in table or "none" not in results.get("suppression_gap", {}):
        raise ValueError(f"level {name!r}: expected concatenation ('none') with unimodal bounds in its results")
    chosen = [m for m in (methods or list(table)) if m in table]
    base = table["none"]["accuracy"]["values"]
    out: Dict[str, Any] = {"name": name, "knobs": dict(knobs), "seeds": list(results["seeds"]),
                           "suppression_gap": {"none": results["suppression_gap"]["none"]},
                           "suppression_gap_head": {"none": results.get("suppression_gap_head", {}).get("none")},
                           "methods": {}}
    for m in chosen:
        e = table[m]
        entry: Dict[str, Any] = {"accuracy": e["accuracy"], "hyperparameters": e.get("hyperparameters")}
        if m != "none":
            entry["paired_vs_none"] = e["paired_vs_none"]
            entry["diff_vs_none"] = stat(diffs(e["accuracy"]["values"], base))
        out["methods"][m] = entry
    return out


def sweep_results(levels: Sequence[Mapping[str, Any]], **meta: Any) -> Dict[str, Any]:
    """``avdigits_sweep.json`` from :func:`level_entry` outputs, sorted by concatenation's gap."""
    def gap(lv: Mapping[str, Any]) -> float:
        return max(s["mean"] for s in lv["suppression_gap"]["none"].values())

    out = {**meta, "levels": sorted((dict(lv) for lv in levels), key=gap)}
    check_sweep(out)
    return out


def sensitivity_results(seeds: Sequence[int], cells: Sequence[Tuple[float, float, Sequence[Mapping[str, Any]]]],
                        learning_rate: Optional[float] = None, tuned: Optional[Mapping[str, Any]] = None,
                        **meta: Any) -> Dict[str, Any]:
    """``arl_sensitivity.json`` from ``(T, gamma, records)`` per grid cell (one run record per seed)."""
    grid = []
    for t, g, records in cells:
        by_seed = {int(r["seed"]): r for r in records}
        missing = [s for s in seeds if int(s) not in by_seed]
        if missing:
            raise ValueError(f"grid cell T={t}, gamma={g}: no run for seed(s) {missing}")
        runs = [by_seed[int(s)] for s in seeds]
        grid.append({"arl_temperature": float(t), "arl_gamma": float(g),
                     "validation_accuracy": stat([r["metrics"]["validation"]["accuracy"] for r in runs]),
                     "accuracy": stat([r["metrics"]["test"]["accuracy"] for r in runs])})
    out = {**meta, "seeds": [int(s) for s in seeds], "learning_rate": learning_rate,
           "tuned": dict(tuned) if tuned else None, "grid": grid}
    check_sensitivity(out)
    return out


def write_checked(path: str, obj: Mapping[str, Any], check) -> str:
    """``check(obj)`` then write it atomically as JSON (no NaN); returns ``path``."""
    check(obj)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_json(path, obj, allow_nan=False)
    return path


# ---- the grid's runs ---------------------------------------------------------------------------
def grid_dir_name(temperature: float, gamma: float) -> str:
    """``T4-g4`` for ``T = 4, gamma = 4`` (``T1.5-g0.5`` for fractions)."""
    return f"T{temperature:g}-g{gamma:g}"


def run_grid(rest: Sequence[str], temperatures: Sequence[float], gammas: Sequence[float], seeds: Sequence[int],
             grid_dir: str, learning_rate: Optional[float], workers: int = 1, data_seed: int = 0,
             smoke: bool = False) -> List[Tuple[float, float, List[Dict[str, Any]]]]:
    """ARL over ``temperatures x gammas x seeds`` with the run options ``rest`` at ``learning_rate``
    (the tuned one); each cell's runs in ``grid_dir/T<t>-g<g>/arl-seed<s>``, read back when a
    record of the same configuration is there. Returns ``[(T, gamma, records)]``."""
    from argparse import Namespace

    from ..safety import confine
    from .compare import _Pool, _run_job, apply_budget
    from .runs import RunSpec

    own = Namespace(smoke=smoke, seeds=list(seeds), tune_trials=0)
    rest = apply_budget(own, rest)
    jobs, keys = [], []
    for t in temperatures:
        for g in gammas:
            over = {"arl_temperature": float(t), "arl_gamma": float(g)}
            if learning_rate is not None:
                over = {"learning_rate": float(learning_rate), **over}
            cell = confine(os.path.join(grid_dir, grid_dir_name(t, g)), grid_dir, "grid folder")
            for s in seeds:
                spec = RunSpec("arl", int(s), over)
                jobs.append((list(rest), spec, confine(os.path.join(cell, spec.name), cell, "run folder"), False))
                keys.append((float(t), float(g)))
    os.makedirs(grid_dir, exist_ok=True)
    pool = _Pool(workers, list(rest), data_seed, truncate=smoke)
    try:
        records = pool.map(_run_job, jobs)
    finally:
        pool.close()
    out: Dict[Tuple[float, float], List[Dict[str, Any]]] = {}
    for key, rec in zip(keys, records):
        out.setdefault(key, []).append(rec)
    return [(t, g, recs) for (t, g), recs in out.items()]
