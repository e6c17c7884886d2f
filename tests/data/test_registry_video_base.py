"""The shared base of the video dataset builders: one way to find a clip's video and a given folder."""

from __future__ import annotations

import os
import shutil

import pytest

from arl_hf.data import load


def test_a_clip_whose_stem_names_two_videos_is_refused(ave_root, tmp_path):
    # AVE took the last of vidC2.mkv / vidC2.mp4 in name order without a word; now, as
    # Kinetics-Sounds always did, it names both files
    root = str(tmp_path / "raw")
    shutil.copytree(ave_root, root)
    shutil.copy(os.path.join(root, "AVE", "vidC2.mp4"), os.path.join(root, "AVE", "vidC2.mkv"))
    with pytest.raises(ValueError, match=r"testSet.txt:1: clip 'vidC2' is ambiguous: \[.*vidC2.mkv', .*vidC2.mp4'\]"):
        load("ave", root, cache_dir=str(tmp_path / "c"))
    with pytest.raises(FileNotFoundError, match=r"ave: video folder not found under .*raw; looked for \['clips'\]"):
        load("ave", root, cache_dir=str(tmp_path / "c"), video_dir="clips")


def test_a_folder_option_that_names_no_folder_is_refused(ks_root, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"kinetics_sounds: audio folder not found under .*; "
                                                r"looked for \['wavs'\]"):
        load("kinetics_sounds", ks_root, cache_dir=str(tmp_path / "c"), audio_dir="wavs")
    with pytest.raises(FileNotFoundError, match=r"kinetics_sounds: clips folder not found under .*; "
                                                r"looked for \['/nowhere/clips'\]"):
        load("kinetics_sounds", ks_root, cache_dir=str(tmp_path / "c"), clips_dir="/nowhere/clips")
