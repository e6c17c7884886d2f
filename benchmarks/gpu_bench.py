"""GPU benchmark at the paper's real sizes: ARL versus plain step time and peak memory,
bf16 / fp16 AMP, channels_last, torch.compile, and the projected CREMA-D training time.

Issue 7, target 6. Run through ``benchmarks/gpu_check.sh`` on the device image (no
``datasets``/``librosa``/``soundfile``/``scikit-learn`` there; the repository is on
``PYTHONPATH``, not installed). Synthetic inputs: batch 64, one 224x224 frame, 257x188
spectrograms (CREMA-D, ``ogm`` preset) and 257x299 (``scipy`` preset, 3 s); ResNet-18
encoders, concat fusion, SGD. Each configuration interleaves plain ``Trainer``, ``ARLTrainer``
and ``ARLTrainer(validate_inputs=False)`` (see ``_common``). The whole run keeps to a time
budget (``--budget-s``) and skips the remaining configurations when it runs out; results
are written after every configuration to ``$OUT/gpu_bench.json`` and ``$OUT/gpu_bench.md``
when ``$OUT`` is set (or ``--out-dir``).

Projection: the paper's CREMA-D run is 100 epochs of 6,698 training clips at batch 64,
i.e. 100 x ceil(6698 / 64) = 10,500 steps; projected time = steps x ARL step time
(training compute only: no evaluation, no data loading, which ``data_pipeline.py`` covers).

    bash benchmarks/gpu_check.sh                           # on the GPU machine
    python benchmarks/gpu_bench.py --device cpu --tiny     # CPU smoke test
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import traceback
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C
import torch

CREMAD_TRAIN_CLIPS = 6698
CREMAD_EPOCHS = 100
GOAL_MINUTES = 10.0


def projected_minutes(step_s: float, batch_size: int, clips: int = CREMAD_TRAIN_CLIPS,
                      epochs: int = CREMAD_EPOCHS) -> float:
    """Minutes of ``epochs`` epochs over ``clips`` samples at ``step_s`` per step (last batch kept)."""
    return epochs * math.ceil(clips / batch_size) * step_s / 60.0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--audio-shapes", default=None,
                   help="comma-separated FxT spectrogram sizes (default 257x188,257x299; --tiny 33x24,33x36)")
    p.add_argument("--precisions", default="bf16,fp16")
    p.add_argument("--encoder", default="resnet18")
    p.add_argument("--num-labels", type=int, default=6)
    p.add_argument("--pairs", type=int, default=2)
    p.add_argument("--steps", type=int, default=8, help="timed steps per block")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--budget-s", type=float, default=215.0, help="stop starting new configurations after this")
    p.add_argument("--compile-reserve-s", type=float, default=120.0,
                   help="only start the torch.compile configuration with this much budget left")
    p.add_argument("--out-dir", default=os.environ.get("OUT") or None)
    p.add_argument("--tiny", action="store_true", help="ResNet-18 on 32x32 frames, 33x24 spectrograms, batch 2")
    return p


class Run:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.t0 = time.perf_counter()
        self.results: List[Dict[str, Any]] = []
        self.notes: List[str] = []
        self.sync: Optional[Dict[str, float]] = None

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def config(self, precision: str, audio: List[int], channels_last: bool, compile_model: bool,
               with_no_validate: bool = True) -> Optional[Dict[str, Any]]:
        a = self.args
        name = f"{precision} audio {audio[-2]}x{audio[-1]} {'channels_last' if channels_last else 'NCHW'}" + (
            " compile" if compile_model else "")
        if self.elapsed() > a.budget_s:
            self.notes.append(f"skipped (time budget): {name}")
            return None
        shapes = {"audio": audio, "visual": [3, a.image_size, a.image_size]}

        def factory():
            m = C.build_model(a.encoder, "concat", a.num_labels)
            return C.to_channels_last(m) if channels_last else m

        t = time.perf_counter()
        try:
            n = 3 if with_no_validate else 2
            models = C.twin_models(factory, n)
            batches = C.synthetic_batches(2, a.batch_size, shapes, a.num_labels, device=a.device,
                                          channels_last=channels_last)
            kw = dict(device=a.device, precision=precision, compile_model=compile_model,
                      warmup=a.warmup, steps=a.steps)
            benches = [C.make_bench("plain", models[0], batches, strategy=None, **kw),
                       C.make_bench("arl", models[1], batches, strategy="arl", **kw)]
            if with_no_validate:
                benches.append(C.make_bench("arl_no_validate", models[2], batches, strategy="arl",
                                            arl_overrides={"validate_inputs": False}, **kw))
            res = C.interleave(benches, a.pairs, reference="plain")
            if self.sync is None and a.device.startswith("cuda") and not compile_model:
                from profile_step import cuda_sync_warnings

                self.sync = {b.name: cuda_sync_warnings(b, 2) for b in benches}
        except Exception as err:  # report and go on: one failing option must not lose the others
            self.notes.append(f"failed: {name}: {type(err).__name__}: {err}")
            traceback.print_exc()
            return None
        finally:
            if a.device.startswith("cuda"):
                torch.cuda.empty_cache()
        arl_step = res["median_step_s"]["arl"]
        best_arl = min(arl_step, res["median_step_s"].get("arl_no_validate", arl_step))
        row = {
            "name": name, "precision": precision, "audio_shape": audio, "channels_last": channels_last,
            "compile": compile_model, "seconds": time.perf_counter() - t,
            "median_step_s": res["median_step_s"], "median_ratio": res["median_ratio"], "ratios": res["ratios"],
            "peak_gib": {k: v / 2**30 for k, v in res.get("peak_bytes", {}).items()},
            "arl_samples_per_s": a.batch_size / arl_step,
            "projected_cremad_minutes": projected_minutes(arl_step, a.batch_size),
            "projected_cremad_minutes_no_validate": projected_minutes(best_arl, a.batch_size),
        }
        self.results.append(row)
        print(format_row(row), flush=True)
        self.write()
        return row

    def summary(self) -> Dict[str, Any]:
        a = self.args
        main = [r for r in self.results if r["audio_shape"][-1] == self.audio_shapes[0][-1]]
        best = min(main, key=lambda r: r["median_step_s"]["arl"]) if main else None
        return {
            "benchmark": "gpu_bench",
            "setting": {"batch_size": a.batch_size, "image_size": a.image_size, "encoder": a.encoder,
                        "audio_shapes": self.audio_shapes, "pairs": a.pairs, "steps": a.steps, "warmup": a.warmup,
                        "optimizer": "SGD(lr=1e-3, momentum=0.9, weight_decay=1e-4)",
                        "projection": f"{CREMAD_EPOCHS} epochs x ceil({CREMAD_TRAIN_CLIPS}/{a.batch_size}) steps"},
            "machine": C.machine_info(),
            "elapsed_s": self.elapsed(),
            "configs": self.results,
            "cuda_sync_warnings_per_step": self.sync,
            "best": best,
            "goal_minutes": GOAL_MINUTES,
            "notes": self.notes,
        }

    def write(self) -> None:
        if not self.args.out_dir:
            return
        s = self.summary()
        C.write_json(os.path.join(self.args.out_dir, "gpu_bench.json"), s)
        with open(os.path.join(self.args.out_dir, "gpu_bench.md"), "w") as f:
            f.write(markdown(s))


def format_row(r: Dict[str, Any]) -> str:
    st, pk = r["median_step_s"], r["peak_gib"]
    mem = (f" | peak GiB plain {pk['plain']:.2f} ARL {pk['arl']:.2f} ({pk['arl'] / pk['plain']:.3f}x)" if pk else "")
    nv = (f", ARL validate_inputs=False {st['arl_no_validate'] * 1e3:.1f} ms "
          f"({r['median_ratio']['arl_no_validate']:.3f}x)"
          if "arl_no_validate" in st else "")
    return (f"[{r['name']}] step: plain {st['plain'] * 1e3:.1f} ms, ARL {st['arl'] * 1e3:.1f} ms "
            f"({r['median_ratio']['arl']:.3f}x){nv}{mem} | ARL {r['arl_samples_per_s']:.0f} samples/s | "
            f"CREMA-D 100 epochs: {r['projected_cremad_minutes']:.1f} min")


def markdown(s: Dict[str, Any]) -> str:
    m = s["machine"]
    lines = [
        "# GPU benchmark (benchmarks/gpu_bench.py)", "",
        f"Machine: {m.get('gpu', 'no GPU')}, torch {m['torch']}, Python {m['python']}, {m['cpu_count']} CPUs. "
        f"Batch {s['setting']['batch_size']}, {s['setting']['encoder']} encoders, frame "
        f"{s['setting']['image_size']}x{s['setting']['image_size']}, SGD. Elapsed {s['elapsed_s']:.0f} s.", "",
        "| configuration | plain ms | ARL ms | ARL/plain | ARL no-validate ms | ARL/plain (no validate) | "
        "peak GiB plain | peak GiB ARL | ARL samples/s | CREMA-D 100 epochs (min) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in s["configs"]:
        st, rt, pk = r["median_step_s"], r["median_ratio"], r["peak_gib"]
        lines.append(
            f"| {r['name']} | {st['plain'] * 1e3:.1f} | {st['arl'] * 1e3:.1f} | {rt['arl']:.3f} | "
            + (f"{st['arl_no_validate'] * 1e3:.1f} | {rt['arl_no_validate']:.3f} | "
               if "arl_no_validate" in st else "- | - | ")
            + (f"{pk['plain']:.2f} | {pk['arl']:.2f} | " if pk else "- | - | ")
            + f"{r['arl_samples_per_s']:.0f} | {r['projected_cremad_minutes']:.1f} |")
    if s["cuda_sync_warnings_per_step"] is not None:
        lines += ["", "CUDA sync-debug warnings per step: "
                  + ", ".join(f"{k} {v:g}" for k, v in s["cuda_sync_warnings_per_step"].items())]
    b = s["best"]
    if b:
        ok = b["projected_cremad_minutes"] < s["goal_minutes"]
        lines += ["", f"Best ARL configuration at the CREMA-D size: **{b['name']}**, "
                  f"{b['median_step_s']['arl'] * 1e3:.1f} ms/step, {b['arl_samples_per_s']:.0f} samples/s; "
                  f"projected 100-epoch CREMA-D training: "
                  f"**{b['projected_cremad_minutes']:.1f} min** (goal < {s['goal_minutes']:.0f} min: "
                  f"{'met' if ok else 'not met'})."]
    if s["notes"]:
        lines += ["", "Notes:"] + [f"- {n}" for n in s["notes"]]
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    args = build_parser().parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("gpu_bench: --device cuda but torch.cuda.is_available() is False")
    if args.tiny:
        args.batch_size, args.image_size, args.steps, args.warmup, args.pairs = 2, 32, 1, 0, 1
    if args.audio_shapes is None:
        args.audio_shapes = "33x24,33x36" if args.tiny else "257x188,257x299"
    if not args.device.startswith("cuda"):
        torch.set_num_threads(1)  # CPU smoke runs: no thread spinning on a shared machine
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    run = Run(args)
    run.audio_shapes = [[1] + [int(v) for v in s.split("x")] for s in args.audio_shapes.split(",")]
    precisions = [p for p in args.precisions.split(",") if p]

    try:
        _run_all(run, args, precisions)
    except KeyboardInterrupt:  # gpu_check.sh's hard time limit: keep what was measured
        run.notes.append(f"interrupted at {run.elapsed():.0f} s by the time limit; later configurations not run")
    s = run.summary()
    run.write()
    print(markdown(s))
    return s


def _run_all(run: "Run", args: argparse.Namespace, precisions: List[str]) -> None:
    main_audio = run.audio_shapes[0]
    rows = {}
    for prec in precisions:
        rows[(prec, False)] = run.config(prec, main_audio, channels_last=False, compile_model=False)
    if not args.no_channels_last:
        for prec in precisions:
            rows[(prec, True)] = run.config(prec, main_audio, channels_last=True, compile_model=False)
    done = {k: v for k, v in rows.items() if v}
    best_key = min(done, key=lambda k: done[k]["median_step_s"]["arl"]) if done else (precisions[0], False)
    prec, cl = best_key
    for audio in run.audio_shapes[1:]:
        run.config(prec, audio, channels_last=cl, compile_model=False, with_no_validate=False)
    if not args.no_compile:
        if run.elapsed() > args.budget_s - args.compile_reserve_s:
            run.notes.append(f"skipped torch.compile: {run.elapsed():.0f} s elapsed, budget {args.budget_s:.0f} s")
        else:
            run.config(prec, main_audio, channels_last=cl, compile_model=True, with_no_validate=False)


if __name__ == "__main__":
    main()
