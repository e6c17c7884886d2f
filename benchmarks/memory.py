"""Peak memory of ARL versus plain training: peak RSS, each run in its own process.

Issue 7, target 3 (<= 1.05 for late fusion). CPU has no resettable peak-memory counter,
so every measurement is a fresh subprocess that builds the model and its trainer
(``ARLTrainer`` or the plain ``transformers.Trainer``, the step_overhead setting), trains
``--steps`` steps and reports ``resource.getrusage(RUSAGE_SELF).ru_maxrss``. Children run
interleaved (ARL, plain, plain, ARL, ...); the ratio is the median of per-pair ratios.

Also reported: the training increment, peak RSS minus the RSS just before the first step
(libraries, model and batches excluded), whose ratio isolates what a step allocates.

    python benchmarks/memory.py
    python benchmarks/memory.py --tiny --pairs 1      # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from step_overhead import parse_shape  # noqa: E402  (light: argparse only at import)

MARK = "MEMORY_RESULT "


def _rss_kb() -> int:
    """Current resident set size in KiB (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def child(args: argparse.Namespace) -> None:
    """One measurement: build, train ``args.steps`` steps, print peak RSS as JSON."""
    import resource

    import _common as C
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    mlp_dims = (args.audio_shape[-1], args.visual_shape[-1]) if args.encoder == "mlp" else None
    model = C.build_model(args.encoder, args.fusion, args.num_labels, mlp_dims=mlp_dims)
    shapes = {"audio": args.audio_shape, "visual": args.visual_shape}
    batches = C.synthetic_batches(2, args.batch_size, shapes, args.num_labels)
    overrides = {"validate_inputs": False} if args.child == "arl_no_validate" else None
    strategy = None if args.child == "plain" else "arl"
    bench = C.make_bench(args.child, model, batches, strategy=strategy, warmup=0, steps=args.steps,
                         arl_overrides=overrides)
    before = _rss_kb()
    bench.run_block()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(MARK + json.dumps({"variant": args.child, "peak_rss_kb": peak, "rss_before_training_kb": before,
                             "step_s": bench.times[-1]}), flush=True)


def _run_child(variant: str, args: argparse.Namespace) -> Dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", variant,
           "--encoder", args.encoder, "--fusion", args.fusion, "--batch-size", str(args.batch_size),
           "--audio-shape", ",".join(map(str, args.audio_shape)),
           "--visual-shape", ",".join(map(str, args.visual_shape)),
           "--num-labels", str(args.num_labels), "--steps", str(args.steps)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.child_timeout)
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    raise RuntimeError(f"memory child {variant!r} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--encoder", default="resnet18")
    p.add_argument("--fusion", default="concat")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--audio-shape", type=parse_shape, default=[1, 128, 96])
    p.add_argument("--visual-shape", type=parse_shape, default=[1, 3, 112, 112])
    p.add_argument("--num-labels", type=int, default=6)
    p.add_argument("--steps", type=int, default=3, help="training steps per child")
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: stable on a shared CPU)")
    p.add_argument("--target", type=float, default=1.05)
    p.add_argument("--child-timeout", type=float, default=600.0)
    p.add_argument("--json", default=None)
    p.add_argument("--tiny", action="store_true", help="MLP encoders on 8-d inputs, batch 4")
    p.add_argument("--child", default=None, choices=["arl", "arl_no_validate", "plain"], help=argparse.SUPPRESS)
    return p


def run(args: argparse.Namespace) -> Dict[str, Any]:
    import _common as C

    if args.tiny:
        args.encoder, args.batch_size = "mlp", 4
        args.audio_shape, args.visual_shape = [8], [8]
    runs: Dict[str, List[Dict[str, Any]]] = {"arl": [], "plain": []}
    for r in range(args.pairs):
        order = ["arl", "plain"] if r % 2 == 0 else ["plain", "arl"]
        for v in order:
            runs[v].append(_run_child(v, args))
    peak = {v: [x["peak_rss_kb"] for x in rs] for v, rs in runs.items()}
    incr = {v: [x["peak_rss_kb"] - x["rss_before_training_kb"] for x in rs] for v, rs in runs.items()}
    ratios = [a / p for a, p in zip(peak["arl"], peak["plain"])]
    incr_ratios = [a / p for a, p in zip(incr["arl"], incr["plain"]) if p > 0]
    return {
        "benchmark": "memory",
        "setting": {"encoder": args.encoder, "fusion": args.fusion, "batch_size": args.batch_size,
                    "audio_shape": args.audio_shape, "visual_shape": args.visual_shape,
                    "steps": args.steps, "pairs": args.pairs},
        "machine": C.machine_info(),
        "target": args.target,
        "peak_rss_kb": peak,
        "training_increment_kb": incr,
        "ratios": ratios,
        "median_ratio": statistics.median(ratios),
        "increment_ratios": incr_ratios,
        "median_increment_ratio": statistics.median(incr_ratios) if incr_ratios else None,
    }


def report(r: Dict[str, Any]) -> str:
    import _common as C

    s = r["setting"]
    mib = lambda kb: f"{statistics.median(kb) / 1024:.0f} MiB"  # noqa: E731
    lines = [
        f"memory: {s['encoder']} encoders, {s['fusion']} fusion, batch {s['batch_size']}, {s['steps']} steps per "
        f"process, {s['pairs']} interleaved pairs",
        f"  peak RSS (median): plain {mib(r['peak_rss_kb']['plain'])} | ARL {mib(r['peak_rss_kb']['arl'])}",
        f"  training increment (peak - RSS before step 1, median): plain {mib(r['training_increment_kb']['plain'])}"
        f" | ARL {mib(r['training_increment_kb']['arl'])}",
        f"  peak RSS ARL/plain: {r['median_ratio']:.3f}  {C.verdict(r['median_ratio'], r['target'])}"
        f"  (pairs: {' '.join(f'{x:.3f}' for x in r['ratios'])})",
    ]
    if r["median_increment_ratio"] is not None:
        lines.append(f"  training increment ARL/plain: {r['median_increment_ratio']:.3f}")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> Optional[Dict[str, Any]]:
    args = build_parser().parse_args(argv)
    if args.child:
        child(args)
        return None
    import _common as C

    return C.run_and_report(args, run, report)


if __name__ == "__main__":
    main()
