"""Shared harness of the benchmarks: the model, synthetic batches, the two trainers and
interleaved step timing.

Every benchmark compares :class:`arl_hf.ARLTrainer` (strategy ``"arl"``) with a plain
``transformers.Trainer`` on an identical copy of the same :class:`arl_hf.MultimodalModel`
(the plain Trainer calls ``model(**inputs, labels=...)``: fused loss only, no unimodal
logits). Steps are timed inside ``Trainer.train`` with a callback (``on_step_begin`` of
the first timed step to ``on_step_end`` of the last, synchronising the GPU only at the
block boundaries), so the whole training step is measured: forward, strategy, backward,
optimizer step, ``zero_grad``. Batches are pre-built (on the training device) and served
by a one-item-per-batch dataset, so data loading is not part of the step.

Runs alternate ``ARL, plain, plain, ARL, ...`` (ABBA order cancels drift) and the reported
ratio is the median of the per-pair ratios of block means.

Scripts import this module as ``_common`` (their own folder is on ``sys.path``) and it
puts the repository root on ``sys.path`` so that they run without ``pip install``.
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
from transformers import PrinterCallback, ProgressCallback, Trainer, TrainerCallback, TrainingArguments  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from arl_hf import ARLConfig, ARLTrainer, MultimodalConfig, MultimodalModel  # noqa: E402

hf_logging.set_verbosity_error()


# ------------------------------------------------------------------------- model, batches
def build_model(
    encoder: str = "resnet18",
    fusion: str = "concat",
    num_labels: int = 6,
    audio_chans: int = 1,
    seed: int = 0,
    fusion_kwargs: Optional[Dict[str, Any]] = None,
    mlp_dims: Optional[Tuple[int, int]] = None,
) -> MultimodalModel:
    """Audio + visual :class:`MultimodalModel` (``encoder="mlp"`` with ``mlp_dims=(in_a, in_v)`` for tiny runs)."""
    torch.manual_seed(seed)
    if encoder == "mlp":
        da, dv = mlp_dims or (32, 32)
        mods = {
            "audio": {"encoder": "mlp", "input_dim": da, "hidden_dims": [32]},
            "visual": {"encoder": "mlp", "input_dim": dv, "hidden_dims": [32]},
        }
    else:
        mods = {
            "audio": {"encoder": f"timm:{encoder}", "in_chans": audio_chans},
            "visual": {"encoder": f"timm:{encoder}", "in_chans": 3},
        }
    cfg = MultimodalConfig(modalities=mods, num_labels=num_labels, fusion=fusion, fusion_kwargs=fusion_kwargs or {})
    return MultimodalModel(cfg)


def synthetic_batches(
    num: int,
    batch_size: int,
    shapes: Dict[str, Sequence[int]],
    num_labels: int,
    seed: int = 0,
    device: str = "cpu",
    channels_last: bool = False,
) -> List[Dict[str, torch.Tensor]]:
    """``num`` distinct batches ``{modality: (B, *shape), "labels": (B,)}`` (standard normal inputs)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(num):
        b = {}
        for m, shape in shapes.items():
            x = torch.randn((batch_size, *shape), generator=g)
            x = x.to(device)
            if channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            b[m] = x
        b["labels"] = torch.randint(0, num_labels, (batch_size,), generator=g).to(device)
        out.append(b)
    return out


class BatchDataset(torch.utils.data.Dataset):
    """A dataset whose items are whole, pre-built batches (use with ``per_device_train_batch_size=1``)."""

    def __init__(self, batches: List[Dict[str, torch.Tensor]], length: int = 100_000):
        self.batches = batches
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> Dict[str, torch.Tensor]:
        return self.batches[i % len(self.batches)]


def take_first(items: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """Collator of :class:`BatchDataset`: the one item is already a batch."""
    return items[0]


# ------------------------------------------------------------------------------ trainers
def training_kwargs(
    output_dir: str,
    device: str = "cpu",
    precision: str = "fp32",
    compile_model: bool = False,
    seed: int = 0,
) -> Dict[str, Any]:
    """``TrainingArguments`` keywords shared by the ARL and the plain trainer."""
    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"precision: expected 'fp32', 'bf16' or 'fp16', got {precision!r}")
    kw = dict(
        output_dir=output_dir,
        per_device_train_batch_size=1,  # one BatchDataset item = one batch
        learning_rate=1e-3,
        lr_scheduler_type="constant",
        max_steps=1,
        report_to="none",
        disable_tqdm=True,
        logging_strategy="no",
        save_strategy="no",
        eval_strategy="no",
        remove_unused_columns=False,
        dataloader_pin_memory=False,  # batches are already on the device
        dataloader_num_workers=0,
        # Trainer's per-step isnan/isinf check on the loss is a host sync: off for both
        logging_nan_inf_filter=False,
        use_cpu=device == "cpu",
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        torch_compile=compile_model,
        seed=seed,
    )
    return kw


def sgd(momentum: float = 0.9, weight_decay: float = 1e-4):
    """``optimizer_cls_and_kwargs`` for SGD (the paper's optimiser)."""
    return (torch.optim.SGD, {"lr": 1e-3, "momentum": momentum, "weight_decay": weight_decay})


class StepTimer(TrainerCallback):
    """Times a block of optimizer steps inside ``Trainer.train``.

    Skips ``warmup`` steps, then measures from ``on_step_begin`` of the first timed step to
    ``on_step_end`` of the last (``steps`` of them), synchronising CUDA only at those two
    points so host and device overlap as in a real run.
    """

    def __init__(self, warmup: int, steps: int, sync: Callable[[], None]):
        self.warmup, self.steps, self.sync = warmup, steps, sync
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self.t0: Optional[float] = None
        self.c0: Optional[float] = None
        self.foreign_bytes = 0
        self.elapsed: Optional[float] = None
        self.cpu_elapsed: Optional[float] = None

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        self.foreign_bytes = 0
        if torch.cuda.is_available() and args.device.type == "cuda":
            torch.cuda.synchronize()
            # memory held by everything else on the device (the other trainers of an
            # interleaved comparison, the shared batches): subtracted from the peak
            try:
                self.foreign_bytes = max(0, torch.cuda.memory_allocated() - _own_bytes(model, optimizer))
            except Exception:  # accounting must never break a timing run
                self.foreign_bytes = 0
            torch.cuda.reset_peak_memory_stats()

    def on_step_begin(self, args, state, control, **kwargs):
        if self.count == self.warmup:
            self.sync()
            self.t0 = time.perf_counter()
            self.c0 = time.process_time()

    def on_step_end(self, args, state, control, **kwargs):
        self.count += 1
        if self.count == self.warmup + self.steps:
            self.sync()
            self.elapsed = time.perf_counter() - self.t0
            self.cpu_elapsed = time.process_time() - self.c0

    @property
    def step_time(self) -> float:
        """Wall-clock seconds per step of the last block."""
        if self.elapsed is None:
            raise RuntimeError("StepTimer: the block did not run to its last step")
        return self.elapsed / self.steps

    @property
    def step_cpu_time(self) -> float:
        """Process CPU seconds per step of the last block (all threads of this process)."""
        if self.cpu_elapsed is None:
            raise RuntimeError("StepTimer: the block did not run to its last step")
        return self.cpu_elapsed / self.steps


def _own_bytes(model: Optional[torch.nn.Module], optimizer: Any) -> int:
    """Device bytes of a model's parameters and gradients and of the optimizer's state."""
    seen, total = set(), 0

    def add(t: Any) -> None:
        nonlocal total
        if isinstance(t, torch.Tensor) and t.is_cuda and t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.untyped_storage().nbytes()

    if model is not None:
        for p in model.parameters():
            add(p)
            add(p.grad)
        for b in model.buffers():
            add(b)
    for st in (getattr(optimizer, "state", None) or {}).values():
        for v in st.values():
            add(v)
    return total


def _sync_fn(device: str) -> Callable[[], None]:
    if device.startswith("cuda"):
        return torch.cuda.synchronize
    return lambda: None


class Bench:
    """One trainer (ARL or plain) ready to run timed blocks of ``warmup + steps`` steps."""

    def __init__(self, name: str, trainer: Trainer, timer: StepTimer):
        self.name, self.trainer, self.timer = name, trainer, timer
        self.times: List[float] = []
        self.cpu_times: List[float] = []
        #: per block (CUDA only): peak memory allocated by this trainer's model, optimizer state
        #: and steps (everything already on the device for other reasons is subtracted)
        self.peak_bytes: List[int] = []

    def run_block(self) -> float:
        self.timer.reset()
        self.trainer.args.max_steps = self.timer.warmup + self.timer.steps
        self.trainer.train()
        t = self.timer.step_time
        self.times.append(t)
        self.cpu_times.append(self.timer.step_cpu_time)
        if torch.cuda.is_available() and self.trainer.args.device.type == "cuda":
            self.peak_bytes.append(int(torch.cuda.max_memory_allocated()) - self.timer.foreign_bytes)
        return t


def make_bench(
    name: str,
    model: torch.nn.Module,
    batches: List[Dict[str, torch.Tensor]],
    *,
    strategy: Optional[str],
    device: str = "cpu",
    precision: str = "fp32",
    compile_model: bool = False,
    warmup: int = 1,
    steps: int = 3,
    output_dir: Optional[str] = None,
    arl_overrides: Optional[Dict[str, Any]] = None,
    seed: int = 0,
) -> Bench:
    """A :class:`Bench` around ``ARLTrainer`` (``strategy`` given) or plain ``Trainer`` (``None``)."""
    out = output_dir or tempfile.mkdtemp(prefix=f"arl_bench_{name}_")
    kw = training_kwargs(out, device=device, precision=precision, compile_model=compile_model, seed=seed)
    timer = StepTimer(warmup, steps, _sync_fn(device))
    common = dict(
        model=model,
        train_dataset=BatchDataset(batches),
        data_collator=take_first,
        callbacks=[timer],
        optimizer_cls_and_kwargs=sgd(),
    )
    if strategy is None:
        trainer: Trainer = Trainer(args=TrainingArguments(**kw), **common)
    else:
        args = ARLConfig(strategy=strategy, **kw, **(arl_overrides or {}))
        trainer = ARLTrainer(args=args, **common)
    for cb in (PrinterCallback, ProgressCallback):  # no console output from train()
        trainer.remove_callback(cb)
    return Bench(name, trainer, timer)


def to_channels_last(model: torch.nn.Module) -> torch.nn.Module:
    """Convolution weights in channels_last (NHWC) memory format."""
    return model.to(memory_format=torch.channels_last)


def twin_models(factory: Callable[[], torch.nn.Module], n: int = 2) -> List[torch.nn.Module]:
    """``n`` identical copies (same weights) of ``factory()``."""
    first = factory()
    return [first] + [copy.deepcopy(first) for _ in range(n - 1)]


def interleave(benches: Sequence[Bench], pairs: int, reference: str, clock: str = "wall") -> Dict[str, Any]:
    """Run ``pairs`` rounds, ABBA order, and ratio every bench to ``reference`` per round.

    ``clock="wall"`` ranks by wall-clock step time (the GPU measure); ``"cpu"`` by the
    process's CPU time per step, which other processes competing for a shared CPU disturb
    far less (use one torch thread so that no time is spent spinning). Both are returned.

    Returns ``{"clock", "step_s": {name: [..]}, "ratios": {name: [..]}, "median_ratio":
    {name: r}, "median_step_s": {name: t}, "wall": {...}, "cpu": {...}, "peak_bytes"}``
    where the top-level figures use ``clock``.
    """
    if clock not in ("wall", "cpu"):
        raise ValueError(f"clock: expected 'wall' or 'cpu', got {clock!r}")
    names = [b.name for b in benches]
    if reference not in names:
        raise ValueError(f"reference: {reference!r} is not one of {names}")
    for b in benches:  # one untimed block each: compile, allocator, caches
        b.run_block()
        b.times.clear()
        b.cpu_times.clear()
        b.peak_bytes.clear()
    for r in range(pairs):
        order = list(benches) if r % 2 == 0 else list(reversed(benches))
        for b in order:
            b.run_block()
    ref = next(b for b in benches if b.name == reference)

    def figures(attr: str) -> Dict[str, Any]:
        ratios = {b.name: [t / t_ref for t, t_ref in zip(getattr(b, attr), getattr(ref, attr))]
                  for b in benches if b is not ref}
        return {
            "step_s": {b.name: list(getattr(b, attr)) for b in benches},
            "median_step_s": {b.name: statistics.median(getattr(b, attr)) for b in benches},
            "ratios": ratios,
            "median_ratio": {k: statistics.median(v) for k, v in ratios.items()},
        }

    wall, cpu = figures("times"), figures("cpu_times")
    return {"clock": clock, **(wall if clock == "wall" else cpu), "wall": wall, "cpu": cpu,
            "peak_bytes": {b.name: max(b.peak_bytes) for b in benches if b.peak_bytes}}


# -------------------------------------------------------------------------------- output
def machine_info() -> Dict[str, Any]:
    """Where the numbers come from."""
    import platform

    info: Dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def write_json(path: Optional[str], payload: Dict[str, Any]) -> None:
    """Write ``payload`` as JSON to ``path`` (nothing when ``path`` is falsy)."""
    if not path:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2, default=float)


def run_and_report(
    args: Any, run: Callable[[Any], Dict[str, Any]], report: Callable[[Dict[str, Any]], str]
) -> Dict[str, Any]:
    """What every benchmark's ``main`` does once its arguments are parsed: run, print the
    report, write ``--json`` (when given); returns the result."""
    result = run(args)
    print(report(result))
    write_json(getattr(args, "json", None), result)
    return result


def verdict(value: float, target: float, higher_is_better: bool = False) -> str:
    ok = value >= target if higher_is_better else value <= target
    op = ">=" if higher_is_better else "<="
    return f"{'MET' if ok else 'NOT MET'} (target {op} {target})"
