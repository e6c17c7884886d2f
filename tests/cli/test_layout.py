"""No module is over 500 lines, and the data options reach arl_hf.data.load directly."""

from __future__ import annotations

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
    assert os.path.join("scripts", "train.py") in sizes and "arguments.py" in sizes and len(sizes) > 40
    too_long = {rel: n for rel, n in sizes.items() if n > OVER_LIMIT.get(rel, MAX_LINES)}
    assert not too_long, f"modules over {MAX_LINES} lines: {too_long}"


def test_load_data_calls_the_data_api_directly(monkeypatch):
    """A registered dataset goes to arl_hf.data.load with every data option (no signature probing)."""
    from cli_helpers import PREPARED_RECORD, make_prepared_dataset

    from arl_hf import data
    from arl_hf.arguments import DataArguments
    from arl_hf.building import load_data

    calls = []
    ds = make_prepared_dataset()

    def fake_load(name, **kwargs):
        calls.append((name, kwargs))
        return ds

    monkeypatch.setattr(data, "load", fake_load)
    got, collator, record = load_data(DataArguments(dataset="avdigits", dataset_config="bench", num_frames=2),
                                      seed=7)
    assert got is ds
    assert record.to_dict() == {"dataset": "avdigits", "dataset_config": "bench", "num_frames": 2,
                                "data": PREPARED_RECORD}
    assert calls == [("avdigits", {"data_dir": None, "config": "bench", "cache_dir": None, "preprocessing": None,
                                   "audio_duration": None, "num_frames": 2, "image_size": None, "seed": 7})]
    assert isinstance(collator, data.MultimodalCollator)
    batch = collator([ds["train"][0], ds["train"][1]])
    assert tuple(batch["audio"].shape) == (2, 1, 16, 16) and tuple(batch["visual"].shape) == (2, 3, 16, 16)
