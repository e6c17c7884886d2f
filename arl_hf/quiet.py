"""Less noise from a trainer: no pinned memory without CUDA, no library progress bars under
``disable_tqdm``. Neither changes what is trained."""

from __future__ import annotations

import contextlib
import warnings
from typing import Any, Iterator

__all__ = ["QuietMixin", "progress_bars_off"]


@contextlib.contextmanager
def progress_bars_off(off: bool = True) -> Iterator[None]:
    """Within the block, transformers' and huggingface_hub's progress bars ("Writing model
    shards", "Loading weights", uploads) are off when ``off``; each is restored after."""
    if not off:
        yield
        return
    import huggingface_hub.utils as hub_utils
    from transformers.utils import logging as hf_logging

    transformers_on = hf_logging.is_progress_bar_enabled()
    hub_on = not hub_utils.are_progress_bars_disabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if transformers_on:
            with warnings.catch_warnings():  # huggingface_hub warns when its environment variable keeps them off
                warnings.simplefilter("ignore")
                hf_logging.enable_progress_bar()
        if not hub_on:
            hub_utils.disable_progress_bars()
        elif not transformers_on:
            hub_utils.enable_progress_bars()


class QuietMixin:
    """``Trainer`` mixin: data loaders pin memory only for a CUDA device (the
    ``dataloader_pin_memory`` default would warn on CPU), and ``disable_tqdm`` also silences the
    progress bars of saving and loading the model."""

    def _get_dataloader(self, *args: Any, **kwargs: Any):
        training_args = self.args
        if not training_args.dataloader_pin_memory or training_args.device.type == "cuda":
            return super()._get_dataloader(*args, **kwargs)
        training_args.dataloader_pin_memory = False
        try:
            return super()._get_dataloader(*args, **kwargs)
        finally:
            training_args.dataloader_pin_memory = True

    def train(self, *args: Any, **kwargs: Any):
        """``Trainer.train``; under ``disable_tqdm`` without the checkpoints' progress bars."""
        with progress_bars_off(bool(self.args.disable_tqdm)):
            return super().train(*args, **kwargs)

    def save_model(self, output_dir: Any = None, _internal_call: bool = False) -> None:
        """``Trainer.save_model``; under ``disable_tqdm`` without the "Writing model shards" bar."""
        with progress_bars_off(bool(self.args.disable_tqdm)):
            return super().save_model(output_dir, _internal_call)
