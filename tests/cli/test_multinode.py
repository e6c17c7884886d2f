"""Two simulated nodes: ``torchrun --nnodes 2 --node_rank {0,1} --nproc_per_node 1 --master_addr
127.0.0.1`` of the real script, one launcher per node (gloo, CPU), sharing one output folder."""

from __future__ import annotations

import glob
import json
import os
import socket
import subprocess
import sys

from cli_helpers import REPO, script_env, tiny_flags


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_train_and_write_one_checkpoint(tiny_dataset_dir, tmp_path):
    out = str(tmp_path / "two_nodes")
    port = str(_free_port())
    env = script_env()
    env.pop("ACCELERATE_MIXED_PRECISION", None)
    procs = []
    for node in (0, 1):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(node),
               "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", port,
               os.path.join(REPO, "examples", "run_arl.py"),
               *tiny_flags(tiny_dataset_dir, out, "--preset", "avdigits", "--num_train_epochs", "1")]
        procs.append(subprocess.Popen(cmd, env=env, cwd=str(tmp_path), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    results = [p.communicate(timeout=400) for p in procs]
    for p, (stdout, stderr) in zip(procs, results):
        assert p.returncode == 0, stderr[-3000:]
    # one process per node, one report (global rank 0 only)
    assert sum(stdout.count("[test split] fused: acc") for stdout, _ in results) == 1
    checkpoints = glob.glob(os.path.join(out, "checkpoint-*"))
    assert len(checkpoints) == 1, checkpoints
    for name in ("model.safetensors", "trainer_state.json", "optimizer.pt"):
        assert os.path.isfile(os.path.join(checkpoints[0], name)), name
    with open(os.path.join(out, "README.md")) as f:
        assert "| `world_size` | 2 |" in f.read()
    with open(os.path.join(checkpoints[0], "trainer_state.json")) as f:
        state = json.load(f)
    # 48 training rows, 16 per process and step, 2 processes: 2 steps (the last one partial)
    assert state["global_step"] == int(os.path.basename(checkpoints[0]).split("-")[1]) == 2
    logs = [e for e in state["log_history"] if "a_audio" in e]
    assert logs and all(abs(e["a_audio"] + e["a_visual"] - 1) < 1e-5 for e in logs)
