"""Fixtures of the CLI tests: the tiny dataset on disk and one shared short ARL run."""

from __future__ import annotations

import os
from typing import Dict

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

from cli_helpers import make_tiny_dataset, tiny_flags


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test of this folder runs with one intra-op thread."""
    yield


@pytest.fixture(scope="session")
def tiny_dataset_dir(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("data") / "tiny_av")
    make_tiny_dataset().save_to_disk(path)
    return path


@pytest.fixture(scope="session")
def trained_run(tiny_dataset_dir, tmp_path_factory) -> Dict:
    """One short ARL run through the library entry point; returns its output_dir, metrics and argv."""
    import torch

    from arl_hf.scripts.train import parse_args, train_and_evaluate

    torch.set_num_threads(1)  # session fixtures run before the autouse function fixture

    out = str(tmp_path_factory.mktemp("runs") / "arl")
    argv = tiny_flags(tiny_dataset_dir, out, "--preset", "avdigits", "--arl_temperature", "2")
    training_args, model_args, data_args, run_args = parse_args(argv)
    metrics = train_and_evaluate(training_args, model_args, data_args, run_args, argv=argv)
    return {"output_dir": out, "metrics": metrics, "argv": argv}
