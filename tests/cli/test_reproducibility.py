"""The main job is reproducible: the script never sets the thread count (it follows
OMP_NUM_THREADS), and the same seed and thread count give bit-identical weights and metrics."""

import hashlib
import json
import os
import subprocess
import sys

from cli_helpers import REPO, tiny_flags


def run_script(tiny_dataset_dir, out, threads):
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, os.path.join(REPO, "examples", "run_arl.py")] + tiny_flags(
        tiny_dataset_dir, str(out), "--plots", "false", "--model_card", "false")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    digest = hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
    return results, digest


def test_threads_follow_omp_and_runs_are_bit_identical(tiny_dataset_dir, tmp_path):
    first, h1 = run_script(tiny_dataset_dir, tmp_path / "a", 1)
    second, h2 = run_script(tiny_dataset_dir, tmp_path / "b", 1)
    assert first["torch_num_threads"] == 1
    assert h1 == h2 and first["metrics"] == second["metrics"]
    two, _ = run_script(tiny_dataset_dir, tmp_path / "c", 2)
    assert two["torch_num_threads"] == 2
