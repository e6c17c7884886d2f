"""Every strategy under 2-process CPU DDP (gloo) equals one process on the global batch.

Two epochs of 2 steps, so per-epoch work runs too (PMR prototypes, G-Blending weights, D&R
diagnosis and re-initialisation). Ranks must agree exactly (parameters and strategy
state), and match the single process to float rounding — which holds only if every
batch statistic a strategy uses is reduced over ranks.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

WORKER = Path(__file__).with_name("ddp_strategies_worker.py")
sys.path.insert(0, str(WORKER.parent))

from ddp_strategies_worker import CASES  # noqa: E402


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", MASTER_ADDR="127.0.0.1")
    env.pop("ACCELERATE_MIXED_PRECISION", None)
    return env


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp_strategies")
    port = str(29500 + (os.getpid() + 500) % 1000)
    cmds = [[sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
             str(WORKER), str(out)],
            [sys.executable, str(WORKER), str(out), "--single"]]
    for cmd in cmds:
        proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:]
    return {f"{c}_{t}": json.loads((out / f"{c}_{t}.json").read_text())
            for c in CASES for t in ("rank0", "rank1", "single")}


def _flat(tree):
    if isinstance(tree, dict):
        return [x for k in sorted(tree) for x in _flat(tree[k])]
    if isinstance(tree, list):
        return [x for v in tree for x in _flat(v)]
    return [float(tree)] if isinstance(tree, (int, float)) and not isinstance(tree, bool) else []


def _assert_same_tree(got, want, path):
    """Same nesting of dicts (same keys) and lists (same lengths); numbers equal within pytest.approx's
    default tolerance (relative 1e-6, absolute 1e-12), everything else exactly equal. pytest.approx
    itself no longer compares nested structures."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(want), f"{path}: keys {sorted(got)} != {sorted(want)}"
        for k in want:
            _assert_same_tree(got[k], want[k], f"{path}[{k!r}]")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{path}: {got!r} != {want!r}"
        for i, (g, w) in enumerate(zip(got, want)):
            _assert_same_tree(g, w, f"{path}[{i}]")
    elif isinstance(want, (int, float)) and not isinstance(want, bool):
        assert isinstance(got, (int, float)) and not isinstance(got, bool) and got == pytest.approx(want), \
            f"{path}: {got!r} != {want!r}"
    else:
        assert got == want, f"{path}: {got!r} != {want!r}"


@pytest.mark.parametrize("case", list(CASES))
def test_ddp_equals_one_process(case, results):
    r0, r1, one = (results[f"{case}_{t}"] for t in ("rank0", "rank1", "single"))
    assert r0["world_size"] == 2 and one["world_size"] == 1
    assert r0["params"] == r1["params"] and r0["state"] == r1["state"]  # ranks agree exactly
    for k in one["params"]:
        np.testing.assert_allclose(r0["params"][k], one["params"][k], atol=1e-6, err_msg=f"{case}: {k}")
    a, b = _flat(r0["state"]), _flat(one["state"])
    assert len(a) == len(b)
    np.testing.assert_allclose(a, b, atol=1e-5, err_msg=f"{case}: strategy state")


def test_per_epoch_work_ran(results):
    dr = results["dr_single"]
    assert dr["state"]["times"] == [1] and len(dr["history"]) == 1
    assert any(v > 0 for k, v in dr["history"][0].items() if k.startswith("w_"))  # a real re-initialisation
    _assert_same_tree(results["dr_rank0"]["history"], dr["history"], "dr history")
    weights = np.array(results["gblending_single"]["state"]["weights"])
    assert not np.allclose(weights, 1.0 / len(weights))  # re-estimated from held-out data
    assert results["pmr_single"]["state"]["last_epoch"] == [1]
    for case in ("gblending", "mmpareto", "mla"):  # the heads are model parameters, trained under DDP
        assert any(k.startswith("strategy_state.") for k in results[f"{case}_rank0"]["params"])
