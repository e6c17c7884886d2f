"""One run of the comparison protocol: a method (or a unimodal bound) at one seed.

A run trains through :func:`arl_hf.runner.train_and_evaluate` (the same Trainer, recipe and
checkpoint selection on the **validation** split for every method), evaluates the selected
checkpoint once on each split, fits the linear probes of every modality's frozen encoder
(:mod:`arl_hf.suppression`), writes ``record.json`` and deletes its checkpoints. A run whose
``record.json`` exists is read back instead of trained, so an interrupted table resumes.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

BOUND_PREFIX = "bound:"
RECORD = "record.json"


@dataclass
class RunSpec:
    """What to train: ``method`` is a strategy name or ``"bound:<modality>"``; ``overrides``
    are run options (flag name -> value) applied after the base options."""

    method: str
    seed: int
    overrides: Dict[str, Any] = field(default_factory=dict)

    @property
    def bound_modality(self) -> Optional[str]:
        return self.method[len(BOUND_PREFIX):] if self.method.startswith(BOUND_PREFIX) else None

    @property
    def name(self) -> str:
        return f"{self.method.replace(':', '-')}-seed{self.seed}"


def option_flags(options: Mapping[str, Any]) -> List[str]:
    """``{"learning_rate": 0.1, "fixed_multipliers": [5, 1]}`` -> ``["--learning_rate", "0.1", ...]``."""
    argv: List[str] = []
    for key, value in options.items():
        argv.append(f"--{key}")
        argv.extend(str(v) for v in value) if isinstance(value, (list, tuple)) else argv.append(str(value))
    return argv


def run_argv(base_argv: Sequence[str], spec: RunSpec, output_dir: str) -> List[str]:
    """The full command line of one run (base options, then the run's own)."""
    strategy = "none" if spec.bound_modality else spec.method
    own = {**spec.overrides, "strategy": strategy, "seed": spec.seed, "output_dir": output_dir}
    return list(base_argv) + option_flags(own) + ["--overwrite_output_dir", "true", "--plots", "false",
                                                   "--disable_tqdm", "true", "--report_to", "none"]


class ModalityCollator:
    """Wraps a collator and keeps one modality (and the labels) of its batches."""

    def __init__(self, collator: Callable, modality: str):
        self.collator, self.modality = collator, modality

    def __call__(self, features: List[Mapping[str, Any]]) -> Dict[str, Any]:
        batch = self.collator(features)
        if self.modality not in batch:
            raise ValueError(f"method: bound:{self.modality} names no modality of the batch (keys {sorted(batch)})")
        return {k: v for k, v in batch.items() if k in (self.modality, "labels")}


def modality_collator(collator: Callable, modality: str) -> Callable:
    """The collator of a unimodal bound: ``collator`` restricted to ``modality`` (and the labels).
    The Trainer drops the other modalities' columns of a one-modality model before collating, so
    a :class:`~arl_hf.data.MultimodalCollator` is rebuilt for that modality alone."""
    from ..data import MultimodalCollator

    if isinstance(collator, MultimodalCollator):
        if collator.modalities is not None and modality not in collator.modalities:
            raise ValueError(f"method: bound:{modality} names no modality of the dataset {collator.modalities}")
        return MultimodalCollator({modality: {"kind": collator.kinds.get(modality)}}, label_key=collator.label_key)
    return ModalityCollator(collator, modality)


def best_epoch(output_dir: str) -> Optional[float]:
    """Epoch of the checkpoint selected on validation (from ``trainer_state.json``)."""
    path = os.path.join(output_dir, "trainer_state.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        state = json.load(f)
    step = state.get("best_global_step")
    for entry in state.get("log_history", []):
        if step is not None and entry.get("step") == step and "eval_accuracy" in entry:
            return float(entry["epoch"])
    return None


def accuracy_curve(output_dir: str) -> List[float]:
    """Validation accuracy after every evaluation, in order (from ``trainer_state.json``)."""
    path = os.path.join(output_dir, "trainer_state.json")
    with open(path, encoding="utf-8") as f:
        state = json.load(f)
    return [float(e["eval_accuracy"]) for e in state.get("log_history", []) if "eval_accuracy" in e]


def run_one(base_argv: Sequence[str], spec: RunSpec, dataset: Any, collator: Callable, run_dir: str,
            probe_splits: Sequence[str] = ("validation", "test"), keep_checkpoints: bool = False) -> Dict[str, Any]:
    """Train and evaluate one run (or read its ``record.json``); returns the record.

    The record holds ``metrics`` per split (fractions, as the Trainer logs them), ``probe``
    per split (``{modality: accuracy}``; none for a bound), ``best_epoch``, ``val_curve``,
    ``wall_time_s`` and the ``argv`` of the run.
    """
    from ..modeling import MultimodalModel
    from ..runner import parse_args, train_and_evaluate
    from ..suppression import probe_accuracies

    path = os.path.join(run_dir, RECORD)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    argv = run_argv(base_argv, spec, run_dir)
    training_args, model_args, data_args, run_args = parse_args(argv)
    run_collator = modality_collator(collator, spec.bound_modality) if spec.bound_modality else collator
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    metrics = train_and_evaluate(training_args, model_args, data_args, run_args, dataset=dataset,
                                 data_collator=run_collator, argv=argv)
    wall, cpu = time.perf_counter() - start_wall, time.process_time() - start_cpu
    probes: Dict[str, Dict[str, float]] = {}
    if not spec.bound_modality and probe_splits:
        model = MultimodalModel.from_pretrained(run_dir)
        modalities = list(model.config.modalities)
        probes = probe_accuracies(model, dataset["train"], {s: dataset[s] for s in probe_splits if s in dataset},
                                  collator, modalities, seed=spec.seed)
    record = {"method": spec.method, "seed": spec.seed, "overrides": dict(spec.overrides), "metrics": metrics,
              "probe": probes, "best_epoch": best_epoch(run_dir), "val_curve": accuracy_curve(run_dir),
              "num_train_epochs": float(training_args.num_train_epochs), "wall_time_s": wall, "cpu_time_s": cpu,
              "argv": argv}
    if not keep_checkpoints:
        for ckpt in glob.glob(os.path.join(run_dir, "checkpoint-*")):
            shutil.rmtree(ckpt, ignore_errors=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
    return record
