"""AV-Digits: the embedded default dataset, built offline in seconds, deterministic from a seed.

Visual: scikit-learn's real handwritten digits (``load_digits``: 1,797 8x8 images, UCI),
upsampled to ``image_size`` (bilinear), 1 channel, degraded with per-sample Gaussian
pixel noise and a random occluding square, then normalised ``(x - 0.5) / 0.5``. Audio: the
same digit spoken by eSpeak NG (random English voice and variant, rate, pitch), silence
trimmed, resampled to 16 kHz, placed at a random offset in a 1 s window, white noise added
at a per-sample SNR, then the ``avdigits`` preset: 64-mel log spectrogram, per-clip z-norm
-> 64x64. Each digit image is paired with a spoken digit of the same label.

The noise ranges are calibrated (``benchmarks/avdigits_calibration.py``) for the default
model and optimiser (ResNet-18 per modality from scratch with timm's initialisation, SGD lr
1e-2, momentum 0.9, batch 32, 5 epochs): each modality alone reaches 40-90 % test accuracy and visual, learned fast,
leads audio, learned slowly, by more than 10 points (measured, seeds 0 / 1: visual 78.5 /
74.1 %, audio 47.4 / 57.4 %). With longer training audio catches up (about 7 epochs with
that optimiser), and with Adam both are learned within a few epochs (audio 91.5 %, visual
82.2 %): the imbalance is one of learning speed, calibrated for the SGD default.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict

import datasets
import numpy as np

from .audio import compute_features, get_audio_preset
from .builder import ARLBuilder, ARLBuilderConfig, register_dataset, single_thread_blas
from .splits import stratified_holdout

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
LABEL_NAMES = [str(d) for d in range(10)]
VISUAL_MEAN, VISUAL_STD = 0.5, 0.5


@dataclasses.dataclass
class AVDigitsConfig(ARLBuilderConfig):
    """AV-Digits generation parameters (all recorded in the dataset info).

    Attributes:
        generation_seed: seed of the generation (voices, rates, pitches, noise, occlusions).
        num_samples: use the first N digit images (0: all 1,797).
        repeats: samples per digit image (each with its own voice, noise and occlusion draws).
        image_size: side of the upsampled digit image.
        test_fraction: share of all samples in the test split (stratified, ``split_seed``).
        snr_db_min / snr_db_max: range of the audio signal-to-noise ratio (dB).
        pixel_noise_min / pixel_noise_max: range of the Gaussian pixel-noise std (image in [0, 1]).
        occlusion_prob / occlusion_size: chance and side (fraction of the image) of an
            occluding square of mid-grey.
        rate_min / rate_max, pitch_min / pitch_max: eSpeak NG speaking rate (wpm) and pitch.
        visual_partner_prob / audio_partner_prob: per-class confusion. Digits are paired
            (0-1, 2-3, ..., 8-9); with this probability a sample's image (or spoken word) is
            one of its partner digit instead, so that modality tells the pair reliably but the
            digit within it only with ``1 - p`` (0: off, the default data).
        visual_confused_classes: digits (e.g. ``"56789"``) whose images are drawn from any digit of
            that set: the image tells that the digit is in the set, not which one ("" : off).
    """

    validation_fraction: float = 0.15 / 0.85  # 70 / 15 / 15 overall
    generation_seed: int = 0
    num_samples: int = 0
    repeats: int = 1
    image_size: int = 32
    test_fraction: float = 0.15
    snr_db_min: float = 4.0
    snr_db_max: float = 24.0
    pixel_noise_min: float = 0.1
    pixel_noise_max: float = 0.5
    occlusion_prob: float = 0.5
    occlusion_size: float = 0.5
    rate_min: int = 120
    rate_max: int = 260
    pitch_min: int = 20
    pitch_max: int = 80
    visual_partner_prob: float = 0.0
    audio_partner_prob: float = 0.0
    visual_confused_classes: str = ""


#: Named configurations (``arl_hf.data.load("avdigits", config=...)``): generation knobs only.
#: ``bench`` puts the pair of modalities in the regime ARL addresses: a clean image tells digits
#: 0-6 and only "one of 7-9" for the others, the noisy speech tells every digit, two samples per
#: digit image (each with its own voice and noise draws), and joint training leaves the audio
#: encoder short of what it learns alone (calibrated with ``benchmarks/avdigits_bench_calibration.py``
#: from the concatenation baseline and the unimodal runs only; see docs/benchmarks.md).
#: ``main`` is the main job's data: digits 5-9 confused in a noisier image, one sample per image.
CONFIGS: Dict[str, Dict[str, Any]] = {
    "default": {},
    "bench": {"visual_confused_classes": "789", "snr_db_min": -3.0, "snr_db_max": 9.0,
              "pixel_noise_min": 0.0, "pixel_noise_max": 0.1, "occlusion_prob": 0.0, "repeats": 2},
    "main": {"visual_confused_classes": "56789", "snr_db_min": -3.0, "snr_db_max": 9.0,
             "pixel_noise_min": 0.1, "pixel_noise_max": 0.3, "occlusion_prob": 0.0},
}


#: the generation knobs that set the modality imbalance (the sweep of docs/benchmarks.md varies them):
#: which digits the image confuses, the audio's SNR range, the partner-digit probabilities
IMBALANCE_KNOBS = ("visual_confused_classes", "snr_db_min", "snr_db_max", "visual_partner_prob",
                   "audio_partner_prob")


def imbalance_options(config: str = "bench", **knobs: Any) -> Dict[str, Any]:
    """The dataset options of named configuration ``config`` with ``knobs`` (among
    :data:`IMBALANCE_KNOBS`, plus ``num_samples`` / ``repeats`` for the data size) over them:
    ``arl_hf.data.load("avdigits", **imbalance_options("bench", snr_db_min=0.0))``. No knob: the
    configuration's own data, unchanged. ``ValueError`` naming an unknown configuration or knob,
    or a value the generator refuses."""
    if config not in CONFIGS:
        raise ValueError(f"config: unknown AV-Digits configuration {config!r}; expected one of {sorted(CONFIGS)}")
    allowed = IMBALANCE_KNOBS + ("num_samples", "repeats")
    unknown = [k for k in knobs if k not in allowed]
    if unknown:
        raise ValueError(f"knobs: unknown imbalance knob {unknown[0]!r}; expected names among {list(allowed)}")
    options = {**CONFIGS[config], **knobs}
    fields = {f.name for f in dataclasses.fields(AVDigitsConfig)}
    _check(AVDigitsConfig(**{k: v for k, v in options.items() if k in fields}))
    return options


def generation_params(cfg: AVDigitsConfig) -> Dict[str, Any]:
    """The config fields that determine the generated data."""
    keys = ("generation_seed", "num_samples", "repeats", "image_size", "snr_db_min", "snr_db_max", "pixel_noise_min",
            "pixel_noise_max", "occlusion_prob", "occlusion_size", "rate_min", "rate_max", "pitch_min", "pitch_max",
            "visual_partner_prob", "audio_partner_prob", "visual_confused_classes")
    return {k: getattr(cfg, k) for k in keys}


def _check(cfg: AVDigitsConfig) -> None:
    for lo, hi in (("snr_db_min", "snr_db_max"), ("pixel_noise_min", "pixel_noise_max"),
                   ("rate_min", "rate_max"), ("pitch_min", "pitch_max")):
        if getattr(cfg, lo) > getattr(cfg, hi):
            raise ValueError(f"{lo}: expected <= {hi}, got {getattr(cfg, lo)} > {getattr(cfg, hi)}")
    if not 0.0 <= cfg.occlusion_prob <= 1.0 or not 0.0 < cfg.occlusion_size < 1.0:
        raise ValueError(f"occlusion_prob/occlusion_size: expected [0, 1] and (0, 1), got "
                         f"{cfg.occlusion_prob}, {cfg.occlusion_size}")
    for key in ("visual_partner_prob", "audio_partner_prob"):
        if not 0.0 <= getattr(cfg, key) <= 1.0:
            raise ValueError(f"{key}: expected a probability in [0, 1], got {getattr(cfg, key)}")
    if not all(c in "0123456789" for c in cfg.visual_confused_classes) or \
            len(set(cfg.visual_confused_classes)) != len(cfg.visual_confused_classes):
        raise ValueError(f"visual_confused_classes: expected distinct digits 0-9 such as '56789', got "
                         f"{cfg.visual_confused_classes!r}")
    if not isinstance(cfg.repeats, int) or cfg.repeats < 1:
        raise ValueError(f"repeats: expected a positive int, got {cfg.repeats!r}")
    if cfg.image_size < 8:
        raise ValueError(f"image_size: expected >= 8, got {cfg.image_size}")


def make_visual(image8: np.ndarray, rng: np.random.Generator, cfg: AVDigitsConfig) -> np.ndarray:
    """8x8 digit (values 0-16) -> degraded, normalised ``(1, S, S)`` float32."""
    from PIL import Image

    s = int(cfg.image_size)
    img = Image.fromarray((np.asarray(image8, dtype=np.float32) / 16.0), mode="F").resize((s, s), Image.BILINEAR)
    x = np.array(img, dtype=np.float32)
    if rng.random() < cfg.occlusion_prob:
        side = max(1, int(round(cfg.occlusion_size * s)))
        top, left = rng.integers(0, s - side + 1, size=2)
        x[top:top + side, left:left + side] = 0.5
    sigma = rng.uniform(cfg.pixel_noise_min, cfg.pixel_noise_max)
    x = x + sigma * rng.standard_normal(x.shape).astype(np.float32)
    return ((x - VISUAL_MEAN) / VISUAL_STD)[None].astype(np.float32)


def make_audio(speech: np.ndarray, speech_rate: int, rng: np.random.Generator, cfg: AVDigitsConfig) -> np.ndarray:
    """Synthesised word -> 1 s noisy 16 kHz waveform (before the feature preset)."""
    import librosa

    preset = get_audio_preset("avdigits")
    y, _ = librosa.effects.trim(speech, top_db=35)
    y = librosa.resample(y, orig_sr=speech_rate, target_sr=preset.sample_rate)
    n = preset.num_samples
    y = y[:n]
    out = np.zeros(n, dtype=np.float32)
    offset = int(rng.integers(0, n - y.size + 1))
    out[offset:offset + y.size] = y
    power = float(np.mean(y.astype(np.float64) ** 2)) if y.size else 0.0
    snr = rng.uniform(cfg.snr_db_min, cfg.snr_db_max)
    noise_std = np.sqrt(power / (10.0 ** (snr / 10.0))) if power > 0 else 1e-3
    out += (noise_std * rng.standard_normal(n)).astype(np.float32)
    return out


def generate(cfg: AVDigitsConfig) -> Dict[str, Any]:
    """All samples: ``{"audio": (N, 64, 64), "visual": (N, 1, S, S), "labels": (N,), "meta": [...]}``."""
    from sklearn.datasets import load_digits

    from .espeak import ENGLISH_VOICES, VARIANTS, synthesize_batch

    _check(cfg)
    digits = load_digits()
    base = len(digits.target) if not cfg.num_samples else min(int(cfg.num_samples), len(digits.target))
    # sample i shows digit image i % base: repeats > 1 pairs each image with more voices and noise draws
    n = base * int(cfg.repeats)
    targets = np.tile(digits.target[:base], int(cfg.repeats))
    rngs = [np.random.default_rng([int(cfg.generation_seed), i]) for i in range(n)]
    by_class = [np.flatnonzero(digits.target[:base] == d) for d in range(10)]
    confused = sorted(int(c) for c in cfg.visual_confused_classes)
    confused_pool = np.flatnonzero(np.isin(digits.target[:base], confused))
    images, jobs, meta = [], [], []
    for i in range(n):
        rng = rngs[i]
        label = int(targets[i])
        image, word = i % base, label
        # draws only when a knob is on, so the default data stays as it was
        if cfg.visual_partner_prob > 0 and rng.random() < cfg.visual_partner_prob and by_class[label ^ 1].size:
            image = int(rng.choice(by_class[label ^ 1]))
        if label in confused:
            image = int(rng.choice(confused_pool))
        if cfg.audio_partner_prob > 0 and rng.random() < cfg.audio_partner_prob:
            word = label ^ 1
        images.append(image)
        voice = f"{ENGLISH_VOICES[rng.integers(len(ENGLISH_VOICES))]}+{VARIANTS[rng.integers(len(VARIANTS))]}"
        job = {"text": WORDS[word], "voice": voice,
               "rate": int(rng.integers(cfg.rate_min, cfg.rate_max + 1)),
               "pitch": int(rng.integers(cfg.pitch_min, cfg.pitch_max + 1))}
        jobs.append(job)
        meta.append(job)
    waves, speech_rate = synthesize_batch(jobs)
    preset = get_audio_preset("avdigits")
    with single_thread_blas():  # thousands of tiny matmuls: BLAS threads only add overhead
        audio = np.stack([compute_features(make_audio(waves[i], speech_rate, rngs[i], cfg), preset,
                                           source=f"avdigits sample {i}") for i in range(n)])
    visual = np.stack([make_visual(digits.images[images[i]], rngs[i], cfg) for i in range(n)])
    return {"audio": audio, "visual": visual, "labels": targets.astype(np.int64), "meta": meta}


@register_dataset("avdigits")
class AVDigitsBuilder(ARLBuilder):
    """AV-Digits: paired real handwritten digits and synthesised spoken digits (10 classes)."""

    BUILDER_CONFIG_CLASS = AVDigitsConfig
    # 1.1.0: partner-digit confusions (visual/audio_partner_prob); 1.2.0: ``bench`` recalibrated, ``main``
    VERSION = datasets.Version("1.2.0")
    CONFIGS = CONFIGS
    # generated offline with its own preset (the features are part of the data)
    AUDIO_PRESET = "avdigits"
    AUDIO_DURATION = 1.0
    FIXED_AUDIO_PRESET = True
    REQUIRES_DATA_DIR = False
    MODALITIES = {
        "audio": {"kind": "spectrogram", "encoder": "timm:resnet18", "in_chans": 1},
        "visual": {"kind": "image", "encoder": "timm:resnet18", "in_chans": 1},
    }
    HOMEPAGE = "https://scikit-learn.org/stable/modules/generated/sklearn.datasets.load_digits.html"
    CITATION = ("Images: Alpaydin and Kaynak, Optical Recognition of Handwritten Digits, UCI ML Repository, 1998. "
                "Speech: eSpeak NG (https://github.com/espeak-ng/espeak-ng).")
    EXTRA_FEATURES = {"voice": datasets.Value("string"), "rate": datasets.Value("int32"),
                      "pitch": datasets.Value("int32")}

    def modality_specs(self) -> Dict[str, Dict[str, Any]]:
        specs = super().modality_specs()
        s = int(self.config.image_size)
        specs["visual"]["shape"] = [1, s, s]
        specs["visual"]["normalisation"] = {"mean": VISUAL_MEAN, "std": VISUAL_STD, "channels": 1}
        return specs

    def _modality_features(self) -> Dict[str, Any]:
        s = int(self.config.image_size)
        return {"audio": datasets.Array2D(shape=tuple(self.preset.output_shape), dtype="float32"),
                "visual": datasets.Array3D(shape=(1, s, s), dtype="float32")}

    def _resolve(self):
        cfg = self.config
        data = generate(cfg)
        labels = data["labels"].tolist()
        # split the digit images, then give each split every sample of its images (repeats)
        base = len(labels) // int(cfg.repeats)
        rest, test = stratified_holdout(labels[:base], float(cfg.test_fraction), int(cfg.split_seed),
                                        field="test_fraction")
        keep, val = stratified_holdout([labels[i] for i in rest], float(cfg.validation_fraction),
                                       int(cfg.split_seed) + 1)
        parts = {"train": [rest[i] for i in keep], "validation": [rest[i] for i in val], "test": test}
        parts = {k: [b + r * base for r in range(int(cfg.repeats)) for b in idx] for k, idx in parts.items()}
        items = {
            split: [{"id": f"avdigits_{i:04d}", "label": int(labels[i]), "audio": data["audio"][i],
                     "visual": data["visual"][i], **{k: data["meta"][i][k] for k in ("voice", "rate", "pitch")}}
                    for i in idx]
            for split, idx in parts.items()
        }
        split_record = {"method": "stratified 70/15/15", "test_fraction": float(cfg.test_fraction),
                        "test_seed": int(cfg.split_seed), "validation_seed": int(cfg.split_seed) + 1}
        options = {"generation": generation_params(cfg), "visual_channels": 1,
                   "visual_normalisation": "(x - 0.5) / 0.5 of the [0, 1] image after noise",
                   "source_images": "sklearn.datasets.load_digits (1,797 8x8 images)",
                   "speech": "eSpeak NG via espeakng-loader, fresh process per build"}
        return items, LABEL_NAMES, split_record, options

    def _example(self, item: Dict[str, Any]) -> Dict[str, Any]:
        return {"audio": item["audio"], "visual": item["visual"], "voice": item["voice"],
                "rate": item["rate"], "pitch": item["pitch"]}
