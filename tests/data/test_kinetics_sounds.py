"""Kinetics-Sounds builder: the user's class list decides, split-file formats, bad input."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from datagen_arl import KS_CLASSES, write_video

from arl_hf.data import class_names, load, num_classes, preprocessing_info


def test_user_class_list_and_holdout(ks_root, cache_dir):
    dsd = load("kinetics_sounds", ks_root, cache_dir=cache_dir, audio_duration=3.0, transform=False)
    assert class_names(dsd) == KS_CLASSES and num_classes(dsd) == 4  # 4 listed, 3 used: the list decides
    assert len(dsd["test"]) == 3 and len(dsd["train"]) + len(dsd["validation"]) == 9
    assert len(dsd["validation"]) == 1
    assert not set(dsd["validation"]["id"]) & set(dsd["train"]["id"])
    rec = preprocessing_info(dsd)
    assert rec["options"]["num_classes"] == 4 and rec["splits"]["validation_seed"] == 0
    ex = dsd["test"].with_format(None)[0]
    assert ex["id"] == "clips/playing_bass_guitar/clip03.mp4" and ex["labels"] == 0
    assert np.asarray(ex["audio"]).shape == (257, 299) and len(ex["visual"]) == 6


def test_transform_and_collate_three_frames(ks_root, cache_dir):
    from arl_hf.data import MultimodalCollator

    dsd = load("kinetics_sounds", ks_root, cache_dir=cache_dir, audio_duration=3.0, image_size=16, transform=True)
    batch = MultimodalCollator.from_dataset(dsd)([dsd["train"][i] for i in range(4)])
    assert tuple(batch["visual"].shape) == (4, 3, 3, 16, 16)
    assert tuple(batch["audio"].shape) == (4, 1, 257, 299)
    assert batch["labels"].tolist() == list(dsd["train"].with_format(None)["labels"][:4])


def test_kinetics_annotation_csv_and_validation_file(tmp_path):
    root = str(tmp_path / "ks")
    for i, (yt, cls) in enumerate([("abc", "dog barking"), ("def", "laughing"), ("ghi", "dog barking"),
                                   ("jkl", "laughing"), ("mno", "dog barking")]):
        write_video(os.path.join(root, "videos", f"{yt}_000010_000020.mp4"), seconds=0.5, base=9 * i)
    with open(os.path.join(root, "classes.txt"), "w") as fh:
        fh.write("dog barking\nlaughing\n")
    header = "label,youtube_id,time_start,time_end,split\n"
    for name, rows in (("train.csv", ["dog barking,abc,10,20,train", "laughing,def,10,20,train",
                                      "dog barking,ghi,10,20,train"]),
                       ("val.csv", ["laughing,jkl,10,20,val"]), ("test.csv", ["dog barking,mno,10,20,test"])):
        with open(os.path.join(root, name), "w") as fh:
            fh.write(header + "\n".join(rows) + "\n")
    dsd = load("kinetics_sounds", root, cache_dir=str(tmp_path / "c"), audio_duration=3.0, transform=False)
    assert [len(dsd[s]) for s in dsd] == [3, 1, 1]
    assert dsd["validation"]["id"] == ["videos/jkl_000010_000020.mp4"]
    assert preprocessing_info(dsd)["splits"]["validation"] == "val.csv"


def test_bad_inputs(ks_root, tmp_path):
    root = str(tmp_path / "raw")
    shutil.copytree(ks_root, root)
    os.remove(os.path.join(root, "classes.txt"))
    with pytest.raises(FileNotFoundError, match="class list not found"):
        load("kinetics_sounds", root, cache_dir=str(tmp_path / "c"))
    shutil.rmtree(root)
    shutil.copytree(ks_root, root)
    with open(os.path.join(root, "train.csv"), "a") as fh:
        fh.write("laughing/clip20.mp4,crying\n")
    with pytest.raises(ValueError, match="train.csv:11: label 'crying' is not in the class list"):
        load("kinetics_sounds", root, cache_dir=str(tmp_path / "c"))
    shutil.rmtree(root)
    shutil.copytree(ks_root, root)
    with open(os.path.join(root, "test.csv"), "a") as fh:
        fh.write("laughing/clip99.mp4,laughing\n")
    with pytest.raises(FileNotFoundError, match="clip file not found for 'laughing/clip99.mp4'"):
        load("kinetics_sounds", root, cache_dir=str(tmp_path / "c"))
    shutil.rmtree(root)
    shutil.copytree(ks_root, root)
    write_video(os.path.join(root, "clips", "laughing", "clip29.mp4"), seconds=0.5, audio_rate=None)
    with open(os.path.join(root, "train.csv"), "a") as fh:
        fh.write("laughing/clip29.mp4,laughing\n")
    with pytest.raises(ValueError, match="clip29.mp4: no audio stream"):
        load("kinetics_sounds", root, cache_dir=str(tmp_path / "c"), audio_duration=3.0)
