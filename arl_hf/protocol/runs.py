"""One run of the comparison protocol: a method (or a unimodal bound) at one seed.

A run trains through :func:`arl_hf.scripts.train.train_and_evaluate` (the same Trainer, recipe and
checkpoint selection on the **validation** split for every method), evaluates the selected
checkpoint once on each split, fits the linear probes of every modality's frozen encoder
(:mod:`arl_hf.suppression`), writes ``record.json`` (atomically) and deletes its checkpoints.

A run whose ``record.json`` was made by the same configuration is read back instead of trained,
so an interrupted table resumes. "Same" is decided by a fingerprint (:func:`run_config`): the
data (``Dataset._fingerprint`` of every split), the preset, every resolved option of the run
and the package's source code; the record stores the fingerprint and that configuration. A
record of another configuration is retrained (the differences are logged), as is an
unreadable one (named in a warning).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from ..log import get_logger
from ..safety import (
    atomic_write_json,
    code_fingerprint,
    config_diff,
    data_fingerprint,
    fingerprint,
    remove_path,
    safe_name,
)

logger = get_logger(__name__)

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
        """The run's folder name, ``<method>-seed<seed>`` (``bound-<modality>-seed<seed>``);
        ``ValueError`` if a part is not a safe file name (:func:`arl_hf.safety.safe_name`)."""
        return safe_name(f"{method_name(self.method)}-seed{int(self.seed)}", "run name")


def method_name(method: str) -> str:
    """``method`` as a file name: ``"bound:audio"`` -> ``"bound-audio"``; ``ValueError`` naming
    the method (or the modality of a bound) if it cannot be one."""
    if method.startswith(BOUND_PREFIX):
        modality = safe_name(method[len(BOUND_PREFIX):], f"method {method!r}: modality name")
        return f"bound-{modality}"
    return safe_name(method, "method")


def option_flags(options: Mapping[str, Any]) -> List[str]:
    """``{"learning_rate": 0.1, "fixed_multipliers": [5, 1]}`` -> ``["--learning_rate", "0.1", ...]``."""
    def text(v: Any) -> str:
        return str(v).lower() if isinstance(v, bool) else str(v)

    argv: List[str] = []
    for key, value in options.items():
        argv.append(f"--{key}")
        argv.extend(text(v) for v in value) if isinstance(value, (list, tuple)) else argv.append(text(value))
    return argv


#: the options every protocol run sets, whatever the base options say
RUN_FIXED = {"overwrite_output_dir": True, "plots": False, "disable_tqdm": True, "report_to": "none"}


def run_values(spec: RunSpec, output_dir: str) -> Dict[str, Any]:
    """The run's own option values, which win over the base options: its tuned values, its
    strategy (``none`` for a bound), seed and output folder, and :data:`RUN_FIXED`."""
    strategy = "none" if spec.bound_modality else spec.method
    return {**spec.overrides, "strategy": strategy, "seed": spec.seed, "output_dir": output_dir, **RUN_FIXED}


def run_argv(base_argv: Sequence[str], spec: RunSpec, output_dir: str) -> List[str]:
    """The command line equivalent to one run (base options, then the run's own), as recorded
    and shown in its model card; the run itself gets its values as values (:func:`run_values`)."""
    return list(base_argv) + option_flags(run_values(spec, output_dir))


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


def epochs_run(output_dir: str) -> Optional[float]:
    """Epochs trained, early stop included (``epoch`` of ``trainer_state.json``)."""
    path = os.path.join(output_dir, "trainer_state.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        epoch = json.load(f).get("epoch")
    return None if epoch is None else round(float(epoch), 6)


def accuracy_curve(output_dir: str) -> List[float]:
    """Validation accuracy after every evaluation, in order (from ``trainer_state.json``)."""
    path = os.path.join(output_dir, "trainer_state.json")
    with open(path, encoding="utf-8") as f:
        state = json.load(f)
    return [float(e["eval_accuracy"]) for e in state.get("log_history", []) if "eval_accuracy" in e]


_NOT_CONFIG = {"training": ("output_dir",), "run": ("config", "overwrite_output_dir", "resume")}


def run_config(parsed: Sequence[Any], dataset: Any, **extra: Any) -> Dict[str, Any]:
    """The fully resolved configuration of a run, what its fingerprint hashes: ``extra`` (method,
    seed...), the preset, every option of the four parsed groups (``parse_args`` output; not the
    output folder), the data (``Dataset._fingerprint`` of every split) and the code
    (:func:`arl_hf.safety.code_fingerprint`)."""
    training_args, model_args, data_args, run_args = parsed
    groups = {"training": training_args.to_dict(), "model": dataclasses.asdict(model_args),
              "data": dataclasses.asdict(data_args), "run": dataclasses.asdict(run_args)}
    options = {g: {k: v for k, v in d.items() if k not in _NOT_CONFIG.get(g, ())} for g, d in groups.items()}
    config = {**extra, "preset": run_args.preset, "options": options, "data": data_fingerprint(dataset),
              "code": code_fingerprint()}
    return json.loads(json.dumps(config, sort_keys=True, default=repr))


def read_reusable(path: str, config: Mapping[str, Any], what: str = "record") -> Optional[Dict[str, Any]]:
    """The JSON object at ``path`` if it was made by ``config`` (same :func:`fingerprint`), else
    ``None``: absent, unreadable (a warning names it) or of another configuration (a warning
    lists the differences). Either way the caller redoes the work."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    except (OSError, ValueError) as err:
        logger.warning("%s %s is unreadable (%s: %s); redoing it", what, path, type(err).__name__, err)
        return None
    if data.get("fingerprint") != fingerprint(config):
        diff = config_diff(data.get("config"), config) if isinstance(data.get("config"), dict) else \
            ["no configuration recorded"]
        logger.warning("%s %s was made with another configuration (%s); redoing it", what, path, "; ".join(diff))
        return None
    return data


def run_one(base_argv: Sequence[str], spec: RunSpec, dataset: Any, collator: Callable, run_dir: str,
            probe_splits: Sequence[str] = ("validation", "test"), keep_checkpoints: bool = False) -> Dict[str, Any]:
    """Train and evaluate one run (or read back its ``record.json`` of the same configuration);
    returns the record.

    The record holds ``metrics`` per split (fractions, as the Trainer logs them), ``probe``
    per split (``{modality: accuracy}``; none for a bound), ``best_epoch``, ``epochs_run``, ``val_curve``,
    ``wall_time_s``, the ``argv`` of the run, and its ``config`` and ``fingerprint``
    (:func:`run_config`).
    """
    from ..modeling import MultimodalModel
    from ..run_dir import CHECKPOINT_NAME
    from ..scripts.train import parse_args, train_and_evaluate
    from ..suppression import probe_accuracies

    path = os.path.join(run_dir, RECORD)
    argv = run_argv(base_argv, spec, run_dir)
    parsed = parse_args(base_argv, overrides=run_values(spec, run_dir))
    config = run_config(parsed, dataset, method=spec.method, seed=spec.seed, overrides=dict(spec.overrides),
                        probe_splits=list(probe_splits))
    record = read_reusable(path, config)
    if record is not None and record.get("method") == spec.method and record.get("seed") == spec.seed \
            and isinstance(record.get("metrics"), dict):
        return record
    training_args, model_args, data_args, run_args = parsed
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
              "probe": probes, "best_epoch": best_epoch(run_dir), "epochs_run": epochs_run(run_dir),
              "val_curve": accuracy_curve(run_dir),
              "num_train_epochs": float(training_args.num_train_epochs), "wall_time_s": wall, "cpu_time_s": cpu,
              "argv": argv, "fingerprint": fingerprint(config), "config": config}
    if not keep_checkpoints:
        for name in sorted(os.listdir(run_dir)):
            if CHECKPOINT_NAME.fullmatch(name):
                remove_path(os.path.join(run_dir, name), run_dir, "run folder")
    atomic_write_json(path, record)
    return record
