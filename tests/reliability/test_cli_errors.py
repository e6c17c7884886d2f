"""Every failure of a command is one ``error:`` line on stderr and exit status 2; ``--debug``
shows the traceback instead."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from arl_hf import cli
from arl_hf.scripts import command
from arl_hf.scripts.evaluate import main as evaluate_main

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _error_lines(err: str):
    return [line for line in err.splitlines() if "error:" in line]


def _truncated_copy(short_run, dest) -> str:
    out = shutil.copytree(short_run["output_dir"], dest)
    weights = os.path.join(out, "model.safetensors")
    with open(weights, "r+b") as f:
        f.truncate(os.path.getsize(weights) - 100)
    return str(out)


def test_evaluate_a_truncated_safetensors_file_is_one_error_line(short_run, tmp_path, capsys):
    ckpt = _truncated_copy(short_run, tmp_path / "run")
    with pytest.raises(SystemExit) as e:
        cli.main(["evaluate", "--model_name_or_path", ckpt])
    assert e.value.code == 2
    err = capsys.readouterr().err
    lines = _error_lines(err)
    assert len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith("arl-hf evaluate: error: model_name_or_path: ")
    assert "model.safetensors' is damaged" in lines[0] and "truncated" in lines[0]
    with pytest.raises(ValueError, match="is damaged"):  # --debug: the exception itself
        cli.main(["evaluate", "--model_name_or_path", ckpt, "--debug"])
    with pytest.raises(ValueError, match="is damaged"):
        cli.main(["--debug", "evaluate", "--model_name_or_path", ckpt])


def test_evaluate_in_a_subprocess_exits_2_with_one_line(short_run, tmp_path):
    ckpt = _truncated_copy(short_run, tmp_path / "run")
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1",
               HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
    done = subprocess.run([sys.executable, "-m", "arl_hf.cli", "evaluate", "--model_name_or_path", ckpt],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert len(_error_lines(done.stderr)) == 1 and "is damaged" in done.stderr


def test_an_unexpected_exception_is_one_line_with_its_type(monkeypatch, capsys):
    import arl_hf.scripts.evaluate

    def boom(eval_args):
        raise KeyError("audio")

    monkeypatch.setattr(arl_hf.scripts.evaluate, "evaluate_checkpoint", boom)
    with pytest.raises(SystemExit) as e:
        evaluate_main(["--model_name_or_path", "x"], prog="evaluate_arl.py")
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert _error_lines(err) == ["evaluate_arl.py: error: KeyError: 'audio' (--debug shows the traceback)"]
    with pytest.raises(KeyError):
        evaluate_main(["--model_name_or_path", "x", "--debug"])


def test_multi_line_messages_become_one_line(capsys):
    with pytest.raises(SystemExit):
        with command.user_errors("arl-hf train"):
            raise RuntimeError("first line\n  second line\n")
    assert capsys.readouterr().err == \
        "arl-hf train: error: RuntimeError: first line second line (--debug shows the traceback)\n"


def test_debug_flag_is_popped_but_the_training_option_is_kept():
    assert command.pop_debug(["--x", "1", "--debug"]) == (["--x", "1"], True)
    assert command.pop_debug(["--debug", "--x", "1"]) == (["--x", "1"], True)
    assert command.pop_debug(["--debug", "underflow_overflow"]) == (["--debug", "underflow_overflow"], False)


def test_compare_failures_are_one_line_in_the_cli_and_the_example(monkeypatch, capsys):
    import runpy

    with pytest.raises(SystemExit) as e:
        cli.main(["compare", "--workers", "0"])
    assert e.value.code == 2
    assert _error_lines(capsys.readouterr().err) == [
        "arl-hf compare: error: workers: expected >= 1, got 0 (--debug shows the traceback)"]
    script = os.path.join(REPO, "examples", "compare.py")
    monkeypatch.setattr(sys, "argv", [script, "--strategies", "nope"])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(script, run_name="__main__")
    assert e.value.code == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("compare.py: error: strategies: unknown strategy 'nope'")


def test_resume_with_another_strategy_is_one_line_from_the_example_script(short_run, tmp_path, capsys):
    sys.path.insert(0, os.path.join(REPO, "examples"))
    try:
        import run_arl
    finally:
        sys.path.pop(0)
    out = shutil.copytree(short_run["output_dir"], tmp_path / "run")
    argv = list(short_run["argv"])
    argv[argv.index("--output_dir") + 1] = str(out)
    argv[argv.index("--strategy") + 1] = "pmr"
    with pytest.raises(SystemExit) as e:
        run_arl.main(argv + ["--resume"])
    assert e.value.code == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "trained with strategy 'arl'" in lines[0] and "not 'pmr'" in lines[0]
    with pytest.raises(ValueError, match="trained with strategy 'arl'"):
        run_arl.main(argv + ["--resume", "--debug"])
