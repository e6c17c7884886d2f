"""The run is split by job into small modules; arl_hf.runner keeps the public names."""

from __future__ import annotations

import ast
import os

import arl_hf

PACKAGE = os.path.dirname(os.path.abspath(arl_hf.__file__))
MAX_LINES = 500
#: modules allowed over the limit (none)
OVER_LIMIT: dict = {}


def _modules():
    for folder, _, names in os.walk(PACKAGE):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                yield os.path.relpath(path, PACKAGE), path


def _lines(path):
    with open(path, encoding="utf-8") as f:
        return sum(1 for _ in f)


def test_every_module_is_at_most_500_lines():
    sizes = {rel: _lines(path) for rel, path in _modules()}
    assert "runner.py" in sizes and "arguments.py" in sizes and len(sizes) > 40
    too_long = {rel: n for rel, n in sizes.items() if n > OVER_LIMIT.get(rel, MAX_LINES)}
    assert not too_long, f"modules over {MAX_LINES} lines: {too_long}"


def test_the_run_modules_are_small_and_the_runner_thin():
    for name in ("arguments.py", "building.py", "evaluation.py", "outputs.py", "runner.py"):
        assert _lines(os.path.join(PACKAGE, name)) <= 430, name
    tree = ast.parse(open(os.path.join(PACKAGE, "runner.py"), encoding="utf-8").read())
    functions = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    assert functions == ["train_and_evaluate"]


def test_runner_re_exports_the_public_names():
    from arl_hf import arguments, building, evaluation, outputs, runner

    for module in (arguments, building, evaluation, outputs):
        for name in module.__all__:
            assert getattr(runner, name) is getattr(module, name), f"{module.__name__}.{name}"
    assert not hasattr(runner, "RunTrainer")
    for name in runner.__all__:
        assert hasattr(runner, name), name


def test_load_data_calls_the_data_api_directly(monkeypatch):
    """A registered dataset goes to arl_hf.data.load with every data option (no signature probing)."""
    from arl_hf import data
    from arl_hf.building import load_data
    from arl_hf.runner import DataArguments
    from cli_helpers import PREPARED_RECORD, make_prepared_dataset

    calls = []
    ds = make_prepared_dataset()

    def fake_load(name, **kwargs):
        calls.append((name, kwargs))
        return ds

    monkeypatch.setattr(data, "load", fake_load)
    got, collator, record = load_data(DataArguments(dataset="avdigits", dataset_config="bench", num_frames=2),
                                      seed=7)
    assert got is ds
    assert record == {"dataset": "avdigits", "dataset_config": "bench", "num_frames": 2, "data": PREPARED_RECORD}
    assert calls == [("avdigits", {"data_dir": None, "config": "bench", "cache_dir": None, "preprocessing": None,
                                   "audio_duration": None, "num_frames": 2, "image_size": None, "seed": 7})]
    assert isinstance(collator, data.MultimodalCollator)
    batch = collator([ds["train"][0], ds["train"][1]])
    assert tuple(batch["audio"].shape) == (2, 1, 16, 16) and tuple(batch["visual"].shape) == (2, 3, 16, 16)
