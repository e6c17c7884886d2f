"""Fixtures for the data tests: tiny raw datasets generated on the fly in each real layout.

Wav files via soundfile, jpg frames via PIL, short videos encoded with PyAV, feature
pickles via pickle. Everything is small so the whole suite runs in well under 3 minutes.
"""

from __future__ import annotations

import fractions
import os
import pickle
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


# ----------------------------------------------------------------------------- writers


def write_wav(path: str, seconds: float = 0.5, sr: int = 16000, freq: float = 440.0, seed: int = 0) -> str:
    import soundfile as sf

    os.makedirs(os.path.dirname(path), exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    y = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)
    sf.write(path, y.astype(np.float32), sr, subtype="PCM_16")
    return path


def write_jpg(path: str, value: int, size: Tuple[int, int] = (40, 30), mode: str = "RGB") -> str:
    from PIL import Image

    os.makedirs(os.path.dirname(path), exist_ok=True)
    color = (value % 256, (value * 7) % 256, (value * 13) % 256) if mode == "RGB" else value % 256
    Image.new(mode, size, color).save(path, format="JPEG", quality=95)
    return path


def write_video(path: str, seconds: float = 1.0, fps: int = 10, size: Tuple[int, int] = (32, 24),
                audio_rate: Optional[int] = 16000, freq: float = 440.0, vcodec: str = "libx264",
                fmt: Optional[str] = None, base: int = 0) -> str:
    """Encode a tiny video whose frame i has grey level ``base + 20 * i`` (so frame choice is checkable)."""
    import av

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with av.open(path, "w", format=fmt) as c:
        vs = c.add_stream(vcodec, rate=fps)
        vs.width, vs.height = size
        vs.pix_fmt = "yuv420p"
        if audio_rate:
            a = c.add_stream("aac", rate=audio_rate)
            a.layout = "mono"
        for i in range(int(round(seconds * fps))):
            img = np.full((size[1], size[0], 3), (base + 20 * i) % 256, np.uint8)
            for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        if audio_rate:
            t = np.arange(int(seconds * audio_rate)) / audio_rate
            y = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
            for k in range(0, y.size, 1024):
                fr = av.AudioFrame.from_ndarray(y[None, k:k + 1024].copy(), format="fltp", layout="mono")
                fr.sample_rate, fr.pts, fr.time_base = audio_rate, k, fractions.Fraction(1, audio_rate)
                for p in a.encode(fr):
                    c.mux(p)
            for p in a.encode():
                c.mux(p)
    return path


# ----------------------------------------------------------------------------- CREMA-D

CREMAD_CODES = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")
CREMAD_ACTORS = (1001, 1002, 1003, 1004, 1005)


def cremad_clips() -> List[str]:
    return [f"{a}_DFA_{e}_XX" for a in CREMAD_ACTORS for e in CREMAD_CODES]


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
