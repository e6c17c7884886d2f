"""Two-process CPU DDP (gloo): identical coefficients on every rank, and one step on a
global batch split over 2 processes equals one process on the whole batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

WORKER = Path(__file__).with_name("ddp_worker.py")


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", MASTER_ADDR="127.0.0.1")
    env.pop("ACCELERATE_MIXED_PRECISION", None)
    return env


def _torchrun(out, *flags):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(29500 + os.getpid() % 1000), str(WORKER), str(out), *flags]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    _torchrun(out)
    _torchrun(out, "--no-all-reduce")
    proc = subprocess.run([sys.executable, str(WORKER), str(out), "--single"], env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]

    def load(name):
        return json.loads((out / name).read_text())

    return {n: load(n + ".json") for n in ("rank0", "rank1", "rank0_noreduce", "rank1_noreduce", "single")}


def test_two_processes_with_different_shards(runs):
    r0, r1 = runs["rank0"], runs["rank1"]
    assert r0["world_size"] == 2 and r1["world_size"] == 2
    assert {r0["rank"], r1["rank"]} == {0, 1}
    assert len(r0["seen_idx"]) == 8 and len(r1["seen_idx"]) == 8
    assert set(r0["seen_idx"]).isdisjoint(r1["seen_idx"])
    assert sorted(r0["seen_idx"] + r1["seen_idx"]) == list(range(16))


def test_all_reduced_coefficients_identical_across_ranks(runs):
    s0, s1 = np.array(runs["rank0"]["scales"]), np.array(runs["rank1"]["scales"])
    assert s0.shape == (1, 2)
    np.testing.assert_array_equal(s0, s1)
    # and equal to the coefficients of the whole global batch in one process
    np.testing.assert_allclose(s0, np.array(runs["single"]["scales"]), atol=1e-6)


def test_without_all_reduce_ranks_disagree(runs):
    s0, s1 = np.array(runs["rank0_noreduce"]["scales"]), np.array(runs["rank1_noreduce"]["scales"])
    assert np.abs(s0 - s1).max() > 1e-3


def test_ddp_step_equals_single_process_on_global_batch(runs):
    single = runs["single"]["params"]
    for rank in ("rank0", "rank1"):
        params = runs[rank]["params"]
        assert params.keys() == single.keys()
        for k in single:
            np.testing.assert_allclose(params[k], single[k], atol=1e-6, err_msg=k)
    # without the all-reduce the modulation differs per rank and the result drifts
    drift = max(np.abs(np.array(runs["rank0_noreduce"]["params"][k]) - np.array(single[k])).max() for k in single)
    assert drift > 1e-5
