"""Profile the ARL training step against the plain step (torch.profiler) and audit it.

Issue 7, "Profile and fix". For the ``ARLTrainer`` and the plain ``Trainer`` on identical
models (the step_overhead setting by default) this prints

* the top operators of the ARL step by self CPU time (and CUDA time on a GPU);
* the *extra* operators of the ARL step: per-step call count and self time of every
  operator that ARL calls more often than the plain step (its whole added work);
* host-device synchronisation points per step: Tensor ``item``/``tolist``/``cpu``/
  ``numpy``/``__bool__``/``__float__``/``__int__`` calls seen by a ``TorchFunctionMode``
  during the step, plus (on CUDA) the count of ``torch.cuda.set_sync_debug_mode`` warnings;
  with ``validate_inputs`` on and off (its one sync per step is by design);
* whether the number of operators of the ARL step is independent of the batch size
  (no Python loops over samples).

    python benchmarks/profile_step.py
    python benchmarks/profile_step.py --tiny --steps 2     # smoke test
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections import Counter, defaultdict
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # no profiler start/stop lines on stderr

import _common as C
import torch
from step_overhead import parse_shape
from torch.overrides import TorchFunctionMode
from transformers import TrainerCallback

SYNC_METHODS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")


class SyncCounter(TorchFunctionMode):
    """Counts Tensor methods that copy a value to the host (a device sync on an accelerator)."""

    def __init__(self):
        super().__init__()
        self.calls: Counter = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in SYNC_METHODS:
            self.calls[name] += 1
        return func(*args, **(kwargs or {}))


class StepWindow(TrainerCallback):
    """Opens a context manager at ``on_step_begin`` and closes it at ``on_step_end``, after
    ``skip`` steps: one per step, or (``span=True``) one around all remaining steps."""

    def __init__(self, factory, skip: int, span: bool = False):
        self.factory, self.skip, self.span = factory, skip, span
        self.count, self.ctx, self.results = 0, None, []

    def on_step_begin(self, args, state, control, **kwargs):
        if self.count >= self.skip and self.ctx is None:
            self.ctx = self.factory()
            self.results.append(self.ctx.__enter__())

    def on_step_end(self, args, state, control, **kwargs):
        self.count += 1
        last = self.count == state.max_steps
        if self.ctx is not None and (not self.span or last):
            self.ctx.__exit__(None, None, None)
            self.ctx = None


class _CudaSyncWarnings:
    """Counts ``set_sync_debug_mode('warn')`` warnings inside the window (CUDA only)."""

    def __enter__(self):
        self.count = 0
        self._w = warnings.catch_warnings(record=True)
        self.records = self._w.__enter__()
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        return self

    def __exit__(self, *exc):
        torch.cuda.set_sync_debug_mode("default")
        self.count = sum("synchroniz" in str(r.message).lower() for r in self.records)
        self._w.__exit__(*exc)


def _window(bench: C.Bench, factory, steps: int, span: bool = False) -> List[Any]:
    win = StepWindow(factory, skip=bench.timer.warmup, span=span)
    bench.trainer.add_callback(win)
    try:
        bench.timer.reset()
        bench.trainer.args.max_steps = bench.timer.warmup + steps
        bench.trainer.train()
    finally:
        bench.trainer.remove_callback(win)
    return win.results


def op_table(bench: C.Bench, steps: int, cuda: bool):
    """``{op: (calls per step, self CPU us per step, self device us per step)}`` and the profiler."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    prof = torch.profiler.profile(activities=activities)
    results = _window(bench, lambda: prof, steps, span=True)
    assert len(results) == 1, "profiler window never opened"
    table: Dict[str, List[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for e in prof.key_averages():
        row = table[e.key]
        row[0] += e.count / steps
        row[1] += e.self_cpu_time_total / steps
        row[2] += getattr(e, "self_device_time_total", 0.0) / steps
    return dict(table), prof


def sync_counts(bench: C.Bench, steps: int) -> Dict[str, float]:
    counters = _window(bench, SyncCounter, steps)
    total: Counter = Counter()
    for c in counters:
        total.update(c.calls)
    return {k: v / steps for k, v in sorted(total.items())}


def cuda_sync_warnings(bench: C.Bench, steps: int) -> float:
    wins = _window(bench, _CudaSyncWarnings, steps)
    return sum(w.count for w in wins) / steps


def _small(shape: List[int]) -> List[int]:
    """The same layout with spatial sizes capped at 32 (operator counts do not depend on them)."""
    return list(shape[:-2]) + [min(s, 32) for s in shape[-2:]] if len(shape) >= 3 else list(shape)


def extra_op_counts_scaling(args, factory, shapes, cuda: bool) -> List[str]:
    """Operators whose *extra* ARL call count (ARL minus plain) changes from batch B to 2B.

    Empty means ARL's added work issues the same operators whatever the batch size: no
    Python loop over samples. Runs at spatial sizes capped at 32 to stay cheap.
    """
    small = {m: _small(s) for m, s in shapes.items()}
    extra_counts = []
    for b in (args.batch_size, 2 * args.batch_size):
        batches = C.synthetic_batches(1, b, small, args.num_labels, device=args.device)
        tables = {}
        for name, strategy in (("plain", None), ("arl", "arl")):
            bench = C.make_bench(name, factory(), batches, strategy=strategy, device=args.device,
                                 precision=args.precision, warmup=1, steps=1)
            bench.run_block()
            tables[name], _ = op_table(bench, 1, cuda)
        ops = set(tables["plain"]) | set(tables["arl"])
        extra_counts.append({op: round(tables["arl"].get(op, [0])[0] - tables["plain"].get(op, [0])[0], 3)
                             for op in ops})
    ops = set(extra_counts[0]) | set(extra_counts[1])
    return sorted(op for op in ops if extra_counts[0].get(op, 0) != extra_counts[1].get(op, 0))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--encoder", default="resnet18")
    p.add_argument("--fusion", default="concat")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--audio-shape", type=parse_shape, default=[1, 128, 96])
    p.add_argument("--visual-shape", type=parse_shape, default=[1, 3, 112, 112])
    p.add_argument("--num-labels", type=int, default=6)
    p.add_argument("--steps", type=int, default=2, help="profiled steps")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: stable on a shared CPU)")
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--json", default=None)
    p.add_argument("--tiny", action="store_true")
    return p


def run(args: argparse.Namespace) -> Dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tiny:
        args.encoder, args.batch_size = "mlp", 4
        args.audio_shape, args.visual_shape = [8], [8]
    mlp_dims = (args.audio_shape[-1], args.visual_shape[-1]) if args.encoder == "mlp" else None
    shapes = {"audio": args.audio_shape, "visual": args.visual_shape}
    cuda = args.device.startswith("cuda")

    def factory():
        return C.build_model(args.encoder, args.fusion, args.num_labels, mlp_dims=mlp_dims)

    m_plain, m_arl, m_arl_nv = C.twin_models(factory, 3)
    kw = dict(device=args.device, precision=args.precision, warmup=1, steps=args.steps)
    batches = C.synthetic_batches(2, args.batch_size, shapes, args.num_labels, device=args.device)
    plain = C.make_bench("plain", m_plain, batches, strategy=None, **kw)
    arl = C.make_bench("arl", m_arl, batches, strategy="arl", **kw)
    arl_nv = C.make_bench("arl_no_validate", m_arl_nv, batches, strategy="arl",
                          arl_overrides={"validate_inputs": False}, **kw)
    for b in (plain, arl):
        b.run_block()  # warm up (allocator, lazy init)

    t_plain, _ = op_table(plain, args.steps, cuda)
    t_arl, prof_arl = op_table(arl, args.steps, cuda)

    sort_key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    top_text = prof_arl.key_averages().table(sort_by=sort_key, row_limit=args.top)
    extra = []
    for op, (n, cpu_us, dev_us) in t_arl.items():
        n0, cpu0, dev0 = t_plain.get(op, (0.0, 0.0, 0.0))
        if n > n0 + 1e-9:
            extra.append({"op": op, "extra_calls_per_step": n - n0, "arl_self_cpu_us": cpu_us,
                          "plain_self_cpu_us": cpu0, "arl_self_device_us": dev_us, "plain_self_device_us": dev0})
    extra.sort(key=lambda r: -(r["arl_self_cpu_us"] - r["plain_self_cpu_us"]))
    # ARL's added work, estimated as the self-time difference of the operators it calls more
    # often (noisy on a shared CPU: each term is a difference of two measurements)
    added_us = sum(e["arl_self_cpu_us"] - e["plain_self_cpu_us"] for e in extra)
    scaling_diff = extra_op_counts_scaling(args, factory, shapes, cuda)

    syncs = {b.name: sync_counts(b, 1) for b in (plain, arl, arl_nv)}
    cuda_warn = None
    if cuda:
        cuda_warn = {b.name: cuda_sync_warnings(b, 2) for b in (plain, arl, arl_nv)}
    total_cpu = {name: sum(v[1] for v in t.values()) for name, t in (("plain", t_plain), ("arl", t_arl))}
    return {
        "benchmark": "profile_step",
        "setting": {"encoder": args.encoder, "fusion": args.fusion, "batch_size": args.batch_size,
                    "audio_shape": args.audio_shape, "visual_shape": args.visual_shape,
                    "device": args.device, "precision": args.precision, "steps": args.steps},
        "machine": C.machine_info(),
        "top_ops_table": top_text,
        "extra_ops": extra,
        "self_cpu_ms_per_step": {k: v / 1e3 for k, v in total_cpu.items()},
        "added_ops_self_cpu_ms_per_step": added_us / 1e3,
        "host_syncs_per_step": syncs,
        "cuda_sync_warnings_per_step": cuda_warn,
        "op_counts_depend_on_batch_size": scaling_diff,
    }


def report(r: Dict[str, Any], top_extra: int = 25) -> str:
    s = r["setting"]
    lines = [
        f"profile_step: {s['encoder']} encoders, {s['fusion']} fusion, batch {s['batch_size']}, "
        f"{s['precision']} on {s['device']}, {s['steps']} profiled steps",
        "top ops of the ARL step (self time):",
        r["top_ops_table"],
        f"total self CPU time per step: plain {r['self_cpu_ms_per_step']['plain']:.1f} ms, "
        f"ARL {r['self_cpu_ms_per_step']['arl']:.1f} ms",
        f"self CPU time of the operators ARL calls more often, ARL minus plain: "
        f"{r['added_ops_self_cpu_ms_per_step']:.2f} ms per step "
        f"({100 * r['added_ops_self_cpu_ms_per_step'] / r['self_cpu_ms_per_step']['plain']:.2f}% of the plain step)",
        "operators ARL calls more often than the plain step (per step):",
        f"  {'op':<40} {'+calls':>7} {'ARL self CPU us':>16} {'plain self CPU us':>18}",
    ]
    for e in r["extra_ops"][:top_extra]:
        lines.append(f"  {e['op']:<40} {e['extra_calls_per_step']:>7.1f} "
                     f"{e['arl_self_cpu_us']:>16.0f} {e['plain_self_cpu_us']:>18.0f}")
    if len(r["extra_ops"]) > top_extra:
        lines.append(f"  ... {len(r['extra_ops']) - top_extra} more")
    sy = r["host_syncs_per_step"]
    fmt = lambda d: (", ".join(f"{k} {v:g}" for k, v in d.items()) or "none")  # noqa: E731
    lines.append(f"host-sync tensor calls per step: plain: {fmt(sy['plain'])} | ARL: {fmt(sy['arl'])} | "
                 f"ARL validate_inputs=False: {fmt(sy['arl_no_validate'])}")
    if r["cuda_sync_warnings_per_step"] is not None:
        lines.append(f"CUDA sync-debug warnings per step: {r['cuda_sync_warnings_per_step']}")
    dep = r["op_counts_depend_on_batch_size"]
    lines.append("operators ARL adds, counted at batch B and 2B: " + ("the same (no per-sample Python loops)" if not dep
                                                                      else f"DIFFER for {dep}"))
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    return C.run_and_report(build_parser().parse_args(argv), run, report)


if __name__ == "__main__":
    main()
