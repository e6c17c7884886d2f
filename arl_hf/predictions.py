"""What evaluation hands out: fused predictions, per-modality logits, TensorBoard tags.

``ARLTrainer.prediction_step`` returns, per batch, the fused and the per-modality logits
stacked as ``(B, 1 + M, C)``, so that transformers' evaluation loop gathers, pads and
accumulates them as one array (DDP, ``eval_accumulation_steps``). :class:`ModalityOutputsMixin`
splits that array when the loop ends:

* ``compute_metrics`` receives an ``EvalPrediction`` whose ``predictions`` are the fused
  logits ``(N, C)``, as for any transformers classifier;
* the trainer adds the per-modality metrics itself (``accuracy_<m>``, ``macro_f1_<m>``);
* ``evaluate()`` / ``predict()`` return the fused logits as ``predictions``; the per-modality
  logits are ``trainer.last_modality_logits`` (``{modality: (N, C)}``), and
  ``predict(..., return_modality_logits=True)`` returns ``predictions`` as the tuple
  ``(fused (N, C), per-modality (N, M, C))`` (modalities in ``trainer.modalities`` order).

:class:`SplitTensorBoardCallback` writes the metrics of the final validation evaluation
(``metric_key_prefix="validation"``) under ``eval/`` tags instead of ``train/validation_*``.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from transformers import EvalPrediction, TrainerCallback

from .metrics import modality_metrics

__all__ = ["ModalityOutputsMixin", "SplitTensorBoardCallback", "split_stacked", "use_split_tensorboard_tags"]


def split_stacked(predictions: Any, num_modalities: int) -> Optional[Tuple[Any, np.ndarray]]:
    """``(fused, per-modality (N, M, C))`` of the evaluation loop's predictions: a stacked
    ``(N, 1 + M, C)`` array, or the tuple ``(fused, (N, M, C))`` kept when a
    ``preprocess_logits_for_metrics`` is set, or a list of either per batch
    (``eval_do_concat_batches=False``: the fused part stays a list); ``None`` for any other layout
    (left untouched)."""
    if isinstance(predictions, list) and predictions:
        parts = [split_stacked(p, num_modalities) for p in predictions]
        if any(p is None for p in parts):
            return None
        return [p[0] for p in parts], np.concatenate([p[1] for p in parts])
    if isinstance(predictions, tuple) and len(predictions) == 2:
        modal = np.asarray(predictions[1]) if predictions[1] is not None else None
        if modal is not None and modal.ndim == 3 and modal.shape[1] == num_modalities:
            return predictions[0], modal
        return None
    if isinstance(predictions, np.ndarray) and predictions.ndim == 3 and predictions.shape[1] == 1 + num_modalities:
        return predictions[:, 0], predictions[:, 1:]
    return None


class _FusedMetrics:
    """A user's ``compute_metrics`` called with the fused logits, followed by the per-modality
    metrics (a key the user's function returned is kept as it returned it)."""

    def __init__(self, compute_metrics: Callable, modalities: Sequence[str]):
        self.compute_metrics = compute_metrics
        self.modalities = list(modalities)
        self.__wrapped__ = compute_metrics

    def __call__(self, eval_pred: EvalPrediction, **kwargs: Any) -> Dict[str, float]:
        split = split_stacked(eval_pred.predictions, len(self.modalities))
        if split is None:
            return self.compute_metrics(eval_pred, **kwargs)
        fused, modal = split
        given = EvalPrediction(predictions=fused, label_ids=eval_pred.label_ids, inputs=eval_pred.inputs,
                               losses=eval_pred.losses)
        metrics = dict(self.compute_metrics(given, **kwargs) or {})
        if kwargs:  # batch_eval_metrics: per-modality metrics need the whole split, not one batch
            return metrics
        labels = eval_pred.label_ids
        if isinstance(labels, list):  # eval_do_concat_batches=False: one array per batch
            labels = np.concatenate(labels)
        for k, v in modality_metrics(modal, labels, self.modalities).items():
            metrics.setdefault(k, v)
        return metrics


class ModalityOutputsMixin:
    """``ARLTrainer``'s evaluation outputs (module docstring). Mixed in before ``transformers.Trainer``."""

    #: ``{modality: (N, C) logits}`` of the latest ``evaluate()`` / ``predict()`` (``None`` before one)
    last_modality_logits: Optional[Dict[str, np.ndarray]] = None

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix: str = "eval"):
        modalities: List[str] = list(self.modalities)
        user_metrics, user_preprocess = self.compute_metrics, self.preprocess_logits_for_metrics
        if user_metrics is not None:
            self.compute_metrics = _FusedMetrics(user_metrics, modalities)
        if user_preprocess is not None:
            def preprocess(logits, labels):
                if logits.dim() == 3 and logits.shape[1] == 1 + len(modalities):
                    return user_preprocess(logits[:, 0], labels), logits[:, 1:]
                return user_preprocess(logits, labels)

            self.preprocess_logits_for_metrics = preprocess
        try:
            output = super().evaluation_loop(dataloader, description, prediction_loss_only=prediction_loss_only,
                                             ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        finally:
            self.compute_metrics, self.preprocess_logits_for_metrics = user_metrics, user_preprocess
        split = split_stacked(output.predictions, len(modalities))
        if split is None:
            return output
        fused, modal = split
        self.last_modality_logits = {m: modal[:, i] for i, m in enumerate(modalities)}
        return output._replace(predictions=fused)

    def predict(self, test_dataset: Any, ignore_keys: Optional[List[str]] = None, metric_key_prefix: str = "test",
                return_modality_logits: bool = False, **kwargs: Any):
        """``Trainer.predict``: ``predictions`` are the fused logits ``(N, C)``; with
        ``return_modality_logits=True`` they are ``(fused (N, C), per-modality (N, M, C))``, the
        modalities in ``trainer.modalities`` order (also in ``trainer.last_modality_logits``)."""
        self.last_modality_logits = None
        out = super().predict(test_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix, **kwargs)
        if not return_modality_logits:
            return out
        if self.last_modality_logits is None:
            raise ValueError("return_modality_logits: the evaluation loop returned no per-modality logits "
                             "(prediction_step was overridden to return another layout)")
        modal = np.stack([self.last_modality_logits[m] for m in self.modalities], axis=1)
        return out._replace(predictions=(out.predictions, modal))


def _tensorboard_class():
    try:
        from transformers.integrations import TensorBoardCallback
    except ImportError:  # pragma: no cover - transformers without its integrations
        return None
    return TensorBoardCallback


_TB = _tensorboard_class()


class SplitTensorBoardCallback(_TB or TrainerCallback):  # type: ignore[misc]
    """transformers' ``TensorBoardCallback``, writing the metrics of an evaluation under the
    prefix ``validation`` (the final evaluation of the selected checkpoint) as ``eval/<metric>``
    (transformers writes every key without an ``eval_`` / ``test_`` prefix under ``train/``)."""

    #: metric-key prefix -> the TensorBoard section it is written under
    SECTIONS = {"validation_": "eval_"}

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            renamed = {}
            for k, v in logs.items():
                for prefix, section in self.SECTIONS.items():
                    if k.startswith(prefix):
                        k = section + k[len(prefix):]
                        break
                renamed[k] = v
            logs = renamed
        return super().on_log(args, state, control, logs=logs, **kwargs)


def use_split_tensorboard_tags(trainer: Any) -> None:
    """Replace the trainer's ``TensorBoardCallback`` (``report_to`` tensorboard) by
    :class:`SplitTensorBoardCallback`, in place (same position, same writer)."""
    if _TB is None:
        return
    callbacks = trainer.callback_handler.callbacks
    for i, cb in enumerate(callbacks):
        if type(cb) is _TB:
            new = SplitTensorBoardCallback.__new__(SplitTensorBoardCallback)
            new.__dict__.update(cb.__dict__)
            callbacks[i] = new
