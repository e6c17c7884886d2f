"""AV-Digits: offline build from real digit images + eSpeak NG speech, determinism, splits, record."""

from __future__ import annotations

import numpy as np
import pytest

from arl_hf.data import MultimodalCollator, class_names, load, modality_spec, preprocessing_info


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("avd_cache"))
    return load("avdigits", cache_dir=cache, num_samples=100), cache


def test_shapes_labels_and_splits(small):
    dsd, _ = small
    assert [len(dsd[s]) for s in ("train", "validation", "test")] == [70, 15, 15]  # 70/15/15
    assert class_names(dsd) == [str(d) for d in range(10)]
    batch = MultimodalCollator.from_dataset(dsd)([dsd["train"][i] for i in range(8)])
    assert tuple(batch["audio"].shape) == (8, 1, 64, 64)
    assert tuple(batch["visual"].shape) == (8, 1, 32, 32)  # 1 channel, recorded in the info
    assert set(batch) == {"audio", "visual", "labels"}
    assert modality_spec(dsd) == {"audio": {"encoder": "timm:resnet18", "in_chans": 1},
                                  "visual": {"encoder": "timm:resnet18", "in_chans": 1}}
    rec = preprocessing_info(dsd)
    assert rec["audio_preset"]["name"] == "avdigits" and rec["audio_preset"]["output_shape"] == [64, 64]
    assert rec["modalities"]["visual"]["shape"] == [1, 32, 32]
    assert rec["options"]["generation"]["generation_seed"] == 0 and rec["options"]["visual_channels"] == 1
    assert rec["splits"]["test_seed"] == 0 and rec["splits"]["validation_seed"] == 1


def test_images_are_the_sklearn_digits_and_labels_match(small):
    from sklearn.datasets import load_digits

    dsd, _ = small
    digits = load_digits()
    raw = dsd["test"].with_format("numpy")[:]
    for k in range(len(raw["id"])):
        i = int(raw["id"][k].split("_")[1])
        assert raw["labels"][k] == digits.target[i]
        # undo normalisation, average the 32x32 back to 8x8 blocks: correlates with the source digit
        img = raw["visual"][k][0] * 0.5 + 0.5
        blocks = img.reshape(8, 4, 8, 4).mean(axis=(1, 3))
        assert np.corrcoef(blocks.ravel(), digits.images[i].ravel())[0, 1] > 0.3


def test_speech_is_present_and_varied(small):
    dsd, _ = small
    raw = dsd["train"].with_format(None)[:]
    assert len(set(raw["voice"])) > 10 and min(raw["rate"]) >= 120 and max(raw["rate"]) <= 260
    audio = np.asarray(raw["audio"][0])
    assert abs(float(audio.mean())) < 1e-3 and abs(float(audio.std()) - 1.0) < 1e-2  # per-clip z-norm


def test_deterministic_and_cached(small, tmp_path):
    dsd, cache = small
    again = load("avdigits", cache_dir=cache, num_samples=100)  # cache hit
    assert again["train"].cache_files == dsd["train"].cache_files
    fresh = load("avdigits", cache_dir=str(tmp_path / "other"), num_samples=100, transform=False)
    a = dsd["test"].with_format("numpy")[:]
    b = fresh["test"].with_format("numpy")[:]
    assert list(a["id"]) == list(b["id"])
    np.testing.assert_array_equal(a["audio"], b["audio"])  # bit-identical, eSpeak NG included
    np.testing.assert_array_equal(a["visual"], b["visual"])
    other_seed = load("avdigits", cache_dir=str(tmp_path / "other"), num_samples=100, generation_seed=1,
                      transform=False)
    c = other_seed["test"].with_format("numpy")[:]
    assert not np.array_equal(a["visual"], c["visual"][: len(a["visual"])])


def test_bad_generation_parameters(tmp_path):
    with pytest.raises(ValueError, match="snr_db_min: expected <= snr_db_max"):
        load("avdigits", cache_dir=str(tmp_path), num_samples=30, snr_db_min=10.0, snr_db_max=0.0)
    with pytest.raises(ValueError, match="avdigits has a fixed preset"):
        load("avdigits", cache_dir=str(tmp_path), preprocessing="ogm")


def test_full_default_build(tmp_path):
    import time

    t = time.time()
    dsd = load("avdigits", cache_dir=str(tmp_path), transform=False)
    seconds = time.time() - t
    assert [len(dsd[s]) for s in ("train", "validation", "test")] == [1258, 269, 270]  # all 1,797 digits
    for split in dsd:
        counts = np.bincount(np.asarray(dsd[split]["labels"]), minlength=10)
        assert counts.min() >= 0.8 * counts.mean()  # stratified
    assert seconds < 180, f"AV-Digits default build took {seconds:.0f} s"  # ~20 s on 2 cores; generous for CI
