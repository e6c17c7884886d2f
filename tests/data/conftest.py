"""Fixtures for the data tests: tiny raw datasets generated on the fly in each real layout.

The writers live in ``datagen_arl.py`` (wav via soundfile, jpg via PIL, videos via PyAV,
feature pickles). Everything is small so the whole suite runs in well under 3 minutes.
"""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from datagen_arl import (
    MOSI_SIZES,
    cremad_clips,
    mosi_split,
    write_ave,
    write_jpg,
    write_kinetics_sounds,
    write_ucf101,
    write_video,
    write_wav,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture(scope="session")
def cremad_official(tmp_path_factory) -> str:
    """Official layout: AudioWAV/*.wav + VideoFlash/*.flv, 5 actors x 6 emotions."""
    root = str(tmp_path_factory.mktemp("cremad_official"))
    for k, clip in enumerate(cremad_clips()):
        write_wav(os.path.join(root, "AudioWAV", clip + ".wav"), seconds=0.5, freq=200 + 50 * k, seed=k)
        write_video(os.path.join(root, "VideoFlash", clip + ".flv"), seconds=0.5, fps=10, audio_rate=None,
                    vcodec="flv", fmt="flv", base=k)
    return root


@pytest.fixture(scope="session")
def cremad_extracted(tmp_path_factory) -> str:
    """Pre-extracted layout: AudioWAV/*.wav + Image-01-FPS/<clip>/*.jpg + train.csv/test.csv."""
    root = str(tmp_path_factory.mktemp("cremad_extracted"))
    clips = cremad_clips()
    for k, clip in enumerate(clips):
        write_wav(os.path.join(root, "AudioWAV", clip + ".wav"), seconds=0.4, freq=200 + 50 * k, seed=k)
        for j in range(3):
            write_jpg(os.path.join(root, "Image-01-FPS", clip, f"{j:06d}.jpg"), value=10 * k + j)
    test = {c for c in clips if c.startswith("1005_")}
    with open(os.path.join(root, "train.csv"), "w") as fh:
        fh.write("clip,emotion\n")
        for c in clips:
            if c not in test:
                fh.write(f"{c},{c.split('_')[2]}\n")
    with open(os.path.join(root, "test.csv"), "w") as fh:
        for c in sorted(test):
            fh.write(f"{c},{c.split('_')[2]}\n")
    return root


@pytest.fixture
def cache_dir(tmp_path) -> str:
    return str(tmp_path / "hf_cache")


@pytest.fixture(scope="session")
def ave_root(tmp_path_factory) -> str:
    return write_ave(str(tmp_path_factory.mktemp("ave")))


@pytest.fixture(scope="session")
def ks_root(tmp_path_factory) -> str:
    return write_kinetics_sounds(str(tmp_path_factory.mktemp("ks")))


@pytest.fixture(scope="session")
def ucf_root(tmp_path_factory) -> str:
    return write_ucf101(str(tmp_path_factory.mktemp("ucf_videos")), rgb="videos", flow="uv")


@pytest.fixture(scope="session")
def ucf_frames_root(tmp_path_factory) -> str:
    return write_ucf101(str(tmp_path_factory.mktemp("ucf_frames")), rgb="frames", flow="tsn")


@pytest.fixture(scope="session")
def mosi_single(tmp_path_factory) -> str:
    """MMSA-style single pickle aligned_50.pkl with train/valid/test (one -inf audio value)."""
    root = str(tmp_path_factory.mktemp("mosi_single"))
    data = {split: mosi_split(n, seed) for seed, (split, n) in enumerate(MOSI_SIZES.items())}
    data["train"]["audio"][2, 0, 0] = -np.inf
    with open(os.path.join(root, "aligned_50.pkl"), "wb") as fh:
        pickle.dump(data, fh)
    return root


@pytest.fixture(scope="session")
def mosi_per_split(tmp_path_factory) -> str:
    """MulT-style per-split pickles train.pkl / dev.pkl / test.pkl with 'labels' of shape (N, 1, 1)."""
    root = str(tmp_path_factory.mktemp("mosi_split"))
    for seed, (split, n) in enumerate(MOSI_SIZES.items()):
        name = "dev" if split == "valid" else split
        with open(os.path.join(root, f"{name}.pkl"), "wb") as fh:
            pickle.dump(mosi_split(n, seed, label_key="labels"), fh)
    return root
