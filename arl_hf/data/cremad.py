"""CREMA-D builder: audio + visual emotion recognition (6 emotions), two source layouts.

* ``official``: the release as distributed (``AudioWAV/*.wav``, ``VideoFlash/*.flv``; clip
  names ``ActorID_Sentence_Emotion_Level``, e.g. ``1001_DFA_ANG_XX``). Frames are decoded
  from the FLV videos with PyAV.
* ``extracted``: the common pre-extracted layout (``AudioWAV/*.wav`` or ``audio/*.wav``,
  one frame folder per clip under ``Image-01-FPS/``, ``frames/`` or ``visual/``, and
  ``train.csv`` / ``test.csv`` with rows ``clip,emotion``).

CREMA-D has no official split: ``split="clip"`` (stratified, seeded), ``"actor"``
(actor-disjoint train/validation/test, seeded) or ``"csv"`` (the CSVs' train/test, the
validation split held out of train).
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re
from typing import Any, Dict, List, Tuple

import datasets

from .builder import ARLBuilderConfig, check_files_exist, register_dataset
from .video_builder import VideoDatasetBuilder

EMOTION_CODES = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")
LABEL_NAMES = ["neutral", "happy", "sad", "fear", "disgust", "anger"]
_CLIP_RE = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{1,2})$")
FRAME_DIR_CANDIDATES = ("Image-01-FPS", "frames", "visual")
AUDIO_DIR_CANDIDATES = ("AudioWAV", "audio")
SPLITS = ("auto", "clip", "actor", "csv")
LAYOUTS = ("auto", "official", "extracted")


@dataclasses.dataclass
class CremadConfig(ARLBuilderConfig):
    """CREMA-D options (see module docstring).

    Attributes:
        layout: ``"auto"`` (extracted when train.csv/test.csv exist, else official).
        split: ``"auto"`` (csv for the extracted layout, clip otherwise), ``"clip"``,
            ``"actor"`` or ``"csv"``.
        test_fraction: share held out as test by the ``clip`` / ``actor`` splits.
        audio_dir / frames_dir: folder names under data_dir (empty: auto-detected).
    """

    layout: str = "auto"
    split: str = "auto"
    test_fraction: float = 0.1
    audio_dir: str = ""
    frames_dir: str = ""


def parse_clip_name(name: str) -> Tuple[int, str, int]:
    """``"1001_DFA_ANG_XX"`` -> ``(actor 1001, sentence "DFA", label index)``.

    Raises:
        ValueError: the name does not follow ``ActorID_Sentence_Emotion_Level`` or the
            emotion is not one of the six codes.
    """
    m = _CLIP_RE.match(name)
    if not m:
        raise ValueError(f"clip name {name!r}: expected ActorID_Sentence_Emotion_Level, e.g. '1001_DFA_ANG_XX'")
    return int(m.group(1)), m.group(2), emotion_index(m.group(3), f"clip name {name!r}")


def emotion_index(value: str, where: str) -> int:
    """Label index of an emotion code (``ANG``) or name (``anger``)."""
    v = value.strip()
    if v.upper() in EMOTION_CODES:
        return EMOTION_CODES.index(v.upper())
    if v.lower() in LABEL_NAMES:
        return LABEL_NAMES.index(v.lower())
    raise ValueError(f"{where}: label {value!r} is not in the class list; expected one of "
                     f"{list(EMOTION_CODES)} or {LABEL_NAMES}")


@register_dataset("cremad")
class CremadBuilder(VideoDatasetBuilder):
    """CREMA-D (Cao et al., 2014): 7,442 clips of 91 actors, 6 emotions."""

    BUILDER_CONFIG_CLASS = CremadConfig
    VERSION = datasets.Version("1.1.0")  # 1.1: frame_max_side shrinks frame files
    DEFAULT_NUM_FRAMES = 1
    AUDIO_DURATION = 3.0
    FRAME_POOL = 3
    HOMEPAGE = "https://github.com/CheyneyComputerScience/CREMA-D"
    CITATION = ("Cao et al., CREMA-D: Crowd-sourced Emotional Multimodal Actors Dataset, "
                "IEEE Transactions on Affective Computing 5(4), 2014.")
    EXTRA_FEATURES = {"actor": datasets.Value("int32")}

    def _resolve(self):
        cfg = self.config
        root = self._require_data_dir()
        if cfg.layout not in LAYOUTS:
            raise ValueError(f"layout: expected one of {LAYOUTS}, got {cfg.layout!r}")
        if cfg.split not in SPLITS:
            raise ValueError(f"split: expected one of {SPLITS}, got {cfg.split!r}")
        has_csv = all(os.path.isfile(os.path.join(root, f)) for f in ("train.csv", "test.csv"))
        layout = cfg.layout if cfg.layout != "auto" else ("extracted" if has_csv else "official")
        split = cfg.split if cfg.split != "auto" else ("csv" if layout == "extracted" else "clip")
        audio_dir = self._find(root, cfg.audio_dir, AUDIO_DIR_CANDIDATES, "audio folder")

        csv_split: Dict[str, str] = {}
        if layout == "official":
            video_dir = self._find(root, "", ("VideoFlash",), "video folder")
            stems = {os.path.splitext(n)[0] for n in os.listdir(audio_dir) if n.lower().endswith(".wav")}
            stems |= {os.path.splitext(n)[0] for n in os.listdir(video_dir) if n.lower().endswith(".flv")}
            if not stems:
                raise FileNotFoundError(f"cremad: no .wav in {audio_dir} and no .flv in {video_dir}")
            raw = [{"id": s, "audio": os.path.join(audio_dir, s + ".wav"),
                    "video": os.path.join(video_dir, s + ".flv")} for s in sorted(stems)]
            if split == "csv":
                raise ValueError("split: 'csv' needs train.csv and test.csv in data_dir "
                                 f"({root}); use 'clip' or 'actor' for the official layout")
        else:
            frames_root = self._find(root, cfg.frames_dir, FRAME_DIR_CANDIDATES, "frames folder")
            raw = []
            for part in ("train", "test"):
                for clip, label in self._read_csv(os.path.join(root, f"{part}.csv")):
                    if clip in csv_split:
                        raise ValueError(
                            f"cremad: clip {clip!r} listed twice (in {csv_split[clip]}.csv and {part}.csv)"
                        )
                    csv_split[clip] = part
                    raw.append({"id": clip, "csv_label": label, "audio": os.path.join(audio_dir, clip + ".wav"),
                                "frames": os.path.join(frames_root, clip)})

        def check(item: Dict[str, Any]) -> None:
            actor, _, label = parse_clip_name(item["id"])
            if "csv_label" in item:
                csv_label = emotion_index(item["csv_label"], f"{item['id']} in the split CSV")
                if csv_label != label:
                    raise ValueError(f"{item['id']}: CSV label {item['csv_label']!r} disagrees with the emotion "
                                     f"code in the clip name ({EMOTION_CODES[label]})")
            item["actor"], item["label"] = actor, label
            check_files_exist(item["audio"], item.get("video") or item["frames"])

        items = self._filter_items(raw, check, "clips")
        if len(items) < 3:
            raise ValueError(f"cremad: found {len(items)} usable clips under {root}; expected at least 3")
        seed, vf, tf = int(cfg.split_seed), float(cfg.validation_fraction), float(cfg.test_fraction)
        if split == "csv":
            out = self._validation_from_train({part: [it for it in items if csv_split[it["id"]] == part]
                                               for part in ("train", "test")})
            split_record = {"method": "csv", "test": "test.csv", "validation": "stratified holdout of train.csv"}
        else:
            group_by = "actor" if split == "actor" else None
            rest, test = self._hold_out(items, tf, seed, group_by=group_by, field="test_fraction")
            train, validation = self._hold_out(rest, vf, seed + 1, group_by=group_by)
            out = {"train": train, "validation": validation, "test": test}
            split_record = {"method": split, "test_fraction": tf, "test_seed": seed, "validation_seed": seed + 1}
            if split == "clip":
                split_record["stratified_by"] = "label"
            else:
                split_record.update(test_actors=sorted({it["actor"] for it in test}),
                                    validation_actors=sorted({it["actor"] for it in validation}))
        options = {"layout": layout, "audio_dir": os.path.basename(audio_dir)}
        return out, LABEL_NAMES, split_record, options

    @staticmethod
    def _read_csv(path: str) -> List[Tuple[str, str]]:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"cremad: split file not found: {path}")
        rows = []
        with open(path, newline="", encoding="utf-8-sig") as fh:
            for lineno, row in enumerate(csv.reader(fh), start=1):
                row = [c.strip() for c in row]
                if not row or not any(row):
                    continue
                if len(row) < 2:
                    raise ValueError(f"{path}:{lineno}: expected 2 columns 'clip,emotion', got {row!r}")
                if lineno == 1 and row[1].upper() not in EMOTION_CODES and row[1].lower() not in LABEL_NAMES:
                    continue  # a header row such as 'clip,emotion'
                rows.append((os.path.splitext(os.path.basename(row[0]))[0], row[1]))
        if not rows:
            raise ValueError(f"{path}: split file lists no clips")
        return rows
