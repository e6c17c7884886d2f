"""Named, versioned audio preprocessing presets: waveform -> 2-D spectrogram ``(F, T)``.

Three pipelines are in circulation among the ARL peers (see docs/data.md); each is a
preset here so that a cached dataset records exactly which one produced its features:

* ``ogm``    librosa 22.05 kHz, 3 s tiled, clipped, STFT n_fft 512 hop 353, ``log(|S|+1e-7)`` -> 257x188
* ``scipy``  16 kHz, ``scipy.signal.spectrogram`` nperseg 512 noverlap 353, log, per-clip z-norm
             -> 257x299 (3 s) or 257x1004 (10 s)
* ``fbank``  Kaldi-style 128-mel log filterbank, 25 ms window, 10 ms shift, 1024 frames,
             ``(x + 4.5) / (2 * 5.14)`` -> 128x1024 (mel x time; the circulating code feeds 1024x128)

A preset's :meth:`AudioPreset.to_dict` (name, version, every parameter, output shape) is
written into the dataset info so that two users can tell whether their features match.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

import numpy as np

__all__ = [
    "AudioPreset",
    "AUDIO_PRESETS",
    "get_audio_preset",
    "load_audio_file",
    "fit_length",
    "compute_features",
    "kaldi_fbank",
]


@dataclasses.dataclass(frozen=True)
class AudioPreset:
    """A named, versioned audio feature pipeline.

    Attributes:
        name: preset name (``"ogm"``, ``"scipy"``, ``"fbank"``, ``"avdigits"``).
        version: bumped whenever the numbers a preset produces change.
        method: the feature function (a key of ``_METHODS``).
        sample_rate: the rate the waveform is resampled to (Hz).
        duration: seconds the waveform is tiled/cut to before analysis (``None``: the
            whole clip, as in ``fbank`` which pads/cuts in the frame domain instead).
        params: the method's parameters, as a sorted tuple of ``(key, value)`` pairs.
    """

    name: str
    version: str
    method: str
    sample_rate: int
    duration: Optional[float]
    params: Tuple[Tuple[str, Any], ...] = ()

    def param(self, key: str) -> Any:
        """Value of one method parameter (``KeyError`` if the preset has none such)."""
        return dict(self.params)[key]

    @property
    def num_samples(self) -> Optional[int]:
        """Number of samples after tiling/cutting, or ``None`` when the clip is kept whole."""
        if self.duration is None:
            return None
        return int(round(self.duration * self.sample_rate))

    @property
    def min_samples(self) -> int:
        """Fewest real samples a clip may have: one analysis window."""
        return int(self.param("window_samples"))

    @property
    def output_shape(self) -> Tuple[int, int]:
        """``(F, T)`` shape of the features this preset produces."""
        return _SHAPES[self.method](self)

    def with_duration(self, seconds: float) -> "AudioPreset":
        """Same preset with another clip duration (only for presets that tile/cut)."""
        if self.duration is None:
            raise ValueError(f"preset {self.name!r}: has no 'duration' parameter (it keeps whole clips)")
        if not seconds or seconds <= 0:
            raise ValueError(f"duration: expected a positive number of seconds, got {seconds!r}")
        return dataclasses.replace(self, duration=float(seconds))

    def to_dict(self) -> Dict[str, Any]:
        """JSON-serialisable record: name, version, every parameter and the output shape."""
        out: Dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "method": self.method,
            "sample_rate": self.sample_rate,
            "duration": self.duration,
        }
        out.update(dict(self.params))
        out["output_shape"] = list(self.output_shape)
        return out

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> "AudioPreset":
        """Inverse of :meth:`to_dict`."""
        fixed = {"name", "version", "method", "sample_rate", "duration", "output_shape"}
        missing = {"name", "version", "method", "sample_rate", "duration"} - set(record)
        if missing:
            raise ValueError(f"preset record: missing keys {sorted(missing)} in {dict(record)!r}")
        params = tuple(sorted((k, v) for k, v in record.items() if k not in fixed))
        return cls(
            name=str(record["name"]),
            version=str(record["version"]),
            method=str(record["method"]),
            sample_rate=int(record["sample_rate"]),
            duration=None if record["duration"] is None else float(record["duration"]),
            params=params,
        )

    def __call__(self, waveform: np.ndarray, source: str = "<waveform>") -> np.ndarray:
        """Features of a mono waveform already at :attr:`sample_rate` (see :func:`compute_features`)."""
        return compute_features(waveform, self, source=source)


def _p(**kw: Any) -> Tuple[Tuple[str, Any], ...]:
    return tuple(sorted(kw.items()))


AUDIO_PRESETS: Dict[str, AudioPreset] = {
    "ogm": AudioPreset(
        name="ogm",
        version="1.0.0",
        method="librosa_stft",
        sample_rate=22050,
        duration=3.0,
        params=_p(n_fft=512, hop_length=353, window="hann", center=True, clip=1.0, log_eps=1e-7,
                  window_samples=512, tile=True),
    ),
    "scipy": AudioPreset(
        name="scipy",
        version="1.0.0",
        method="scipy_spectrogram",
        sample_rate=16000,
        duration=3.0,
        params=_p(nperseg=512, noverlap=353, window="tukey0.25", detrend="constant", scaling="density",
                  clip=1.0, log_eps=1e-7, znorm_eps=1e-9, window_samples=512, tile=True),
    ),
    "fbank": AudioPreset(
        name="fbank",
        version="1.0.0",
        method="kaldi_fbank",
        sample_rate=16000,
        duration=None,
        params=_p(num_mel_bins=128, frame_length_ms=25.0, frame_shift_ms=10.0, window="hanning",
                  preemphasis=0.97, remove_dc_offset=True, low_freq=20.0, high_freq=0.0, dither=0.0,
                  subtract_waveform_mean=True, target_frames=1024, norm_mean=-4.5, norm_std=5.14,
                  window_samples=400, layout="mel_time"),
    ),
    # The AV-Digits default: a small log-mel (1 s at 16 kHz -> 64x64), per-clip z-norm.
    "avdigits": AudioPreset(
        name="avdigits",
        version="1.0.0",
        method="librosa_logmel",
        sample_rate=16000,
        duration=1.0,
        params=_p(n_fft=512, hop_length=251, n_mels=64, fmin=0.0, fmax=8000.0, log_eps=1e-6,
                  znorm_eps=1e-6, window_samples=512, tile=False),
    ),
}


def get_audio_preset(spec: Union[str, AudioPreset, Mapping[str, Any]],
                     duration: Optional[float] = None) -> AudioPreset:
    """Resolve a preset name, record or instance; ``duration`` overrides the clip length.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    if isinstance(spec, AudioPreset):
        preset = spec
    elif isinstance(spec, Mapping):
        preset = AudioPreset.from_dict(spec)
    elif isinstance(spec, str):
        if spec not in AUDIO_PRESETS:
            raise ValueError(f"preprocessing: unknown audio preset {spec!r}; expected one of {sorted(AUDIO_PRESETS)}")
        preset = AUDIO_PRESETS[spec]
    else:
        raise ValueError(f"preprocessing: expected a preset name, record or AudioPreset, got {type(spec).__name__}")
    if preset.method not in _METHODS:
        raise ValueError(f"preprocessing: preset {preset.name!r} names unknown method {preset.method!r}")
    if duration is not None and float(duration) != preset.duration:
        preset = preset.with_duration(duration)
    return preset


# ----------------------------------------------------------------------------- loading


def load_audio_file(path: str, sample_rate: int) -> np.ndarray:
    """Read an audio file as mono float32 at ``sample_rate``.

    Same numbers as ``librosa.load(path, sr=sample_rate)``: soundfile decode, channel mean,
    ``librosa.resample(res_type="soxr_hq")``; but without librosa's audioread fallback, so
    a file soundfile cannot read is reported instead of handed to another decoder.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file cannot be decoded or holds no samples (message names the file).
    """
    import os

    if not os.path.isfile(path):
        raise FileNotFoundError(f"audio file not found: {path}")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path}: audio file is empty (0 bytes)")
    import soundfile as sf

    try:
        y, native = sf.read(path, dtype="float32", always_2d=True)
    except Exception as err:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        raise ValueError(f"{path}: unreadable audio file ({type(err).__name__}: {err})") from err
    if y.size == 0:
        raise ValueError(f"{path}: audio file holds no samples")
    y = y.mean(axis=1) if y.shape[1] > 1 else y[:, 0]
    if native != sample_rate:
        import librosa

        y = librosa.resample(y, orig_sr=native, target_sr=sample_rate, res_type="soxr_hq")
    return np.ascontiguousarray(y, dtype=np.float32)


def fit_length(y: np.ndarray, num_samples: int, tile: bool = True) -> np.ndarray:
    """Tile (repeat the clip) or zero-pad ``y`` to at least ``num_samples`` and cut to exactly that.

    Tiling ``ceil(n/len)`` times equals the authors' ``np.tile(y, 3)[:n]`` for every clip of
    at least a third of the target length, and keeps the shape fixed for shorter ones.
    """
    if y.size >= num_samples:
        return y[:num_samples]
    if tile:
        return np.tile(y, int(math.ceil(num_samples / y.size)))[:num_samples]
    return np.pad(y, (0, num_samples - y.size))


# ----------------------------------------------------------------------------- methods


def _prepare(y: np.ndarray, preset: AudioPreset, source: str) -> np.ndarray:
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise ValueError(f"{source}: expected a mono 1-D waveform, got shape {y.shape}")
    if y.size == 0:
        raise ValueError(f"{source}: waveform holds no samples")
    if not np.all(np.isfinite(y)):
        raise ValueError(f"{source}: waveform contains NaN or infinite samples")
    if y.size < preset.min_samples:
        raise ValueError(
            f"{source}: audio shorter than one analysis window: {y.size} samples at {preset.sample_rate} Hz, "
            f"expected at least {preset.min_samples} (preset {preset.name!r})"
        )
    if preset.num_samples is not None:
        y = fit_length(y, preset.num_samples, tile=bool(dict(preset.params).get("tile", True)))
    return y


def _librosa_stft(y: np.ndarray, p: AudioPreset) -> np.ndarray:
    import librosa

    y = np.clip(y, -p.param("clip"), p.param("clip"))
    spec = librosa.stft(y, n_fft=p.param("n_fft"), hop_length=p.param("hop_length"),
                        window=p.param("window"), center=p.param("center"))
    return np.log(np.abs(spec) + p.param("log_eps"))


def _scipy_spectrogram(y: np.ndarray, p: AudioPreset) -> np.ndarray:
    from scipy import signal

    y = np.clip(y, -p.param("clip"), p.param("clip"))
    _, _, spec = signal.spectrogram(y, fs=p.sample_rate, window=("tukey", 0.25), nperseg=p.param("nperseg"),
                                    noverlap=p.param("noverlap"), detrend=p.param("detrend"),
                                    scaling=p.param("scaling"))
    spec = np.log(spec + p.param("log_eps"))
    return (spec - spec.mean()) / (spec.std() + p.param("znorm_eps"))


def _mel_scale(freq: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log(1.0 + np.asarray(freq, dtype=np.float64) / 700.0)


def _kaldi_mel_banks(num_bins: int, padded_window: int, sample_rate: float, low_freq: float,
                     high_freq: float) -> np.ndarray:
    """Kaldi's triangular mel filters on the mel axis, ``(num_bins, padded_window // 2 + 1)``."""
    num_fft_bins = padded_window // 2
    nyquist = 0.5 * sample_rate
    if high_freq <= 0.0:
        high_freq += nyquist
    if not 0.0 <= low_freq < nyquist or not 0.0 < high_freq <= nyquist or low_freq >= high_freq:
        raise ValueError(f"fbank: invalid band low_freq={low_freq} high_freq={high_freq} (nyquist {nyquist})")
    mel_low, mel_high = _mel_scale(low_freq), _mel_scale(high_freq)
    delta = (mel_high - mel_low) / (num_bins + 1)
    b = np.arange(num_bins, dtype=np.float64)[:, None]
    left, center, right = mel_low + b * delta, mel_low + (b + 1) * delta, mel_low + (b + 2) * delta
    mel = _mel_scale((sample_rate / padded_window) * np.arange(num_fft_bins))[None, :]
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = np.maximum(0.0, np.minimum(up, down))
    return np.pad(banks, ((0, 0), (0, 1)))  # the Nyquist bin gets weight 0, as in Kaldi


def kaldi_fbank(y: np.ndarray, sample_rate: int, num_mel_bins: int = 128, frame_length_ms: float = 25.0,
                frame_shift_ms: float = 10.0, preemphasis: float = 0.97, remove_dc_offset: bool = True,
                low_freq: float = 20.0, high_freq: float = 0.0) -> np.ndarray:
    """Kaldi-compatible log mel filterbank ``(num_frames, num_mel_bins)`` in numpy.

    Follows ``torchaudio.compliance.kaldi.fbank`` with ``dither=0``, ``window_type='hanning'``
    (symmetric Hann), ``snip_edges=True``, ``round_to_power_of_two=True``, ``use_power=True``,
    ``use_log_fbank=True``, ``use_energy=False``: frames -> DC removal -> pre-emphasis
    (first sample replicated) -> window -> zero-pad to a power of two -> power spectrum ->
    mel filters -> ``log(max(x, float32 eps))``. Computed in float64 (torchaudio: float32).
    """
    y = np.asarray(y, dtype=np.float64)
    win = int(sample_rate * frame_length_ms * 0.001)
    shift = int(sample_rate * frame_shift_ms * 0.001)
    if y.size < win:
        raise ValueError(f"fbank: waveform of {y.size} samples is shorter than one {win}-sample window")
    padded = 1 << (win - 1).bit_length()
    n_frames = 1 + (y.size - win) // shift
    frames = np.lib.stride_tricks.sliding_window_view(y, win)[::shift][:n_frames].copy()
    if remove_dc_offset:
        frames -= frames.mean(axis=1, keepdims=True)
    if preemphasis != 0.0:
        prev = np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
        frames = frames - preemphasis * prev
    frames *= np.hanning(win)[None, :]
    spec = np.abs(np.fft.rfft(frames, n=padded, axis=1)) ** 2
    banks = _kaldi_mel_banks(num_mel_bins, padded, float(sample_rate), low_freq, high_freq)
    energies = spec @ banks.T
    return np.log(np.maximum(energies, np.finfo(np.float32).eps))


def _kaldi_fbank_preset(y: np.ndarray, p: AudioPreset) -> np.ndarray:
    if p.param("dither") != 0.0 or p.param("window") != "hanning":
        raise ValueError(f"preset {p.name!r}: only dither=0 and window='hanning' are implemented")
    if p.param("subtract_waveform_mean"):
        y = y - y.mean()
    fb = kaldi_fbank(y, p.sample_rate, num_mel_bins=p.param("num_mel_bins"),
                     frame_length_ms=p.param("frame_length_ms"), frame_shift_ms=p.param("frame_shift_ms"),
                     preemphasis=p.param("preemphasis"), remove_dc_offset=p.param("remove_dc_offset"),
                     low_freq=p.param("low_freq"), high_freq=p.param("high_freq"))
    target = p.param("target_frames")
    if fb.shape[0] < target:
        fb = np.pad(fb, ((0, target - fb.shape[0]), (0, 0)))  # zero rows, padded before normalising
    fb = fb[:target]
    fb = (fb - p.param("norm_mean")) / (2.0 * p.param("norm_std"))
    return fb.T  # (mel, time)


def _librosa_logmel(y: np.ndarray, p: AudioPreset) -> np.ndarray:
    import librosa

    # = librosa.feature.melspectrogram(power=2), written as one matmul (its einsum is slow on 2 cores)
    power = np.abs(librosa.stft(y, n_fft=p.param("n_fft"), hop_length=p.param("hop_length"))) ** 2
    basis = librosa.filters.mel(sr=p.sample_rate, n_fft=p.param("n_fft"), n_mels=p.param("n_mels"),
                                fmin=p.param("fmin"), fmax=p.param("fmax"))
    mel = np.log(basis @ power + p.param("log_eps"))
    return (mel - mel.mean()) / (mel.std() + p.param("znorm_eps"))


_METHODS: Dict[str, Callable[[np.ndarray, AudioPreset], np.ndarray]] = {
    "librosa_stft": _librosa_stft,
    "scipy_spectrogram": _scipy_spectrogram,
    "kaldi_fbank": _kaldi_fbank_preset,
    "librosa_logmel": _librosa_logmel,
}


def _stft_frames(n: int, hop: int, center: bool, n_fft: int) -> int:
    return 1 + n // hop if center else 1 + (n - n_fft) // hop


_SHAPES: Dict[str, Callable[[AudioPreset], Tuple[int, int]]] = {
    "librosa_stft": lambda p: (p.param("n_fft") // 2 + 1,
                               _stft_frames(p.num_samples, p.param("hop_length"), p.param("center"), p.param("n_fft"))),
    "scipy_spectrogram": lambda p: (
        p.param("nperseg") // 2 + 1,
        (p.num_samples - p.param("noverlap")) // (p.param("nperseg") - p.param("noverlap")),
    ),
    "kaldi_fbank": lambda p: (p.param("num_mel_bins"), p.param("target_frames")),
    "librosa_logmel": lambda p: (p.param("n_mels"), 1 + p.num_samples // p.param("hop_length")),
}


def compute_features(waveform: np.ndarray, preset: AudioPreset, source: str = "<waveform>") -> np.ndarray:
    """Apply ``preset`` to a mono waveform at ``preset.sample_rate``; returns float32 ``(F, T)``.

    Raises:
        ValueError: empty/non-finite waveform, or fewer samples than one analysis window
            (the message names ``source``, the sample count and the minimum).
    """
    y = _prepare(waveform, preset, source)
    feats = np.asarray(_METHODS[preset.method](y, preset), dtype=np.float32)
    if feats.shape != preset.output_shape:
        raise ValueError(f"{source}: preset {preset.name!r} produced shape {feats.shape}, "
                         f"expected {preset.output_shape}")
    if not np.all(np.isfinite(feats)):
        raise ValueError(f"{source}: preset {preset.name!r} produced non-finite features (silent clip?)")
    return feats
