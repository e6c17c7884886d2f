"""Loggers of arl_hf, inside transformers' logging tree.

Every module logs through ``get_logger(__name__)``, which returns the logger
``transformers.<module>`` (e.g. ``transformers.arl_hf.scripts.train``): a child of the
``transformers`` library logger, so it inherits that logger's level and handler. Hence
``--log_level info`` (``TrainingArguments``), ``transformers.utils.logging.set_verbosity_info()``,
``TRANSFORMERS_VERBOSITY=info`` and the per-process levels the training script sets all
show or hide arl_hf's messages together with the Trainer's.
"""

from __future__ import annotations

from transformers.utils import logging as hf_logging

__all__ = ["LOGGER_PREFIX", "get_logger"]

#: Parent of every arl_hf logger: the transformers library logger.
LOGGER_PREFIX = "transformers."


def get_logger(name: str):
    """The logger of module ``name`` (``__name__``), a child of the ``transformers`` logger."""
    if not name.startswith(LOGGER_PREFIX):
        name = LOGGER_PREFIX + name
    return hf_logging.get_logger(name)
