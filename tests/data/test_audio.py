"""Audio presets: pinned against direct librosa / scipy computations, shapes, records, bad input."""

from __future__ import annotations

import os

import numpy as np
import pytest
from datagen_arl import write_wav

from arl_hf.data.audio import (
    AUDIO_PRESETS,
    AudioPreset,
    compute_features,
    get_audio_preset,
    kaldi_fbank,
    load_audio_file,
)


@pytest.fixture(scope="module")
def wav_1s3(tmp_path_factory) -> str:
    return write_wav(str(tmp_path_factory.mktemp("wav") / "a.wav"), seconds=1.3, sr=16000, freq=523.0, seed=3)


def test_ogm_matches_direct_librosa(wav_1s3):
    import librosa

    preset = get_audio_preset("ogm")
    feats = compute_features(load_audio_file(wav_1s3, preset.sample_rate), preset, source=wav_1s3)
    # the authors' pipeline, written out: 22.05 kHz, tile x3, cut to 3 s, clip, STFT 512/353, log(|S|+1e-7)
    y, sr = librosa.load(wav_1s3, sr=22050)
    assert sr == 22050
    y = np.tile(y, 3)[: 22050 * 3]
    y[y > 1.0] = 1.0
    y[y < -1.0] = -1.0
    ref = np.log(np.abs(librosa.stft(y, n_fft=512, hop_length=353)) + 1e-7)
    assert feats.shape == ref.shape == (257, 188)
    assert feats.dtype == np.float32
    np.testing.assert_allclose(feats, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("seconds,frames", [(3.0, 299), (10.0, 1004)])
def test_scipy_matches_direct_scipy(wav_1s3, seconds, frames):
    from scipy import signal

    preset = get_audio_preset("scipy", duration=seconds)
    y = load_audio_file(wav_1s3, 16000)
    feats = preset(y, source=wav_1s3)
    n = int(seconds * 16000)
    tiled = np.clip(np.tile(y, int(np.ceil(n / y.size)))[:n], -1, 1)
    _, _, spec = signal.spectrogram(tiled, 16000, nperseg=512, noverlap=353)
    spec = np.log(spec + 1e-7)
    ref = (spec - spec.mean()) / (spec.std() + 1e-9)
    assert feats.shape == ref.shape == (257, frames)
    np.testing.assert_allclose(feats, ref, rtol=0, atol=1e-4)
    assert abs(float(feats.mean())) < 1e-4 and abs(float(feats.std()) - 1.0) < 1e-3


def test_fbank_tone_peak_padding_and_normalisation():
    sr = 16000
    t = np.arange(2 * sr) / sr
    tone = 0.5 * np.sin(2 * np.pi * 1000.0 * t)
    feats = get_audio_preset("fbank")(tone.astype(np.float32))
    assert feats.shape == (128, 1024)  # mel x time
    n_frames = 1 + (tone.size - 400) // 160
    assert n_frames == 198
    # frames past the clip are zero rows before normalisation: (0 + 4.5) / (2 * 5.14)
    np.testing.assert_allclose(feats[:, n_frames:], 4.5 / 10.28, atol=1e-6)
    # the loudest mel bin is the one centred nearest 1 kHz (Kaldi mel scale 1127 ln(1 + f/700), 20-8000 Hz)

    def mel(f):
        return 1127.0 * np.log(1.0 + f / 700.0)

    delta = (mel(8000.0) - mel(20.0)) / 129
    centres_hz = 700.0 * (np.exp((mel(20.0) + delta * np.arange(1, 129)) / 1127.0) - 1.0)
    expected = int(np.argmin(np.abs(centres_hz - 1000.0)))
    peak = np.bincount(feats[:, :n_frames].argmax(axis=0)).argmax()
    assert abs(int(peak) - expected) <= 1


def test_fbank_silence_is_log_epsilon():
    fb = kaldi_fbank(np.zeros(1600), 16000)
    assert fb.shape == (8, 128)
    np.testing.assert_allclose(fb, np.log(np.finfo(np.float32).eps))


def test_preset_record_roundtrip_and_shapes():
    for name, preset in AUDIO_PRESETS.items():
        rec = preset.to_dict()
        assert rec["name"] == name and rec["version"] and rec["output_shape"] == list(preset.output_shape)
        assert AudioPreset.from_dict(rec) == preset
        assert get_audio_preset(rec) == preset
    assert get_audio_preset("ogm").output_shape == (257, 188)
    assert get_audio_preset("scipy", duration=10).to_dict()["duration"] == 10.0
    assert get_audio_preset("avdigits").output_shape == (64, 64)


def test_unknown_preset_and_bad_duration():
    with pytest.raises(ValueError, match="unknown audio preset 'mfcc'"):
        get_audio_preset("mfcc")
    with pytest.raises(ValueError, match="duration"):
        get_audio_preset("scipy", duration=-1)
    with pytest.raises(ValueError, match="has no 'duration'"):
        get_audio_preset("fbank", duration=5)


def test_audio_shorter_than_a_window(tmp_path):
    path = write_wav(str(tmp_path / "short.wav"), seconds=0.01, sr=16000)  # 160 samples
    y = load_audio_file(path, 16000)
    with pytest.raises(ValueError, match=r"short\.wav: audio shorter than one analysis window: 160 samples"):
        compute_features(y, get_audio_preset("scipy"), source=path)


def test_empty_corrupt_and_missing_audio_files(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.wav: audio file is empty"):
        load_audio_file(str(empty), 16000)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF" + os.urandom(200))
    with pytest.raises(ValueError, match="bad.wav: unreadable audio file"):
        load_audio_file(str(bad), 16000)
    with pytest.raises(FileNotFoundError, match="nope.wav"):
        load_audio_file(str(tmp_path / "nope.wav"), 16000)


def test_nonfinite_and_multichannel_waveforms_rejected():
    p = get_audio_preset("scipy")
    with pytest.raises(ValueError, match="NaN or infinite"):
        p(np.array([np.nan] * 1000, dtype=np.float32), source="clip7")
    with pytest.raises(ValueError, match="clip8: expected a mono 1-D waveform"):
        p(np.zeros((2, 1000), dtype=np.float32), source="clip8")
