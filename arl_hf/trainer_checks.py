"""Checks of the data a :class:`~arl_hf.ARLTrainer` is given, made before the first step.

* An evaluation or prediction split with no example is refused (``evaluate``, ``predict``, and
  ``train`` when it evaluates along the way): it would report no metric and no error.
* Labels that are strings are refused at the first batch with what to do (map them to class ids),
  instead of a collator's error about a missing ``labels`` key or tensor dimensions.
* A training set whose size leaves a last batch of one example, when the model has BatchNorm
  layers (which cannot normalise one value per channel in training): that batch is dropped from
  every epoch, as ``dataloader_drop_last=True`` would, and a warning says so. Runs whose last batch
  holds more than one example are left as they are.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

from torch import nn

from .data.collator import string_labels_error
from .log import get_logger

logger = get_logger(__name__)

__all__ = ["DataChecksMixin", "check_split_not_empty", "LabelTypeCheck"]

#: the label keys transformers' collators read
LABEL_KEYS = ("labels", "label", "label_ids")


def check_split_not_empty(dataset: Any, split: str, field: str = "eval_dataset") -> None:
    """``ValueError`` naming the argument ``field`` and the ``split`` when ``dataset`` has no example
    (each dataset of a dict of them: split ``{split}_{name}``); datasets without a length (streams)
    are not checked."""
    if isinstance(dataset, dict):
        for name, part in dataset.items():
            check_split_not_empty(part, f"{split}_{name}", field)
        return
    try:
        size = len(dataset)
    except TypeError:
        return
    if size == 0:
        raise ValueError(f"{field}: the {split!r} split is empty (0 examples); expected at least one example")


def _is_text(value: Any) -> bool:
    if isinstance(value, (str, bytes)):
        return True
    return isinstance(value, (list, tuple)) and len(value) > 0 and isinstance(value[0], (str, bytes))


class LabelTypeCheck:
    """A data collator that first refuses examples whose label (``labels``, ``label``, ``label_ids``
    or the collator's own ``label_key``) is a string, then calls ``collator``."""

    def __init__(self, collator: Callable):
        self.collator = collator
        own = (getattr(collator, "label_key", None)
               or getattr(getattr(collator, "data_collator", None), "label_key", None))
        self.keys = LABEL_KEYS + ((own,) if isinstance(own, str) and own not in LABEL_KEYS else ())

    def __call__(self, features: Any) -> Any:
        first = features[0] if isinstance(features, (list, tuple)) and features else None
        if isinstance(first, Mapping):
            for key in self.keys:
                if key in first and _is_text(first[key]):
                    raise string_labels_error(key, [f.get(key) for f in features[:3] if isinstance(f, Mapping)])
        return self.collator(features)

    def __getattr__(self, name: str) -> Any:  # the wrapped collator's attributes (label_key, transform, ...)
        if name == "collator":
            raise AttributeError(name)
        return getattr(self.collator, name)


class DataChecksMixin:
    """Trainer mixin (before ``transformers.Trainer`` in the bases) running the checks above."""

    def train(self, *args: Any, **kwargs: Any):
        check_split_not_empty(self.train_dataset, "train", "train_dataset")
        if str(getattr(self.args.eval_strategy, "value", self.args.eval_strategy)) != "no" \
                and self.eval_dataset is not None:
            check_split_not_empty(self.eval_dataset, "eval")
        return super().train(*args, **kwargs)

    def evaluate(self, eval_dataset: Any = None, ignore_keys: Optional[list] = None,
                 metric_key_prefix: str = "eval", **kwargs: Any):
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if isinstance(dataset, str) and isinstance(self.eval_dataset, dict):  # one of several, by name
            dataset = self.eval_dataset.get(dataset)
        if dataset is not None and not isinstance(dataset, dict):  # a dict comes back here per dataset
            check_split_not_empty(dataset, metric_key_prefix)
        return super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix, **kwargs)

    def predict(self, test_dataset: Any, ignore_keys: Optional[list] = None, metric_key_prefix: str = "test",
                **kwargs: Any):
        check_split_not_empty(test_dataset, metric_key_prefix, "test_dataset")
        return super().predict(test_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix, **kwargs)

    # ---- loaders: label types, the single-example last batch ---------------------------------
    def _with_label_check(self, make_loader: Callable):
        collator = self.data_collator
        if collator is not None:
            self.data_collator = LabelTypeCheck(collator)
        try:
            return make_loader()
        finally:
            self.data_collator = collator

    def get_train_dataloader(self):
        if not self._single_example_last_batch():
            return self._with_label_check(super().get_train_dataloader)
        drop = self.args.dataloader_drop_last
        self.args.dataloader_drop_last = True
        try:
            return self._with_label_check(super().get_train_dataloader)
        finally:
            self.args.dataloader_drop_last = drop

    def get_eval_dataloader(self, eval_dataset: Any = None):
        return self._with_label_check(lambda: super(DataChecksMixin, self).get_eval_dataloader(eval_dataset))

    def get_test_dataloader(self, test_dataset: Any):
        return self._with_label_check(lambda: super(DataChecksMixin, self).get_test_dataloader(test_dataset))

    def _single_example_last_batch(self) -> bool:
        """Whether training would reach a batch of one example on this process with a model holding
        BatchNorm layers (warned once per trainer)."""
        args = self.args
        if args.dataloader_drop_last:
            return False
        try:
            size = len(self.train_dataset)
        except TypeError:
            return False
        batch, world = int(self._train_batch_size), int(args.world_size)
        if size == 0 or batch < 2 or (world > 1 and getattr(self.accelerator, "even_batches", True)):
            return False  # several processes: accelerate completes the last batch (even_batches)
        if size % (batch * world) % batch != 1:
            return False
        full_batches = size // batch // world
        if args.max_steps > 0 and args.max_steps * args.gradient_accumulation_steps <= full_batches:
            return False  # the run ends before the last batch
        if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.model.modules()):
            return False
        if not getattr(self, "_warned_single_example_batch", False):
            self._warned_single_example_batch = True
            logger.warning(
                "train_dataset: %d examples in batches of %d%s leave a last batch of 1 example, which the model's "
                "BatchNorm layers cannot normalise in training; it is dropped from every epoch "
                "(as dataloader_drop_last=True would)", size, batch, f" on {world} processes" if world > 1 else "")
        return True

