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
