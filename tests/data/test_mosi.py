"""MOSI builder: both pickle layouts, both binary label conventions, non-finite values, bad input."""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest
from datagen_arl import MOSI_DIMS, MOSI_LEN, MOSI_SIZES, mosi_split

from arl_hf.data import MultimodalCollator, class_names, load, modality_spec, preprocessing_info


def test_single_pickle_non_negative(mosi_single, cache_dir, caplog):
    with caplog.at_level(logging.WARNING):
        dsd = load("mosi", mosi_single, cache_dir=cache_dir, transform=False)
    assert [len(dsd[s]) for s in dsd] == [MOSI_SIZES["train"], MOSI_SIZES["valid"], MOSI_SIZES["test"]]
    assert class_names(dsd) == ["negative", "non-negative"]
    ds = dsd["train"].with_format("numpy")
    cols = ds[:]
    scores = cols["score"]
    expected = mosi_split(MOSI_SIZES["train"], 0)["regression_labels"]
    np.testing.assert_allclose(scores, expected, atol=1e-6)
    assert cols["labels"].tolist() == [int(s >= 0) for s in expected]
    assert ds[0]["text"].shape == (MOSI_LEN, MOSI_DIMS["text"])
    assert float(ds[2]["audio"][0, 0]) == 0.0  # the -inf became 0
    assert any("replaced 1 non-finite" in r.getMessage() for r in caplog.records)
    assert dsd["validation"]["id"][0] == "vid1_0"  # the pickle's own valid split
    spec = modality_spec(dsd)
    assert spec["visual"] == {"encoder": "mlp", "input_dim": MOSI_DIMS["vision"], "hidden_dims": [64, 64]}
    assert spec["text"]["input_dim"] == MOSI_DIMS["text"]


def test_per_split_pickles_non_zero_and_pooling(mosi_per_split, cache_dir):
    dsd = load("mosi", mosi_per_split, cache_dir=cache_dir, label_convention="non_zero", transform=True)
    assert class_names(dsd) == ["negative", "positive"]
    assert [len(dsd[s]) for s in dsd] == [n - 1 for n in MOSI_SIZES.values()]  # score-0 utterances dropped
    rec = preprocessing_info(dsd)["options"]
    assert rec["label_convention"] == "non_zero" and rec["zero_scores_dropped"] == 3
    batch = MultimodalCollator.from_dataset(dsd)([dsd["train"][i] for i in range(4)])
    assert tuple(batch["audio"].shape) == (4, MOSI_DIMS["audio"])  # time-averaged for MLP encoders
    raw = dsd["train"].with_format("numpy")[:4]
    np.testing.assert_allclose(batch["text"].numpy(), raw["text"].mean(axis=1), atol=1e-6)
    assert batch["labels"].tolist() == [int(s > 0) for s in raw["score"]]
    seq = load("mosi", mosi_per_split, cache_dir=cache_dir, label_convention="non_zero", pool_sequences=False,
               transform=True)
    b2 = MultimodalCollator.from_dataset(seq)([seq["test"][0], seq["test"][1]])
    assert tuple(b2["visual"].shape) == (2, MOSI_LEN, MOSI_DIMS["vision"])


def test_bad_inputs(tmp_path, mosi_single):
    with pytest.raises(FileNotFoundError, match="no feature pickle in"):
        load("mosi", str(tmp_path), cache_dir=str(tmp_path / "c"))
    with pytest.raises(ValueError, match="label_convention: expected one of"):
        load("mosi", mosi_single, cache_dir=str(tmp_path / "c"), label_convention="sign")
    with pytest.raises(ValueError, match="has no raw audio"):
        load("mosi", mosi_single, cache_dir=str(tmp_path / "c"), preprocessing="ogm")
    with pytest.raises(ValueError, match="non-finite values"):
        load("mosi", mosi_single, cache_dir=str(tmp_path / "c"), nonfinite="error")
    root = tmp_path / "bad"
    root.mkdir()
    data = {s: mosi_split(n, i) for i, (s, n) in enumerate(MOSI_SIZES.items())}
    data["test"]["text"] = data["test"]["text"][:-1]
    with open(root / "mosi_data.pkl", "wb") as fh:
        pickle.dump(data, fh)
    with pytest.raises(ValueError, match="arrays disagree on the number of utterances"):
        load("mosi", str(root), cache_dir=str(tmp_path / "c"))
    del data["test"]["text"]
    with open(root / "mosi_data.pkl", "wb") as fh:
        pickle.dump(data, fh)
    with pytest.raises(ValueError, match=r"no text feature key; expected one of \['text'\]"):
        load("mosi", str(root), cache_dir=str(tmp_path / "c"))
    with open(root / "mosi_data.pkl", "wb") as fh:
        fh.write(b"\x80\x04garbage")
    with pytest.raises(ValueError, match="mosi_data.pkl: corrupt or unreadable pickle"):
        load("mosi", str(root), cache_dir=str(tmp_path / "c"))
