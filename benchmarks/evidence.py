"""Every figure of the AV-Digits evidence, one command, resumable.

In order (``--steps``; each step reads what the earlier ones wrote):

1. ``table``: the comparison table, ``arl-hf compare --preset avdigits_bench --unimodal_bounds
   --tune_trials 8`` over seeds 0-4 (-> ``results/avdigits_bench.json`` / ``.md``, the figures
   ``bench_results.png`` and ``bench_suppression.png``);
2. ``pair10``: concatenation and ARL at 10 seeds with the table's tuned values (its seeds 0-4
   are read back) (-> ``results/avdigits_bench_pair10.json``);
3. ``calibrate``: the imbalance levels, from **concatenation and the unimodal bounds only**
   (never ARL), on the validation split: each candidate of :data:`CANDIDATES` (generation knobs
   of :func:`arl_hf.data.avdigits.imbalance_options` over the ``bench`` data), then one
   candidate per band of :data:`TARGETS` by concatenation's largest probe gap; a band no
   candidate reaches takes the closest one and is marked ``reached: false``
   (-> ``calibration.json``);
4. ``sweep``: at each chosen level concatenation, ARL and the table's best peer over the table's
   seeds, at the table's tuned values (the ``bench`` level is the table itself)
   (-> ``results/avdigits_sweep.json``, ``avdigits_sweep.png``);
5. ``grid``: ARL at T in {1, 4, 8} x gamma in {1, 4, 8} over 3 seeds, at ARL's tuned learning
   rate (-> ``results/arl_sensitivity.json``, ``arl_sensitivity.png``).

Every run goes through the protocol's records, keyed by a fingerprint of its configuration
(:mod:`arl_hf.protocol.runs`): an interrupted command, run again, resumes where it stopped.
Runs use one thread each (``OMP_NUM_THREADS=1``) and ``--workers`` (default 2) side by side.
Before the steps, one run of one epoch is timed and the wall time of the whole is estimated.

    python benchmarks/evidence.py                      # everything (hours on 2 CPU cores)
    python benchmarks/evidence.py --estimate_only      # the timing and the estimate only
    python benchmarks/evidence.py --smoke --root /tmp/ev --publish /tmp/ev/publish   # the chain, tiny

``--smoke`` runs the chain on a tiny AV-Digits (40 digit images per level) with the protocol's
``--smoke`` budget (2 epochs, few seeds and trials): a check that every step runs and writes its
files, not evidence. The published files go under ``--publish`` (default ``docs``:
``docs/results/`` and ``docs/figures/``).
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"  # one thread per run, before torch is imported

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Dict, List, Mapping, Optional, Sequence  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

STEPS = ("table", "pair10", "calibrate", "sweep", "grid")
PRESET = ["--preset", "avdigits_bench"]
#: imbalance candidates: generation knobs over the ``bench`` configuration (``{}``: the bench data itself)
CANDIDATES: Dict[str, Dict[str, Any]] = {
    "bench": {},
    "img-0-1": {"visual_confused_classes": "23456789"},  # the image tells 0 and 1 only: little to lean on
    "img-0-4": {"visual_confused_classes": "56789"},  # calibration setting 3.5
    "img-0-4-speech-partner": {"visual_confused_classes": "56789", "audio_partner_prob": 0.2},
    "img-0-7-snr-6-6": {"visual_confused_classes": "89", "snr_db_min": -6.0, "snr_db_max": 6.0},
    "img-all-snr-6-6": {"visual_confused_classes": "", "snr_db_min": -6.0, "snr_db_max": 6.0},
}
#: bands of concatenation's largest validation probe gap (points): (name, low, high)
TARGETS = (("none", None, 3.0), ("mild", 3.0, 6.0), ("moderate", 6.0, 10.0), ("strong", 10.0, None))
NOT_PEERS = ("none", "arl", "fixed")
SMOKE_IMAGES = 40  #: digit images per level with --smoke


def parse(argv: Optional[Sequence[str]] = None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="outputs/evidence", help="Folder of every run and intermediate file.")
    p.add_argument("--publish", default=None, help="Where results/ and figures/ go (default: docs; with --smoke: "
                                                   "<root>/publish).")
    p.add_argument("--steps", nargs="+", default=list(STEPS), choices=STEPS)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--smoke", action="store_true", help="Tiny data and the protocol's --smoke budget.")
    p.add_argument("--estimate_only", action="store_true", help="Time one run, print the estimate, stop.")
    p.add_argument("--no_estimate", action="store_true", help="Skip the timing run.")
    p.add_argument("--strategies", nargs="+", default=None, help="Methods of the table (default: all).")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="Table and sweep seeds (default 0-4).")
    p.add_argument("--pair_seeds", nargs="+", type=int, default=None, help="pair10 seeds (default 0-9).")
    p.add_argument("--tune_trials", type=int, default=None, help="Trials per method and bound (default 8).")
    p.add_argument("--calibration_seeds", nargs="+", type=int, default=None, help="Default 0 1 2.")
    p.add_argument("--candidates", nargs="+", default=None, help=f"Among {list(CANDIDATES)} (default: all).")
    p.add_argument("--temperatures", nargs="+", type=float, default=[1.0, 4.0, 8.0])
    p.add_argument("--gammas", nargs="+", type=float, default=[1.0, 4.0, 8.0])
    p.add_argument("--grid_seeds", nargs="+", type=int, default=None, help="Default 0 1 2.")
    args, rest = p.parse_known_args(argv)
    small = args.smoke
    args.seeds = args.seeds or ([0, 1] if small else [0, 1, 2, 3, 4])
    args.pair_seeds = args.pair_seeds or ([0, 1, 2] if small else list(range(10)))
    args.tune_trials = args.tune_trials if args.tune_trials is not None else (1 if small else 8)
    args.calibration_seeds = args.calibration_seeds or ([0, 1] if small else [0, 1, 2])
    args.grid_seeds = args.grid_seeds or ([0, 1] if small else [0, 1, 2])
    args.candidates = args.candidates or (["bench", "img-0-1"] if small else list(CANDIDATES))
    unknown = [c for c in args.candidates if c not in CANDIDATES]
    if unknown:
        p.error(f"--candidates: unknown candidate {unknown[0]!r}; expected names among {list(CANDIDATES)}")
    if "bench" not in args.candidates:
        p.error("--candidates: 'bench' (the table's data) is always a level; keep it")
    args.publish = args.publish or (os.path.join(args.root, "publish") if small else str(REPO_ROOT / "docs"))
    return args, rest


# ---- data and paths ------------------------------------------------------------------------------
def level_data(args, name: str) -> List[str]:
    """The run options naming the data of candidate ``name``: the preset's named configuration for the
    full bench data, else a folder exported once under ``<root>/data``."""
    if name == "bench" and not args.smoke:
        return []
    folder = os.path.join(args.root, "data", name)
    if not os.path.isdir(folder):
        from arl_hf.data import load
        from arl_hf.data.avdigits import imbalance_options
        from arl_hf.data.sharing import export_prepared

        knobs = dict(CANDIDATES[name], **({"num_samples": SMOKE_IMAGES} if args.smoke else {}))
        imbalance_options("bench", **knobs)  # refuses an unknown knob or value before building
        tmp = folder + ".partial"
        shutil.rmtree(tmp, ignore_errors=True)
        export_prepared(load("avdigits", config="bench", cache_dir=os.path.join(args.root, "cache"), **knobs), tmp)
        os.replace(tmp, folder)
    return ["--dataset", folder]


def compare_dir(args, name: str) -> str:
    return os.path.join(args.root, "table" if name == "bench" else os.path.join("levels", name))


def results_path(args, name: str) -> str:
    return os.path.join(args.root, "results", name)


def compare(args, rest: Sequence[str], data: Sequence[str], cdir: str, extra: Sequence[str]) -> Dict[str, Any]:
    """One ``arl-hf compare`` in this process; returns its ``results.json``."""
    from arl_hf.scripts.compare import main as compare_main

    argv = list(data) + PRESET + list(rest) + ["--compare_dir", cdir, "--workers", str(args.workers)] + list(extra)
    if args.smoke:
        argv.append("--smoke")
    print("[evidence] arl-hf compare " + " ".join(argv), flush=True)
    if compare_main(argv) != 0:
        raise SystemExit(f"compare failed: {argv}")
    with open(os.path.join(cdir, "results.json"), encoding="utf-8") as f:
        return json.load(f)


def keep(args, results: Mapping[str, Any], name: str, check=None) -> str:
    """Write ``results`` under ``<root>/results/<name>`` and ``<publish>/results/<name>``."""
    from arl_hf.protocol.evidence import check_results, write_checked

    check = check or check_results
    write_checked(results_path(args, name), results, check)
    return write_checked(os.path.join(args.publish, "results", name), results, check)


def publish_file(args, src: str, name: str) -> None:
    os.makedirs(os.path.join(args.publish, "figures"), exist_ok=True)
    shutil.copyfile(src, os.path.join(args.publish, "figures", name))


def table_results(args) -> Dict[str, Any]:
    path = results_path(args, "avdigits_bench.json")
    if not os.path.isfile(path):
        raise SystemExit(f"{path}: no table yet; run the 'table' step first")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def tuned_flags(args) -> List[str]:
    return ["--tuned_from", results_path(args, "avdigits_bench.json"), "--tune_trials", "0"]


# ---- steps ---------------------------------------------------------------------------------------
def step_table(args, rest) -> None:
    extra = ["--unimodal_bounds", "--tune_trials", str(args.tune_trials), "--seeds", *map(str, args.seeds)]
    if args.strategies:
        extra += ["--strategies", *args.strategies]
    cdir = compare_dir(args, "bench")
    res = compare(args, rest, level_data(args, "bench"), cdir, extra)
    keep(args, res, "avdigits_bench.json")
    shutil.copyfile(os.path.join(cdir, "results.md"), results_path(args, "avdigits_bench.md"))
    shutil.copyfile(os.path.join(cdir, "results.md"), os.path.join(args.publish, "results", "avdigits_bench.md"))
    publish_file(args, os.path.join(cdir, "results.png"), "bench_results.png")
    publish_file(args, os.path.join(cdir, "suppression.png"), "bench_suppression.png")


def step_pair10(args, rest) -> None:
    extra = ["--strategies", "none", "arl", "--seeds", *map(str, args.pair_seeds), "--no_plots", *tuned_flags(args)]
    res = compare(args, rest, level_data(args, "bench"), compare_dir(args, "bench"), extra)
    keep(args, res, "avdigits_bench_pair10.json")


def _max_gap(results: Mapping[str, Any]) -> Dict[str, Any]:
    gaps = results["suppression_gap"]["none"]
    m = max(gaps, key=lambda k: gaps[k]["mean"])
    return {"modality": m, **gaps[m]}


def choose_levels(gaps: Mapping[str, float], targets=TARGETS) -> List[Dict[str, Any]]:
    """One candidate per band of ``targets`` from ``{candidate: gap in points}``: the bench data's
    band takes ``bench``; every other band the unused candidate inside it closest to its middle,
    else the unused one closest to it (``reached: false``). A band left with no candidate is dropped."""
    def distance(g: float, lo: Optional[float], hi: Optional[float]) -> float:
        if (lo is None or g >= lo) and (hi is None or g <= hi):
            mid = (lo if hi is None else hi if lo is None else (lo + hi) / 2)
            return -1.0 / (1.0 + abs(g - mid))  # inside: negative, closer to the middle is smaller
        return (lo - g) if lo is not None and g < lo else (g - hi)

    def inside(g, lo, hi):
        return (lo is None or g >= lo) and (hi is None or g <= hi)

    used = set()
    out: List[Dict[str, Any]] = []
    if "bench" in gaps:
        for name, lo, hi in targets:
            if inside(gaps["bench"], lo, hi):
                used.add("bench")
                out.append({"target": name, "band": [lo, hi], "candidate": "bench", "gap": gaps["bench"],
                            "reached": True})
                break
    for name, lo, hi in targets:
        if any(o["target"] == name for o in out):
            continue
        free = [c for c in gaps if c not in used]
        if not free:
            continue
        best = min(free, key=lambda c: distance(gaps[c], lo, hi))
        used.add(best)
        out.append({"target": name, "band": [lo, hi], "candidate": best, "gap": gaps[best],
                    "reached": inside(gaps[best], lo, hi)})
    order = [t[0] for t in targets]
    return sorted(out, key=lambda o: order.index(o["target"]))


def step_calibrate(args, rest) -> None:
    from arl_hf.safety import atomic_write_json

    extra = ["--strategies", "none", "--unimodal_bounds", "--split", "validation", "--no_plots",
             "--seeds", *map(str, args.calibration_seeds), *tuned_flags(args)]
    found: Dict[str, Any] = {}
    for name in args.candidates:
        res = compare(args, rest, level_data(args, name), compare_dir(args, name), extra)
        found[name] = {"knobs": CANDIDATES[name], "split": "validation", "seeds": res["seeds"],
                       "concat_accuracy": res["methods"]["none"]["accuracy"], "unimodal_bounds": res["unimodal_bounds"],
                       "suppression_gap": res["suppression_gap"]["none"], "max_gap": _max_gap(res)}
    levels = choose_levels({n: 100 * c["max_gap"]["mean"] for n, c in found.items()})
    out = {"uses": "concatenation and the unimodal bounds only, validation split", "targets": TARGETS,
           "candidates": found, "levels": levels}
    atomic_write_json(os.path.join(args.root, "calibration.json"), out, allow_nan=False)
    for lv in levels:
        print(f"[evidence] level {lv['target']:<9} -> {lv['candidate']:<24} gap {lv['gap']:5.1f} points"
              + ("" if lv["reached"] else "  (band not reached: the closest candidate)"), flush=True)


def best_peer(table: Mapping[str, Any]) -> Optional[str]:
    """The table's most accurate method other than concatenation, ARL and the fixed multipliers."""
    peers = [m for m in table["methods"] if m not in NOT_PEERS]
    return max(peers, key=lambda m: table["methods"][m]["accuracy"]["mean"]) if peers else None


def step_sweep(args, rest) -> None:
    from arl_hf.protocol.evidence import check_sweep, level_entry, sweep_results, write_checked
    from arl_hf.protocol.figures import sweep_figure

    with open(os.path.join(args.root, "calibration.json"), encoding="utf-8") as f:
        calibration = json.load(f)
    table = table_results(args)
    peer = best_peer(table)
    methods = ["none", "arl"] + ([peer] if peer else [])
    entries = []
    for lv in calibration["levels"]:
        name = lv["candidate"]
        if name == "bench":
            res = table
        else:
            extra = ["--strategies", *methods, "--unimodal_bounds", "--no_plots", "--seeds", *map(str, args.seeds),
                     *tuned_flags(args)]
            res = compare(args, rest, level_data(args, name), compare_dir(args, name), extra)
        entry = level_entry(name, CANDIDATES[name], res, methods)
        entry.update(target=lv["target"], reached=lv["reached"], calibration_gap_points=lv["gap"])
        entries.append(entry)
    sweep = sweep_results(entries, dataset="avdigits", base_config="bench", split="test", best_peer=peer,
                          tuned_values="the table's (results/avdigits_bench.json)", smoke=args.smoke)
    write_checked(results_path(args, "avdigits_sweep.json"), sweep, check_sweep)
    write_checked(os.path.join(args.publish, "results", "avdigits_sweep.json"), sweep, check_sweep)
    os.makedirs(os.path.join(args.publish, "figures"), exist_ok=True)
    sweep_figure(sweep, os.path.join(args.publish, "figures", "avdigits_sweep.png"))


def step_grid(args, rest) -> None:
    from arl_hf.protocol.evidence import check_sensitivity, run_grid, sensitivity_results, write_checked
    from arl_hf.protocol.figures import sensitivity_figure

    table = table_results(args)
    arl = (table["methods"].get("arl") or {}).get("hyperparameters") or {}
    best = arl.get("best") or {}
    argv = level_data(args, "bench") + PRESET + list(rest)
    cells = run_grid(argv, args.temperatures, args.gammas, args.grid_seeds, os.path.join(args.root, "grid"),
                     best.get("learning_rate"), workers=args.workers, smoke=args.smoke)
    sens = sensitivity_results(args.grid_seeds, cells, learning_rate=best.get("learning_rate"),
                               tuned={k: best[k] for k in ("arl_temperature", "arl_gamma") if k in best},
                               dataset="avdigits", dataset_config="bench", preset="avdigits_bench",
                               paper={"arl_temperature": [4.0, 8.0], "arl_gamma": 4.0}, smoke=args.smoke)
    write_checked(results_path(args, "arl_sensitivity.json"), sens, check_sensitivity)
    write_checked(os.path.join(args.publish, "results", "arl_sensitivity.json"), sens, check_sensitivity)
    os.makedirs(os.path.join(args.publish, "figures"), exist_ok=True)
    sensitivity_figure(sens, os.path.join(args.publish, "figures", "arl_sensitivity.png"))


# ---- the estimate --------------------------------------------------------------------------------
def trainings(args) -> Dict[str, int]:
    """How many trainings each step runs (tuning trials included; runs read back are not counted)."""
    from arl_hf.protocol.compare import ALL_STRATEGIES

    methods = args.strategies or ALL_STRATEGIES
    tuned = len([m for m in methods if m != "fixed"]) + 2  # + the two unimodal bounds
    seeds, extra_pair = len(args.seeds), len([s for s in args.pair_seeds if s not in args.seeds])
    others = len([c for c in args.candidates if c != "bench"])
    levels = min(len(TARGETS), len(args.candidates)) - 1
    cal = len(args.calibration_seeds)
    return {"table": tuned * args.tune_trials + tuned * seeds + ("fixed" in methods) * seeds,
            "pair10": 2 * extra_pair, "calibrate": others * 3 * cal,
            "sweep": max(0, levels) * (5 * seeds - 3 * cal),
            "grid": len(args.temperatures) * len(args.gammas) * len(args.grid_seeds)}


def estimate(args, rest) -> float:
    """Time one epoch of one concatenation run; print the estimated wall time of the steps."""
    from arl_hf.scripts.compare import main as compare_main

    cdir = os.path.join(args.root, "timing")
    shutil.rmtree(cdir, ignore_errors=True)  # timed afresh: a record read back would time nothing
    argv = level_data(args, "bench") + PRESET + list(rest) + [
        "--strategies", "none", "--seeds", "0", "--compare_dir", cdir, "--no_plots", "--num_train_epochs", "1"]
    start = time.perf_counter()
    compare_main(argv + (["--smoke"] if args.smoke else []))
    with open(os.path.join(cdir, "results.json"), encoding="utf-8") as f:
        wall = json.load(f)["methods"]["none"]["wall_time_s"]["mean"]
    with open(os.path.join(cdir, "none-seed0", "trainer_state.json"), encoding="utf-8") as f:
        history = json.load(f).get("log_history", [])
    per_epoch = next((float(e["train_runtime"]) for e in history if "train_runtime" in e), wall)
    epochs = 2 if args.smoke else 20  # a bench run stops between epoch 16 and its budget of 24
    per_run = (wall - per_epoch) + per_epoch * epochs  # set-up and final evaluations, then the epochs
    counts = {k: v for k, v in trainings(args).items() if k in args.steps}
    total = sum(counts.values()) * per_run / max(1, args.workers)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"[evidence] timing: one epoch {per_epoch:.1f} s, set-up and evaluation {wall - per_epoch:.1f} s (this "
          f"call {time.perf_counter() - start:.0f} s, load average {load:.1f} on {os.cpu_count()} cores); "
          f"~{per_run:.0f} s per run of {epochs} epochs; trainings per step {counts}; estimated wall time with "
          f"{args.workers} workers: {total / 60:.0f} min ({total / 3600:.1f} h)", flush=True)
    return total


def main(argv: Optional[Sequence[str]] = None) -> int:
    args, rest = parse(argv)
    os.makedirs(os.path.join(args.root, "results"), exist_ok=True)
    os.makedirs(os.path.join(args.publish, "results"), exist_ok=True)
    if not args.no_estimate or args.estimate_only:
        estimate(args, rest)
        if args.estimate_only:
            return 0
    start = time.perf_counter()
    steps = {"table": step_table, "pair10": step_pair10, "calibrate": step_calibrate, "sweep": step_sweep,
             "grid": step_grid}
    for name in STEPS:
        if name in args.steps:
            t = time.perf_counter()
            steps[name](args, rest)
            print(f"[evidence] step {name} done in {time.perf_counter() - t:.0f} s", flush=True)
    print(f"[evidence] done in {time.perf_counter() - start:.0f} s -> {args.publish}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
