"""FSDP2 on CPU: refused where accelerate would not shard, and proven equal to one process where
``fully_shard`` is applied (2 processes, gloo; see fsdp_worker.py for the loop)."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

WORKER = Path(__file__).with_name("fsdp_worker.py")
sys.path.insert(0, str(WORKER.parent))
sys.path.insert(0, str(WORKER.parent.parent / "strategies"))

from fsdp_worker import CASES, RESUME  # noqa: E402
from strategy_testutils import cfg, mlp_model  # noqa: E402

TOL = 1e-5


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", MASTER_ADDR="127.0.0.1")
    for k in ("ACCELERATE_MIXED_PRECISION", "ACCELERATE_USE_FSDP"):
        env.pop(k, None)
    return env


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp")
    port = str(29500 + (os.getpid() + 250) % 1000)
    for cmd in ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
                 str(WORKER), str(out)],
                [sys.executable, str(WORKER), str(out), "--single"]):
        proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:]
    names = list(CASES) + [f"{c}_resume" for c in RESUME]
    res = {f"{n}_{t}": json.loads((out / f"{n}_{t}.json").read_text())
           for n in names for t in ("rank0", "rank1", "single")}
    for t in ("rank0", "rank1"):
        res[f"arl_parameters_stale_{t}"] = json.loads((out / f"arl_parameters_stale_{t}.json").read_text())
        res[f"refusal_{t}"] = json.loads((out / f"refusal_{t}.json").read_text())
    res["out"] = out
    return res


def _flat(tree):
    if isinstance(tree, dict):
        return [x for k in sorted(tree) for x in _flat(tree[k])]
    if isinstance(tree, list):
        return [x for v in tree for x in _flat(v)]
    return [float(tree)] if isinstance(tree, (int, float)) and not isinstance(tree, bool) else []


def _max_diff(a, b):
    assert a.keys() == b.keys()
    return max(float(np.abs(np.array(a[k]) - np.array(b[k])).max()) for k in a)


@pytest.mark.parametrize("case", list(CASES) + [f"{c}_resume" for c in RESUME])
def test_fsdp_two_processes_equal_one_process(case, runs):
    r0, r1, one = (runs[f"{case}_{t}"] for t in ("rank0", "rank1", "single"))
    assert r0["world_size"] == 2 and one["world_size"] == 1
    assert r0["sharded"] and r1["sharded"] and not one["sharded"]  # DTensor parameters under FSDP
    assert r0["params"] == r1["params"] and r0["state"] == r1["state"]  # the gathered state agrees exactly
    assert _max_diff(r0["params"], one["params"]) <= TOL, case
    a, b = _flat(r0["state"]), _flat(one["state"])
    assert len(a) == len(b)
    if b:
        np.testing.assert_allclose(a, b, atol=TOL, err_msg=f"{case}: strategy state")


def test_fsdp_parameter_mode_hooks_follow_the_sharded_parameters(runs):
    # every encoder parameter (one Linear per encoder: weight + bias) was hooked again after sharding ...
    assert runs["arl_parameters_rank0"]["tracked_parameters"] == 4
    assert runs["arl_output_rank0"]["tracked_parameters"] == 0  # output mode needs no parameter hooks
    # ... and without that, the hooks on the pre-sharding parameters never fire: far from one process
    drift = _max_diff(runs["arl_parameters_stale_rank0"]["params"], runs["arl_parameters_single"]["params"])
    assert drift > 1e-2


def test_fsdp_resume_equals_uninterrupted_training(runs):
    for case in RESUME:
        for tag in ("rank0", "single"):
            assert _max_diff(runs[f"{case}_resume_{tag}"]["params"], runs[f"{case}_{tag}"]["params"]) <= TOL, case
    # the per-epoch work ran across the checkpoint (re-estimated from held-out data at epoch 1)
    w = np.array(runs["gblending_resume_rank0"]["state"]["weights"])
    assert not np.allclose(w, 1.0 / len(w))
    assert runs["dr_rank0"]["state"]["times"] == [1]  # D&R re-initialised the sharded encoders once


def test_fsdp_checkpoint_files_hold_full_tensors(runs):
    from safetensors.torch import load_file

    ckpt = runs["out"] / "ckpt_gblending_fsdp"
    names = sorted(os.listdir(ckpt))
    assert names == ["model.safetensors", "optimizer.json", "optimizer.safetensors", "training_state.json"]
    weights = load_file(str(ckpt / "model.safetensors"))
    assert tuple(weights["encoders.audio.net.0.weight"].shape) == (8, 6)  # unsharded (rows 4 + 4)
    # the strategy's heads (their own FSDP units) and state are in the model's weights, unsharded
    assert tuple(weights["strategy_state.heads.audio.weight"].shape) == (3, 8)
    assert tuple(weights["strategy_state.weights"].shape) == (3,)
    assert json.loads((ckpt / "training_state.json").read_text()) == {"global_step": 3}
    momentum = load_file(str(ckpt / "optimizer.safetensors"))
    assert len(momentum) > 0 and all(t.abs().sum() > 0 for t in momentum.values())


def test_fsdp_refused_on_two_cpu_processes(runs):
    for tag in ("rank0", "rank1"):
        r = runs[f"refusal_{tag}"]
        assert r["fsdp"] is not None and r["fsdp"].startswith("fsdp: FSDP was requested")
        assert "MULTI_CPU" in r["fsdp"] and "DDP" in r["fsdp"]
        assert r["distributed_type"].endswith("MULTI_CPU")  # later trainers of the process are not affected
        assert r["strategy"] is not None and "'mmpareto' is not supported under FSDP" in r["strategy"]


def test_fsdp_refused_in_one_process(tmp_path):
    from arl_hf import ARLTrainer

    with pytest.raises(ValueError, match=r"^fsdp: FSDP was requested .* distributed type is NO"):
        ARLTrainer(model=mlp_model(), args=cfg(tmp_path, fsdp=True, fsdp_config={"fsdp_version": 2}))
    assert os.environ.get("ACCELERATE_USE_FSDP") is None  # the refused request does not leak


def test_fsdp_refused_when_requested_through_accelerate_launch(tmp_path, monkeypatch):
    from arl_hf import ARLTrainer

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what `accelerate launch --use_fsdp` exports
    with pytest.raises(ValueError, match="fsdp: FSDP was requested"):
        ARLTrainer(model=mlp_model(), args=cfg(tmp_path))


def test_fsdp_version_1_and_unsupported_strategies_refused(tmp_path):
    from accelerate.utils import DistributedType

    from arl_hf import ARLTrainer
    from arl_hf.fsdp import check_fsdp

    args = SimpleNamespace(fsdp_plugin_args={"fsdp_version": 1})
    acc = SimpleNamespace(state=SimpleNamespace(distributed_type=DistributedType.FSDP,
                                                fsdp_plugin=SimpleNamespace(fsdp_version=1)))
    with pytest.raises(ValueError, match=r"fsdp_config\['fsdp_version'\]: expected 2"):
        check_fsdp(acc, args)
    acc.state.fsdp_plugin.fsdp_version = 2
    assert check_fsdp(acc, args) is True
    assert check_fsdp(acc, SimpleNamespace(fsdp_plugin_args=None)) is False

    trainer = ARLTrainer(model=mlp_model(), args=cfg(tmp_path, strategy="ogm_ge"))
    trainer._fsdp2 = True  # as under accelerate's FSDP2
    with pytest.raises(ValueError, match="strategy: 'ogm_ge' is not supported under FSDP"):
        trainer._check_strategy_supports_fsdp()
