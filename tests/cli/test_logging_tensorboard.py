"""Logging inside transformers' tree (levels per process), and --report_to tensorboard with ARL's
coefficients among the scalars, in a fresh process of the real script."""

from __future__ import annotations

import glob
import json
import logging
import os
import subprocess

import pytest
from cli_helpers import PYTHON, script_env, tiny_flags


def test_arl_hf_loggers_follow_transformers_verbosity():
    from transformers.utils import logging as hf_logging

    from arl_hf.log import get_logger
    from arl_hf.scripts import train as script

    assert script.logger.name == "transformers.arl_hf.scripts.train"
    assert get_logger("arl_hf.data.catalog").name == "transformers.arl_hf.data.catalog"
    library = logging.getLogger("transformers")
    parent = script.logger.parent
    while parent is not None and parent is not library:
        parent = parent.parent
    assert parent is library
    before = hf_logging.get_verbosity()
    try:
        hf_logging.set_verbosity_info()
        assert script.logger.isEnabledFor(logging.INFO)
        hf_logging.set_verbosity_warning()
        assert not script.logger.isEnabledFor(logging.INFO) and script.logger.isEnabledFor(logging.WARNING)
    finally:
        hf_logging.set_verbosity(before)


def test_setup_logging_sets_transformers_and_datasets_per_process(tmp_path, monkeypatch):
    import datasets
    from transformers.utils import logging as hf_logging

    from arl_hf import ARLConfig
    from arl_hf.arguments import setup_logging

    before = (hf_logging.get_verbosity(), datasets.utils.logging.get_verbosity())
    formats = [(h, h.formatter) for h in logging.getLogger("transformers").handlers]
    try:
        args = ARLConfig(output_dir=str(tmp_path), log_level="debug", log_level_replica="error", report_to="none")
        assert setup_logging(args) == logging.DEBUG
        assert hf_logging.get_verbosity() == logging.DEBUG == datasets.utils.logging.get_verbosity()
        monkeypatch.setattr(type(args), "should_log", property(lambda self: False))  # a replica process
        assert setup_logging(args) == logging.ERROR
        assert hf_logging.get_verbosity() == logging.ERROR == datasets.utils.logging.get_verbosity()
        assert setup_logging("info") == logging.INFO
        with pytest.raises(ValueError, match="log_level: expected one of"):
            setup_logging("loud")
    finally:
        hf_logging.set_verbosity(before[0])
        datasets.utils.logging.set_verbosity(before[1])
        for handler, formatter in formats:
            handler.setFormatter(formatter)


def test_set_verbosity_info_shows_arl_hf_messages_in_a_fresh_process():
    code = ("import sys\nfrom transformers.utils import logging\nfrom arl_hf.scripts.train import logger\n"
            "logger.info('hidden-at-default')\nlogging.set_verbosity_info()\nlogger.info('shown-after-info')\n")
    done = subprocess.run([PYTHON, "-c", code], env=script_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "shown-after-info" in done.stderr and "hidden-at-default" not in done.stderr


def test_report_to_tensorboard_and_log_level_info(tiny_dataset_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = str(tmp_path / "tb")
    argv = tiny_flags(tiny_dataset_dir, out, "--report_to", "tensorboard", "--log_level", "info",
                      "--num_train_epochs", "1", "--plots", "false")
    done = subprocess.run([PYTHON, "-m", "arl_hf.cli", "train", *argv], env=script_env(), capture_output=True,
                          text=True, timeout=600, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    # --log_level info shows arl_hf's own messages (explicit format: level and file) with the Trainer's
    assert "[INFO|train.py:" in done.stderr and f"dataset {tiny_dataset_dir}: " in done.stderr
    assert "***** Running training *****" in done.stderr

    # one event file for training, one more for the evaluations after it (Trainer reopens the writer)
    events = sorted(glob.glob(os.path.join(out, "runs", "*", "events.out.tfevents.*")))
    assert events
    tags, values = set(), {}
    for path in events:
        reader = EventAccumulator(path)
        reader.Reload()
        tags |= set(reader.Tags()["scalars"])
        for tag in ("eval/accuracy", "test/accuracy", "test/accuracy_audio"):
            if tag in reader.Tags()["scalars"]:
                values.setdefault(tag, []).extend(ev.value for ev in reader.Scalars(tag))
        if "train/a_audio" in reader.Tags()["scalars"]:
            acc = reader
    assert {"train/a_audio", "train/a_visual", "train/dependency_share_audio", "train/loss", "train/loss_fused",
            "eval/accuracy", "eval/accuracy_audio", "eval/macro_f1_visual", "test/accuracy"} <= tags
    # the final metrics (the selected checkpoint on validation, then test) are under eval/ and test/
    assert not [t for t in tags if t.startswith("train/validation_") or t.startswith("train/test_")]
    with open(os.path.join(out, "results.json")) as f:
        final = json.load(f)["metrics"]
    assert len(values["eval/accuracy"]) == 2  # the epoch's evaluation, then the final one
    assert values["eval/accuracy"][-1] == pytest.approx(final["validation"]["accuracy"], abs=1e-6)
    assert values["test/accuracy"] == pytest.approx([final["test"]["accuracy"]], abs=1e-6)
    assert values["test/accuracy_audio"] == pytest.approx([final["test"]["accuracy_audio"]], abs=1e-6)
    with open(os.path.join(out, "trainer_state.json")) as f:
        logged = [e["a_audio"] for e in json.load(f)["log_history"] if "a_audio" in e]
    written = [ev.value for ev in acc.Scalars("train/a_audio")]
    assert len(written) == len(logged) == 3  # 48 examples / batch 16, logged every step
    assert written == pytest.approx(logged, abs=1e-6)
    a_visual = [ev.value for ev in acc.Scalars("train/a_visual")]
    assert [a + v for a, v in zip(written, a_visual)] == pytest.approx([1.0] * 3, abs=1e-5)
