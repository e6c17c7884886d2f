"""Shared fixtures: a stand-in for the Hugging Face Hub built from local folders (no network)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def stand_in_hub(tmp_path, monkeypatch):
    """:class:`hub_standin.StandInHub` installed for the test: uploads land in ``tmp_path/hub``
    in the HF cache layout, downloads read it through the libraries' own offline code."""
    from hub_standin import StandInHub

    return StandInHub(str(tmp_path / "hub")).install(monkeypatch)


@pytest.fixture(autouse=True)
def _library_log_level():
    """Every test starts with the ``transformers`` library logger (the parent of arl_hf's loggers)
    at its default level: a run's per-process log levels (``TrainingArguments.log_level``) would
    otherwise carry over to later tests and hide the warnings they assert."""
    import logging

    library = logging.getLogger("transformers")
    level = library.level
    library.setLevel(logging.WARNING)
    yield
    library.setLevel(level)


@pytest.fixture
def caplog(caplog):
    """arl_hf logs under the ``transformers`` logger, which does not propagate to the root logger
    (where pytest's caplog listens): let it propagate for the test."""
    import logging

    library = logging.getLogger("transformers")
    before = library.propagate
    library.propagate = True
    yield caplog
    library.propagate = before


@pytest.fixture
def one_torch_thread():
    """Tiny models on a shared 2-core runner: one intra-op thread avoids OpenMP contention (100x here)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
