"""Fixtures of the reliability tests: a tiny vector dataset on disk and one short run of it."""

from __future__ import annotations

import os
import sys
from typing import Dict

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

STRATEGY_TESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "strategies")
if STRATEGY_TESTS not in sys.path:
    sys.path.insert(0, STRATEGY_TESTS)  # the tiny models and datasets of the strategy tests

from reliability_helpers import run_flags  # noqa: E402
from strategy_testutils import write_vector_dataset  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test of this folder runs with one intra-op thread."""
    yield


@pytest.fixture(scope="session")
def vector_dataset_dir(tmp_path_factory) -> str:
    return write_vector_dataset(tmp_path_factory.mktemp("data") / "vectors")


@pytest.fixture(scope="session")
def short_run(vector_dataset_dir, tmp_path_factory) -> Dict:
    """One 2-epoch ARL run (3 steps an epoch, a checkpoint each epoch, both kept)."""
    import torch

    from arl_hf.run_dir import release_output_dir
    from arl_hf.scripts.train import parse_args, train_and_evaluate

    torch.set_num_threads(1)
    out = str(tmp_path_factory.mktemp("runs") / "arl")
    argv = run_flags(vector_dataset_dir, out, "--strategy", "arl", "--save_total_limit", "3")
    metrics = train_and_evaluate(*parse_args(argv), argv=argv)
    release_output_dir(out)
    return {"output_dir": out, "metrics": metrics, "argv": argv}
