"""The options of a run: its argument dataclasses and the parser machinery the scripts share.

:class:`ModelArguments`, :class:`DataArguments` and :class:`RunArguments` (with
:class:`~arl_hf.ARLConfig`, the parser of :func:`arl_hf.scripts.train.make_parser`);
:class:`ArgumentParser` (closest-option hints, ``--help`` sections and preset marks, used by
every script), :func:`read_config_file` and :func:`setup_logging`. Precedence of option
values (:func:`arl_hf.scripts.train.parse_args`): dataclass defaults < :data:`SCRIPT_DEFAULTS`
< ``--preset`` (:mod:`arl_hf.presets`) < config file (JSON/YAML) < flags given on the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from transformers import HfArgumentParser

from .log import get_logger

logger = get_logger(__name__)

__all__ = [
    "ModelArguments",
    "DataArguments",
    "RunArguments",
    "SCRIPT_DEFAULTS",
    "DEFAULT_DATASET",
    "DEFAULT_PRESET",
    "ArgumentParser",
    "HelpFormatter",
    "HELP_GROUPS",
    "group_help",
    "help_group_of",
    "read_config_file",
    "check_config_keys",
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
    label_column: Optional[str] = field(
        default=None,
        metadata={"help": "Label column of a plain dataset (default: 'labels', else 'label'); a ClassLabel, "
                  "integer ids or strings (mapped to ids in sorted order)."},
    )
    modality_columns: Optional[str] = field(
        default=None,
        metadata={"help": "Columns of a plain dataset used as modalities, and their names: 'name=column[,...]' "
                  "(e.g. 'image=img,spec=spectrogram'; a bare 'column' keeps its name). Default: every usable column."},
    )
    validation_split_percentage: Optional[int] = field(
        default=None,
        metadata={"help": "Without a validation split: hold out N percent of train (seeded, stratified by label when "
                  "possible) as validation."},
    )
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


class ArgumentParser(HfArgumentParser):
    """``HfArgumentParser`` whose errors suggest the closest known option, and whose ``--help``
    marks the defaults a preset sets (:func:`arl_hf.scripts.train.help_parser`)."""

    help_preset: Optional[str] = None
    help_preset_keys: frozenset = frozenset()

    def _get_formatter(self):
        formatter = super()._get_formatter()
        formatter.help_preset = self.help_preset
        formatter.help_preset_keys = self.help_preset_keys
        return formatter

    def error(self, message: str):  # argparse API
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


def group_help(parser: argparse.ArgumentParser) -> None:
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


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """``--help`` with the defaults shown, the description kept as written, and the defaults a
    preset sets marked ``from preset NAME``."""

    help_preset: Optional[str] = None
    help_preset_keys: frozenset = frozenset()

    def _get_help_string(self, action):
        text = super()._get_help_string(action)
        if self.help_preset and action.dest in self.help_preset_keys and "%(default)" in text:
            text = text.replace("(default: %(default)s)", f"(default: %(default)s, from preset {self.help_preset})")
        return text


def read_config_file(path: str, known: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Options from a JSON or YAML file; with ``known``, unknown keys are a ``ValueError`` naming
    them (:func:`check_config_keys`)."""
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
    if known is not None:
        check_config_keys(data, known, path)
    return data


def check_config_keys(data: Dict[str, Any], known: Sequence[str], path: str) -> None:
    """``ValueError`` naming the keys of the config file ``path`` that are no option (with the
    closest option of each)."""
    unknown = [k for k in data if k not in known]
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(str(k), list(known), n=1)
            hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(f"config: {path!r} has unknown option(s) {', '.join(hints)}")


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

