"""The learning-rate schedule and weight-decay options of :class:`~arl_hf.ARLTrainer`.

``ARLConfig.lr_decay_epochs`` / ``lr_decay_factor`` (the learning rate multiplied at given
epochs, as MultiStepLR stepped per epoch) and ``decay_all_parameters`` (weight decay on every
parameter, as ``torch.optim.SGD(weight_decay=...)``), as a mixin of the Trainer.
"""

from __future__ import annotations

import math
from typing import List

import torch

__all__ = ["ScheduleMixin"]


class ScheduleMixin:
    """``Trainer`` mixin: ``lr_decay_epochs`` schedule and ``decay_all_parameters`` groups."""

    def get_decay_parameter_names(self, model) -> List[str]:
        """Names of the parameters under weight decay: every trainable one with
        ``decay_all_parameters`` (as ``torch.optim.SGD(weight_decay=...)``), else Trainer's
        (biases and norm layers exempt)."""
        if self.args.decay_all_parameters:
            return [n for n, p in model.named_parameters() if p.requires_grad]
        return super().get_decay_parameter_names(model)

    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch on this process, as the Trainer counts them: batches of
        the training batch size (``state.train_batch_size`` once training, else
        ``args.train_batch_size``) times ``world_size`` (the last one dropped with
        ``dataloader_drop_last``), ``gradient_accumulation_steps`` batches per step."""
        if self.train_dataset is None:
            raise ValueError("train_dataset: steps_per_epoch needs a training set")
        n = len(self.train_dataset)
        per_process = getattr(self.state, "train_batch_size", None) or self.args.train_batch_size
        batch = per_process * max(1, self.args.world_size)
        batches = n // batch if self.args.dataloader_drop_last else math.ceil(n / batch)
        return max(1, math.ceil(max(1, batches) / self.args.gradient_accumulation_steps))

    def _create_run_scheduler(self, num_training_steps: int, optimizer=None):
        """With ``lr_decay_epochs``: the learning rate times ``lr_decay_factor`` at each of those
        epochs (MultiStepLR stepped per epoch, as a per-step ``LambdaLR``); else Trainer's."""
        if not self.args.lr_decay_epochs or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        optimizer = optimizer if optimizer is not None else self.optimizer
        spe = self.steps_per_epoch()
        milestones, factor = sorted(int(e) for e in self.args.lr_decay_epochs), float(self.args.lr_decay_factor)

        def lr_lambda(step: int) -> float:
            epoch = step // spe  # the epoch the next optimizer step belongs to
            return factor ** sum(1 for e in milestones if epoch >= e)

        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
        self._created_lr_scheduler = True
        return self.lr_scheduler
