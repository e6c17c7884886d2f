#!/usr/bin/env python
"""Compare training strategies on one dataset with identical settings: a Table-1-style result.

    python examples/compare.py                                     # AV-Digits, every strategy, seeds 0 1 2
    python examples/compare.py --strategies none arl ogm_ge --seeds 0 1 --num_train_epochs 20
    python examples/compare.py --compare_dir outputs/compare-cremad --preset cremad --data_dir /data/CREMA-D

Every option of ``examples/run_arl.py`` (presets, config files, model, optimiser, ...) is
accepted and applies to every run; only ``--strategy``, ``--seed`` and ``--output_dir`` are set
per run. What it does, top to bottom:

  1. loads the dataset once (``arl_hf.runner.load_data``; the split does not depend on the
     run's seed), so every strategy and seed sees the same train / validation / test data;
  2. for each strategy x seed: ``arl_hf.runner.train_and_evaluate`` — trains, keeps the
     checkpoint that is best on the **validation** split, evaluates the **test** split once
     with it (runs go to ``<compare_dir>/<strategy>-seed<k>``);
  3. writes ``<compare_dir>/results.md`` (mean ± std over seeds of test accuracy and
     macro-F1, fused and per modality, plus wall time), ``results.csv`` (the same numbers),
     ``runs.csv`` (every run: validation and test metrics, wall time) and ``results.png``
     (bar plot with std error bars).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from typing import Dict, List, Mapping, Optional, Sequence

ALL_STRATEGIES = ["none", "arl", "gblending", "ogm_ge", "agm", "pmr", "mmpareto", "mla", "dr"]
LABELS = {
    "none": "Concatenation", "arl": "ARL", "gblending": "G-Blending", "ogm_ge": "OGM-GE", "agm": "AGM",
    "pmr": "PMR", "mmpareto": "MMPareto", "mla": "MLA", "dr": "D&R", "fixed": "Fixed multipliers",
}


def parse_compare_args(argv: Sequence[str]):
    """Split ``argv`` into the comparison's own options and the run options passed to every run."""
    p = argparse.ArgumentParser(
        prog="compare.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, add_help=True
    )
    p.add_argument("--strategies", nargs="+", default=ALL_STRATEGIES, help="Strategies to compare (registered names).")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="Seeds of each strategy.")
    p.add_argument("--compare_dir", default=None, help="Output directory (default outputs/compare-<dataset>).")
    p.add_argument("--data_seed", type=int, default=0, help="Seed given to the dataset loader (same for every run).")
    p.add_argument("--split", default="test", choices=["test", "validation"],
                   help="Split reported in results.md (the checkpoint is always selected on validation).")
    own, rest = p.parse_known_args(list(argv))
    for flag in ("--strategy", "--seed", "--output_dir"):
        if any(a == flag or a.startswith(flag + "=") for a in rest):
            raise ValueError(f"{flag[2:]}: set per run by compare.py; use --strategies / --seeds / --compare_dir")
    from arl_hf.strategies import STRATEGIES

    unknown = [s for s in own.strategies if s not in STRATEGIES]
    if unknown:
        raise ValueError(f"strategies: unknown strategy {unknown[0]!r}; expected names among {sorted(STRATEGIES)}")
    return own, rest


def run_all(own, rest: List[str]) -> List[Dict]:
    """Train and evaluate every (strategy, seed); returns one record per run."""
    from arl_hf.runner import load_data, parse_args, train_and_evaluate

    _, _, data_args, _ = parse_args(rest + ["--output_dir", "unused"])
    dataset, collator, _ = load_data(data_args, seed=own.data_seed)
    if own.split not in dataset:
        raise ValueError(f"split: the dataset has no {own.split!r} split (splits: {list(dataset)})")
    records = []
    for strategy in own.strategies:
        for seed in own.seeds:
            out = os.path.join(own.compare_dir, f"{strategy}-seed{seed}")
            argv = rest + ["--strategy", strategy, "--seed", str(seed), "--output_dir", out, "--overwrite_output_dir"]
            training_args, model_args, data_args, run_args = parse_args(argv)
            start = time.perf_counter()
            metrics = train_and_evaluate(training_args, model_args, data_args, run_args, dataset=dataset,
                                         data_collator=collator, argv=argv)
            wall = time.perf_counter() - start
            records.append({"strategy": strategy, "seed": seed, "wall_time_s": wall, "metrics": metrics})
            print(f"[compare] {strategy} seed {seed}: {own.split} accuracy "
                  f"{100 * metrics[own.split]['accuracy']:.2f}  ({wall:.1f} s)", flush=True)
    return records


def metric_keys(records: Sequence[Mapping], split: str) -> List[str]:
    """``accuracy``, ``macro_f1``, then ``accuracy_<m>``, ``macro_f1_<m>`` per modality, in order."""
    keys = ["accuracy", "macro_f1"]
    first = records[0]["metrics"][split]
    mods = [k[len("accuracy_"):] for k in first if k.startswith("accuracy_")]
    for m in mods:
        keys += [f"accuracy_{m}", f"macro_f1_{m}"]
    return keys


def mean_std(values: Sequence[float]):
    """Mean and sample standard deviation (0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def summarise(records: Sequence[Mapping], split: str = "test") -> List[Dict]:
    """One row per strategy (in first-seen order): mean/std of each metric over seeds and the mean wall time."""
    keys = metric_keys(records, split)
    rows = []
    for strategy in dict.fromkeys(r["strategy"] for r in records):
        runs = [r for r in records if r["strategy"] == strategy]
        row = {"strategy": strategy, "seeds": len(runs)}
        for k in keys:
            row[f"{k}_mean"], row[f"{k}_std"] = mean_std([r["metrics"][split][k] for r in runs])
        row["wall_time_s_mean"] = mean_std([r["wall_time_s"] for r in runs])[0]
        rows.append(row)
    return rows


def to_markdown(rows: Sequence[Mapping], keys: Sequence[str], split: str, dataset: str) -> str:
    heads = []
    for k in keys:
        for prefix, name in (("accuracy", "Acc"), ("macro_f1", "macro F1")):
            if k == prefix:
                heads.append(name)
            elif k.startswith(prefix + "_"):
                heads.append(f"{name} ({k[len(prefix) + 1:]})")
    n = rows[0]["seeds"] if rows else 0
    lines = [
        f"Dataset: {dataset}. {split.capitalize()} split, checkpoint selected on the validation split; "
        f"mean ± std over {n} seed(s), in %.",
        "",
        "| Method | " + " | ".join(heads) + " | wall time / run (s) |",
        "|---" * (len(keys) + 2) + "|",
    ]
    best = {k: max(r[f"{k}_mean"] for r in rows) for k in keys}
    for r in rows:
        cells = []
        for k in keys:
            cell = f"{100 * r[f'{k}_mean']:.2f} ± {100 * r[f'{k}_std']:.2f}"
            cells.append(f"**{cell}**" if r[f"{k}_mean"] == best[k] and len(rows) > 1 else cell)
        label = LABELS.get(r["strategy"], r["strategy"])
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {r['wall_time_s_mean']:.1f} |")
    return "\n".join(lines) + "\n"


def write_csv(path: str, rows: Sequence[Mapping]) -> None:
    fields = list(rows[0].keys())
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow(r)


def runs_table(records: Sequence[Mapping]) -> List[Dict]:
    out = []
    for r in records:
        row = {"strategy": r["strategy"], "seed": r["seed"], "wall_time_s": r["wall_time_s"]}
        for split, metrics in r["metrics"].items():
            for k, v in metrics.items():
                row[f"{split}_{k}"] = v
        out.append(row)
    return out


def bar_plot(path: str, rows: Sequence[Mapping], keys: Sequence[str], title: str) -> None:
    """Grouped bars per strategy (one bar per metric), std as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, k = len(rows), len(keys)
    width = 0.8 / k
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * n * max(1, k / 3)), 4.0))
    for j, key in enumerate(keys):
        xs = [i + (j - (k - 1) / 2) * width for i in range(n)]
        ax.bar(xs, [100 * r[f"{key}_mean"] for r in rows], width,
               yerr=[100 * r[f"{key}_std"] for r in rows], capsize=2, label=key.replace("_", " "))
    ax.set_xticks(range(n))
    ax.set_xticklabels([LABELS.get(r["strategy"], r["strategy"]) for r in rows], rotation=30, ha="right")
    ax.set_ylabel("%")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(records: Sequence[Mapping], compare_dir: str, split: str, dataset: str) -> Dict[str, str]:
    """Write results.md / results.csv / runs.csv / results.png / runs.json; returns their paths."""
    os.makedirs(compare_dir, exist_ok=True)
    keys = metric_keys(records, split)
    rows = summarise(records, split)
    paths = {name: os.path.join(compare_dir, name)
             for name in ("results.md", "results.csv", "runs.csv", "results.png", "runs.json")}
    with open(paths["results.md"], "w") as f:
        f.write(to_markdown(rows, keys, split, dataset))
    write_csv(paths["results.csv"], rows)
    write_csv(paths["runs.csv"], runs_table(records))
    with open(paths["runs.json"], "w") as f:
        json.dump(list(records), f, indent=2)
    bar_plot(paths["results.png"], rows, keys, f"{dataset}: {split} (validation-selected)")
    return paths


def main(argv: Optional[Sequence[str]] = None) -> int:
    own, rest = parse_compare_args(sys.argv[1:] if argv is None else argv)
    from arl_hf.runner import parse_args

    _, _, data_args, _ = parse_args(rest + ["--output_dir", "unused"])
    dataset = os.path.basename(os.path.normpath(str(data_args.dataset)))
    own.compare_dir = own.compare_dir or os.path.join("outputs", f"compare-{dataset}")
    start = time.perf_counter()
    records = run_all(own, rest)
    paths = write_outputs(records, own.compare_dir, own.split, dataset)
    print(open(paths["results.md"]).read())
    print(f"[compare] {len(records)} runs in {time.perf_counter() - start:.1f} s; wrote {', '.join(paths.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
