"""Calibrate AV-Digits' ``bench`` configuration from the concatenation baseline and the unimodal runs.

Only the data generation is varied, and only three kinds of run are looked at, never a
balancing method: concatenation (``--strategy none``) and each modality's encoder trained
alone (the unimodal bound), all with the ``avdigits_bench`` recipe, on the **validation**
split. For every setting it prints, as mean ± std over seeds:

* concat's fused accuracy, each modality's unimodal-head accuracy and linear-probe accuracy;
* each bound; the suppression gaps ``bound - probe`` and ``bound - head``;
* concat's best validation epoch against the budget (convergence: in the first 75 %);
* with ``--double``, concat at twice the epochs (convergence: moves < 1 point).

Targets (issue "evidence"): the most suppressed modality has probe gap >= 8 and head gap >= 10
points, each bound >= 40 %, concat beats the best bound, concat's std <= 1.5 points.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/avdigits_bench_calibration.py --round 2 --seeds 0 1 2 --workers 2
    OMP_NUM_THREADS=1 python benchmarks/avdigits_bench_calibration.py --seeds 0 1 2 3 4 --double --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Dict, List, Tuple

from _common import write_json

#: every knob of the ``bench`` configuration, so that each setting is absolute
_BASE = {"visual_partner_prob": 0.0, "visual_confused_classes": "", "snr_db_min": -6.0, "snr_db_max": 6.0,
         "pixel_noise_min": 0.1, "pixel_noise_max": 0.3, "occlusion_prob": 0.0, "repeats": 1}
ROUNDS: Dict[int, List[Dict[str, Any]]] = {
    # round 1: the image tells the digit pair (0-1, 2-3, ...), the within-pair digit only half the time
    1: [{**_BASE, "visual_partner_prob": 0.5},
        {**_BASE, "visual_partner_prob": 0.4},
        {**_BASE, "visual_partner_prob": 0.5, "snr_db_min": -3.0, "snr_db_max": 9.0},
        {**_BASE, "visual_partner_prob": 0.5, "snr_db_min": -9.0, "snr_db_max": 3.0}],
    # round 2: the image tells digits 0-4 and only "one of 5-9" for the others
    2: [{**_BASE, "visual_confused_classes": "56789"},
        {**_BASE, "visual_confused_classes": "56789", "snr_db_min": -3.0, "snr_db_max": 9.0},
        {**_BASE, "visual_confused_classes": "56789", "snr_db_min": 0.0, "snr_db_max": 12.0},
        {**_BASE, "visual_confused_classes": "56789", "repeats": 2}],
    # round 3: setting 2.1 with more samples per digit image (each with its own voice and noise
    # draws) and a budget that ends with early stopping
    3: [{**_BASE, "visual_confused_classes": "56789", "snr_db_min": -3.0, "snr_db_max": 9.0, "repeats": 2},
        {**_BASE, "visual_confused_classes": "56789", "snr_db_min": -3.0, "snr_db_max": 9.0, "repeats": 3},
        {**_BASE, "visual_confused_classes": "56789", "snr_db_min": -3.0, "snr_db_max": 9.0, "repeats": 2},
        {**_BASE, "visual_confused_classes": "56789", "snr_db_min": -3.0, "snr_db_max": 9.0, "repeats": 1},
        {**_BASE, "visual_confused_classes": "56789", "snr_db_min": -3.0, "snr_db_max": 9.0, "repeats": 2},
        {**_BASE, "visual_confused_classes": "56789", "snr_db_min": -3.0, "snr_db_max": 9.0, "repeats": 2},
        # the image tells more digits apart (0-5, 0-6): the audio is needed for fewer of them
        {**_BASE, "visual_confused_classes": "6789", "snr_db_min": -3.0, "snr_db_max": 9.0, "repeats": 2},
        {**_BASE, "visual_confused_classes": "789", "snr_db_min": -3.0, "snr_db_max": 9.0, "repeats": 2},
        # a cleaner image (learnt faster); and one sample per image with the two decays at the same steps
        {**_BASE, "visual_confused_classes": "789", "snr_db_min": -3.0, "snr_db_max": 9.0, "repeats": 2,
         "pixel_noise_min": 0.0, "pixel_noise_max": 0.1},
        {**_BASE, "visual_confused_classes": "56789", "snr_db_min": -3.0, "snr_db_max": 9.0, "repeats": 1}],
}
#: run options of a round's settings (default: the preset's own)
ROUND_RUN_OPTIONS: Dict[int, List[List[str]]] = {
    3: [["--num_train_epochs", "24", "--early_stopping_patience", "6"],
        ["--num_train_epochs", "16", "--early_stopping_patience", "4"],
        # the learning rate x0.1 after the first epochs (as the authors' MultiStep schedule)
        ["--num_train_epochs", "24", "--lr_decay_epochs", "10", "--early_stopping_patience", "5"],
        ["--num_train_epochs", "30", "--lr_decay_epochs", "15", "--early_stopping_patience", "6"],
        ["--num_train_epochs", "16", "--lr_decay_epochs", "7", "--early_stopping_patience", "4"],
        ["--num_train_epochs", "20", "--lr_decay_epochs", "7", "12", "--early_stopping_patience", "4"],
        ["--num_train_epochs", "24", "--lr_decay_epochs", "7", "12", "--early_stopping_patience", "4"],
        ["--num_train_epochs", "24", "--lr_decay_epochs", "7", "12", "--early_stopping_patience", "4"],
        ["--num_train_epochs", "24", "--lr_decay_epochs", "7", "12", "--early_stopping_patience", "4"],
        ["--num_train_epochs", "48", "--lr_decay_epochs", "14", "24", "--early_stopping_patience", "8"]],
}
MODALITIES = ("audio", "visual")


def load(cache_dir: str, knobs: Dict[str, Any]):
    import arl_hf.data

    return arl_hf.data.load("avdigits", config="bench", cache_dir=cache_dir, **knobs)


def job(payload: Tuple[str, Dict[str, Any], str, int, List[str], str]) -> Dict[str, Any]:
    cache_dir, knobs, method, seed, extra, run_dir = payload
    from arl_hf.data import MultimodalCollator
    from arl_hf.protocol.runs import RunSpec, run_one

    ds = load(cache_dir, knobs)
    base = ["--preset", "avdigits_bench"] + extra
    return run_one(base, RunSpec(method, seed), ds, MultimodalCollator.from_dataset(ds), run_dir,
                   probe_splits=("validation",))


def ms(values: List[float]) -> str:
    v = [100 * x for x in values]
    sd = statistics.stdev(v) if len(v) > 1 else float("nan")
    return f"{statistics.mean(v):5.1f} ± {sd:3.1f}"


def summarise(knobs: Dict[str, Any], runs: Dict[Tuple[str, int], Dict[str, Any]], seeds: List[int],
              double: bool) -> Dict[str, Any]:
    val = lambda r, k: r["metrics"]["validation"][k]  # noqa: E731
    concat = [runs[("none", s)] for s in seeds]
    out: Dict[str, Any] = {"knobs": knobs, "concat": [val(r, "accuracy") for r in concat],
                           "best_epoch": [r["best_epoch"] for r in concat],
                           "budget": concat[0]["num_train_epochs"]}
    for m in MODALITIES:
        bound = [val(runs[(f"bound:{m}", s)], "accuracy") for s in seeds]
        head = [val(r, f"accuracy_{m}") for r in concat]
        probe = [r["probe"]["validation"][m] for r in concat]
        out[m] = {"bound": bound, "head": head, "probe": probe,
                  "gap_probe": [b - p for b, p in zip(bound, probe)], "gap_head": [b - h for b, h in zip(bound, head)]}
    if double:
        out["concat_double"] = [val(runs[("none-double", s)], "accuracy") for s in seeds]
    return out


def report(s: Dict[str, Any]) -> str:
    lines = [f"setting {json.dumps(s['knobs'])}",
             f"  concat fused {ms(s['concat'])}   best epoch {s['best_epoch']} of {s['budget']:.0f}"]
    if "concat_double" in s:
        lines.append(f"  concat at 2x epochs {ms(s['concat_double'])}")
    for m in MODALITIES:
        r = s[m]
        lines.append(f"  {m:<7} bound {ms(r['bound'])}  head {ms(r['head'])}  probe {ms(r['probe'])}  "
                     f"gap probe {ms(r['gap_probe'])}  gap head {ms(r['gap_head'])}")
    return "\n".join(lines)


def main(argv: List[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--round", type=int, default=0, choices=[0] + sorted(ROUNDS),
                   help="Run every setting of a calibration round (default 0: the bench configuration as it is).")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--settings", nargs="+", type=int, default=None, help="Only these settings of the round (0-based).")
    p.add_argument("--double", action="store_true", help="Also run concat at twice the epochs.")
    p.add_argument("--workers", type=int, default=1, help="One-thread processes side by side.")
    p.add_argument("--out", default="outputs/bench-calibration", help="Run directories (reused: resumes).")
    p.add_argument("--cache_dir", default=None, help="Arrow cache of the generated settings.")
    p.add_argument("--json", default=None, help="Write the summaries here.")
    p.add_argument("extra", nargs=argparse.REMAINDER, help="Extra run options after '--'.")
    args = p.parse_args(argv)
    extra = [a for a in args.extra if a != "--"]
    settings = ROUNDS[args.round] if args.round else [{}]
    run_options = ROUND_RUN_OPTIONS.get(args.round, [[] for _ in settings])
    cache = args.cache_dir or os.path.join(args.out, "cache")
    payloads, keys = [], []
    for i, knobs in enumerate(settings):
        if args.settings is not None and i not in args.settings:
            continue
        load(cache, knobs)  # build once, before the workers read it
        for seed in args.seeds:
            methods = [("none", [])] + [(f"bound:{m}", []) for m in MODALITIES]
            if args.double:
                opts = run_options[i]
                epochs = float(opts[opts.index("--num_train_epochs") + 1]) if "--num_train_epochs" in opts else 30
                methods.append(("none-double", ["--num_train_epochs", f"{2 * epochs:g}"]))
            for method, more in methods:
                run_dir = os.path.join(args.out, f"setting{i}", f"{method.replace(':', '-')}-seed{seed}")
                payloads.append((cache, knobs, method.replace("-double", ""), seed, run_options[i] + extra + more,
                                 run_dir))
                keys.append((i, method, seed))
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        records = list(pool.map(job, payloads))
    summaries = []
    for i, knobs in enumerate(settings):
        if args.settings is not None and i not in args.settings:
            continue
        runs = {(m, s): r for (j, m, s), r in zip(keys, records) if j == i}
        summary = summarise(knobs, runs, args.seeds, args.double)
        print(report(summary), flush=True)
        summaries.append(summary)
    write_json(args.json, summaries)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
