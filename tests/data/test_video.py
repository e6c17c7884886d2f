"""Frame selection (deterministic / seeded) and PyAV decoding of frames and audio."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from datagen_arl import write_jpg, write_video

from arl_hf.data.video import (
    decode_video_audio,
    decode_video_frames,
    list_frame_files,
    pool_indices,
    select_frame_indices,
)


def _grey(jpeg: bytes) -> float:
    from PIL import Image

    return float(np.asarray(Image.open(io.BytesIO(jpeg)).convert("L"), dtype=np.float32).mean())


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> str:
    # 2 s at 10 fps: frame i has grey level 20 * i (mod 256)
    return write_video(str(tmp_path_factory.mktemp("v") / "clip.mp4"), seconds=2.0, fps=10, freq=440.0)


def test_eval_selection_is_segment_centres():
    assert select_frame_indices(10, 3) == [1, 5, 8]
    assert select_frame_indices(3, 1) == [1]
    assert select_frame_indices(2, 3) == [0, 1, 1]  # fewer frames than asked: sorted repeats
    assert pool_indices(20, 4) == [2, 7, 12, 17]
    assert pool_indices(3, 10) == [0, 1, 2]


def test_train_selection_is_seeded_and_within_segments():
    a = [select_frame_indices(10, 3, train=True, rng=np.random.default_rng(5)) for _ in range(2)]
    assert a[0] == a[1]
    draws = {tuple(select_frame_indices(10, 3, train=True, rng=np.random.default_rng(s))) for s in range(40)}
    assert len(draws) > 5
    for d in draws:
        assert 0 <= d[0] < 3 <= d[1] < 6 <= d[2] < 10
    with pytest.raises(ValueError, match="rng"):
        select_frame_indices(10, 3, train=True)


def test_decode_pool_picks_evenly_spaced_frames(video):
    frames, count = decode_video_frames(video, 4)
    assert count == 20 and len(frames) == 4
    expected = [(20 * i) % 256 for i in (2, 7, 12, 17)]
    assert np.allclose([_grey(f) for f in frames], expected, atol=6)


def test_decode_window_and_audio(video):
    frames, count = decode_video_frames(video, 3, start=1.0, end=2.0)
    assert count == 10
    assert np.allclose([_grey(f) for f in frames], [(20 * i) % 256 for i in (11, 15, 18)], atol=6)
    y = decode_video_audio(video, 16000, start=0.5, end=1.5)
    assert y.shape == (16000,) and y.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(y))
    assert abs(int(spectrum.argmax()) - 440) <= 2  # 1 s at 16 kHz: bin = Hz


def test_decode_errors_name_the_file(tmp_path, video):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video" * 50)
    with pytest.raises(ValueError, match="bad.mp4: corrupt or unreadable video"):
        decode_video_frames(str(bad), 3)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.mp4: video file is empty"):
        decode_video_frames(str(empty), 3)
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        decode_video_frames(str(tmp_path / "missing.mp4"), 3)
    with pytest.raises(ValueError, match=r"no decodable video frames in window \[5.0, 6.0\)"):
        decode_video_frames(video, 3, start=5.0, end=6.0)
    silent = write_video(str(tmp_path / "silent.mp4"), seconds=0.5, audio_rate=None)
    with pytest.raises(ValueError, match="silent.mp4: no audio stream"):
        decode_video_audio(silent, 16000)


def test_frame_folder_natural_sort_and_empty(tmp_path):
    for i in (10, 2, 1):
        write_jpg(str(tmp_path / "clip" / f"frame_{i}.jpg"), i)
    assert [os.path.basename(p) for p in list_frame_files(str(tmp_path / "clip"))] == \
        ["frame_1.jpg", "frame_2.jpg", "frame_10.jpg"]
    (tmp_path / "none").mkdir()
    with pytest.raises(ValueError, match="none: clip has no frames"):
        list_frame_files(str(tmp_path / "none"))


def test_selection_invariants_property():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=150, deadline=None)
    @given(st.integers(1, 300), st.integers(1, 16), st.integers(0, 2**31))
    def check(available, wanted, seed):
        ev = select_frame_indices(available, wanted)
        assert len(ev) == wanted and ev == sorted(ev) and 0 <= ev[0] and ev[-1] < available
        if available >= wanted:
            assert len(set(ev)) == wanted  # no repeats when there are enough frames
        tr = select_frame_indices(available, wanted, train=True, rng=np.random.default_rng(seed))
        assert len(tr) == wanted and tr == sorted(tr) and tr[-1] < available
        pool = pool_indices(available, wanted)
        assert len(pool) == min(available, wanted) and len(set(pool)) == len(pool)

    check()
