"""AVE builder: official lists, event-localised segments, bad input."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from datagen_arl import AVE_ROWS

from arl_hf.data import class_names, load, preprocessing_info


def _grey(img) -> float:
    return float(np.asarray(img.convert("L"), dtype=np.float32).mean())


def test_official_splits_segments_and_shapes(ave_root, cache_dir):
    dsd = load("ave", ave_root, cache_dir=cache_dir, audio_duration=3.0, frame_pool=4, transform=False)
    assert [len(dsd[s]) for s in ("train", "validation", "test")] == [6, 2, 2]
    assert class_names(dsd) == ["Church bell", "Dog bark", "Rodents"]  # sorted categories of Annotations.txt
    ids = {s: list(dsd[s]["id"]) for s in dsd}
    assert ids["validation"] == ["vidA2_0_1", "vidB2_1_2"]  # the official valSet.txt, not test
    rec = preprocessing_info(dsd)
    assert rec["splits"]["method"] == "official lists" and rec["audio_preset"]["duration"] == 3.0
    ex = dsd["train"].with_format(None)[1]  # vidA1, segment [1, 2): frames 10..19 of the video
    assert ex["id"] == "vidA1_1_2" and ex["labels"] == 0 and (ex["start"], ex["end"]) == (1.0, 2.0)
    assert np.asarray(ex["audio"]).shape == (257, 299)
    k = 1  # fixture video index of vidA1: grey = 3 * k + 20 * i
    expected = [(3 * k + 20 * i) % 256 for i in (11, 13, 16, 18)]  # pool of 4 centres among frames 10..19
    assert np.allclose([_grey(im) for im in ex["visual"]], expected, atol=6)


def test_default_preset_is_paper_input_and_three_frames(ave_root, cache_dir):
    dsd = load("ave", ave_root, cache_dir=cache_dir, image_size=32, transform=True)
    ex = dsd["test"][0]
    assert tuple(ex["audio"].shape) == (1, 257, 1004)  # scipy, 10 s
    assert tuple(ex["visual"].shape) == (3, 3, 32, 32)  # 3 evenly spaced frames


def test_holdout_validation(ave_root, cache_dir):
    dsd = load("ave", ave_root, cache_dir=cache_dir, audio_duration=3.0, validation="holdout",
               validation_fraction=0.34, transform=False)
    assert len(dsd["validation"]) == 2 and len(dsd["train"]) == 4
    train_ids = {r[1] for r in AVE_ROWS["train"]}
    assert {i.split("_")[0] for i in dsd["validation"]["id"]} <= train_ids


def test_bad_inputs(ave_root, tmp_path):
    root = str(tmp_path / "raw")
    shutil.copytree(ave_root, root)
    os.remove(os.path.join(root, "valSet.txt"))
    with pytest.raises(FileNotFoundError, match="validation split file not found: .*valSet.txt"):
        load("ave", root, cache_dir=str(tmp_path / "c"))
    shutil.rmtree(root)
    shutil.copytree(ave_root, root)
    with open(os.path.join(root, "testSet.txt"), "a") as fh:
        fh.write("Helicopter&vidA0&good&1&2\n")
    with pytest.raises(ValueError, match=r"testSet.txt:3: label 'Helicopter' is not in the class list"):
        load("ave", root, cache_dir=str(tmp_path / "c"))
    shutil.rmtree(root)
    shutil.copytree(ave_root, root)
    with open(os.path.join(root, "trainSet.txt"), "a") as fh:
        fh.write("Dog bark&vidB0&good&0\n")
    with pytest.raises(ValueError, match="trainSet.txt:7: expected 5 '&'-separated fields"):
        load("ave", root, cache_dir=str(tmp_path / "c"))
    shutil.rmtree(root)
    shutil.copytree(ave_root, root)
    with open(os.path.join(root, "AVE", "vidC2.mp4"), "wb") as fh:
        fh.write(b"\x00" * 64)
    with pytest.raises(ValueError, match="vidC2.mp4: corrupt"):
        load("ave", root, cache_dir=str(tmp_path / "c"), audio_duration=3.0)
    os.remove(os.path.join(root, "AVE", "vidC2.mp4"))
    with pytest.raises(FileNotFoundError, match="testSet.txt:1: video file not found for .vidC2."):
        load("ave", root, cache_dir=str(tmp_path / "c"), audio_duration=3.0)
