"""The real script under ``accelerate launch --mixed_precision bf16`` on CPU, in a fresh process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from cli_helpers import REPO, script_env, tiny_flags


@pytest.mark.skipif(shutil.which("accelerate") is None, reason="accelerate CLI not on PATH")
def test_accelerate_launch_bf16_cpu_run_of_the_script(tiny_dataset_dir, tmp_path):
    out = str(tmp_path / "bf16")
    cmd = [
        "accelerate", "launch", "--num_processes", "1", "--num_machines", "1", "--dynamo_backend", "no",
        "--mixed_precision", "bf16", "--cpu",
        os.path.join(REPO, "examples", "run_arl.py"),
        *tiny_flags(tiny_dataset_dir, out, "--preset", "avdigits", "--lr_decay_epochs", "1"),
    ]
    env = script_env()
    # oneDNN's AVX512-BF16 convolution kernels return non-finite gradients now and then on this
    # runner's CPUs (plain timm + torch.autocast, no arl_hf code: ~1 step in 8); AVX2 kernels do not.
    env["ONEDNN_MAX_CPU_ISA"] = "AVX2"
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the printed report names the split of every number
    assert "[validation split] fused: acc" in proc.stdout and "[test split] fused: acc" in proc.stdout
    assert "audio: acc" in proc.stdout and "visual: acc" in proc.stdout
    # the Accelerator ran in bf16 (recorded from trainer.accelerator in the card)
    with open(os.path.join(out, "README.md")) as f:
        assert "| `mixed_precision` | bf16 |" in f.read()
    # MultiStepLR-style decay: x0.1 from epoch 1 on (constant schedule from the avdigits preset otherwise)
    with open(os.path.join(out, "trainer_state.json")) as f:
        logs = [e for e in json.load(f)["log_history"] if "learning_rate" in e]
    assert len(logs) == 6
    for e in logs:
        want = 0.05 if e["epoch"] <= 1.0 + 1e-6 else 0.005
        assert e["learning_rate"] == pytest.approx(want), e
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    assert results["metrics"]["test"]["accuracy"] > 0.5  # learnt something in bf16


@pytest.mark.skipif(shutil.which("accelerate") is None, reason="accelerate CLI not on PATH")
def test_accelerate_launch_two_cpu_processes_run_of_the_script(tiny_dataset_dir, tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2 ... --use_cpu`: a real 2-process gloo run."""
    out = str(tmp_path / "ddp")
    cmd = [
        "accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--dynamo_backend", "no", "--mixed_precision", "no", "--main_process_port", str(29600 + os.getpid() % 300),
        os.path.join(REPO, "examples", "run_arl.py"),
        *tiny_flags(tiny_dataset_dir, out, "--preset", "avdigits"),
    ]
    env = script_env()
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the report is printed once (main process only), naming the split of every number
    assert proc.stdout.count("[test split] fused: acc") == 1
    with open(os.path.join(out, "README.md")) as f:
        assert "| `world_size` | 2 |" in f.read()
    with open(os.path.join(out, "trainer_state.json")) as f:
        logs = [e for e in json.load(f)["log_history"] if "a_audio" in e]
    assert logs and all(abs(e["a_audio"] + e["a_visual"] - 1) < 1e-5 for e in logs)
    with open(os.path.join(out, "results.json")) as f:
        assert json.load(f)["metrics"]["test"]["accuracy"] > 0.3
