"""examples/run_arl.py spells out the steps of `arl-hf train` (arl_hf.scripts.train.train_and_evaluate):
the same command line gives the same results, weights and card through either."""

from __future__ import annotations

import json
import os
import subprocess

from cli_helpers import PYTHON, REPO, script_env, tiny_flags

SCRIPT = os.path.join(REPO, "examples", "run_arl.py")


def _tensors(path):
    from safetensors.numpy import load_file

    return load_file(path)


def test_script_and_train_and_evaluate_give_the_same_run(tiny_dataset_dir, tmp_path):
    from arl_hf.scripts.train import parse_args, train_and_evaluate

    extra = ("--preset", "avdigits", "--num_train_epochs", "1", "--lr_decay_epochs", "1", "--tags", "same-run")
    by_script, by_library = str(tmp_path / "out-a-script"), str(tmp_path / "out-b-library")
    done = subprocess.run([PYTHON, SCRIPT, *tiny_flags(tiny_dataset_dir, by_script, *extra)], env=script_env(),
                          capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[test split] fused: acc" in done.stdout
    argv = tiny_flags(tiny_dataset_dir, by_library, *extra)
    metrics = train_and_evaluate(*parse_args(argv), argv=argv)

    results = {}
    for name, out in (("script", by_script), ("library", by_library)):
        with open(os.path.join(out, "results.json")) as f:
            results[name] = json.load(f)
        results[name]["best_model_checkpoint"] = os.path.basename(results[name]["best_model_checkpoint"])
    assert results["script"] == results["library"]
    assert results["library"]["metrics"] == metrics
    a, b = _tensors(os.path.join(by_script, "model.safetensors")), _tensors(os.path.join(by_library,
                                                                                         "model.safetensors"))
    assert sorted(a) == sorted(b) and all((a[k] == b[k]).all() for k in a)

    cards = {}
    for name, out in (("script", by_script), ("library", by_library)):
        with open(os.path.join(out, "README.md")) as f:
            cards[name] = f.read().replace(out, "OUT").replace(os.path.basename(out), "OUT")
    assert cards["script"] == cards["library"]
    assert "same-run" in cards["library"] and "plots/accuracy.png" in cards["library"]
    assert "| `lr_scheduler` | x0.1 at epochs [1] |" in cards["library"]
