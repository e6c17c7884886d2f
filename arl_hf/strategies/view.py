"""What a strategy sees of the trainer: a small declared interface, not the Trainer's internals.

:class:`~arl_hf.ARLTrainer` implements it; a loop of one's own (e.g. around
:func:`arl_hf.fsdp.training_step`) may pass any object that does, or ``None`` where the
strategy needs no data pass.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, Optional, Protocol, runtime_checkable

import torch

__all__ = ["TrainerView", "is_sync_step"]


@runtime_checkable
class TrainerView(Protocol):
    """The trainer's side of the strategy contract."""

    #: the training set (a ``datasets.Dataset`` or any sized dataset)
    train_dataset: Any
    #: the validation split, or a dict holding it under ``"validation"`` (never the test split)
    eval_dataset: Any

    @property
    def train_batch_size(self) -> int:
        """Per-device training batch size."""

    @property
    def world_size(self) -> int:
        """Number of processes."""

    @property
    def process_index(self) -> int:
        """This process's index."""

    @property
    def device(self) -> torch.device:
        """The device batches are moved to."""

    def is_sync_step(self) -> bool:
        """Whether the micro-batch just run is the last of its accumulation window."""

    def loss_scale(self) -> float:
        """The mixed-precision loss scale the backward runs with (1.0 without a scaler)."""

    def num_train_batches(self) -> int:
        """Batches of one training epoch on this process (0 when unknown)."""

    def eval_batches(self, dataset: Any) -> Iterator[Dict[str, Any]]:
        """Batches of ``dataset`` through the evaluation loader (sequential, sharded across ranks,
        the training collator), on the device, with ``labels``; the global RNG is left untouched."""


def is_sync_step(trainer: Optional[TrainerView]) -> bool:
    """``trainer.is_sync_step()``; ``True`` without a trainer."""
    return True if trainer is None else bool(trainer.is_sync_step())
