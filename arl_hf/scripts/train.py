"""``arl-hf train`` and ``examples/run_arl.py``: train, select on validation, test once, save.

:func:`make_parser` is the parser (:class:`~arl_hf.ARLConfig` + model + data + run options);
:func:`parse_args` reads a command line in one pass (TRL's ``TrlParser`` order: the config
file, the preset and the ``--strategy_module`` files are read first, become the parser's
defaults, then the command line is parsed once); :func:`train_and_evaluate` is the job (the
comparison protocol calls it once per run, with values, not flags); :func:`main` is the command.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from .. import presets as presets_module
from ..arguments import (
    DEFAULT_DATASET,
    DEFAULT_PRESET,
    SCRIPT_DEFAULTS,
    ArgumentParser,
    DataArguments,
    HelpFormatter,
    ModelArguments,
    RunArguments,
    check_config_keys,
    group_help,
    read_config_file,
    setup_logging,
)
from ..building import (
    RunRecord,
    build_model,
    label_names,
    load_data,
    modality_summary,
    num_labels,
    prepare_splits,
    sample_batch,
)
from ..config import ARLConfig
from ..evaluation import evaluate_splits, format_results
from ..log import get_logger
from ..outputs import configure_run_card, prepare_output_dir, save_run
from ..strategies.plugins import attach_strategy_options, extra_option_dataclasses, load_strategy_module
from ..trainer import ARLTrainer
from .command import pop_debug, user_errors

logger = get_logger(__name__)

__all__ = ["make_parser", "FirstPass", "resolve_defaults", "help_parser", "parse_args", "train_and_evaluate",
           "print_results", "main"]

#: the options read before the full parse: they decide the parser's fields and defaults
_FIRST_PASS = ("config", "preset", "dataset", "strategy_module")


def make_parser(prog: Optional[str] = None) -> ArgumentParser:
    """The train parser: ``ARLConfig`` + model + data + run options (and those of the strategies
    registered by ``--strategy_module`` files already loaded), script defaults applied."""
    description = (
        "Train a multimodal classifier with ARL (or another strategy) on the HuggingFace stack, select the "
        "checkpoint on the validation split, evaluate the test split once, and write checkpoint, model card "
        "and plots into --output_dir.\n\nPresets (--preset NAME; flags override them one by one):\n"
        + presets_module.presets_help()
        + "\n\nPrecedence: defaults < --preset < --config file < command-line flags."
    )
    parser = ArgumentParser(
        (ARLConfig, ModelArguments, DataArguments, RunArguments, *extra_option_dataclasses()),
        prog=prog,
        description=description,
        formatter_class=HelpFormatter,
        allow_abbrev=False,
    )
    parser.set_defaults(**SCRIPT_DEFAULTS)
    group_help(parser)
    # the full list (every TrainingArguments flag) is in the sections below
    parser.usage = ("%(prog)s [CONFIG.json|CONFIG.yaml] [--preset NAME] [--dataset DATASET] [--strategy NAME] "
                    "[--output_dir DIR] [options]")
    return parser


def _first_pass(argv: Sequence[str]) -> Tuple[Dict[str, Any], List[str]]:
    """The config file, preset, dataset and strategy modules given on the command line (a lone
    leading ``.json``/``.yaml`` path is ``--config``), and ``argv`` with that path spelled out."""
    argv = list(argv)
    if argv and not argv[0].startswith("-") and argv[0].endswith((".json", ".yaml", ".yml")):
        argv = ["--config", argv[0]] + argv[1:]
    first = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for name in _FIRST_PASS:
        if name == "strategy_module":
            first.add_argument(f"--{name}", nargs="+", action="extend")
        else:
            first.add_argument(f"--{name}")
    known, _ = first.parse_known_args(argv)
    return {k: v for k, v in vars(known).items() if v is not None}, argv


def _field_names(parser: ArgumentParser) -> List[str]:
    return [f.name for dtype in parser.dataclass_types for f in dataclasses.fields(dtype) if f.init]


@dataclasses.dataclass
class FirstPass:
    """What the first pass read: the parser (its defaults set), the command line to parse
    once, the defaults given (script defaults < preset < config file), the preset resolved and
    the name of the default output folder (the preset's, else the dataset's)."""

    parser: ArgumentParser
    argv: List[str]
    defaults: Dict[str, Any]
    preset: Optional[str]
    run_name: str


def resolve_defaults(argv: Sequence[str], prog: Optional[str] = None) -> FirstPass:
    """The first pass: load the ``--strategy_module`` files (of the command line and of the
    config file), read the config file and the preset, and make them the parser's defaults.

    The preset is ``--preset``, else the config file's, else ``avdigits_main`` for the default
    dataset; ``none`` disables it."""
    given, argv = _first_pass(argv)
    from_file = read_config_file(given["config"]) if given.get("config") else {}
    for path in list(given.get("strategy_module") or []) + list(from_file.get("strategy_module") or []):
        load_strategy_module(path)  # their options become fields of the parser
    parser = make_parser(prog)
    if from_file:
        check_config_keys(from_file, _field_names(parser), given["config"])
    preset_name = given.get("preset", from_file.get("preset"))
    if preset_name is None and given.get("dataset", from_file.get("dataset", DEFAULT_DATASET)) == DEFAULT_DATASET:
        preset_name = DEFAULT_PRESET
    if preset_name in ("", "none"):
        preset_name = None
    from_preset = presets_module.get_preset(preset_name) if preset_name else {}
    defaults: Dict[str, Any] = {**SCRIPT_DEFAULTS, **from_preset, **from_file, "preset": preset_name}
    dataset = given.get("dataset", from_file.get("dataset", from_preset.get("dataset")))
    run_name = preset_name or (os.path.basename(os.path.normpath(str(dataset))) if dataset is not None else "run")
    parser.set_defaults(**defaults)
    return FirstPass(parser, argv, defaults, preset_name, run_name)


def help_parser(argv: Sequence[str], prog: Optional[str] = None) -> ArgumentParser:
    """The parser whose ``--help`` shows the defaults this command line resolves to: the preset
    (given, or the default one for the default dataset), a config file and the flags given
    override the dataclass defaults; options a preset sets are marked; the options of the
    ``--strategy_module`` files are listed."""
    first = resolve_defaults([a for a in argv if a not in ("-h", "--help")], prog)
    parser = first.parser
    values = vars(parser.parse_args(first.argv))
    flags = {o for a in first.argv if a.startswith("--") for o in (a.split("=", 1)[0],)}
    # the flags given show as the defaults too
    given = {a.dest: values[a.dest] for a in parser._actions if flags & set(a.option_strings)}
    merged = {**first.defaults, **given, "preset": first.preset}
    if not merged.get("output_dir"):
        merged["output_dir"] = os.path.join("outputs", f"{first.run_name}-{merged.get('strategy') or 'arl'}")
    # every flag of an option shows its default (``--no_plots`` too: the option's, not the flag's)
    dests = {a.dest for a in parser._actions if a.dest not in ("help", argparse.SUPPRESS)}
    parser.set_defaults(**{**{d: parser.get_default(d) for d in dests}, **merged})
    preset = presets_module.get_preset(first.preset) if first.preset else {}
    parser.help_preset = first.preset
    parser.help_preset_keys = frozenset(k for k, v in preset.items() if merged.get(k) == v)
    return parser


def parse_args(argv: Optional[Sequence[str]] = None, overrides: Optional[Mapping[str, Any]] = None
               ) -> Tuple[ARLConfig, ModelArguments, DataArguments, RunArguments]:
    """Parse ``argv`` (default ``sys.argv[1:]``) once into the four argument dataclasses.

    ``overrides`` (option -> value) win over every other source: the comparison protocol sets
    each run's strategy, seed, output folder and tuned values this way, as values. Raises
    ``ValueError`` (unknown preset, bad config file, invalid value) and exits with status 2 on an
    unknown command-line option."""
    argv = sys.argv[1:] if argv is None else argv
    first = resolve_defaults(argv)
    values = vars(first.parser.parse_args(first.argv))
    values["preset"] = first.preset
    values.update(overrides or {})
    if not values.get("output_dir"):
        values["output_dir"] = os.path.join("outputs", f"{first.run_name}-{values.get('strategy') or 'arl'}")
    training_args, model_args, data_args, run_args, *extra = first.parser.parse_dict(values)
    attach_strategy_options(training_args, extra)
    return training_args, model_args, data_args, run_args


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
        dataset, collator, record = load_data(data_args, seed=training_args.seed, model_args=model_args)
    else:
        collator = data_collator or default_data_collator
        record = RunRecord.of_dataset(data_args.dataset, dataset)
    if data_collator is not None:
        collator = data_collator
    dataset = prepare_splits(dataset, data_args, record, run_args.preset)
    logger.info("dataset %s: %s examples", record.dataset, {k: len(v) for k, v in dataset.items()})
    batch = sample_batch(dataset["train"], collator)
    model = build_model(batch, num_labels(dataset), model_args, record, label_names(dataset))
    print_modalities(training_args, batch, model, record)
    logger.info("model: encoders %s, fusion %s, %d parameters; strategy %s",
                {m: spec.get("encoder") for m, spec in model.config.modalities.items()},
                getattr(model.config, "fusion", "?"), sum(p.numel() for p in model.parameters()),
                training_args.strategy)
    if not training_args.load_best_model_at_end:
        logger.warning("load_best_model_at_end is off: the final checkpoint is evaluated, not the validation-best one")

    trainer = ARLTrainer(model=model, args=training_args, train_dataset=dataset["train"],
                         eval_dataset=dataset["validation"], data_collator=collator)
    configure_run_card(trainer, model_args, run_args, argv)
    train_result = trainer.train(resume_from_checkpoint=resume_from)
    metrics = evaluate_splits(trainer, dataset)
    save_run(trainer, train_result, metrics, record, run_args)
    if training_args.push_to_hub:
        trainer.push_to_hub(commit_message="End of training")
    return metrics


def _summary(training_args: ARLConfig) -> str:
    precision = "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else "no"
    return f"device {training_args.device}, world size {training_args.world_size}, mixed precision {precision}"


def main(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> int:
    """``arl-hf train`` / ``examples/run_arl.py``: parse, train, print the results; a failure is
    one ``error:`` line and exit status 2 (``--debug`` shows the traceback)."""
    from ..distributed import shutdown

    argv, debug = pop_debug(sys.argv[1:] if argv is None else argv)
    prog = prog or os.path.basename(sys.argv[0]) or "run_arl.py"
    if any(a in ("-h", "--help") for a in argv):
        with user_errors(prog, debug):
            parser = help_parser(argv, prog)
        parser.print_help()
        return 0
    with user_errors(prog, debug):
        training_args, model_args, data_args, run_args = parse_args(argv)
        setup_logging(training_args, training_args.process_index, summary=_summary(training_args))
        metrics = train_and_evaluate(training_args, model_args, data_args, run_args, argv=argv)
        print_results(training_args, metrics)
    shutdown()
    return 0


def print_modalities(training_args: ARLConfig, batch: Mapping[str, Any], model: Any, record: Any) -> None:
    """One line per modality on the main process (its column, kind, input shape and encoder), in the
    normal output as the results are."""
    if training_args.process_index == 0:
        for line in modality_summary(batch, model.config, record):
            print(line)


def print_results(training_args: ARLConfig, metrics: Mapping[str, Mapping[str, float]]) -> None:
    """The results of a run on the main process (checkpoint selected on validation, test once)."""
    if training_args.process_index == 0:
        print("\nResults (checkpoint selected on the validation split; test evaluated once):")
        print(format_results(metrics))
        print(f"\nOutputs in {training_args.output_dir}: checkpoint, README.md model card, plots/, results.json")
