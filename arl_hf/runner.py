"""The main job behind ``examples/run_arl.py`` and ``arl-hf train|evaluate``.

Configure (``HfArgumentParser`` over :class:`~arl_hf.ARLConfig`, :class:`ModelArguments`,
:class:`DataArguments`, :class:`RunArguments`; presets from :mod:`arl_hf.presets`; JSON/YAML
config files), build the model from the dataset's modalities, train with
:class:`~arl_hf.ARLTrainer`, select the checkpoint on the **validation** split only, evaluate
the **test** split once with the selected checkpoint, and write the outputs (checkpoint,
``README.md`` model card, plots, ``results.json``). :func:`train_and_evaluate` is the
library entry point (``examples/compare.py`` calls it once per strategy).

Precedence of option values: dataclass defaults < :data:`SCRIPT_DEFAULTS` < ``--preset``
< config file < flags given on the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
import os
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from transformers import HfArgumentParser
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint
from .log import get_logger

from . import presets as presets_module
from .strategies.plugins import attach_strategy_options, extra_option_dataclasses, load_strategy_modules_from_argv
from .trainer import ARLConfig, ARLTrainer

logger = get_logger(__name__)

__all__ = [
    "ModelArguments",
    "DataArguments",
    "RunArguments",
    "EvalArguments",
    "SCRIPT_DEFAULTS",
    "build_parser",
    "parse_args",
    "load_data",
    "build_model",
    "train_and_evaluate",
    "evaluate_checkpoint",
    "format_results",
    "write_run_outputs",
]

RESULTS_NAME = "results.json"
PLOTS_DIR = "plots"
SPLITS = ("train", "validation", "test")


# ------------------------------------------------------------------------------- arguments
@dataclass
class ModelArguments:
    """How the multimodal model is built (one encoder per modality of the dataset + fusion)."""

    model_name_or_path: Optional[str] = field(
        default=None,
        metadata={"help": "Start from a saved checkpoint (directory or Hub id, loaded with AutoModel) instead of "
                  "building a new model from the options below."},
    )
    encoder: str = field(
        default="timm:resnet18",
        metadata={"help": "Encoder of every image-like modality (spectrograms, frames, flow, images): "
                  "'timm:<model name>' (in_chans from the dataset) or 'mlp'."},
    )
    modality_encoders: Optional[str] = field(
        default=None,
        metadata={"help": "Per-modality encoder overrides, e.g. 'audio=timm:resnet10t,visual=timm:resnet18'."},
    )
    vector_encoder: str = field(
        default="mlp",
        metadata={"help": "Encoder of vector modalities (B, D), e.g. time-averaged feature sequences."},
    )
    sequence_encoder: str = field(
        default="auto",
        metadata={"help": "Encoder of sequence modalities (B, L, D): a registered sequence encoder name, or 'auto' "
                  "(the first registered of 'transformer', 'lstm', 'gru', 'sequence')."},
    )
    mlp_hidden_dims: List[int] = field(
        default_factory=lambda: [256, 256],
        metadata={"help": "Hidden sizes of 'mlp' encoders."},
    )
    fusion: str = field(default="concat", metadata={"help": "Fusion module (arl_hf.modeling.fusion registry)."})
    init: str = field(
        default="timm",
        metadata={"help": "Weight init: 'timm' (each library's own) or 'authors' (the ARL code's: xavier Linear, "
                  "kaiming fan-out Conv, BN 1/0).", "choices": ["timm", "authors"]},
    )
    pretrained_weights: Optional[str] = field(
        default=None,
        metadata={"help": "Local timm weight files per modality, e.g. 'visual=/path/resnet18.safetensors' "
                  "(loaded offline after construction; in_chans adapted)."},
    )


@dataclass
class DataArguments:
    """Which dataset and preprocessing (``arl_hf.data.load``)."""

    dataset: str = field(
        default="avdigits",
        metadata={"help": "Dataset: a name known to arl_hf.data (e.g. avdigits, cremad, ave, kinetics_sounds, mosi, "
                  "ucf101), a local folder (DatasetDict.save_to_disk, arl_hf.data.export_prepared, or data files "
                  "datasets.load_dataset reads) or a Hub dataset repo id 'owner/name' (e.g. written by "
                  "arl_hf.data.push_prepared); train/validation/test splits, 'labels' + one column per modality."},
    )
    dataset_revision: Optional[str] = field(
        default=None, metadata={"help": "Branch, tag or commit of a Hub dataset repo given as --dataset."}
    )
    dataset_config: Optional[str] = field(
        default=None,
        metadata={"help": "Named builder configuration of the dataset (avdigits: 'default', 'bench', 'main'); "
                  "passed to arl_hf.data.load(name, config=...)."},
    )
    data_dir: Optional[str] = field(default=None, metadata={"help": "Directory of the raw dataset files."})
    cache_dir: Optional[str] = field(default=None, metadata={"help": "Arrow cache directory of prepared datasets."})
    preprocessing: Optional[str] = field(
        default=None,
        metadata={"help": "Audio preprocessing preset (e.g. 'ogm', 'scipy', 'fbank'); default: the dataset's own."},
    )
    audio_duration: Optional[float] = field(
        default=None, metadata={"help": "Seconds of audio per clip (tiles/cuts); default: the preset's."}
    )
    num_frames: Optional[int] = field(default=None, metadata={"help": "Video frames per clip; default: the dataset's."})
    image_size: Optional[int] = field(default=None, metadata={"help": "Frame side in pixels; default: the dataset's."})
    max_train_samples: Optional[int] = field(default=None, metadata={"help": "Use only the first N training examples."})
    max_eval_samples: Optional[int] = field(
        default=None, metadata={"help": "Use only the first N validation examples."}
    )
    max_test_samples: Optional[int] = field(default=None, metadata={"help": "Use only the first N test examples."})


@dataclass
class RunArguments:
    """How the run itself behaves (presets, config files, output directory policy, extras)."""

    preset: Optional[str] = field(
        default=None,
        metadata={"help": "Start from a named preset (see the list above); every other flag overrides it. "
                  "Default: 'avdigits' when the dataset is avdigits, else none ('none' disables it)."},
    )
    config: Optional[str] = field(
        default=None,
        metadata={"help": "JSON or YAML file of options (keys = option names); flags on the command line win."},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Replace the run in an existing output_dir (its checkpoints, weights, card and plots)."},
    )
    resume: bool = field(
        default=False,
        metadata={"help": "Continue the run in output_dir from its last checkpoint (model, optimizer, scheduler, "
                  "RNG and strategy state)."},
    )
    lr_decay_epochs: Optional[List[int]] = field(
        default=None,
        metadata={"help": "Multiply the learning rate by lr_decay_factor at each of these epochs (MultiStepLR, "
                  "as the authors' code: 70). Replaces lr_scheduler_type when given."},
    )
    lr_decay_factor: float = field(default=0.1, metadata={"help": "Factor of lr_decay_epochs."})
    decay_all_parameters: bool = field(
        default=False,
        metadata={"help": "Apply weight decay to every parameter, biases and norm layers included, as "
                  "torch.optim.SGD(weight_decay=...) in the authors' code (Trainer's default exempts biases "
                  "and LayerNorm)."},
    )
    plots: bool = field(default=True, metadata={"help": "Write the training plots into output_dir/plots."})
    model_card: bool = field(default=True, metadata={"help": "Write the README.md model card into output_dir."})
    license: Optional[str] = field(
        default="mit",
        metadata={"help": "License of the model card (a Hub license id: mit, apache-2.0, cc-by-4.0, other...; "
                  "'none' omits it). The dataset's license may also bind the weights."},
    )
    tags: Optional[List[str]] = field(default=None, metadata={"help": "Extra tags of the model card."})


@dataclass
class EvalArguments:
    """Evaluate a saved checkpoint on a dataset split."""

    model_name_or_path: str = field(metadata={"help": "Checkpoint directory or Hub id (AutoModel after import arl_hf)."})
    split: str = field(default="test", metadata={"help": "Split to evaluate: train, validation or test."})
    dataset: Optional[str] = field(
        default=None,
        metadata={"help": "Dataset name, local folder or Hub dataset repo id (as --dataset of train); default: the "
                  "one recorded in the checkpoint's config.preprocessing."},
    )
    dataset_config: Optional[str] = field(
        default=None,
        metadata={"help": "Named builder configuration of the dataset (avdigits: 'default', 'bench', 'main'); "
                  "passed to arl_hf.data.load(name, config=...)."},
    )
    data_dir: Optional[str] = field(default=None, metadata={"help": "Directory of the raw dataset files."})
    cache_dir: Optional[str] = field(default=None, metadata={"help": "Arrow cache directory of prepared datasets."})
    revision: Optional[str] = field(
        default=None, metadata={"help": "Branch, tag or commit of a Hub model repo given as --model_name_or_path."}
    )
    dataset_revision: Optional[str] = field(
        default=None, metadata={"help": "Branch, tag or commit of a Hub dataset repo given as --dataset; default: "
                                "the commit recorded in the checkpoint."}
    )
    batch_size: int = field(default=64, metadata={"help": "Evaluation batch size."})
    max_samples: Optional[int] = field(default=None, metadata={"help": "Evaluate only the first N examples."})
    use_cpu: bool = field(default=False, metadata={"help": "Evaluate on CPU even when an accelerator is available."})
    output_json: Optional[str] = field(default=None, metadata={"help": "Also write the metrics to this JSON file."})
    log_level: str = field(
        default="passive",
        metadata={"help": "Log level of transformers, datasets and arl_hf ('passive' keeps transformers' default, "
                  "warning).", "choices": ["detail", "debug", "info", "warning", "error", "critical", "passive"]},
    )


#: Defaults of the script that differ from the dataclasses' (shown by ``--help``).
SCRIPT_DEFAULTS: Dict[str, Any] = {
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "load_best_model_at_end": True,
    "metric_for_best_model": "accuracy",
    "greater_is_better": True,
    "save_total_limit": 2,
    "logging_strategy": "steps",
    "logging_steps": 10,
    "report_to": "none",
    "seed": 0,
}

#: What ``python examples/run_arl.py`` with no arguments trains.
DEFAULT_DATASET = "avdigits"
DEFAULT_PRESET = "avdigits_main"

_UNSET = object()


class _ArgumentParser(HfArgumentParser):
    """``HfArgumentParser`` whose errors suggest the closest known option, and whose ``--help``
    marks the defaults a preset sets (:func:`apply_help_defaults`)."""

    help_preset: Optional[str] = None
    help_preset_keys: frozenset = frozenset()

    def _get_formatter(self):
        formatter = super()._get_formatter()
        formatter.help_preset = self.help_preset
        formatter.help_preset_keys = self.help_preset_keys
        return formatter

    def error(self, message: str):  # noqa: D401 - argparse API
        if "unrecognized arguments" in message:
            known = [s for a in self._actions for s in a.option_strings if s.startswith("--")]
            hints = []
            for token in message.split(":", 1)[-1].split():
                if token.startswith("--"):
                    close = difflib.get_close_matches(token.split("=")[0], known, n=1)
                    if close:
                        hints.append(f"{token} -> did you mean {close[0]}?")
            if hints:
                message += " (" + "; ".join(hints) + ")"
        super().error(message)


def build_parser(prog: Optional[str] = None) -> HfArgumentParser:
    """The train parser: ``ARLConfig`` + model + data + run options, script defaults applied."""
    description = (
        "Train a multimodal classifier with ARL (or another strategy) on the HuggingFace stack, select the "
        "checkpoint on the validation split, evaluate the test split once, and write checkpoint, model card "
        "and plots into --output_dir.\n\nPresets (--preset NAME; flags override them one by one):\n"
        + presets_module.presets_help()
        + "\n\nPrecedence: defaults < --preset < --config file < command-line flags."
    )
    parser = _ArgumentParser(
        (ARLConfig, ModelArguments, DataArguments, RunArguments, *extra_option_dataclasses()),
        prog=prog,
        description=description,
        formatter_class=_HelpFormatter,
        allow_abbrev=False,
    )
    parser.set_defaults(**SCRIPT_DEFAULTS)
    _group_help(parser)
    # the full list (every TrainingArguments flag) is in the sections below
    parser.usage = ("%(prog)s [CONFIG.json|CONFIG.yaml] [--preset NAME] [--dataset DATASET] [--strategy NAME] "
                    "[--output_dir DIR] [options]")
    return parser


#: the sections of ``--help``, in order: the run's own options first, transformers' last
HELP_GROUPS = (
    ("run", "run options (presets, config file, output directory, model card, plots)"),
    ("data", "data options (dataset, preprocessing, subsets)"),
    ("model", "model options (encoders, fusion, initialisation)"),
    ("strategy", "strategy options (ARL and the comparison methods; arl_hf.ARLConfig)"),
    ("training", "training options (transformers.TrainingArguments)"),
)


#: TrainingArguments options that say what a run is and where it goes: shown with the run's own
RUN_TRAINING_OPTIONS = ("output_dir", "seed", "report_to", "log_level", "push_to_hub", "hub_model_id")


def help_group_of(dest: str) -> str:
    """The ``--help`` section of an option: ``run``, ``data``, ``model``, ``strategy`` or ``training``."""
    from transformers import TrainingArguments

    for name, dtype in (("run", RunArguments), ("data", DataArguments), ("model", ModelArguments)):
        if dest in {f.name for f in dataclasses.fields(dtype)}:
            return name
    if dest in RUN_TRAINING_OPTIONS:
        return "run"
    if dest in {f.name for f in dataclasses.fields(TrainingArguments)}:
        return "training"
    return "strategy"


def _group_help(parser: argparse.ArgumentParser) -> None:
    """Move every option into its :data:`HELP_GROUPS` section (parsing is unchanged)."""
    groups = {name: parser.add_argument_group(title) for name, title in HELP_GROUPS}
    for group in groups.values():
        parser._action_groups.remove(group)
    for action in list(parser._optionals._group_actions):
        if action.dest in ("help", argparse.SUPPRESS):
            continue
        parser._optionals._group_actions.remove(action)
        groups[help_group_of(action.dest)]._group_actions.append(action)
    index = parser._action_groups.index(parser._optionals) + 1
    parser._action_groups[index:index] = [groups[name] for name, _ in HELP_GROUPS]


def apply_help_defaults(parser: "_ArgumentParser", argv: Sequence[str]) -> Optional[str]:
    """Show in ``--help`` the defaults this command line resolves to: the preset (given, or the
    default one for the default dataset) and a config file override the dataclass defaults;
    options a preset sets are marked. Returns the preset name."""
    merged = resolve_options([a for a in argv if a not in ("-h", "--help")], parser)
    name = merged.get("preset")
    preset = presets_module.get_preset(name) if name else {}
    keys = {k for k, v in preset.items() if merged.get(k) == v}  # not those a config file or flag overrode
    parser.set_defaults(**{k: v for k, v in merged.items() if k != "output_dir" or v})
    parser.help_preset, parser.help_preset_keys = name, frozenset(keys)
    return name


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    help_preset: Optional[str] = None
    help_preset_keys: frozenset = frozenset()

    def _get_help_string(self, action):
        text = super()._get_help_string(action)
        if self.help_preset and action.dest in self.help_preset_keys and "%(default)" in text:
            text = text.replace("(default: %(default)s)", f"(default: %(default)s, from preset {self.help_preset})")
        return text


def _explicit_values(parser: HfArgumentParser, argv: Sequence[str]) -> Dict[str, Any]:
    """Values of the options actually given in ``argv`` (argparse errors exit with status 2)."""
    dests = {a.dest for a in parser._actions if a.dest not in ("help", argparse.SUPPRESS)}
    saved = {d: parser.get_default(d) for d in dests}
    parser.set_defaults(**{d: _UNSET for d in dests})
    try:
        namespace = parser.parse_args(list(argv))
    finally:
        parser.set_defaults(**saved)
    return {k: v for k, v in vars(namespace).items() if v is not _UNSET}


def _field_names(parser: HfArgumentParser) -> List[str]:
    return [f.name for dtype in parser.dataclass_types for f in dataclasses.fields(dtype) if f.init]


def read_config_file(path: str, known: Sequence[str]) -> Dict[str, Any]:
    """Options from a JSON or YAML file; unknown keys are a ``ValueError`` naming them."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config: file {path!r} does not exist")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.endswith((".yaml", ".yml")):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ValueError(f"config: {path!r} is not valid YAML: {e}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"config: {path!r} is not valid JSON ({e}); use .json, .yaml or .yml") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"config: {path!r} must hold a mapping of option -> value, got {type(data).__name__}")
    unknown = [k for k in data if k not in known]
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(str(k), list(known), n=1)
            hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(f"config: {path!r} has unknown option(s) {', '.join(hints)}")
    return data


def resolve_options(argv: Sequence[str], parser: Optional[HfArgumentParser] = None) -> Dict[str, Any]:
    """The merged option values for ``argv`` (defaults < preset < config file < flags)."""
    parser = parser or build_parser()
    argv = list(argv)
    # a lone positional .json/.yaml path is a config file, as in the transformers examples
    if len(argv) >= 1 and not argv[0].startswith("-") and argv[0].endswith((".json", ".yaml", ".yml")):
        argv = ["--config", argv[0]] + argv[1:]
    explicit = _explicit_values(parser, argv)
    known = _field_names(parser)
    from_file = read_config_file(explicit["config"], known) if explicit.get("config") else {}
    preset_name = explicit.get("preset", from_file.get("preset"))
    if preset_name is None and explicit.get("dataset", from_file.get("dataset", DEFAULT_DATASET)) == DEFAULT_DATASET:
        preset_name = DEFAULT_PRESET
    if preset_name in ("", "none"):
        preset_name = None
    from_preset = presets_module.get_preset(preset_name) if preset_name else {}
    merged: Dict[str, Any] = {}
    merged.update({k: v for k, v in SCRIPT_DEFAULTS.items()})
    merged.update(from_preset)
    merged.update(from_file)
    merged.update(explicit)
    merged["preset"] = preset_name
    if not merged.get("output_dir"):
        name = preset_name or os.path.basename(os.path.normpath(str(merged.get("dataset", "run"))))
        merged["output_dir"] = os.path.join("outputs", f"{name}-{merged.get('strategy', 'arl')}")
    return merged


def parse_args(
    argv: Optional[Sequence[str]] = None,
) -> Tuple[ARLConfig, ModelArguments, DataArguments, RunArguments]:
    """Parse ``argv`` (default ``sys.argv[1:]``) into the four argument dataclasses.

    Raises ``ValueError`` (unknown preset, bad config file, invalid value) and exits with
    status 2 on an unknown command-line option.
    """
    argv = sys.argv[1:] if argv is None else argv
    load_strategy_modules_from_argv(argv)  # their options become flags of the parser
    parser = build_parser()
    merged = resolve_options(argv, parser)
    training_args, model_args, data_args, run_args, *extra = parser.parse_dict(merged)
    attach_strategy_options(training_args, extra)
    return training_args, model_args, data_args, run_args


# ------------------------------------------------------------------------------- logging
def setup_logging(log_level: Any, process_index: int = 0, summary: Optional[str] = None) -> int:
    """Set the log levels of this process, as the transformers example scripts do.

    ``log_level`` is a :class:`~transformers.TrainingArguments` (its
    ``get_process_log_level()``: ``--log_level`` on the main process, ``--log_level_replica``
    on the others) or a level name / number. The level applies to ``transformers`` (and with
    it every ``arl_hf`` logger, which live in its tree, see :mod:`arl_hf.log`) and to
    ``datasets``; returns the level.
    """
    import datasets
    from transformers.utils import logging as hf_logging

    if hasattr(log_level, "get_process_log_level"):
        level = int(log_level.get_process_log_level())
    elif isinstance(log_level, str):
        from transformers.training_args import trainer_log_levels

        if log_level not in trainer_log_levels:
            raise ValueError(f"log_level: expected one of {sorted(trainer_log_levels)}, got {log_level!r}")
        level = trainer_log_levels[log_level]
        if level < 0:  # "passive": keep the current verbosity
            level = hf_logging.get_verbosity()
    else:
        level = int(log_level)
    datasets.utils.logging.set_verbosity(level)
    hf_logging.set_verbosity(level)
    hf_logging.enable_default_handler()
    hf_logging.enable_explicit_format()
    if summary:
        logger.info("process %d: %s", process_index, summary)
    return level


# ------------------------------------------------------------------------------- data
def _parse_mapping(text: Optional[str], field_name: str) -> Dict[str, str]:
    if not text:
        return {}
    out = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise ValueError(f"{field_name}: expected 'modality=value[,modality=value]', got {text!r}")
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _find_collator(module: Any, dataset: Any) -> Optional[Callable]:
    """The data module's collator for ``dataset`` (``MultimodalCollator.from_dataset``), else ``None``."""
    cls = getattr(module, "MultimodalCollator", None)
    if cls is not None and hasattr(cls, "from_dataset"):
        return cls.from_dataset(dataset)
    return None


def load_data(data_args: DataArguments, seed: int = 0) -> Tuple[Any, Callable, Dict[str, Any]]:
    """Load the dataset: ``(DatasetDict, collator, preprocessing record)``.

    ``data_args.dataset`` is one of:

    * a name known to :func:`arl_hf.data.load` (built from the raw files, or embedded);
    * a local folder: one written by ``DatasetDict.save_to_disk``, by
      :func:`arl_hf.data.export_prepared`, or any folder ``datasets.load_dataset`` reads
      (Parquet, CSV, JSON, Arrow files...);
    * a Hub dataset repo id ``owner/name`` (``snapshot_download``, so ``HF_HUB_OFFLINE=1``
      works from the cache; ``dataset_revision`` picks a branch, tag or commit), e.g. one
      written by :func:`arl_hf.data.push_prepared`.

    Datasets prepared by ``arl_hf.data`` get their transforms and collator back; others are
    collated with ``transformers.default_data_collator`` after ``set_format("torch")``. The
    record stores what ``--dataset`` takes to find the data again: the registry name, the
    folder's absolute path, or the repo id and the commit it resolved to.
    """
    name = data_args.dataset
    record: Dict[str, Any] = {"dataset": name}
    for key in ("dataset_config", "preprocessing", "audio_duration", "num_frames", "image_size"):
        value = getattr(data_args, key)
        if value is not None:
            record[key] = value
    local = os.path.expanduser(str(name))
    if os.path.isdir(local):
        record["dataset"] = os.path.abspath(local)
        return _load_folder(record["dataset"], data_args, record, seed)
    from .data.sharing import is_hub_id

    registry = _registry_names()
    if name not in registry and is_hub_id(name):
        from .data.sharing import resolve_dataset_repo

        folder, revision = resolve_dataset_repo(name, data_args.dataset_revision)
        if revision:
            record["dataset_revision"] = revision
        logger.info("dataset %s: Hub dataset repo at revision %s (%s)", name, revision, folder)
        return _load_folder(folder, data_args, record, seed)
    from transformers import default_data_collator

    try:
        from . import data as data_module
    except ImportError as e:  # pragma: no cover - depends on the data package being present
        raise ValueError(f"dataset: arl_hf.data is not available ({e}); pass a save_to_disk directory") from None
    load = getattr(data_module, "load", None)
    if load is None:
        raise ValueError(f"dataset: arl_hf.data has no load(); pass a save_to_disk directory instead of {name!r}")
    available = list(getattr(data_module, "available_datasets", lambda: [])())
    if available and name not in available:
        close = difflib.get_close_matches(name, available, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"dataset: unknown dataset {name!r}{hint}; expected one of {available}, a local folder (save_to_disk, "
            "export_prepared or data files) or a Hub dataset repo id 'owner/name'"
        )
    import inspect

    params = inspect.signature(load).parameters
    accepts_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    wanted = {
        "data_dir": data_args.data_dir,
        "config": data_args.dataset_config,
        "cache_dir": data_args.cache_dir,
        "preprocessing": data_args.preprocessing,
        "audio_duration": data_args.audio_duration,
        "num_frames": data_args.num_frames,
        "image_size": data_args.image_size,
        "seed": seed,
    }
    kwargs = {}
    for k, v in wanted.items():
        if v is None:
            continue
        if k in params or accepts_kwargs:
            kwargs[k] = v
        elif k != "seed":
            raise ValueError(f"{k}: not supported by arl_hf.data.load for dataset {name!r}")
    ds = load(name, **kwargs)
    collator = _find_collator(data_module, ds) or default_data_collator
    info = _dataset_record(ds)
    if info:
        record["data"] = info
    return ds, collator, record


def _registry_names() -> List[str]:
    try:
        from .data import available_datasets
    except ImportError:  # pragma: no cover - depends on the data package being present
        return []
    return list(available_datasets())


def _load_folder(folder: str, data_args: DataArguments, record: Dict[str, Any], seed: int
                 ) -> Tuple[Any, Callable, Dict[str, Any]]:
    """A local folder (or a downloaded Hub repo): save_to_disk, arl_hf export, or data files."""
    import datasets
    from transformers import default_data_collator

    from .data.sharing import read_record

    shown = record["dataset"]
    if os.path.isfile(os.path.join(folder, "dataset_dict.json")):
        ds = datasets.load_from_disk(folder)
        if not isinstance(ds, datasets.DatasetDict):
            raise ValueError(f"dataset: {shown!r} holds a single Dataset; expected a DatasetDict with splits")
    elif read_record(folder)[0] is not None:
        from .data import MultimodalCollator, load_prepared

        ds = load_prepared(folder, cache_dir=data_args.cache_dir, num_frames=data_args.num_frames,
                           image_size=data_args.image_size, seed=seed)
        record["data"] = _dataset_record(ds)
        return ds, MultimodalCollator.from_dataset(ds), record
    elif os.path.isfile(os.path.join(folder, "dataset_info.json")) or os.path.isfile(os.path.join(folder, "state.json")):
        raise ValueError(f"dataset: {shown!r} holds a single Dataset saved with save_to_disk; expected a DatasetDict "
                         "with splits")
    else:
        try:
            ds = datasets.load_dataset(folder, name=data_args.dataset_config, cache_dir=data_args.cache_dir)
        except (FileNotFoundError, ValueError) as e:
            raise ValueError(
                f"dataset: {shown!r} is neither a DatasetDict saved with save_to_disk, nor a folder written by "
                f"arl_hf.data.export_prepared / push_prepared, nor data files datasets.load_dataset reads ({e})"
            ) from None
        if not isinstance(ds, datasets.DatasetDict):
            raise ValueError(f"dataset: {shown!r} loads as a single Dataset; expected splits")
    info = _dataset_record(ds)
    if info and str(info.get("format", "")).startswith("arl_hf.data"):
        # a dataset prepared by arl_hf.data and saved to disk: same transforms and collator
        from .data import MultimodalCollator, attach_transforms

        record["data"] = info
        ds = attach_transforms(ds, num_frames=data_args.num_frames, image_size=data_args.image_size, seed=seed)
        return ds, MultimodalCollator.from_dataset(ds), record
    ds.set_format("torch")
    return ds, default_data_collator, record


def dataset_label(record: Optional[Mapping[str, Any]], default: str = "dataset") -> str:
    """A short name of a recorded dataset: the prepared dataset's own name (``cremad``...),
    else the repo id, else the folder's name."""
    record = record or {}
    data = record.get("data") if isinstance(record.get("data"), Mapping) else {}
    name = str(record.get("dataset") or default)
    if data.get("dataset"):
        return str(data["dataset"])
    if os.path.isabs(name):
        return os.path.basename(os.path.normpath(name))
    return name


def _dataset_record(ds: Any) -> Optional[Dict[str, Any]]:
    """The preprocessing record a dataset carries (JSON in ``info.description``), if any."""
    try:
        split = next(iter(ds.values()))
        text = split.info.description
    except Exception:  # noqa: BLE001 - optional metadata
        return None
    if not text:
        return None
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _label_names(ds: Any) -> Optional[List[str]]:
    split = ds["train"]
    feature = split.features.get("labels") if hasattr(split, "features") else None
    names = getattr(feature, "names", None)
    return list(names) if names else None


def _num_labels(ds: Any) -> int:
    names = _label_names(ds)
    if names:
        return len(names)
    labels = ds["train"]["labels"]
    labels = labels.tolist() if hasattr(labels, "tolist") else list(labels)
    return int(max(int(x) for x in labels)) + 1


def _check_splits(ds: Any) -> None:
    if "train" not in ds:
        raise ValueError(f"dataset: no 'train' split (splits: {sorted(ds)})")
    if "validation" not in ds:
        raise ValueError(
            f"dataset: no 'validation' split (splits: {sorted(ds)}); model selection uses the validation split "
            "only, never the test split"
        )
    for split in ds:
        if "labels" not in ds[split].column_names:
            raise ValueError(f"dataset[{split!r}]: no 'labels' column (columns: {ds[split].column_names})")


def _truncate(ds: Any, data_args: DataArguments) -> Any:
    ds = type(ds)({k: v for k, v in ds.items()})  # never shorten the caller's DatasetDict in place
    limits = {"train": data_args.max_train_samples, "validation": data_args.max_eval_samples,
              "test": data_args.max_test_samples}
    for split, n in limits.items():
        if n is not None and split in ds:
            if n < 1:
                raise ValueError(f"max_{'eval' if split == 'validation' else split}_samples: expected >= 1, got {n}")
            ds[split] = ds[split].select(range(min(n, len(ds[split]))))
    return ds


def sample_batch(dataset: Any, collator: Callable, n: int = 2) -> Dict[str, Any]:
    """A collated batch of the first ``n`` examples (to read the modality shapes)."""
    n = min(n, len(dataset))
    if n == 0:
        raise ValueError("dataset: the train split is empty")
    return collator([dataset[i] for i in range(n)])


# ------------------------------------------------------------------------------- model
def modality_specs(batch: Mapping[str, Any], model_args: ModelArguments) -> Dict[str, Dict[str, Any]]:
    """Encoder spec per modality from a collated batch's shapes (every key but the labels).

    ``(B, C, H, W)`` / ``(B, T, C, H, W)`` -> ``model_args.encoder`` with ``in_chans=C``;
    ``(B, D)`` -> ``model_args.vector_encoder`` (``input_dim=D``); ``(B, L, D)`` -> a
    sequence encoder. ``model_args.modality_encoders`` overrides per modality.
    """
    from .modeling.encoders import ENCODERS

    overrides = _parse_mapping(model_args.modality_encoders, "modality_encoders")
    modalities = [k for k in batch if k not in ("labels", "label", "label_ids")]
    unknown = [m for m in overrides if m not in modalities]
    if unknown:
        raise ValueError(f"modality_encoders: {unknown[0]!r} is not a modality of the dataset {modalities}")
    specs: Dict[str, Dict[str, Any]] = {}
    for m in modalities:
        x = batch[m]
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{m}: the collator returned {type(x).__name__}, expected a tensor")
        if x.dim() in (4, 5):
            enc = overrides.get(m, model_args.encoder)
            spec: Dict[str, Any] = {"encoder": enc}
            if enc.startswith("timm:") or enc == "cnn":
                spec["in_chans"] = int(x.shape[-3])
            else:
                raise ValueError(
                    f"{m}: image-like input {tuple(x.shape)} needs a 'timm:<name>' or 'cnn' encoder, got {enc!r}")
        elif x.dim() == 2:
            enc = overrides.get(m, model_args.vector_encoder)
            spec = {"encoder": enc, "input_dim": int(x.shape[-1])}
            if enc == "mlp":
                spec["hidden_dims"] = list(model_args.mlp_hidden_dims)
        elif x.dim() == 3:
            enc = overrides.get(m, model_args.sequence_encoder)
            if enc == "auto":
                enc = next((n for n in ("transformer", "lstm", "gru", "sequence") if n in ENCODERS), "")
                if not enc:
                    raise ValueError(
                        f"{m}: sequence input {tuple(x.shape)} needs a sequence encoder; none is registered "
                        f"(encoders: {sorted(ENCODERS)})"
                    )
            spec = {"encoder": enc, "input_dim": int(x.shape[-1])}
        else:
            raise ValueError(f"{m}: unsupported input shape {tuple(x.shape)} (expected 2-D to 5-D)")
        specs[m] = spec
    if not specs:
        raise ValueError(f"dataset: the collated batch has no modality columns (keys: {sorted(batch)})")
    return specs


def build_model(
    batch: Mapping[str, Any],
    num_labels: int,
    model_args: ModelArguments,
    preprocessing: Optional[Dict[str, Any]] = None,
    label_names: Optional[Sequence[str]] = None,
):
    """A new :class:`~arl_hf.MultimodalModel` for the modalities of ``batch`` (or the checkpoint
    of ``model_args.model_name_or_path``), with ``config.preprocessing`` recorded."""
    from transformers import AutoModel

    from .modeling import MultimodalConfig, MultimodalModel, load_backbone_weights

    if model_args.model_name_or_path:
        model = AutoModel.from_pretrained(model_args.model_name_or_path)
        if getattr(model.config, "num_labels", None) != num_labels:
            raise ValueError(
                f"model_name_or_path: checkpoint has {model.config.num_labels} labels, the dataset {num_labels}"
            )
        if preprocessing is not None:
            model.config.preprocessing = dict(preprocessing)
        return model
    specs = modality_specs(batch, model_args)
    kwargs: Dict[str, Any] = {}
    if label_names:
        kwargs["id2label"] = {i: n for i, n in enumerate(label_names)}
        kwargs["label2id"] = {n: i for i, n in enumerate(label_names)}
    config = MultimodalConfig(
        modalities=specs,
        num_labels=num_labels,
        fusion=model_args.fusion,
        init=model_args.init,
        preprocessing=dict(preprocessing) if preprocessing else None,
        **kwargs,
    )
    model = MultimodalModel(config)
    for m, path in _parse_mapping(model_args.pretrained_weights, "pretrained_weights").items():
        if m not in specs:
            raise ValueError(f"pretrained_weights: {m!r} is not a modality of the dataset {list(specs)}")
        load_backbone_weights(model, m, path)
    return model


# ------------------------------------------------------------------------------- output dir
_KNOWN_OUTPUTS = (
    "config.json", "model.safetensors", "README.md", RESULTS_NAME, "all_results.json", "train_results.json",
    "eval_results.json", "trainer_state.json", "training_args.bin",
)


def prepare_output_dir(training_args: ARLConfig, run_args: RunArguments) -> Optional[str]:
    """Apply the output-directory policy; returns the checkpoint to resume from, if any.

    * ``--resume``: continue from the last ``checkpoint-*`` in output_dir (or from
      ``--resume_from_checkpoint PATH``); an error if there is none.
    * output_dir holding files and neither flag: ``ValueError`` (another run is there).
    * ``--overwrite_output_dir``: remove that run's checkpoints, weights, card and plots
      (other files are left alone) on the main process.
    """
    out = training_args.output_dir
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"output_dir: {out!r} exists and is not a directory")
    explicit_ckpt = training_args.resume_from_checkpoint
    if run_args.resume or explicit_ckpt:
        if run_args.overwrite_output_dir:
            raise ValueError("overwrite_output_dir: cannot be combined with --resume / --resume_from_checkpoint")
        if explicit_ckpt:
            if not os.path.isdir(explicit_ckpt):
                raise FileNotFoundError(f"resume_from_checkpoint: {explicit_ckpt!r} is not a checkpoint directory")
            return explicit_ckpt
        last = get_last_checkpoint(out) if os.path.isdir(out) else None
        if last is None:
            raise FileNotFoundError(
                f"resume: output_dir {out!r} holds no {PREFIX_CHECKPOINT_DIR}-* directory to resume from"
            )
        return last
    if os.path.isdir(out) and os.listdir(out):
        if not run_args.overwrite_output_dir:
            shown = sorted(os.listdir(out))[:5]
            raise ValueError(
                f"output_dir: {out!r} already holds a run ({', '.join(shown)}{', ...' if len(os.listdir(out)) > 5 else ''}). "
                "Pass --overwrite_output_dir to replace it, --resume to continue it from its last checkpoint, "
                "or choose another --output_dir."
            )
        if training_args.process_index == 0:
            for name in os.listdir(out):
                path = os.path.join(out, name)
                if name.startswith(f"{PREFIX_CHECKPOINT_DIR}-") and os.path.isdir(path):
                    shutil.rmtree(path)
                elif name == PLOTS_DIR and os.path.isdir(path):
                    shutil.rmtree(path)
                elif name in _KNOWN_OUTPUTS and os.path.isfile(path):
                    os.remove(path)
    return None


# ------------------------------------------------------------------------------- trainer
class RunTrainer(ARLTrainer):
    """:class:`~arl_hf.ARLTrainer` plus the run's extras: a MultiStepLR-style schedule
    (``lr_decay_epochs``) and the arl-hf model card for ``push_to_hub``."""

    def __init__(self, *args, lr_decay_epochs: Optional[Sequence[int]] = None, lr_decay_factor: float = 0.1,
                 decay_all_parameters: bool = False, card_writer: Optional[Callable[[], Optional[str]]] = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.lr_decay_epochs = sorted(int(e) for e in (lr_decay_epochs or []))
        if any(e < 1 for e in self.lr_decay_epochs):
            raise ValueError(f"lr_decay_epochs: expected epochs >= 1, got {list(lr_decay_epochs)}")
        self.lr_decay_factor = float(lr_decay_factor)
        self.decay_all_parameters = bool(decay_all_parameters)
        self.card_writer = card_writer

    def get_decay_parameter_names(self, model) -> List[str]:
        if self.decay_all_parameters:
            return [n for n, p in model.named_parameters() if p.requires_grad]
        return super().get_decay_parameter_names(model)

    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch on this process (as the Trainer counts them)."""
        n = len(self.train_dataset)
        batch = self._train_batch_size * max(1, self.args.world_size)
        batches = n // batch if self.args.dataloader_drop_last else math.ceil(n / batch)
        return max(1, math.ceil(max(1, batches) / self.args.gradient_accumulation_steps))

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if not self.lr_decay_epochs or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        optimizer = optimizer if optimizer is not None else self.optimizer
        spe = self.steps_per_epoch()
        milestones, factor = list(self.lr_decay_epochs), self.lr_decay_factor

        def lr_lambda(step: int) -> float:
            epoch = step // spe  # the epoch the next optimizer step belongs to
            return factor ** sum(1 for e in milestones if epoch >= e)

        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
        self._created_lr_scheduler = True
        return self.lr_scheduler

    def create_model_card(self, language: Optional[str] = None, license: Optional[str] = None,
                          tags: Optional[Any] = None, model_name: Optional[str] = None,
                          finetuned_from: Optional[str] = None, tasks: Optional[Any] = None,
                          dataset_tags: Optional[Any] = None, dataset: Optional[Any] = None,
                          dataset_args: Optional[Any] = None, **kwargs: Any) -> None:
        """Write the arl-hf card (instead of the generic Trainer draft) before a push, with what
        ``trainer.push_to_hub(license=..., tags=..., finetuned_from=..., language=..., tasks=...,
        dataset_tags=..., model_name=...)`` passes."""
        if self.card_writer is None or not self.is_world_process_zero():
            return
        options = {"language": language, "license": license, "tags": tags, "model_name": model_name,
                   "finetuned_from": finetuned_from, "tasks": tasks, "dataset_tags": dataset_tags}
        self.card_writer(**{k: v for k, v in options.items() if v is not None})


# ------------------------------------------------------------------------------- run
def _hyperparameters(args: ARLConfig, model_args: ModelArguments, run_args: RunArguments,
                     mixed_precision: Optional[str] = None) -> Dict[str, Any]:
    if mixed_precision is None:
        mixed_precision = "bf16" if args.bf16 else ("fp16" if args.fp16 else "no")
    hp: Dict[str, Any] = {
        "strategy": args.strategy,
        "optimizer": str(getattr(args.optim, "value", args.optim)) + (f" ({args.optim_args})" if args.optim_args else ""),
        "learning_rate": args.learning_rate,
        "weight_decay": f"{args.weight_decay}" + (" (all parameters)" if run_args.decay_all_parameters else ""),
        "lr_scheduler": (
            f"x{run_args.lr_decay_factor} at epochs {run_args.lr_decay_epochs}" if run_args.lr_decay_epochs
            else str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type))
        ),
        "per_device_train_batch_size": args.per_device_train_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "world_size": args.world_size,
        "num_train_epochs": args.num_train_epochs,
        "max_grad_norm": args.max_grad_norm,
        "mixed_precision": mixed_precision,
        "seed": args.seed,
        "encoder_init": model_args.init,
    }
    if args.strategy == "arl":
        hp.update({
            "arl_variant": args.arl_variant,
            "arl_temperature (T)": args.arl_temperature,
            "arl_gamma": args.arl_gamma,
            "arl_warmup_epochs": args.arl_warmup_epochs,
            "arl_unimodal_loss / asymmetric / residual": f"{args.arl_unimodal_loss} / {args.arl_asymmetric} / "
            f"{args.arl_residual}",
        })
    return hp


def _strip_prefix(metrics: Mapping[str, float], prefix: str) -> Dict[str, float]:
    """``{prefix}_accuracy...`` -> ``accuracy...``: only loss, accuracy and macro-F1 entries."""
    out = {}
    for k, v in metrics.items():
        if k.startswith(prefix + "_"):
            key = k[len(prefix) + 1:]
            if key in ("loss", "accuracy", "macro_f1") or key.startswith(("accuracy_", "macro_f1_")):
                out[key] = float(v)
    return out


def _reproduce_command(argv: Optional[Sequence[str]]) -> str:
    """The console script the package installs (``examples/`` is not in a wheel)."""
    if argv is None:
        return "arl-hf train"
    return "arl-hf train " + " ".join(shlex.quote(a) for a in argv)


def _as_list(value: Any) -> List[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def write_run_outputs(
    trainer: ARLTrainer,
    metrics: Mapping[str, Mapping[str, float]],
    model_args: ModelArguments,
    data_args: DataArguments,
    run_args: RunArguments,
    argv: Optional[Sequence[str]] = None,
    card_options: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
    """Plots, model card and ``results.json`` of a finished run (main process only).

    ``card_options``: what ``trainer.push_to_hub(...)`` passes to ``create_model_card``
    (``license``, ``tags``, ``finetuned_from``, ``language``, ``tasks``, ``dataset_tags``,
    ``model_name``); they override the run's own values.
    """
    card_options = dict(card_options or {})
    args = trainer.args
    out = args.output_dir
    model = trainer.model
    config = model.config
    modalities = list(trainer.modalities)
    written: Dict[str, Any] = {"plots": [], "card": None}
    if not trainer.is_world_process_zero():
        return written
    record = dict(config.preprocessing or {"dataset": data_args.dataset})
    label = dataset_label(record, data_args.dataset)
    title = f"{label} — strategy {args.strategy}" + (f" (preset {run_args.preset})" if run_args.preset else "")
    if run_args.plots:
        from .plots import make_run_plots

        written["plots"] = make_run_plots(trainer.state.log_history, modalities, os.path.join(out, PLOTS_DIR), title)
    best = trainer.state.best_model_checkpoint
    selection = (
        f"`{args.metric_for_best_model}` on the validation split (best: {trainer.state.best_metric:.4f} at "
        f"{os.path.basename(best)})" if best and trainer.state.best_metric is not None
        else "final checkpoint (no validation-based selection)"
    )
    results = {
        "metrics": {k: dict(v) for k, v in metrics.items()},
        "dataset": record.get("dataset", data_args.dataset),
        "dataset_revision": record.get("dataset_revision"),
        "preset": run_args.preset,
        "strategy": args.strategy,
        "best_model_checkpoint": best,
        "metric_for_best_model": args.metric_for_best_model,
        "selection_split": "validation",
        "modalities": modalities,
        # results on CPU depend on the summation order, hence on the thread count (never set here)
        "torch_num_threads": torch.get_num_threads(),
    }
    with open(os.path.join(out, RESULTS_NAME), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    if run_args.model_card:
        from .cards import RunSummary, write_model_card

        captions = {
            "arl_dynamics.png": "Fig. 3 for this run: dependency ratio vs inverse-variance ratio (a) and "
            "the coefficients a_m (b) over training",
            "accuracy.png": "Validation accuracy (fused and per modality) and training loss",
        }
        plots = [(f"{PLOTS_DIR}/{os.path.basename(p)}", captions.get(os.path.basename(p), os.path.basename(p)))
                 for p in written["plots"]]
        from .data.sharing import is_hub_id

        recorded = str(record.get("dataset", data_args.dataset))
        on_hub = is_hub_id(recorded) and recorded not in _registry_names()
        finetuned_from = card_options.get("finetuned_from") or (
            model_args.model_name_or_path if model_args.model_name_or_path and is_hub_id(model_args.model_name_or_path)
            else None)
        extra_datasets = [d for d in _as_list(card_options.get("dataset_tags")) if is_hub_id(d)]
        tasks = _as_list(card_options.get("tasks"))
        summary = RunSummary(
            model_name=card_options.get("model_name") or (
                args.hub_model_id.split("/")[-1] if args.hub_model_id else os.path.basename(os.path.normpath(out))),
            dataset=label,
            dataset_id=recorded if on_hub else None,
            dataset_revision=record.get("dataset_revision") if on_hub else None,
            dataset_arg=recorded,
            license=(lambda v: None if v in (None, "", "none") else v)(card_options.get("license", run_args.license)),
            base_model=finetuned_from,
            language=card_options.get("language"),
            tags=list(run_args.tags or []) + [t for t in _as_list(card_options.get("tags"))],
            extra_datasets=extra_datasets,
            task=tasks[0] if tasks else None,
            input_modalities=list(getattr(model, "input_modalities", []) or []),
            modalities=config.modalities,
            metrics=metrics,
            strategy=args.strategy,
            preset=run_args.preset,
            fusion=getattr(config, "fusion", "concat"),
            preprocessing=config.preprocessing,
            # what the Accelerator actually ran with (also set by `accelerate launch --mixed_precision`)
            hyperparameters=_hyperparameters(args, model_args, run_args,
                                             str(getattr(trainer.accelerator, "mixed_precision", None) or "no")),
            plots=plots,
            selection=selection,
            load_path=args.hub_model_id or out,
            reproduce_command=_reproduce_command(argv),
        )
        written["card"] = write_model_card(summary, out)
    return written


def train_and_evaluate(
    training_args: ARLConfig,
    model_args: Optional[ModelArguments] = None,
    data_args: Optional[DataArguments] = None,
    run_args: Optional[RunArguments] = None,
    dataset: Any = None,
    data_collator: Optional[Callable] = None,
    argv: Optional[Sequence[str]] = None,
) -> Dict[str, Dict[str, float]]:
    """Train, select on validation, evaluate the test split once, write the outputs.

    Args:
        training_args: :class:`~arl_hf.ARLConfig` (``output_dir``, strategy, optimiser...).
            For selection on validation set ``eval_strategy``/``save_strategy`` (equal),
            ``load_best_model_at_end=True`` and ``metric_for_best_model`` (the script does).
        model_args, data_args, run_args: the other option groups (defaults if ``None``).
        dataset: an already-built ``DatasetDict`` (train/validation[/test], ``labels`` + one
            column per modality) instead of loading ``data_args.dataset``.
        data_collator: collator for ``dataset`` (default: ``default_data_collator``).
        argv: the command line, recorded in the model card.

    Returns:
        ``{"validation": metrics, "test": metrics}`` (``test`` only when the dataset has
        one), each with ``accuracy``, ``macro_f1``, ``accuracy_<m>``, ``macro_f1_<m>``,
        ``loss``, measured with the checkpoint selected on the validation split. Also
        written to ``<output_dir>/results.json``.
    """
    from transformers import default_data_collator, set_seed

    model_args = model_args or ModelArguments()
    data_args = data_args or DataArguments()
    run_args = run_args or RunArguments()
    resume_from = prepare_output_dir(training_args, run_args)
    set_seed(training_args.seed)
    if dataset is None:
        dataset, collator, record = load_data(data_args, seed=training_args.seed)
    else:
        collator = data_collator or default_data_collator
        record = {"dataset": data_args.dataset}
        info = _dataset_record(dataset)
        if info:
            record["data"] = info
    if data_collator is not None:
        collator = data_collator
    _check_splits(dataset)
    dataset = _truncate(dataset, data_args)
    if run_args.preset:
        record["preset"] = run_args.preset
    logger.info("dataset %s: %s examples", record.get("dataset"), {k: len(v) for k, v in dataset.items()})
    batch = sample_batch(dataset["train"], collator)
    model = build_model(batch, _num_labels(dataset), model_args, record, _label_names(dataset))
    logger.info("model: encoders %s, fusion %s, %d parameters; strategy %s",
                {m: spec.get("encoder") for m, spec in model.config.modalities.items()},
                getattr(model.config, "fusion", "?"), sum(p.numel() for p in model.parameters()),
                training_args.strategy)
    if not training_args.load_best_model_at_end:
        logger.warning("load_best_model_at_end is off: the final checkpoint is evaluated, not the validation-best one")

    holder: Dict[str, Any] = {}
    trainer = RunTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset["train"],
        eval_dataset=dataset["validation"],
        data_collator=collator,
        lr_decay_epochs=run_args.lr_decay_epochs,
        lr_decay_factor=run_args.lr_decay_factor,
        decay_all_parameters=run_args.decay_all_parameters,
        card_writer=lambda **options: holder.get("write", lambda **_: None)(**options),
    )
    train_result = trainer.train(resume_from_checkpoint=resume_from)
    metrics: Dict[str, Dict[str, float]] = {}
    for split in ("validation", "test"):
        if split in dataset:
            raw = trainer.evaluate(eval_dataset=dataset[split], metric_key_prefix=split)
            metrics[split] = _strip_prefix(raw, split)
    trainer.save_model()
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_state()

    def _write(**card_options):
        return write_run_outputs(trainer, metrics, model_args, data_args, run_args, argv, card_options)

    holder["write"] = _write
    _write()
    if training_args.push_to_hub:
        trainer.push_to_hub(commit_message="End of training")
    return metrics


# ------------------------------------------------------------------------------- evaluation
def evaluate_checkpoint(eval_args: EvalArguments) -> Dict[str, float]:
    """Accuracy and macro-F1, fused and per modality, of a saved checkpoint on one split.

    ``model_name_or_path`` is a local checkpoint directory or a Hub model repo id (downloaded
    through the Hub cache, so ``HF_HUB_OFFLINE=1`` works once cached); either way the
    strategy's heads saved with the weights (``model.strategy_state``) are used when the
    strategy predicts through its own head (MLA), and the recorded dataset (name, folder or
    Hub dataset repo at its recorded commit) is the default ``--dataset``.
    """
    import tempfile

    from transformers import AutoModel

    if eval_args.split not in SPLITS:
        raise ValueError(f"split: expected one of {list(SPLITS)}, got {eval_args.split!r}")
    path = eval_args.model_name_or_path
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise FileNotFoundError(f"model_name_or_path: {path!r} has no config.json (not a saved checkpoint)")
    elif os.path.exists(path):
        raise ValueError(f"model_name_or_path: {path!r} is a file; expected a checkpoint directory or Hub id")
    elif path.startswith((".", "/", "~")) or path.count("/") != 1:
        raise FileNotFoundError(f"model_name_or_path: checkpoint directory {path!r} does not exist")
    try:
        model = AutoModel.from_pretrained(path, revision=eval_args.revision)
    except OSError as e:
        raise FileNotFoundError(f"model_name_or_path: cannot load {path!r}: {e}") from None
    recorded = dict(getattr(model.config, "preprocessing", None) or {})
    dataset_name = eval_args.dataset or recorded.get("dataset")
    if not dataset_name:
        raise ValueError("dataset: the checkpoint records no dataset; pass --dataset")
    # same dataset as in training: reuse the recorded preprocessing options (and commit)
    same = eval_args.dataset in (None, recorded.get("dataset"))
    data_args = DataArguments(
        dataset=dataset_name,
        dataset_config=eval_args.dataset_config or (recorded.get("dataset_config") if same else None),
        dataset_revision=eval_args.dataset_revision or (recorded.get("dataset_revision") if same else None),
        data_dir=eval_args.data_dir,
        cache_dir=eval_args.cache_dir,
        **{k: recorded.get(k) if same else None for k in ("preprocessing", "audio_duration", "num_frames", "image_size")},
    )
    ds, collator, _ = load_data(data_args)
    if eval_args.split not in ds:
        raise ValueError(f"split: dataset {dataset_name!r} has no {eval_args.split!r} split (splits: {sorted(ds)})")
    split = ds[eval_args.split]
    if eval_args.max_samples is not None:
        split = split.select(range(min(eval_args.max_samples, len(split))))
    strategy = _prediction_strategy(model, path, eval_args.revision)
    with tempfile.TemporaryDirectory() as tmp:
        args = ARLConfig(
            output_dir=tmp, per_device_eval_batch_size=eval_args.batch_size, report_to="none",
            use_cpu=eval_args.use_cpu, strategy=strategy,
        )
        trainer = ARLTrainer(model=model, args=args, data_collator=collator)
        raw = trainer.evaluate(eval_dataset=split, metric_key_prefix=eval_args.split)
    metrics = _strip_prefix(raw, eval_args.split)
    if eval_args.output_json:
        with open(eval_args.output_json, "w", encoding="utf-8") as f:
            json.dump({"split": eval_args.split, "dataset": dataset_name, "metrics": metrics}, f, indent=2)
    return metrics


def _prediction_strategy(model: Any, path: str, revision: Optional[str] = None) -> str:
    """``"none"`` (the model's own heads), or the recorded training strategy when it predicts
    through its own head (MLA), whose head must then be in the checkpoint (``strategy_state``)."""
    from .strategies import STRATEGIES

    name = getattr(model.config, "training_strategy", None)
    if name and name not in STRATEGIES:
        logger.warning("the checkpoint was trained with strategy %r, not registered here: evaluating the "
                       "model's own heads", name)
    if not name or name not in STRATEGIES or not STRATEGIES[name].owns_predictions():
        return "none"
    state = getattr(model, "strategy_state", None)
    if getattr(state, "strategy", None) != name:
        raise FileNotFoundError(
            f"model_name_or_path: {path!r} was trained with strategy {name!r}, which predicts through its own "
            "head; expected its head in the checkpoint (config.strategy_state and the strategy_state.* weights, "
            "written by ARLTrainer.save_model)")
    return name


def format_results(metrics: Mapping[str, Mapping[str, float]], modalities: Optional[Sequence[str]] = None) -> str:
    """A plain-text table: one row per split, fused and per-modality accuracy / macro-F1 (%)."""
    rows = []
    for split, m in metrics.items():
        mods = list(modalities) if modalities else sorted(
            {k[len("accuracy_"):] for k in m if k.startswith("accuracy_")}
        )
        heads = [("fused", "")] + [(x, f"_{x}") for x in mods]
        cells = []
        for head, suffix in heads:
            acc, f1 = m.get(f"accuracy{suffix}"), m.get(f"macro_f1{suffix}")
            if acc is None:
                continue
            cells.append(f"{head}: acc {100 * acc:6.2f}  F1 {100 * (f1 or 0):6.2f}")
        rows.append(f"[{split} split] " + " | ".join(cells))
    return "\n".join(rows)
