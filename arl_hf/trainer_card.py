"""The arl-hf model card of :class:`~arl_hf.ARLTrainer`, TRL style.

The trainer keeps the metrics of its last evaluations, writes the card (rendered by
:mod:`arl_hf.cards` from :func:`trainer_summary`) into ``output_dir`` whenever the model is
saved there, and ``push_to_hub`` uploads that card instead of the Trainer's generic draft.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

from .cards import DEFAULT_LICENSE, RunSummary, dataset_label, write_model_card

__all__ = ["ModelCardMixin", "trainer_summary", "training_hyperparameters", "PLOT_CAPTIONS"]


class ModelCardMixin:
    """``Trainer`` mixin: evaluated metrics kept for the card, ``create_model_card``, card on save."""

    def evaluate(self, eval_dataset=None, ignore_keys: Optional[List[str]] = None,
                 metric_key_prefix: str = "eval") -> Dict[str, float]:
        """``Trainer.evaluate``; the loss, accuracy and macro-F1 (fused and per head) are kept
        for the model card (:attr:`evaluated_metrics`) under ``metric_key_prefix``."""
        metrics = super().evaluate(eval_dataset=eval_dataset, ignore_keys=ignore_keys,
                                   metric_key_prefix=metric_key_prefix)
        from .metrics import split_metrics

        kept = split_metrics(metrics, metric_key_prefix)
        if kept:
            during = bool(self.is_in_train)
            step = int(self.state.global_step) if self.state is not None else 0
            last = self.__dict__.get("_card_evaluations")
            # one set per model state: a new step, or the first evaluation after (or during) training, starts one
            if last is None or last["step"] != step or last["during_train"] != during:
                last = self.__dict__["_card_evaluations"] = {"step": step, "during_train": during, "splits": {}}
            last["splits"][metric_key_prefix] = kept
        return metrics

    @property
    def evaluated_metrics(self) -> Dict[str, Dict[str, float]]:
        """The metrics of the last evaluations this trainer ran on the current model (split ->
        ``loss``, ``accuracy``, ``macro_f1``, ``accuracy_<m>``, ``macro_f1_<m>``), keyed by
        ``metric_key_prefix``: those run together after training (e.g. ``validation`` and
        ``test``), else the last one during training (``eval``)."""
        last = self.__dict__.get("_card_evaluations")
        return {k: dict(v) for k, v in last["splits"].items()} if last else {}

    def configure_model_card(self, enabled: bool = True, **defaults: Any) -> None:
        """Whether :meth:`save_model` / :meth:`push_to_hub` write the card, and the defaults of
        :meth:`create_model_card`'s keyword arguments (``license``, ``tags``, ``preset``,
        ``plots``, ``reproduce_command``, ``encoder_init``, ...)."""
        self.__dict__["_card_settings"] = (bool(enabled), dict(defaults))

    def create_model_card(self, language: Optional[str] = None, license: Optional[str] = None,
                          tags: Optional[Any] = None, model_name: Optional[str] = None,
                          finetuned_from: Optional[str] = None, tasks: Optional[Any] = None,
                          dataset_tags: Optional[Any] = None, dataset: Optional[Any] = None,
                          dataset_args: Optional[Any] = None, **details: Any) -> Optional[str]:
        """Write the arl-hf card into ``output_dir/README.md`` (main process); returns its path.

        ``library_name: arl-hf``, the trainer's tags (``_tag_names``) and paper (``_paper``),
        the model's modalities, encoders and recorded preprocessing, the hyper-parameters, and
        one :class:`~huggingface_hub.EvalResult` per split, head and metric of
        :attr:`evaluated_metrics` (when the data is a Hub dataset repo; the results table
        always). ``push_to_hub(license=..., tags=..., finetuned_from=..., language=...,
        tasks=..., dataset_tags=..., model_name=...)`` passes its arguments here; ``tags`` add
        to those of :meth:`configure_model_card`, the other arguments override them.
        ``dataset_args`` is accepted for ``Trainer`` compatibility and unused; ``output_dir``
        (default ``args.output_dir``) is the folder the card is written into.
        """
        target = details.pop("output_dir", None) or self.args.output_dir
        enabled, defaults = self.__dict__.get("_card_settings", (True, {}))
        if not enabled or not self.is_world_process_zero():
            return None
        given = {"language": language, "license": license, "model_name": model_name, "tasks": tasks,
                 "finetuned_from": finetuned_from, "dataset_tags": dataset_tags, "dataset": dataset, **details}
        options = {**defaults, **{k: v for k, v in given.items() if v is not None}}
        options["tags"] = [str(t) for t in (defaults.get("tags") or [])] + (
            [tags] if isinstance(tags, str) else [str(t) for t in (tags or [])])
        return write_model_card(trainer_summary(self, self.evaluated_metrics, output_dir=target, **options), target)

    def _write_model_card_on_save(self, output_dir: Optional[str] = None) -> None:
        """The card goes beside the weights wherever the model is saved (``save_model(path)``
        too), but not into each ``checkpoint-<step>`` folder of ``output_dir``."""
        if output_dir is None or os.path.abspath(output_dir) == os.path.abspath(self.args.output_dir):
            self.create_model_card()
            return
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        folder = os.path.abspath(output_dir)
        in_run = os.path.dirname(folder) == os.path.abspath(self.args.output_dir)
        if in_run and os.path.basename(folder).startswith(f"{PREFIX_CHECKPOINT_DIR}-"):
            return
        self.create_model_card(output_dir=output_dir)


#: captions of the plots :func:`arl_hf.plots.make_run_plots` writes
PLOT_CAPTIONS = {
    "arl_dynamics.png": "Fig. 3 for this run: dependency ratio vs inverse-variance ratio (a) and "
    "the coefficients a_m (b) over training",
    "accuracy.png": "Validation accuracy (fused and per modality) and training loss",
}




def training_hyperparameters(args: Any, encoder_init: Optional[str] = None,
                             mixed_precision: Optional[str] = None,
                             strategy_options: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """The hyper-parameter table of a card, from an :class:`~arl_hf.ARLConfig` and the options of
    the strategy that trained (``asdict(strategy.options)``, each under its own name)."""
    if mixed_precision is None:
        mixed_precision = "bf16" if args.bf16 else ("fp16" if args.fp16 else "no")
    hp: Dict[str, Any] = {
        "strategy": args.strategy,
        "optimizer": (str(getattr(args.optim, "value", args.optim))
                      + (f" ({args.optim_args})" if args.optim_args else "")),
        "learning_rate": args.learning_rate,
        "weight_decay": f"{args.weight_decay}" + (" (all parameters)" if args.decay_all_parameters else ""),
        "lr_scheduler": (
            f"x{args.lr_decay_factor} at epochs {args.lr_decay_epochs}" if args.lr_decay_epochs
            else str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type))
        ),
        "per_device_train_batch_size": args.per_device_train_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "world_size": args.world_size,
        "num_train_epochs": args.num_train_epochs,
        "max_grad_norm": args.max_grad_norm,
        "mixed_precision": mixed_precision,
        "seed": args.seed,
        "encoder_init": encoder_init,
    }
    hp.update(strategy_options or {})
    return hp


def _as_list(value: Any) -> List[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def trainer_summary(
    trainer: Any,
    metrics: Mapping[str, Mapping[str, float]],
    *,
    model_name: Optional[str] = None,
    license: Optional[str] = DEFAULT_LICENSE,
    tags: Any = None,
    finetuned_from: Optional[str] = None,
    language: Optional[Any] = None,
    tasks: Any = None,
    dataset_tags: Any = None,
    dataset: Any = None,
    preset: Optional[str] = None,
    plots: Sequence[str] = (),
    reproduce_command: Optional[str] = None,
    encoder_init: Optional[str] = None,
    output_dir: Optional[str] = None,
) -> RunSummary:
    """What the card of an :class:`~arl_hf.ARLTrainer`'s model says: the model's config and
    recorded preprocessing, the trainer's arguments, state and class metadata (``_tag_names``,
    ``_name``, ``_paper``), and ``metrics`` (split -> metric dict).

    ``license`` ``None`` or ``"none"`` omits it; ``finetuned_from`` defaults to the Hub id the
    model was loaded from; ``dataset`` names the data when the model records none; ``plots``
    are paths relative to ``output_dir`` (the folder the card goes into; default
    ``args.output_dir``); ``preset`` defaults to the recorded one.
    """
    from .data import available_datasets
    from .data.sharing import is_hub_id

    args, model = trainer.args, trainer.model
    config = getattr(model, "config", None)
    modalities = getattr(config, "modalities", None) or {  # a model of the contract that is no MultimodalModel
        m: {"encoder": type(model.encoders[m]).__name__} for m in trainer.modalities}
    out = output_dir or args.output_dir
    record = dict(getattr(config, "preprocessing", None) or {})
    named = _as_list(dataset)
    label = dataset_label(record, named[0] if named else "custom data")
    # a model that records no dataset and none named: a placeholder in the evaluate command
    recorded = str(record.get("dataset") or (named[0] if named else "DATASET"))
    on_hub = is_hub_id(recorded) and recorded not in list(available_datasets())
    if finetuned_from is None:
        loaded_from = str(getattr(config, "_name_or_path", "") or "")
        finetuned_from = loaded_from if loaded_from and is_hub_id(loaded_from) else None
    state = trainer.state
    best = state.best_model_checkpoint
    selection = (
        f"`{args.metric_for_best_model}` on the validation split (best: {state.best_metric:.4f} at "
        f"{os.path.basename(best)})" if best and state.best_metric is not None
        else "final checkpoint (no validation-based selection)"
    )
    method = str(trainer._name).lower()
    base_tags = [t for t in trainer._tag_names if t != method] + [f"strategy-{args.strategy}"]
    if args.strategy == method:
        base_tags.append(method)
    tasks = _as_list(tasks)
    return RunSummary(
        model_name=model_name or (args.hub_model_id.split("/")[-1] if args.hub_model_id
                                  else os.path.basename(os.path.normpath(out))),
        dataset=label,
        dataset_id=recorded if on_hub else None,
        dataset_revision=record.get("dataset_revision") if on_hub else None,
        dataset_arg=recorded,
        license=None if license in (None, "", "none") else license,
        base_model=finetuned_from,
        language=language,
        tags=_as_list(tags),
        extra_datasets=[d for d in _as_list(dataset_tags) if is_hub_id(d)],
        task=tasks[0] if tasks else None,
        input_modalities=_input_modalities(model, modalities),
        modalities=modalities,
        metrics={k: dict(v) for k, v in metrics.items()},
        strategy=args.strategy,
        preset=preset if preset is not None else record.get("preset"),
        fusion=getattr(config, "fusion", "concat"),
        preprocessing=getattr(config, "preprocessing", None),
        # what the Accelerator actually ran with (also set by `accelerate launch --mixed_precision`)
        hyperparameters=training_hyperparameters(
            args, encoder_init if encoder_init is not None else getattr(config, "init", None),
            str(getattr(trainer.accelerator, "mixed_precision", None) or "no"), _strategy_options(trainer)),
        # the plots present when the card is written (those drawn after training included)
        plots=[(p, PLOT_CAPTIONS.get(os.path.basename(p), os.path.basename(p))) for p in plots
               if os.path.isfile(os.path.join(out, p))],
        selection=selection,
        load_path=args.hub_model_id or out,
        reproduce_command=reproduce_command,
        paper=dict(trainer._paper),
        base_tags=base_tags,
    )


def _strategy_options(trainer: Any) -> Dict[str, Any]:
    """``asdict`` of the options of the strategy that trains (none for a strategy without)."""
    options = getattr(getattr(trainer, "strategy", None), "options", None)
    return dataclasses.asdict(options) if dataclasses.is_dataclass(options) else {}


def _input_modalities(model: Any, modalities: Mapping[str, Any]) -> List[str]:
    """The model's ``input_modalities``; for a model of the contract without them, the Hub
    modality each modality name stands for (``visual`` -> ``video``...)."""
    given = list(getattr(model, "input_modalities", []) or [])
    if given:
        return given
    from .kinds import NAME_TO_INPUT_MODALITY

    return list(dict.fromkeys(NAME_TO_INPUT_MODALITY.get(m.lower(), "time") for m in modalities))
