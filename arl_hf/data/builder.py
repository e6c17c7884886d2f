"""Shared base of the dataset builders (``datasets.GeneratorBasedBuilder`` subclasses) and the
table of registered datasets.

A dataset is one :class:`ARLBuilder` subclass decorated with :func:`register_dataset`; its
defaults for :func:`arl_hf.data.load` are class attributes (``AUDIO_PRESET``, ``FRAME_POOL``...).
The base holds the config fields every builder has (audio preset, frame pool, split seed,
validation fraction, error policy), writes the preprocessing record into
``DatasetInfo.description`` (JSON: preset name + all parameters, frame pool, split seeds,
modality kinds), and applies the ``on_error`` policy to bad raw files.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import datasets
import numpy as np

from ..log import get_logger
from ..registry import Registry
from .audio import AUDIO_PRESETS, AudioPreset, compute_features, get_audio_preset, load_audio_file
from .record import MODALITY_KINDS, RECORD_FORMAT, PreprocessingRecord
from .video import (
    decode_video_audio,
    decode_video_frames,
    encode_jpeg,
    list_frame_files,
    pool_indices,
    read_image_bytes,
)

logger = get_logger(__name__)

ON_ERROR = ("raise", "skip")

# Modality kinds (how a column is stored and what the transform turns it into):
#   spectrogram: Array2D (F, T) float32            -> (1, F, T)
#   frames:      List(Image) frame pool             -> (T_frames, 3, H, W), ImageNet-normalised
#   flow:        List({"x": Image, "y": Image})     -> (T_frames, 2, H, W), scaled to [-1, 1]
#   sequence:    Array2D (L, D) float32             -> (D,) time-averaged, or (L, D)
#   image:       Array3D (C, H, W) float32          -> (C, H, W) unchanged
# (MODALITY_KINDS and RECORD_FORMAT live in .record, with the record itself)


@dataclasses.dataclass
class ARLBuilderConfig(datasets.BuilderConfig):
    """Fields shared by all builders; every one of them is part of the cache key.

    Attributes:
        preset: JSON of the audio preset record (``AudioPreset.to_dict``); empty when the
            dataset has no raw audio (MOSI, UCF-101, AV-Digits' own preset is fixed).
        frame_pool: frames kept per clip in the cache (evenly spaced); 0 keeps all.
        frame_max_side: shrink frames so the shorter side is at most this (0 keeps their
            size): decoded video frames, and pre-extracted frame files larger than that
            (re-encoded as JPEG quality 95; smaller files are stored unchanged). Smaller
            stored frames decode faster at training time (benchmarks/data_pipeline.py).
        split_seed: seed of every random split decision (recorded in the info).
        validation_fraction: share of *train* held out as the validation split.
        on_error: ``"raise"`` stops at the first bad raw file; ``"skip"`` drops it and
            logs the count.
    """

    preset: str = ""
    frame_pool: int = 0
    frame_max_side: int = 0
    split_seed: int = 0
    validation_fraction: float = 0.1
    on_error: str = "raise"

    def __post_init__(self):
        super().__post_init__()
        if self.on_error not in ON_ERROR:
            raise ValueError(f"on_error: expected one of {ON_ERROR}, got {self.on_error!r}")
        if not 0.0 < float(self.validation_fraction) < 1.0:
            raise ValueError(f"validation_fraction: expected a fraction in (0, 1), got {self.validation_fraction!r}")
        if int(self.frame_pool) < 0:
            raise ValueError(f"frame_pool: expected an int >= 0, got {self.frame_pool!r}")


class ARLBuilder(datasets.GeneratorBasedBuilder):
    """Base builder: subclasses implement ``_resolve`` (read the layout, return split items and
    label names) and ``_example`` (one item -> one example dict), and declare the dataset's
    modalities and the defaults :func:`arl_hf.data.load` uses as class attributes."""

    BUILDER_CONFIG_CLASS = ARLBuilderConfig
    VERSION = datasets.Version("1.0.0")

    #: the registered name (set by :func:`register_dataset`)
    DATASET: str = ""
    #: modality -> {"kind": ..., "encoder": ..., "in_chans"/"input_dim": ...}
    MODALITIES: Dict[str, Dict[str, Any]] = {}
    #: frames per clip the transform gives the model by default (recorded with the frames)
    DEFAULT_NUM_FRAMES: int = 1
    #: default audio preset name for ``spectrogram`` modalities (``None``: no raw audio, and
    #: ``load`` refuses ``preprocessing`` / ``audio_duration``)
    AUDIO_PRESET: Optional[str] = None
    #: clip seconds a named preset that tiles/cuts is set to when ``audio_duration`` is not given
    AUDIO_DURATION: Optional[float] = None
    #: ``True``: the preset is part of the data (``load`` accepts no other preset or duration)
    FIXED_AUDIO_PRESET: bool = False
    #: frames kept per clip in the cache when ``load`` is not given ``frame_pool`` (0 keeps all)
    FRAME_POOL: int = 0
    #: whether ``load`` needs ``data_dir`` (the raw download); ``False`` for generated data
    REQUIRES_DATA_DIR: bool = True
    #: named configurations (``load(name, config=...)``): sets of config options
    CONFIGS: Dict[str, Dict[str, Any]] = {"default": {}}
    HOMEPAGE: str = ""
    CITATION: str = ""
    EXTRA_FEATURES: Dict[str, Any] = {}

    # ------------------------------------------------------------------ config helpers
    @property
    def preset(self) -> Optional[AudioPreset]:
        """The audio preset of this build, or ``None``."""
        return get_audio_preset(json.loads(self.config.preset)) if self.config.preset else None

    def _modality_features(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        for name, spec in self.MODALITIES.items():
            kind = spec["kind"]
            if kind == "spectrogram":
                out[name] = datasets.Array2D(shape=tuple(self.preset.output_shape), dtype="float32")
            elif kind == "frames":
                out[name] = datasets.List(datasets.Image())
            elif kind == "flow":
                out[name] = datasets.List({"x": datasets.Image(), "y": datasets.Image()})
            elif kind == "sequence":
                out[name] = datasets.Array2D(shape=(None, int(spec["input_dim"])), dtype="float32")
            elif kind == "image":
                out[name] = datasets.Array3D(shape=tuple(spec["shape"]), dtype="float32")
            else:
                raise ValueError(
                    f"MODALITIES[{name!r}]['kind']: unknown kind {kind!r}; expected one of {MODALITY_KINDS}"
                )
        return out

    def _make_features(self, label_names: Sequence[str]) -> datasets.Features:
        feats = {"id": datasets.Value("string")}
        feats.update(self._modality_features())
        feats.update(self.EXTRA_FEATURES)
        feats["labels"] = datasets.ClassLabel(names=list(label_names))
        return datasets.Features(feats)

    def modality_specs(self) -> Dict[str, Dict[str, Any]]:
        """Per modality: kind, stored shape and the encoder suggestion for the model."""
        specs = {}
        for name, spec in self.MODALITIES.items():
            s = dict(spec)
            if s["kind"] == "spectrogram":
                s["shape"] = list(self.preset.output_shape)
            specs[name] = s
        return specs

    def record(self, label_names: Sequence[str], splits: Dict[str, Any], options: Dict[str, Any]) -> Dict[str, Any]:
        """The preprocessing record written (as JSON) into ``DatasetInfo.description``."""
        preset = self.preset
        has_frames = any(s["kind"] in ("frames", "flow") for s in self.MODALITIES.values())
        return {
            "format": RECORD_FORMAT,
            "dataset": self.DATASET,
            "builder_version": str(self.VERSION),
            "audio_preset": preset.to_dict() if preset is not None else None,
            "frames": {
                "pool_size": int(self.config.frame_pool),
                "max_side": int(self.config.frame_max_side) or None,
                "storage": "video frames: JPEG quality 95; frame files: original bytes, or JPEG quality 95 "
                           "when shrunk to max_side",
                "pool_selection": "evenly spaced segment centres, sorted",
                "selection": ("eval: centre frame of each of num_frames segments; "
                              "train: seeded random frame per segment"),
                "default_num_frames": self.DEFAULT_NUM_FRAMES,
            } if has_frames else None,
            "splits": dict(splits, split_seed=int(self.config.split_seed),
                           validation_fraction=float(self.config.validation_fraction)),
            "modalities": self.modality_specs(),
            "label_names": list(label_names),
            "on_error": self.config.on_error,
            "options": options,
        }

    # ------------------------------------------------------------------ datasets hooks
    def _info(self) -> datasets.DatasetInfo:
        # Placeholder until ``_split_generators`` has read the layout (label names come from
        # the raw files); a cached build replaces this with the stored info.
        return datasets.DatasetInfo(
            description=json.dumps({"format": RECORD_FORMAT, "dataset": self.DATASET, "resolved": False}),
            features=self._make_features(["<unresolved>"]),
            homepage=self.HOMEPAGE,
            citation=self.CITATION,
        )

    def _split_generators(self, dl_manager) -> List[datasets.SplitGenerator]:
        items, label_names, splits, options = self._resolve()
        self.info.features = self._make_features(label_names)
        self.info.description = PreprocessingRecord.from_dict(self.record(label_names, splits, options)).to_json()
        gens = []
        for split in ("train", "validation", "test"):
            if not items.get(split):
                raise ValueError(f"{self.DATASET}: split {split!r} is empty after reading {self.config.data_dir!r}")
            gens.append(datasets.SplitGenerator(name=split, gen_kwargs={"items": items[split], "split": split}))
        return gens

    def _generate_examples(self, items: List[Dict[str, Any]], split: str) -> Iterator[Tuple[str, Dict[str, Any]]]:
        skipped: List[str] = []
        with single_thread_blas():
            for item in items:
                try:
                    example = self._example(item)
                except (ValueError, FileNotFoundError, OSError) as err:
                    if self.config.on_error == "raise":
                        raise
                    skipped.append(str(err))
                    continue
                example["id"] = item["id"]
                example["labels"] = item["label"]
                yield item["id"], example
        if skipped:
            logger.warning(
                "%s: skipped %d of %d %s examples (on_error='skip'); first: %s",
                self.DATASET, len(skipped), len(items), split, "; ".join(skipped[:3]),
            )

    # ------------------------------------------------------------------ subclass API
    def _resolve(self) -> Tuple[Dict[str, List[Dict[str, Any]]], List[str], Dict[str, Any], Dict[str, Any]]:
        """Read the raw layout: ``(items per split, label names, split record, options record)``.

        Each item is a dict with at least ``id`` (str) and ``label`` (int) plus whatever
        ``_example`` needs (file paths, segment times)."""
        raise NotImplementedError

    def _example(self, item: Dict[str, Any]) -> Dict[str, Any]:
        """Turn one item into the modality columns (and extra columns) of one example."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared helpers
    def _require_data_dir(self) -> str:
        data_dir = self.config.data_dir
        if not data_dir:
            raise ValueError(f"{self.DATASET}: data_dir is required (the folder with the raw download)")
        if not os.path.isdir(data_dir):
            raise FileNotFoundError(f"{self.DATASET}: data_dir not found: {data_dir}")
        return data_dir

    def _filter_items(self, items: Iterable[Dict[str, Any]], check: Callable[[Dict[str, Any]], None],
                      what: str) -> List[Dict[str, Any]]:
        """Keep items for which ``check`` raises nothing; apply the on_error policy otherwise."""
        kept, bad = [], []
        for item in items:
            try:
                check(item)
            except (ValueError, FileNotFoundError) as err:
                if self.config.on_error == "raise":
                    raise
                bad.append(str(err))
                continue
            kept.append(item)
        if bad:
            logger.warning("%s: skipped %d %s (on_error='skip'); first: %s",
                           self.DATASET, len(bad), what, "; ".join(bad[:3]))
        return kept

    def _audio_from_file(self, path: str) -> np.ndarray:
        preset = self.preset
        return compute_features(load_audio_file(path, preset.sample_rate), preset, source=path)

    def _audio_from_video(self, path: str, start: Optional[float] = None, end: Optional[float] = None) -> np.ndarray:
        preset = self.preset
        y = decode_video_audio(path, preset.sample_rate, start=start, end=end)
        return compute_features(y, preset, source=path if start is None else f"{path} [{start}, {end}) s")

    def _frames_from_folder(self, folder: str, prefix: str = "") -> List[Dict[str, Any]]:
        files = list_frame_files(folder, prefix)
        chosen = [files[i] for i in pool_indices(len(files), int(self.config.frame_pool))]
        max_side = int(self.config.frame_max_side)
        out = []
        for f in chosen:
            data = read_image_bytes(f)
            if max_side:
                from PIL import Image

                with Image.open(io.BytesIO(data)) as im:
                    if min(im.size) > max_side:
                        data = encode_jpeg(im, quality=95, max_side=max_side)
            out.append({"bytes": data, "path": None})
        return out

    def _frames_from_video(
        self, path: str, start: Optional[float] = None, end: Optional[float] = None
    ) -> List[Dict[str, Any]]:
        jpegs, _ = decode_video_frames(path, int(self.config.frame_pool), start=start, end=end,
                                       max_side=int(self.config.frame_max_side) or None)
        return [{"bytes": b, "path": None} for b in jpegs]


#: registered dataset name -> builder class (:func:`register_dataset`; read through
#: :func:`arl_hf.data.builder_class`, which imports the built-in datasets first)
DATASETS = Registry("dataset", attribute="DATASET")


def register_dataset(name: str) -> Callable[[type], type]:
    """Class decorator registering an :class:`ARLBuilder` subclass as dataset ``name``.

    Sets ``DATASET = name`` on the class and checks its declared defaults, so that a
    mistake is reported where the dataset is defined::

        @register_dataset("mine")
        class MineBuilder(ARLBuilder):
            MODALITIES = {"audio": {"kind": "spectrogram", "encoder": "timm:resnet18", "in_chans": 1}}
            AUDIO_PRESET, AUDIO_DURATION = "scipy", 3.0
            ...

    Raises:
        ValueError: not an ``ARLBuilder`` subclass, or a class attribute that cannot work
            (named, with what was expected and what was found).
    """

    def deco(cls: type) -> type:
        check_builder_class(cls, name)
        return DATASETS.register(name)(cls)

    return deco


def check_builder_class(cls: Any, name: str) -> None:
    """``ValueError`` naming the first class attribute of ``cls`` that :func:`arl_hf.data.load`
    cannot work with (see :func:`register_dataset`)."""
    where = f"dataset {name!r} ({getattr(cls, '__name__', cls)!r})"
    if not (isinstance(cls, type) and issubclass(cls, ARLBuilder)):
        raise ValueError(f"{where}: expected a subclass of arl_hf.data.builder.ARLBuilder, got {cls!r}")
    if not (isinstance(cls.BUILDER_CONFIG_CLASS, type) and issubclass(cls.BUILDER_CONFIG_CLASS, ARLBuilderConfig)):
        raise ValueError(f"{where}: BUILDER_CONFIG_CLASS: expected a subclass of ARLBuilderConfig, "
                         f"got {cls.BUILDER_CONFIG_CLASS!r}")
    mods = cls.MODALITIES
    if not isinstance(mods, Mapping) or not mods:
        raise ValueError(f"{where}: MODALITIES: expected a non-empty mapping modality -> spec, got {mods!r}")
    for mod, spec in mods.items():
        kind = spec.get("kind") if isinstance(spec, Mapping) else None
        if kind not in MODALITY_KINDS:
            raise ValueError(f"{where}: MODALITIES[{mod!r}]['kind']: expected one of {MODALITY_KINDS}, got {kind!r}")
    has_spectrogram = any(spec["kind"] == "spectrogram" for spec in mods.values())
    preset = cls.AUDIO_PRESET
    if has_spectrogram and preset not in AUDIO_PRESETS:
        raise ValueError(f"{where}: AUDIO_PRESET: a spectrogram modality needs a default audio preset, one of "
                         f"{sorted(AUDIO_PRESETS)}; got {preset!r}")
    if not has_spectrogram and preset is not None:
        raise ValueError(f"{where}: AUDIO_PRESET: expected None (no spectrogram modality), got {preset!r}")
    duration = cls.AUDIO_DURATION
    if duration is not None and (isinstance(duration, bool) or not isinstance(duration, (int, float))
                                 or not duration > 0):
        raise ValueError(f"{where}: AUDIO_DURATION: expected None or seconds > 0, got {duration!r}")
    for attr, low in (("FRAME_POOL", 0), ("DEFAULT_NUM_FRAMES", 1)):
        value = getattr(cls, attr)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{where}: {attr}: expected an int >= {low}, got {value!r}")
    configs = cls.CONFIGS
    if not isinstance(configs, Mapping) or not all(isinstance(v, Mapping) for v in configs.values()):
        raise ValueError(f"{where}: CONFIGS: expected a mapping name -> options (a mapping), got {configs!r}")


def single_thread_blas():
    """Context limiting BLAS/OpenMP pools to one thread (``threadpoolctl``; a no-op without it).

    Feature extraction runs many tiny matrix products, for which thread start-up costs far
    more than the work (measured: 60x slower with 2 OpenBLAS threads on a 2-core machine).
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(1)


def check_files_exist(*paths: str) -> None:
    """Raise ``FileNotFoundError`` naming the first missing path."""
    for p in paths:
        if not os.path.exists(p):
            raise FileNotFoundError(f"file not found: {p}")


def read_text_lines(path: str, what: str) -> List[str]:
    """Non-empty, stripped lines of a text file (``FileNotFoundError`` naming ``what`` if missing)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    with open(path, encoding="utf-8-sig") as fh:
        lines = [ln.strip() for ln in fh]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines:
        raise ValueError(f"{path}: {what} is empty")
    return lines
