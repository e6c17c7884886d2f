"""CREMA-D builder: both layouts, split methods, cache hits, determinism and bad input."""

from __future__ import annotations

import logging
import os
import shutil

import numpy as np
import pytest
from datagen_arl import CREMAD_ACTORS, cremad_clips, write_wav

from arl_hf.data import MultimodalCollator, class_names, load, modality_spec, preprocessing_info


def _ids(ds):
    return list(ds.with_format(None)["id"])


def test_official_layout_shapes_labels_and_splits(cremad_official, cache_dir):
    dsd = load("cremad", cremad_official, cache_dir=cache_dir, image_size=32, transform=True)
    assert list(dsd) == ["train", "validation", "test"]
    # 30 clips: test 10 % (3), validation 10 % of the rest (3), train 24
    assert [len(dsd[s]) for s in dsd] == [24, 3, 3]
    all_ids = sum((_ids(dsd[s]) for s in dsd), [])
    assert sorted(all_ids) == sorted(cremad_clips())
    assert class_names(dsd) == ["neutral", "happy", "sad", "fear", "disgust", "anger"]
    raw = dsd["train"].with_format(None)
    for ex in raw.select(range(5)):
        assert ex["labels"] == ["NEU", "HAP", "SAD", "FEA", "DIS", "ANG"].index(ex["id"].split("_")[2])
        assert ex["actor"] == int(ex["id"][:4])
        assert np.asarray(ex["audio"]).shape == (257, 299)  # scipy preset, 3 s (the default)
        assert len(ex["visual"]) == 3  # frame pool of 3 decoded from the FLV
    ex = dsd["train"][0]
    assert tuple(ex["audio"].shape) == (1, 257, 299)
    assert tuple(ex["visual"].shape) == (1, 3, 32, 32)  # 1 frame (CREMA-D default), image_size 32
    assert {"audio", "visual", "labels"} <= set(ex)
    assert ex["id"] == dsd["train"].with_format(None)[0]["id"]  # others pass through
    assert modality_spec(dsd) == {"audio": {"encoder": "timm:resnet18", "in_chans": 1},
                                  "visual": {"encoder": "timm:resnet18", "in_chans": 3}}
    rec = preprocessing_info(dsd)
    assert rec["audio_preset"]["name"] == "scipy" and rec["audio_preset"]["output_shape"] == [257, 299]
    assert rec["splits"]["method"] == "clip" and rec["splits"]["split_seed"] == 0
    assert dsd["train"].info.config_name == "scipy-v1.0.0"
    assert dsd["train"].cache_files[0]["filename"].startswith(cache_dir)


def test_cache_hit_survives_removed_raw_files(cremad_official, tmp_path):
    root = str(tmp_path / "raw")
    shutil.copytree(cremad_official, root)
    cache = str(tmp_path / "cache")
    first = load("cremad", root, cache_dir=cache, preprocessing="ogm", transform=False)
    files = {f["filename"] for s in first.values() for f in s.cache_files}
    shutil.rmtree(root)  # a rebuild would now fail: the second call must read the Arrow cache
    second = load("cremad", root, cache_dir=cache, preprocessing="ogm", transform=False)
    assert {f["filename"] for s in second.values() for f in s.cache_files} == files
    assert _ids(second["test"]) == _ids(first["test"])
    assert np.asarray(second["train"][0]["audio"]).shape == (257, 188)
    with pytest.raises(FileNotFoundError, match="data_dir not found"):
        load("cremad", root, cache_dir=cache, preprocessing="ogm", split_seed=1)  # new key -> rebuild


def test_build_is_deterministic_across_caches(cremad_official, tmp_path):
    a = load("cremad", cremad_official, cache_dir=str(tmp_path / "a"), transform=False)
    b = load("cremad", cremad_official, cache_dir=str(tmp_path / "b"), transform=False)
    for split in a:
        assert _ids(a[split]) == _ids(b[split])
        ra, rb = a[split].with_format("numpy")[:], b[split].with_format("numpy")[:]
        np.testing.assert_array_equal(ra["audio"], rb["audio"])
    va = a["train"].cast_column("visual", a["train"].features["visual"].__class__(
        type(a["train"].features["visual"].feature)(decode=False)))[0]["visual"]
    vb = b["train"].cast_column("visual", b["train"].features["visual"].__class__(
        type(b["train"].features["visual"].feature)(decode=False)))[0]["visual"]
    assert [f["bytes"] for f in va] == [f["bytes"] for f in vb]


def test_actor_split_is_actor_disjoint_and_recorded(cremad_official, cache_dir):
    dsd = load("cremad", cremad_official, cache_dir=cache_dir, split="actor", transform=False)
    actors = {s: set(dsd[s]["actor"]) for s in dsd}
    assert not (actors["train"] & actors["test"]) and not (actors["train"] & actors["validation"])
    assert not (actors["validation"] & actors["test"])
    assert actors["train"] | actors["validation"] | actors["test"] == set(CREMAD_ACTORS)
    rec = preprocessing_info(dsd)["splits"]
    assert rec["method"] == "actor" and sorted(actors["test"]) == rec["test_actors"]
    assert sorted(actors["validation"]) == rec["validation_actors"]
    other = load("cremad", cremad_official, cache_dir=cache_dir, split="actor", split_seed=3, transform=False)
    assert preprocessing_info(other)["splits"]["split_seed"] == 3


def test_extracted_layout_uses_the_csvs(cremad_extracted, cache_dir):
    dsd = load("cremad", cremad_extracted, cache_dir=cache_dir, num_frames=2, image_size=24, transform=True)
    test_ids = _ids(dsd["test"])
    assert sorted(test_ids) == sorted(c for c in cremad_clips() if c.startswith("1005_"))
    assert len(dsd["train"]) + len(dsd["validation"]) == 24 and len(dsd["validation"]) == 2
    assert not set(_ids(dsd["validation"])) & set(test_ids)
    rec = preprocessing_info(dsd)
    assert rec["options"]["layout"] == "extracted" and rec["splits"]["method"] == "csv"
    batch = MultimodalCollator.from_dataset(dsd)([dsd["train"][i] for i in range(3)])
    assert tuple(batch["visual"].shape) == (3, 2, 3, 24, 24)
    assert tuple(batch["audio"].shape) == (3, 1, 257, 299)
    assert batch["labels"].dtype.is_floating_point is False


def _copy(src, tmp_path, name="raw"):
    dst = str(tmp_path / name)
    shutil.copytree(src, dst)
    return dst


def test_missing_directory_and_split_file(tmp_path, cremad_extracted):
    with pytest.raises(FileNotFoundError, match="data_dir not found: .*nowhere"):
        load("cremad", str(tmp_path / "nowhere"), cache_dir=str(tmp_path / "c"))
    root = _copy(cremad_extracted, tmp_path)
    os.remove(os.path.join(root, "test.csv"))
    with pytest.raises(FileNotFoundError, match="split file not found: .*test.csv"):
        load("cremad", root, cache_dir=str(tmp_path / "c"), layout="extracted")
    with pytest.raises(ValueError, match="unknown option"):
        load("cremad", root, cache_dir=str(tmp_path / "c"), splitt="actor")


def test_label_not_in_class_list(tmp_path, cremad_extracted):
    root = _copy(cremad_extracted, tmp_path)
    path = os.path.join(root, "train.csv")
    text = open(path).read().replace("1001_DFA_ANG_XX,ANG", "1001_DFA_ANG_XX,CALM")
    with open(path, "w") as fh:
        fh.write(text)
    with pytest.raises(ValueError, match="label 'CALM' is not in the class list"):
        load("cremad", root, cache_dir=str(tmp_path / "c"))


def test_corrupt_audio_raises_or_is_skipped_and_counted(tmp_path, cremad_official, caplog):
    root = _copy(cremad_official, tmp_path)
    bad = os.path.join(root, "AudioWAV", "1002_DFA_SAD_XX.wav")
    with open(bad, "wb") as fh:
        fh.write(b"RIFF" + b"\x00" * 10)
    with pytest.raises(ValueError, match="1002_DFA_SAD_XX.wav: unreadable audio file"):
        load("cremad", root, cache_dir=str(tmp_path / "c1"))
    with caplog.at_level(logging.WARNING):
        dsd = load("cremad", root, cache_dir=str(tmp_path / "c2"), on_error="skip", transform=False)
    assert sum(len(s) for s in dsd.values()) == 29
    assert "1002_DFA_SAD_XX" not in sum((_ids(s) for s in dsd.values()), [])
    assert any("skipped 1 of" in r.getMessage() and "1002_DFA_SAD_XX.wav" in r.getMessage() for r in caplog.records)


def test_short_audio_missing_video_and_empty_frames(tmp_path, cremad_official, cremad_extracted):
    root = _copy(cremad_official, tmp_path, "short")
    write_wav(os.path.join(root, "AudioWAV", "1003_DFA_HAP_XX.wav"), seconds=0.005)  # 80 samples
    with pytest.raises(ValueError, match="1003_DFA_HAP_XX.wav: audio shorter than one analysis window"):
        load("cremad", root, cache_dir=str(tmp_path / "c1"))
    root = _copy(cremad_official, tmp_path, "novideo")
    os.remove(os.path.join(root, "VideoFlash", "1004_DFA_FEA_XX.flv"))
    with pytest.raises(FileNotFoundError, match="1004_DFA_FEA_XX.flv"):
        load("cremad", root, cache_dir=str(tmp_path / "c2"))
    dsd = load("cremad", root, cache_dir=str(tmp_path / "c3"), on_error="skip", transform=False)
    assert sum(len(s) for s in dsd.values()) == 29  # the unpaired clip is dropped, never misaligned
    root = _copy(cremad_extracted, tmp_path, "noframes")
    folder = os.path.join(root, "Image-01-FPS", "1001_DFA_NEU_XX")
    for f in os.listdir(folder):
        os.remove(os.path.join(folder, f))
    with pytest.raises(ValueError, match="1001_DFA_NEU_XX: clip has no frames"):
        load("cremad", root, cache_dir=str(tmp_path / "c4"))


def test_corrupt_video(tmp_path, cremad_official):
    root = _copy(cremad_official, tmp_path)
    with open(os.path.join(root, "VideoFlash", "1001_DFA_ANG_XX.flv"), "wb") as fh:
        fh.write(b"FLV garbage" * 20)
    with pytest.raises(ValueError, match="1001_DFA_ANG_XX.flv: corrupt"):
        load("cremad", root, cache_dir=str(tmp_path / "c"))


def test_fbank_preset_through_the_builder(cremad_extracted, cache_dir):
    dsd = load("cremad", cremad_extracted, cache_dir=cache_dir, preprocessing="fbank", transform=False)
    assert np.asarray(dsd["test"][0]["audio"]).shape == (128, 1024)
    assert dsd["test"].info.config_name == "fbank-v1.0.0"
    rec = preprocessing_info(dsd)["audio_preset"]
    assert rec["num_mel_bins"] == 128 and rec["norm_mean"] == -4.5 and rec["norm_std"] == 5.14
    with pytest.raises(ValueError, match="has no 'duration'"):
        load("cremad", cremad_extracted, cache_dir=cache_dir, preprocessing="fbank", audio_duration=3.0)
