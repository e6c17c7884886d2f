"""What a run leaves in ``output_dir``: the directory policy, ``results.json``, plots, card.

:func:`prepare_output_dir` refuses to mix two runs in one directory (``--overwrite_output_dir``
replaces, ``--resume`` continues); :func:`configure_run_card` gives the trainer the run's own
card values (license, tags, preset, the command that reproduces it) so that every card it
writes (:meth:`~arl_hf.ARLTrainer.create_model_card`: at ``save_model`` and ``push_to_hub``)
is the run's; :func:`save_run` saves the model (its card written once), the plots and ``results.json``.
"""

from __future__ import annotations

import os
import shlex
from typing import Any, Dict, Mapping, Optional, Sequence

import torch
from transformers import Trainer, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .cards import dataset_label, shareable_value
from .run_dir import (
    claim_output_dir,
    finish_output_dir,
    newest_complete_checkpoint,
    refuse_if_holding_a_run,
    require_complete,
    require_same_strategy,
)
from .safety import atomic_write_json

__all__ = ["RESULTS_NAME", "PLOTS_DIR", "prepare_output_dir", "reproduce_command", "configure_run_card",
           "save_run"]

RESULTS_NAME = "results.json"
PLOTS_DIR = "plots"

_KNOWN_OUTPUTS = (
    "config.json", "model.safetensors", "model.safetensors.index.json", "README.md", RESULTS_NAME,
    "all_results.json", "train_results.json", "eval_results.json", "test_results.json", "validation_results.json",
    "trainer_state.json", "training_args.bin", PLOTS_DIR,
)


def prepare_output_dir(training_args: TrainingArguments, run_args: Any) -> Optional[str]:
    """Apply the output-directory policy; returns the checkpoint to resume from, if any.

    * ``--resume``: continue from the newest *complete* ``checkpoint-<step>`` in output_dir
      (:func:`checkpoint_problem`; newer broken ones are named in a warning), or from
      ``--resume_from_checkpoint PATH`` (which must be complete); an error if there is none,
      or if the checkpoint was trained with another ``--strategy``.
    * output_dir holding files and neither flag: ``ValueError`` (another run is there).
    * ``--overwrite_output_dir``: remove what the previous run wrote there, as listed by its
      run marker (:data:`RUN_MARKER`) plus its ``checkpoint-<step>`` folders; other files are
      left alone, and a folder whose files no run marker accounts for is refused.

    The main process claims output_dir before training (:func:`claim_output_dir`): a second run
    started into the same folder gets a ``ValueError`` instead of mixing its files in.
    """
    out = training_args.output_dir
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"output_dir: {out!r} exists and is not a directory")
    main = training_args.process_index == 0
    explicit_ckpt = training_args.resume_from_checkpoint
    if run_args.resume or explicit_ckpt:
        if run_args.overwrite_output_dir:
            raise ValueError("overwrite_output_dir: cannot be combined with --resume / --resume_from_checkpoint")
        if explicit_ckpt:
            if not os.path.isdir(explicit_ckpt):
                raise FileNotFoundError(f"resume_from_checkpoint: {explicit_ckpt!r} is not a checkpoint directory")
            last = require_complete(explicit_ckpt, "resume_from_checkpoint")
        else:
            last = newest_complete_checkpoint(out) if os.path.isdir(out) else None
            if last is None:
                raise FileNotFoundError(
                    f"resume: output_dir {out!r} holds no {PREFIX_CHECKPOINT_DIR}-* directory to resume from"
                )
        require_same_strategy(last, training_args.strategy)
        if main:
            claim_output_dir(out, resume=True, known_outputs=_KNOWN_OUTPUTS)
        return last
    if main:
        claim_output_dir(out, overwrite=bool(run_args.overwrite_output_dir), known_outputs=_KNOWN_OUTPUTS)
    else:
        refuse_if_holding_a_run(out, bool(run_args.overwrite_output_dir))
    return None


def reproduce_command(argv: Optional[Sequence[str]]) -> str:
    """The command line of the run, through the console script the package installs
    (``examples/`` is not in a wheel)."""
    if argv is None:
        return "arl-hf train"
    return "arl-hf train " + " ".join(shlex.quote(a) for a in argv)


def configure_run_card(trainer: Trainer, model_args: Any, run_args: Any,
                       argv: Optional[Sequence[str]] = None) -> None:
    """Make the trainer's card the run's, once, before training: ``--model_card``,
    ``--license``, ``--tags``, the preset, the encoder init, the checkpoint fine-tuned from (a
    Hub id), the command line (``argv``) and, with ``--plots``, the plots :func:`save_run`
    draws (the card shows those present when it is written)."""
    from .data.sharing import is_hub_id
    from .plots import ACCURACY_PLOT_NAME, ARL_PLOT_NAME

    base = model_args.model_name_or_path
    trainer.configure_model_card(
        run_args.model_card,
        license=run_args.license,
        tags=list(run_args.tags or []),
        preset=run_args.preset,
        plots=[f"{PLOTS_DIR}/{name}" for name in (ARL_PLOT_NAME, ACCURACY_PLOT_NAME)] if run_args.plots else [],
        reproduce_command=reproduce_command(argv),
        encoder_init=model_args.init,
        finetuned_from=base if base and is_hub_id(base) else None,
    )


def save_run(trainer: Trainer, train_result: Any, metrics: Mapping[str, Mapping[str, float]], record: Any,
             run_args: Any) -> Dict[str, Any]:
    """Save a finished run into ``output_dir``: the plots, the model with its ``README.md`` card
    (written once, by ``save_model``, as :func:`configure_run_card` set it), the train metrics
    and trainer state, ``results.json``; then release the folder (its run marker lists what the
    run wrote). Returns ``{"plots": [paths], "card": path or None}`` (empty off the main process).

    ``record``: the run record (:class:`~arl_hf.building.RunRecord`); ``run_args``: the run
    options (``preset``, ``plots``, ``model_card``)."""
    args = trainer.args
    out = args.output_dir
    modalities = list(trainer.modalities)
    main = trainer.is_world_process_zero()
    written: Dict[str, Any] = {"plots": [], "card": None}
    if main and run_args.plots:
        from .plots import make_run_plots

        label = dataset_label(record.to_dict(), record.dataset)
        title = f"{label} — strategy {args.strategy}" + (f" (preset {run_args.preset})" if run_args.preset else "")
        written["plots"] = make_run_plots(trainer.state.log_history, modalities, os.path.join(out, PLOTS_DIR), title)
    trainer.save_model()  # weights, config and the card
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_state()
    if not main:
        return written
    results = {
        "metrics": {k: dict(v) for k, v in metrics.items()},
        "dataset": shareable_value(record.dataset, note=True),  # no local path in a file meant to be shared
        "dataset_revision": record.dataset_revision,
        "preset": run_args.preset,
        "strategy": args.strategy,
        "best_model_checkpoint": shareable_value(trainer.state.best_model_checkpoint),
        "metric_for_best_model": args.metric_for_best_model,
        "selection_split": "validation",
        "modalities": modalities,
        # results on CPU depend on the summation order, hence on the thread count (never set here)
        "torch_num_threads": torch.get_num_threads(),
    }
    atomic_write_json(os.path.join(out, RESULTS_NAME), results)
    card = os.path.join(out, "README.md")
    written["card"] = card if run_args.model_card and os.path.isfile(card) else None
    finish_output_dir(out)
    return written
