"""The arl-hf model card of :class:`~arl_hf.ARLTrainer`, TRL style.

The trainer keeps the metrics of its last evaluations, writes the card (rendered by
:mod:`arl_hf.cards`) into ``output_dir`` whenever the model is saved there, and
``push_to_hub`` uploads that card instead of the Trainer's generic draft.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

__all__ = ["ModelCardMixin"]


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
        ``dataset_args`` is accepted for ``Trainer`` compatibility and unused.
        """
        enabled, defaults = self.__dict__.get("_card_settings", (True, {}))
        if not enabled or not self.is_world_process_zero():
            return None
        from .cards import trainer_summary, write_model_card

        given = {"language": language, "license": license, "model_name": model_name, "tasks": tasks,
                 "finetuned_from": finetuned_from, "dataset_tags": dataset_tags, "dataset": dataset, **details}
        options = {**defaults, **{k: v for k, v in given.items() if v is not None}}
        options["tags"] = [str(t) for t in (defaults.get("tags") or [])] + (
            [tags] if isinstance(tags, str) else [str(t) for t in (tags or [])])
        return write_model_card(trainer_summary(self, self.evaluated_metrics, **options), self.args.output_dir)

    def _write_model_card_on_save(self, output_dir: Optional[str] = None) -> None:
        """The card goes with the model saved into ``output_dir`` (not with each checkpoint)."""
        if output_dir is None or os.path.abspath(output_dir) == os.path.abspath(self.args.output_dir):
            self.create_model_card()
