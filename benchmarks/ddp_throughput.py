"""Two-process CPU DDP throughput of ARL training, relative to one process, with the
coefficients asserted identical across ranks.

Issue 7, target 5. Launches ``torchrun --standalone --nproc_per_node N`` (gloo, CPU,
``OMP_NUM_THREADS=1``) for N = 1 and 2. Every rank trains ``ARLTrainer`` with the same
per-device batch on its own shard of distinct synthetic batches, times its steps, and
dumps per step: the ``a_m`` it logged (``ARLTrainer``'s per-step metric, before the
logging average), its local fused loss (different data on each rank) and, at the end, a
checksum of its parameters. The launcher asserts that every rank used the same ``a_m``
at every step (ARL all-reduces its statistics) and ends with the same parameters, and
reports samples/s of 2 processes / 1 process (ideal: 2.0 on 2 free cores).

    python benchmarks/ddp_throughput.py
    python benchmarks/ddp_throughput.py --tiny          # smoke test
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from step_overhead import parse_shape  # noqa: E402


def worker(args: argparse.Namespace) -> None:
    """One rank (under torchrun): train, time, dump the per-step history of this rank."""
    import _common as C
    import torch
    from transformers import TrainerCallback

    from arl_hf.distributed import rank, world_size

    torch.set_num_threads(1)
    mlp_dims = (args.audio_shape[-1], args.visual_shape[-1]) if args.encoder == "mlp" else None
    model = C.build_model(args.encoder, "concat", args.num_labels, mlp_dims=mlp_dims, seed=0)
    shapes = {"audio": args.audio_shape, "visual": args.visual_shape}
    batches = C.synthetic_batches(16, args.batch_size, shapes, args.num_labels, seed=1)
    find_unused = {"auto": None, "true": True, "false": False}[args.find_unused]
    bench = C.make_bench("arl", model, batches, strategy="arl", warmup=args.warmup, steps=args.steps,
                         arl_overrides={"arl_all_reduce": not args.no_all_reduce,
                                        "ddp_find_unused_parameters": find_unused})
    trainer = bench.trainer
    handler = trainer.accelerator.ddp_handler
    mods = list(trainer.modalities)
    history: List[Dict[str, Any]] = []

    class Recorder(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            m = trainer._metrics["train"]
            history.append({"step": state.global_step,
                            "a": {x: float(m[f"a_{x}"][-1]) for x in mods},
                            "loss_fused": float(m["loss_fused"][-1])})

    trainer.add_callback(Recorder())
    bench.run_block()
    params = torch.cat([p.detach().double().flatten() for p in trainer.model.parameters()])
    out = {"rank": rank(), "world_size": world_size(), "step_s": bench.times[-1],
           "per_device_batch": args.batch_size, "history": history,
           "find_unused_parameters": None if handler is None else bool(handler.find_unused_parameters),
           "param_checksum": [float(params.sum()), float(params.abs().sum())]}
    with open(os.path.join(args.out_dir, f"rank{rank()}.json"), "w") as f:
        json.dump(out, f)
    from arl_hf.distributed import shutdown

    shutdown()


def launch(nproc: int, args: argparse.Namespace, out_dir: str) -> List[Dict[str, Any]]:
    os.makedirs(out_dir, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           os.path.abspath(__file__), "--worker", "--out-dir", out_dir,
           "--encoder", args.encoder, "--batch-size", str(args.batch_size),
           "--audio-shape", ",".join(map(str, args.audio_shape)),
           "--visual-shape", ",".join(map(str, args.visual_shape)),
           "--num-labels", str(args.num_labels), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    if args.no_all_reduce:
        cmd.append("--no-all-reduce")
    cmd += ["--find-unused", args.find_unused]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.launch_timeout)
    files = sorted(glob.glob(os.path.join(out_dir, "rank*.json")))
    if proc.returncode != 0 or len(files) != nproc:
        raise RuntimeError(f"torchrun with {nproc} process(es) failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    ranks = []
    for f in files:
        with open(f) as fh:
            ranks.append(json.load(fh))
    return sorted(ranks, key=lambda r: r["rank"])


def compare_ranks(ranks: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Per-step ``a_m`` and final parameters of every rank against rank 0.

    Returns ``{"coefficients_identical", "max_abs_a_diff", "params_identical",
    "local_losses_differ", "steps"}``.
    """
    ref = ranks[0]
    max_diff = 0.0
    losses_differ = False
    for r in ranks[1:]:
        if len(r["history"]) != len(ref["history"]):
            raise ValueError(f"rank {r['rank']}: {len(r['history'])} steps recorded, rank 0 has {len(ref['history'])}")
        for h, h0 in zip(r["history"], ref["history"]):
            for m, v in h["a"].items():
                max_diff = max(max_diff, abs(v - h0["a"][m]))
            losses_differ |= h["loss_fused"] != h0["loss_fused"]
    params_same = all(r["param_checksum"] == ref["param_checksum"] for r in ranks)
    return {"coefficients_identical": max_diff == 0.0, "max_abs_a_diff": max_diff, "params_identical": params_same,
            "local_losses_differ": losses_differ, "steps": len(ref["history"])}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--encoder", default="resnet18")
    p.add_argument("--batch-size", type=int, default=8, help="per-device batch")
    p.add_argument("--audio-shape", type=parse_shape, default=[1, 128, 96])
    p.add_argument("--visual-shape", type=parse_shape, default=[1, 3, 112, 112])
    p.add_argument("--num-labels", type=int, default=6)
    p.add_argument("--steps", type=int, default=4, help="timed steps")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--pairs", type=int, default=1, help="launches of 1 then 2 processes (ABBA order)")
    p.add_argument("--no-all-reduce", action="store_true", help="ARLConfig(arl_all_reduce=False): ranks must disagree")
    p.add_argument("--find-unused", choices=("auto", "true", "false"), default="auto",
                   help="DDP find_unused_parameters: 'auto' (ARLTrainer's choice: off for ARL), or forced via "
                        "ARLConfig(ddp_find_unused_parameters=...) "
                        "('true': what Trainer does for every PreTrainedModel)")
    p.add_argument("--launch-timeout", type=float, default=900.0)
    p.add_argument("--json", default=None)
    p.add_argument("--tiny", action="store_true", help="MLP encoders on 8-d inputs, batch 4")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out-dir", default=None, help=argparse.SUPPRESS)
    return p


def run(args: argparse.Namespace) -> Dict[str, Any]:
    import _common as C

    if args.tiny:
        args.encoder, args.batch_size = "mlp", 4
        args.audio_shape, args.visual_shape = [8], [8]
    root = tempfile.mkdtemp(prefix="arl_ddp_bench_")
    results: Dict[int, List[List[Dict[str, Any]]]] = {1: [], 2: []}
    for r in range(args.pairs):
        for n in ((1, 2) if r % 2 == 0 else (2, 1)):
            results[n].append(launch(n, args, os.path.join(root, f"run{r}_np{n}")))
    # samples/s of a launch: global batch / slowest rank's step time
    thr = {n: [n * args.batch_size / max(x["step_s"] for x in ranks) for ranks in runs] for n, runs in results.items()}
    ratios = [t2 / t1 for t1, t2 in zip(thr[1], thr[2])]
    checks = [compare_ranks(ranks) for ranks in results[2]]
    return {
        "benchmark": "ddp_throughput",
        "setting": {"encoder": args.encoder, "per_device_batch": args.batch_size, "audio_shape": args.audio_shape,
                    "visual_shape": args.visual_shape, "steps": args.steps, "pairs": args.pairs,
                    "arl_all_reduce": not args.no_all_reduce, "backend": "gloo (CPU), OMP_NUM_THREADS=1",
                    "find_unused": args.find_unused,
                    "find_unused_parameters": results[2][0][0].get("find_unused_parameters") if results[2] else None},
        "machine": C.machine_info(),
        "samples_per_s": thr,
        "ratios": ratios,
        "median_ratio": statistics.median(ratios),
        "rank_checks": checks,
        "coefficients_identical": all(c["coefficients_identical"] for c in checks),
        "params_identical": all(c["params_identical"] for c in checks),
    }


def report(r: Dict[str, Any]) -> str:
    s = r["setting"]
    t1, t2 = statistics.median(r["samples_per_s"][1]), statistics.median(r["samples_per_s"][2])
    c = r["rank_checks"][0]
    return "\n".join([
        f"ddp_throughput: ARL, {s['encoder']} encoders, per-device batch {s['per_device_batch']}, {s['backend']}, "
        f"arl_all_reduce={s['arl_all_reduce']}, DDP find_unused_parameters={s.get('find_unused_parameters')}",
        f"  samples/s: 1 process {t1:.2f} | 2 processes {t2:.2f}",
        f"  throughput 2 processes / 1 process: {r['median_ratio']:.2f} (ideal 2.0; pairs: "
        + " ".join(f"{x:.2f}" for x in r["ratios"]) + ")",
        f"  a_m identical on both ranks at all {c['steps']} steps: {r['coefficients_identical']} "
        f"(max |diff| {c['max_abs_a_diff']:.3g}); local losses differ across ranks: {c['local_losses_differ']}; "
        f"final parameters identical: {r['params_identical']}",
    ])


def main(argv: Optional[List[str]] = None) -> Optional[Dict[str, Any]]:
    args = build_parser().parse_args(argv)
    if args.worker:
        worker(args)
        return None
    import _common as C

    r = C.run_and_report(args, run, report)
    if not args.no_all_reduce:
        assert r["coefficients_identical"], "ARL coefficients differ across ranks"
        assert r["params_identical"], "parameters differ across ranks after DDP training"
    return r


if __name__ == "__main__":
    main()
