"""The main job's spread: ``examples/run_arl.py`` (no other option) over seeds, at 1 and 2 threads.

Claim checked: over 5 seeds at 1 and at 2 threads (``OMP_NUM_THREADS``), the test accuracies'
means differ by <= 2 points and every paired (same seed) difference is <= 4 points; the same
seed and thread count reproduce bit for bit (tested in tests/cli/test_reproducibility.py).
Runs are interleaved (seed 0 at 1 thread, seed 0 at 2 threads, seed 1 ...) so that the load of
a shared machine falls on both thread counts alike. Prints mean ± std (ddof 1) per thread count,
the paired differences, and each run's CPU time (user + system of the child process).

Usage::

    python benchmarks/main_job_stability.py --seeds 0 1 2 3 4 --json main_job.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List

from _common import write_json

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(seed: int, threads: int, out: str, extra: List[str]) -> Dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, os.path.join(REPO, "examples", "run_arl.py"), "--seed", str(seed), "--output_dir", out,
           "--overwrite_output_dir", "true", "--disable_tqdm", "true"] + extra
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"seed {seed}, {threads} thread(s) failed:\n{proc.stderr[-3000:]}")
    with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
        res = json.load(f)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"seed": seed, "threads": threads, "test_accuracy": res["metrics"]["test"]["accuracy"],
            "validation_accuracy": res["metrics"]["validation"]["accuracy"],
            "torch_num_threads": res.get("torch_num_threads"), "wall_s": wall, "cpu_s": cpu}


def main(argv: List[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--out", default="outputs/main-job-stability")
    p.add_argument("--json", default=None)
    p.add_argument("extra", nargs=argparse.REMAINDER, help="Options passed to run_arl.py after '--'.")
    args = p.parse_args(argv)
    extra = [a for a in args.extra if a != "--"]
    runs = []
    for seed in args.seeds:
        for t in args.threads:
            r = run(seed, t, os.path.join(args.out, f"seed{seed}-threads{t}"), extra)
            print(f"seed {seed} threads {t}: test {100 * r['test_accuracy']:.2f}  validation "
                  f"{100 * r['validation_accuracy']:.2f}  cpu {r['cpu_s']:.0f} s  wall {r['wall_s']:.0f} s", flush=True)
            runs.append(r)
    acc = {t: [100 * r["test_accuracy"] for r in runs if r["threads"] == t] for t in args.threads}
    for t, v in acc.items():
        sd = statistics.stdev(v) if len(v) > 1 else float("nan")
        cpu = statistics.mean(r["cpu_s"] for r in runs if r["threads"] == t)
        print(f"{t} thread(s): test accuracy {statistics.mean(v):.2f} ± {sd:.2f} (n={len(v)}); CPU time {cpu:.0f} s")
    summary: Dict[str, Any] = {"runs": runs}
    if len(args.threads) == 2:
        a, b = (acc[t] for t in args.threads)
        diffs = [y - x for x, y in zip(a, b)]
        mean_diff = statistics.mean(b) - statistics.mean(a)
        print(f"difference of the means ({args.threads[1]} - {args.threads[0]} threads): {mean_diff:+.2f} points "
              f"(target |.| <= 2); paired differences {[round(d, 2) for d in diffs]} (target every |.| <= 4): "
              f"{'MET' if abs(mean_diff) <= 2 and all(abs(d) <= 4 for d in diffs) else 'NOT MET'}")
        summary.update({"mean_diff": mean_diff, "paired_diffs": diffs})
    write_json(args.json, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
