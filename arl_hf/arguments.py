"""The options of a run: argument dataclasses, the train parser, presets and config files.

(The options of ``arl-hf evaluate`` are :class:`arl_hf.evaluation.EvalArguments`.)

:func:`parse_args` reads a command line into :class:`~arl_hf.ARLConfig` (strategy, training,
learning-rate schedule), :class:`ModelArguments`, :class:`DataArguments` and
:class:`RunArguments` with ``HfArgumentParser`` (:func:`build_parser`). Precedence of option
values: dataclass defaults < :data:`SCRIPT_DEFAULTS` < ``--preset`` (:mod:`arl_hf.presets`)
< config file (JSON/YAML) < flags given on the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from transformers import HfArgumentParser

from . import presets as presets_module
from .log import get_logger
from .strategies.plugins import attach_strategy_options, extra_option_dataclasses, load_strategy_modules_from_argv
from .config import ARLConfig

logger = get_logger(__name__)

__all__ = [
    "ModelArguments",
    "DataArguments",
    "RunArguments",
    "SCRIPT_DEFAULTS",
    "DEFAULT_DATASET",
    "DEFAULT_PRESET",
    "build_parser",
    "apply_help_defaults",
    "help_group_of",
    "read_config_file",
    "resolve_options",
    "parse_args",
    "setup_logging",
]


@dataclass
class ModelArguments:
    """How the multimodal model is built (one encoder per modality of the dataset + fusion)."""

    model_name_or_path: Optional[str] = field(
        default=None,
        metadata={"help": "Start from a saved checkpoint (directory or Hub id, loaded with AutoModel) instead of "
                  "building a new model from the options below."},
    )
    encoder: Optional[str] = field(
        default=None,
        metadata={"help": "Encoder of every image-like modality (spectrograms, frames, flow, images): "
                  "'timm:<model name>' (in_chans from the dataset) or 'cnn'. Default: the encoder the "
                  "dataset's preprocessing record suggests for the modality, else 'timm:resnet18'."},
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
                  "(the default encoder of sequences: 'transformer')."},
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
    """How the run itself behaves (presets, config files, output directory policy, extras).

    The learning-rate decay and weight-decay options (``lr_decay_epochs``, ``lr_decay_factor``,
    ``decay_all_parameters``) are :class:`~arl_hf.ARLConfig` fields; ``--help`` shows them here."""

    preset: Optional[str] = field(
        default=None,
        metadata={"help": "Start from a named preset (see the list above); every other flag overrides it. "
                  "Default: 'avdigits_main' when the dataset is avdigits, else none ('none' disables it)."},
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
    plots: bool = field(default=True, metadata={"help": "Write the training plots into output_dir/plots."})
    model_card: bool = field(default=True, metadata={"help": "Write the README.md model card into output_dir."})
    license: Optional[str] = field(
        default="mit",
        metadata={"help": "License of the model card (a Hub license id: mit, apache-2.0, cc-by-4.0, other...; "
                  "'none' omits it). The dataset's license may also bind the weights."},
    )
    tags: Optional[List[str]] = field(default=None, metadata={"help": "Extra tags of the model card."})


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


#: ARLConfig options that say what a run is, where it goes and how its learning rate decays: shown with
#: the run's own
RUN_TRAINING_OPTIONS = ("output_dir", "seed", "report_to", "log_level", "push_to_hub", "hub_model_id",
                        "lr_decay_epochs", "lr_decay_factor", "decay_all_parameters")


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

