"""Files a run or a comparison reads, writes and deletes: nothing deleted outside its folder or
that no run wrote, nothing reused from another configuration, a half-written checkpoint never
resumed, a revision never leaving the Hub cache, a feature pickle never running code."""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from reliability_helpers import RUN_FLAGS
from strategy_testutils import write_vector_dataset

from arl_hf.outputs import prepare_output_dir
from arl_hf.scripts.train import parse_args, train_and_evaluate

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: the run options of a comparison (compare sets --plots, --disable_tqdm, --report_to itself)
COMPARE_FLAGS = RUN_FLAGS[:RUN_FLAGS.index("--plots")]


def _prepare(out, *flags):
    args, _, _, run_args = parse_args(["--output_dir", str(out), "--preset", "none", *flags])
    return prepare_output_dir(args, run_args)


def _copy_run(short_run, dest):
    shutil.copytree(short_run["output_dir"], dest)
    return str(dest)


def _tree(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


# ---- 1. names that reach the filesystem, deletes confined to their folder -------------------------
def test_run_names_are_safe_file_names():
    from arl_hf.protocol.runs import RunSpec

    assert RunSpec("bound:audio", 3).name == "bound-audio-seed3"
    assert RunSpec("arl", 0).name == "arl-seed0"
    for method in ("bound:audio-seed0/../../victim", "bound:..", "bound:.hidden", "bound:a b", "bound:",
                   "ar/l"):
        with pytest.raises(ValueError, match="cannot be used as a file or folder name"):
            RunSpec(method, 0).name


def test_compare_refuses_a_modality_column_that_is_not_a_safe_name_before_any_run(tmp_path):
    from arl_hf.protocol.compare import run
    from arl_hf.scripts.compare import parse_args

    crafted = "audio-seed0/../../victim"
    data = write_vector_dataset(tmp_path / "data", columns=("audio", crafted))
    victim = tmp_path / "victim-seed0"  # where compare_dir/bound-<crafted>-seed0 leads
    (victim / "checkpoint-1").mkdir(parents=True)
    for name in ("model.safetensors", "README.md", "checkpoint-1/optimizer.pt"):
        (victim / name).write_text("someone else's")
    before = _tree(victim)
    out = tmp_path / "cmp"
    with pytest.raises(ValueError, match=r"modality name: 'audio-seed0/\.\./\.\./victim' cannot be used"):
        run(*parse_args(["--strategies", "none", "--seeds", "0", "--unimodal_bounds", "--compare_dir", str(out),
                         "--dataset", data] + COMPARE_FLAGS))
    assert _tree(victim) == before
    assert os.listdir(out) == []  # refused before any run started


def test_deletes_stay_inside_their_folder_symlinks_included(tmp_path):
    from arl_hf.safety import remove_path

    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "keep.txt").write_text("x")
    os.symlink(outside, root / "checkpoint-9")
    with pytest.raises(ValueError, match="outside"):
        remove_path(str(root / "sub" / ".." / ".." / "outside"), str(root))
    with pytest.raises(ValueError, match="outside"):
        remove_path(str(root / "checkpoint-9"), str(root))
    with pytest.raises(ValueError, match="itself"):
        remove_path(str(root / "sub" / ".."), str(root))
    assert (outside / "keep.txt").read_text() == "x"
    assert remove_path(str(root / "sub"), str(root)) and not (root / "sub").exists()


def test_a_failed_run_stops_the_runs_not_yet_started():
    from concurrent.futures import ThreadPoolExecutor

    from arl_hf.protocol.compare import _Pool

    started, lock = [], threading.Lock()

    def job(i):
        with lock:
            started.append(i)
        if i == 0:
            raise ValueError("run 0 failed")
        time.sleep(0.3)
        return i

    pool = _Pool.__new__(_Pool)
    pool.workers, pool.pool = 2, ThreadPoolExecutor(2)
    with pytest.raises(ValueError, match="run 0 failed"):
        pool.map(job, list(range(6)))
    pool.close()
    assert sorted(started) == [0, 1]  # the run beside it finished; runs 2..5 never started


# ---- 2. records keyed by the configuration, JSON written atomically -------------------------------
def test_compare_retrains_records_of_another_configuration_and_redoes_corrupt_ones(tmp_path, caplog):
    from arl_hf.scripts.compare import main

    data = write_vector_dataset(tmp_path / "data")
    out = tmp_path / "cmp"
    base = ["--strategies", "none", "--compare_dir", str(out), "--dataset", data, "--no_plots"] + COMPARE_FLAGS

    def records():
        return {s: json.loads((out / f"none-seed{s}" / "record.json").read_text())
                for s in (0, 1) if (out / f"none-seed{s}" / "record.json").exists()}

    assert main(base + ["--seeds", "0", "--num_train_epochs", "1"]) == 0
    first = records()[0]
    assert first["num_train_epochs"] == 1.0 and len(first["fingerprint"]) == 64
    assert first["config"]["options"]["training"]["num_train_epochs"] == 1.0
    # another number of epochs and one more seed: seed 0 is retrained, not mixed in
    with caplog.at_level(logging.WARNING):
        assert main(base + ["--seeds", "0", "1", "--num_train_epochs", "2"]) == 0
    recs = records()
    assert {s: r["num_train_epochs"] for s, r in recs.items()} == {0: 2.0, 1: 2.0}
    assert recs[0]["fingerprint"] != first["fingerprint"]
    assert any("another configuration" in r.getMessage() and "num_train_epochs: 1.0 -> 2.0" in r.getMessage()
               for r in caplog.records)
    results = json.loads((out / "results.json").read_text())
    assert results["methods"]["none"]["accuracy"]["values"] == [recs[s]["metrics"]["test"]["accuracy"] for s in (0, 1)]
    # the same configuration again: nothing retrained; a corrupt record is named and redone
    stamp = (out / "none-seed0" / "record.json").stat().st_mtime_ns
    (out / "none-seed1" / "record.json").write_text('{"method": "none", "se')
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert main(base + ["--seeds", "0", "1", "--num_train_epochs", "2"]) == 0
    assert (out / "none-seed0" / "record.json").stat().st_mtime_ns == stamp
    assert records()[1]["fingerprint"] == recs[1]["fingerprint"]
    assert any("unreadable" in r.getMessage() and str(out / "none-seed1" / "record.json") in r.getMessage()
               for r in caplog.records)
    assert not [n for d in (out, out / "none-seed1") for n in os.listdir(d) if n.endswith(".tmp")]


def test_results_json_is_replaced_atomically(tmp_path):
    from arl_hf.protocol.table import build_results, write_outputs

    recs = [{"method": "none", "seed": s, "metrics": {"test": {"accuracy": a}}, "wall_time_s": 1.0}
            for s, a in ((0, 0.5), (1, 0.7))]
    good = build_results(recs, [0, 1], "test")
    write_outputs(recs, good, str(tmp_path), make_plots=False)
    bad = json.loads(json.dumps(good))
    bad["wall_time_s"] = float("nan")  # refused by allow_nan=False half-way through the dump
    with pytest.raises(ValueError):
        write_outputs(recs, bad, str(tmp_path), make_plots=False)
    assert json.loads((tmp_path / "results.json").read_text()) == json.loads(json.dumps(good))
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


# ---- 3. --overwrite_output_dir deletes only what a run wrote; one run per folder -------------------
def test_overwrite_leaves_a_folder_that_never_held_a_run_alone(tmp_path):
    out = tmp_path / "mine"
    (out / "plots").mkdir(parents=True)
    (out / "checkpoint-notes").mkdir()
    for name in ("README.md", "config.json", "plots/figure.png", "checkpoint-notes/todo.txt"):
        (out / name).write_text("mine")
    before = _tree(out)
    with pytest.raises(ValueError, match=r"holds \['README.md', 'config.json', 'plots'\], which no run marker"):
        _prepare(out, "--overwrite_output_dir")
    assert _tree(out) == before
    # only unrelated files: the run goes ahead beside them
    for name in ("README.md", "config.json"):
        (out / name).unlink()
    shutil.rmtree(out / "plots")
    assert _prepare(out, "--overwrite_output_dir") is None
    assert sorted(os.listdir(out)) == ["_arl_hf_run.json", "checkpoint-notes"]
    assert (out / "checkpoint-notes" / "todo.txt").read_text() == "mine"


def test_overwrite_removes_the_files_the_marker_lists_and_checkpoints(short_run, tmp_path):
    out = _copy_run(short_run, tmp_path / "run")
    marker = json.loads(open(os.path.join(out, "_arl_hf_run.json")).read())
    assert marker["finished"] and {"model.safetensors", "checkpoint-6", "results.json"} <= set(marker["outputs"])
    os.makedirs(os.path.join(out, "checkpoint-notes"))
    with open(os.path.join(out, "analysis.txt"), "w") as f:
        f.write("added after the run")
    assert _prepare(out, "--overwrite_output_dir") is None
    assert sorted(os.listdir(out)) == ["_arl_hf_run.json", "analysis.txt", "checkpoint-notes"]


def test_a_second_run_into_the_same_folder_is_refused(tmp_path):
    out = tmp_path / "shared"
    code = ("import sys, time; from arl_hf.run_dir import claim_output_dir; claim_output_dir(sys.argv[1]); "
            "print('claimed', flush=True); time.sleep(120)")
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    other = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert other.stdout.readline().strip() == "claimed"
        with pytest.raises(ValueError, match=rf"being written by another run \(pid {other.pid}"):
            _prepare(out)
        with pytest.raises(ValueError, match="being written by another run"):
            _prepare(out, "--overwrite_output_dir")
    finally:
        other.kill()
        other.wait()
    assert _prepare(out) is None  # the lock went with its process; the folder held nothing else


# ---- 4. / 5. resume: the newest complete checkpoint, of the same strategy --------------------------
def _break(checkpoint):
    open(os.path.join(checkpoint, "optimizer.pt"), "w").close()  # 0 bytes
    os.remove(os.path.join(checkpoint, "trainer_state.json"))


def test_resume_falls_back_to_the_newest_complete_checkpoint(short_run, tmp_path, caplog):
    out = _copy_run(short_run, tmp_path / "run")
    _break(os.path.join(out, "checkpoint-6"))
    argv = [a for a in short_run["argv"]] + ["--resume"]
    argv[argv.index("--output_dir") + 1] = out
    with caplog.at_level(logging.WARNING):
        metrics = train_and_evaluate(*parse_args(argv), argv=argv)
    assert any("checkpoint-6 (no trainer_state.json)" in r.getMessage() and "resuming from" in r.getMessage()
               and r.getMessage().endswith("checkpoint-3") for r in caplog.records)
    with open(os.path.join(out, "trainer_state.json")) as f:
        assert json.load(f)["global_step"] == 6
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0


def test_resume_refuses_incomplete_checkpoints_it_is_pointed_at(short_run, tmp_path):
    from arl_hf.run_dir import checkpoint_problem

    out = _copy_run(short_run, tmp_path / "run")
    ckpt = os.path.join(out, "checkpoint-6")
    weights = os.path.join(ckpt, "model.safetensors")
    with open(weights, "r+b") as f:
        f.truncate(os.path.getsize(weights) // 2)
    assert "model.safetensors" in checkpoint_problem(ckpt) and "truncated" in checkpoint_problem(ckpt)
    with pytest.raises(ValueError, match="resume_from_checkpoint: .*checkpoint-6' is not a complete checkpoint"):
        _prepare(out, "--resume_from_checkpoint", ckpt, "--strategy", "arl")
    _break(os.path.join(out, "checkpoint-3"))
    with pytest.raises(FileNotFoundError, match="no complete checkpoint: .*checkpoint-6 .*checkpoint-3 "):
        _prepare(out, "--resume", "--strategy", "arl")


def test_resuming_with_another_strategy_is_refused(short_run, tmp_path):
    out = _copy_run(short_run, tmp_path / "run")
    with pytest.raises(ValueError, match="checkpoint-6' was trained with strategy 'arl' .* not 'pmr'"):
        _prepare(out, "--resume", "--strategy", "pmr")
    assert _prepare(out, "--resume", "--strategy", "arl") == os.path.join(out, "checkpoint-6")


# ---- 6. revisions ---------------------------------------------------------------------------------
@pytest.mark.parametrize("revision", ["main", "v1.0", "refs/pr/1", "feature/x-2", "a" * 40, "0123abc"])
def test_valid_revisions_are_accepted(revision):
    from arl_hf.safety import check_revision

    assert check_revision(revision, "revision") == revision


@pytest.mark.parametrize("revision", ["..", "../x", "a/../../b", "/abs", "x/", "a//b", ".hidden", "a/.b", "x.lock",
                                      "a b", "a~1", "a^", "a:b", "a?", "a*", "a[", "a\\b", "@", "a@{1}", "end.", ""])
def test_revisions_that_are_not_git_refs_are_refused(revision):
    from arl_hf.safety import check_revision

    with pytest.raises(ValueError, match="dataset_revision: .* is not a valid revision"):
        check_revision(revision, "dataset_revision")


def test_a_revision_leaving_the_hub_cache_is_refused_from_flag_and_checkpoint(short_run, tmp_path):
    from arl_hf.data.sharing import resolve_dataset_repo
    from arl_hf.scripts.evaluate import EvalArguments, evaluate_checkpoint

    with pytest.raises(ValueError, match="dataset_revision: '../../outside' is not a valid revision"):
        resolve_dataset_repo("owner/name", "../../outside")
    with pytest.raises(ValueError, match="^revision: '../x' is not a valid revision"):
        evaluate_checkpoint(EvalArguments(model_name_or_path=short_run["output_dir"], revision="../x"))
    out = _copy_run(short_run, tmp_path / "run")
    with open(os.path.join(out, "config.json")) as f:
        config = json.load(f)
    config["preprocessing"].update(dataset="owner/name", dataset_revision="../../../outside")
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f)
    with pytest.raises(ValueError, match=r"dataset_revision \(recorded in .*\): '../../../outside' is not a valid"):
        evaluate_checkpoint(EvalArguments(model_name_or_path=out))


# ---- 8. the MOSI feature pickle -------------------------------------------------------------------
class _RunsCode:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


class _WritesFile:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (shutil.copyfile, (__file__, self.path))


def test_mosi_pickle_cannot_run_code_and_plain_arrays_still_load(tmp_path):
    from arl_hf.data import load
    from arl_hf.data.mosi import _load_pickle

    for i, payload in enumerate((_RunsCode, _WritesFile)):
        root = tmp_path / f"crafted{i}"
        root.mkdir()
        written = tmp_path / f"written{i}"
        with open(root / "mosi_data.pkl", "wb") as f:
            pickle.dump({"train": {"audio": payload(str(written))}}, f)
        with pytest.raises(ValueError, match="mosi_data.pkl: .*refusing to load (posix|os|shutil)"):
            load("mosi", str(root), cache_dir=str(tmp_path / "cache"))
        assert not written.exists()
    plain = {"train": {"audio": np.arange(6, dtype=np.float32).reshape(1, 2, 3), "labels": np.float64(0.5),
                       "id": np.array([b"v0"], dtype=object), "meta": ({1, 2}, frozenset([3]), [b"x"], 2 + 1j)}}
    for protocol in (2, 4, 5):
        with open(tmp_path / "plain.pkl", "wb") as f:
            pickle.dump(plain, f, protocol=protocol)
        back = _load_pickle(str(tmp_path / "plain.pkl"))
        np.testing.assert_array_equal(back["train"]["audio"], plain["train"]["audio"])
        assert back["train"]["labels"] == 0.5 and back["train"]["meta"] == plain["train"]["meta"]
        assert back["train"]["id"].tolist() == [b"v0"]
