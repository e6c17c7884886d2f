"""Two-process CPU DDP (gloo) with hf encoders (BERT + ViT, dict inputs padded per rank): one ARL step
on a global batch split over 2 processes equals one process on the whole batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

WORKER = Path(__file__).with_name("ddp_hf_worker.py")


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", MASTER_ADDR="127.0.0.1")
    env.pop("ACCELERATE_MIXED_PRECISION", None)
    return env


def test_ddp_with_hf_encoders_equals_one_process(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(30500 + os.getpid() % 1000), str(WORKER), str(tmp_path)]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    proc = subprocess.run([sys.executable, str(WORKER), str(tmp_path), "--single"], env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    runs = {n: json.loads((tmp_path / f"{n}.json").read_text()) for n in ("rank0", "rank1", "single")}
    assert runs["rank0"]["world_size"] == 2
    # every rank uses the coefficients of the whole global batch
    np.testing.assert_array_equal(runs["rank0"]["scales"], runs["rank1"]["scales"])
    np.testing.assert_allclose(runs["rank0"]["scales"], runs["single"]["scales"], atol=1e-5)
    single = runs["single"]["params"]
    for prefix in ("encoders.text.model.", "encoders.image.model.", "fusion."):  # the step trained every part
        assert any(k.startswith(prefix) for k in runs["single"]["moved"]), prefix
    for rank in ("rank0", "rank1"):
        params = runs[rank]["params"]
        assert params.keys() == single.keys()
        for k in single:
            np.testing.assert_allclose(params[k], single[k], atol=2e-6, err_msg=k)
