"""The main job behind ``arl-hf train|evaluate`` and ``examples/run_arl.py``.

Configure (:mod:`arl_hf.arguments`), load the data and build the model from the dataset's
modalities (:mod:`arl_hf.building`), train with :class:`~arl_hf.ARLTrainer`, select the
checkpoint on the **validation** split only, evaluate the **test** split once with the
selected checkpoint (:mod:`arl_hf.evaluation`), and write the outputs (checkpoint,
``README.md`` model card, plots, ``results.json``; :mod:`arl_hf.outputs`).
:func:`train_and_evaluate` is the library entry point (the comparison protocol calls it once
per run); ``examples/run_arl.py`` spells the same steps out as a script.

The names of those modules are re-exported here.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence

from .arguments import (DEFAULT_DATASET, DEFAULT_PRESET, HELP_GROUPS, RUN_TRAINING_OPTIONS, SCRIPT_DEFAULTS,
                        DataArguments, ModelArguments, RunArguments, _ArgumentParser,
                        apply_help_defaults, build_parser, help_group_of, parse_args,
                        read_config_file, resolve_options, setup_logging)
from .building import (build_model, check_splits, dataset_record, label_names, load_data, modality_specs,
                       num_labels, prepare_splits, sample_batch, truncate)
from .cards import dataset_label
from .evaluation import (SPLITS, EvalArguments, _prediction_strategy, build_eval_parser, evaluate_checkpoint,
                         evaluate_splits, format_results, split_metrics)
from .log import get_logger
from .outputs import (PLOTS_DIR, RESULTS_NAME, configure_run_card, prepare_output_dir, reproduce_command,
                      write_run_outputs)
from .trainer import ARLConfig, ARLTrainer

logger = get_logger(__name__)

__all__ = [
    "ModelArguments",
    "DataArguments",
    "RunArguments",
    "EvalArguments",
    "SCRIPT_DEFAULTS",
    "build_parser",
    "build_eval_parser",
    "parse_args",
    "setup_logging",
    "load_data",
    "prepare_splits",
    "sample_batch",
    "build_model",
    "prepare_output_dir",
    "train_and_evaluate",
    "evaluate_splits",
    "evaluate_checkpoint",
    "format_results",
    "write_run_outputs",
]


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
        info = dataset_record(dataset)
        if info:
            record["data"] = info
    if data_collator is not None:
        collator = data_collator
    dataset = prepare_splits(dataset, data_args, record, run_args.preset)
    logger.info("dataset %s: %s examples", record.get("dataset"), {k: len(v) for k, v in dataset.items()})
    batch = sample_batch(dataset["train"], collator)
    model = build_model(batch, num_labels(dataset), model_args, record, label_names(dataset))
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
    trainer.save_model()
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_state()
    write_run_outputs(trainer, metrics, model_args, data_args, run_args, argv)
    if training_args.push_to_hub:
        trainer.push_to_hub(commit_message="End of training")
    return metrics
