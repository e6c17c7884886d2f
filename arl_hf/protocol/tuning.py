"""Equal tuning budget for every method: ``Trainer.hyperparameter_search`` with optuna.

Each method (and each unimodal bound) gets ``n_trials`` trials of TPE (``TPESampler(seed)``,
a tuning seed that is not a reported seed) with no pruning (``NopPruner``), on the
**validation** split only. A trial's objective is ``eval_accuracy`` of the checkpoint selected
on validation, maximised. The space is the learning rate plus the strategy's own declared knobs
(``Strategy.search_space``).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

#: learning-rate range searched for every method, as multiples of the preset's learning rate
LR_RANGE = (0.2, 2.0)
TUNING_SEED = 1000  #: default seed of the sampler and of the tuning runs (no reported seed uses it)


def search_space(strategy: str, base_learning_rate: float) -> Dict[str, Tuple[float, float, str]]:
    """``{option: (low, high, scale)}`` searched for ``strategy`` (learning rate first)."""
    from ..strategies import STRATEGIES

    if strategy not in STRATEGIES:
        raise ValueError(f"strategy: unknown strategy {strategy!r}; expected one of {sorted(STRATEGIES)}")
    space = {"learning_rate": (LR_RANGE[0] * base_learning_rate, LR_RANGE[1] * base_learning_rate, "log")}
    space.update(getattr(STRATEGIES[strategy], "search_space", {}) or {})
    return space


#: the scales a search range may have: a float on a log or linear scale, or an int (uniform, bounds included)
SCALES = ("log", "linear", "int")


def optuna_space(space: Mapping[str, Tuple[float, float, str]]) -> Callable[[Any], Dict[str, float]]:
    """The ``hp_space`` callable of :meth:`Trainer.hyperparameter_search` for ``space``;
    ``ValueError`` naming the option whose scale is not one of :data:`SCALES`."""
    for k, (_, _, scale) in space.items():
        if scale not in SCALES:
            raise ValueError(f"search_space[{k!r}]: expected a scale among {SCALES}, got {scale!r}")

    def suggest(trial: Any, k: str, lo: float, hi: float, scale: str) -> Any:
        if scale == "int":
            return trial.suggest_int(k, int(lo), int(hi))
        return trial.suggest_float(k, lo, hi, log=(scale == "log"))

    def hp_space(trial: Any) -> Dict[str, float]:
        return {k: suggest(trial, k, lo, hi, scale) for k, (lo, hi, scale) in space.items()}

    return hp_space


def tune(trainer: Any, space: Mapping[str, Tuple[float, float, str]], n_trials: int,
         sampler_seed: int = TUNING_SEED) -> Dict[str, Any]:
    """Run the search on ``trainer`` (built with ``model_init``); returns the best values.

    Returns ``{"space", "best", "best_objective", "n_trials", "sampler_seed", "trials"}``.
    """
    import optuna

    if n_trials < 1:
        raise ValueError(f"n_trials: expected >= 1, got {n_trials}")
    if trainer.model_init is None:
        raise ValueError("trainer: tuning needs an ARLTrainer built with model_init")
    if trainer.args.metric_for_best_model not in ("accuracy", "eval_accuracy") or not trainer.args.greater_is_better:
        raise ValueError("trainer.args.metric_for_best_model: expected 'accuracy' (maximised), got "
                         f"{trainer.args.metric_for_best_model!r}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials: list = []

    def objective(metrics: Dict[str, float]) -> float:
        return float(metrics["eval_accuracy"])

    def hp_name(trial: Any) -> str:
        trials.append(trial)
        return f"trial-{trial.number}"

    best = trainer.hyperparameter_search(
        hp_space=optuna_space(space), compute_objective=objective, n_trials=int(n_trials), direction="maximize",
        backend="optuna", hp_name=hp_name, sampler=optuna.samplers.TPESampler(seed=int(sampler_seed)),
        pruner=optuna.pruners.NopPruner())
    return {"space": {k: list(v) for k, v in space.items()}, "best": dict(best.hyperparameters),
            "best_objective": float(best.objective), "n_trials": int(n_trials), "sampler_seed": int(sampler_seed)}


def tuning_trainer(parsed: Sequence[Any], dataset: Any, collator: Callable, modality: Optional[str] = None):
    """A trainer of the run whose parsed options are ``parsed`` (``parse_args`` output) built with
    ``model_init`` (a fresh model per trial), trained on ``train`` and evaluated on
    ``validation``; ``modality`` keeps one modality (a unimodal bound)."""
    from ..building import build_model, label_names, num_labels, sample_batch
    from ..outputs import prepare_output_dir
    from ..trainer import ARLTrainer
    from .runs import modality_collator

    training_args, model_args, data_args, run_args = parsed
    prepare_output_dir(training_args, run_args)
    run_collator = modality_collator(collator, modality) if modality else collator
    batch = sample_batch(dataset["train"], run_collator)
    labels, names = num_labels(dataset), label_names(dataset)

    def model_init():
        return build_model(batch, labels, model_args, None, names)

    return ARLTrainer(model_init=model_init, args=training_args, train_dataset=dataset["train"],
                      eval_dataset=dataset["validation"], data_collator=run_collator)
