"""Kinetics-Sounds builder: audio + visual action recognition on a user-given class list.

Kinetics-Sounds is not one dataset (31-, 33- and 34-class lists circulate), so nothing is
assumed: the user's class list file (one class per line) decides the labels, and the
user's split files decide the clips. Split files are either

* ``<clip>,<class>`` rows (CSV; or ``<clip>\\t<class>``), where ``<clip>`` is a path relative
  to the clips folder or a clip file stem; an optional header row; or
* Kinetics annotation CSVs (header ``label,youtube_id,time_start,time_end,...``), matched to
  clip files named ``<youtube_id>_<time_start:06d>_<time_end:06d>.<ext>``.

Audio comes from the clip's audio track (PyAV) or, if ``audio_dir`` is given, from
``<audio_dir>/<clip stem>.wav``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from typing import Any, Dict, List, Optional, Tuple

import datasets

from .builder import ARLBuilder, ARLBuilderConfig, read_text_lines
from .splits import stratified_holdout

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov")


@dataclasses.dataclass
class KineticsSoundsConfig(ARLBuilderConfig):
    """Kinetics-Sounds options (paths relative to data_dir or absolute).

    Attributes:
        class_list: file with one class name per line (default ``classes.txt``). Required.
        train_file / test_file: split files (default ``train.csv``/``train.txt``,
            ``test.csv``/``test.txt``). Required.
        validation_file: optional split file (default ``val.csv``/``val.txt``/
            ``validation.csv`` when present); otherwise the validation split is a seeded
            stratified share of the train file.
        clips_dir: folder of the clips, searched recursively (default: data_dir).
        audio_dir: optional folder of pre-extracted ``<clip stem>.wav`` files.
    """

    class_list: str = ""
    train_file: str = ""
    test_file: str = ""
    validation_file: str = ""
    clips_dir: str = ""
    audio_dir: str = ""


def _resolve_path(root: str, value: str, defaults: Tuple[str, ...], what: str, required: bool = True) -> Optional[str]:
    candidates = [value] if value else list(defaults)
    for c in candidates:
        p = c if os.path.isabs(c) else os.path.join(root, c)
        if os.path.isfile(p):
            return p
    if required:
        raise FileNotFoundError(f"kinetics_sounds: {what} not found; looked for {candidates} under {root}")
    return None


def read_split_file(path: str) -> List[Tuple[str, str, int]]:
    """Rows ``(clip, class name, line number)`` of a split file (see module docstring)."""
    lines = read_text_lines(path, "split file")
    header = [h.strip().lower() for h in next(csv.reader(io.StringIO(lines[0])))]
    rows: List[Tuple[str, str, int]] = []
    if "youtube_id" in header and "label" in header:
        need = ("label", "youtube_id", "time_start", "time_end")
        missing = [k for k in need if k not in header]
        if missing:
            raise ValueError(f"{path}: Kinetics annotation CSV lacks columns {missing}; expected {list(need)}")
        col = {k: header.index(k) for k in need}
        for n, row in enumerate(csv.reader(io.StringIO("\n".join(lines[1:]))), start=2):
            try:
                clip = f"{row[col['youtube_id']]}_{int(float(row[col['time_start']])):06d}_" \
                       f"{int(float(row[col['time_end']])):06d}"
            except (IndexError, ValueError):
                raise ValueError(f"{path}:{n}: expected label,youtube_id,time_start,time_end values, got {row!r}") from None
            rows.append((clip, row[col["label"]].strip(), n))
        return rows
    for n, line in enumerate(lines, start=1):
        if "\t" in line:
            cells = [c.strip() for c in line.split("\t")]
        else:
            cells = [c.strip() for c in next(csv.reader(io.StringIO(line)))]
        if len(cells) < 2 or not cells[0] or not cells[1]:
            raise ValueError(f"{path}:{n}: expected '<clip>,<class>' (or tab-separated), got {line!r}")
        if n == 1 and cells[0].lower() in ("clip", "path", "file", "video", "filename", "id"):
            continue
        rows.append((cells[0], cells[1], n))
    return rows


class KineticsSoundsBuilder(ARLBuilder):
    """Kinetics-Sounds (Arandjelovic & Zisserman, 2017) on the user's class list and splits."""

    BUILDER_CONFIG_CLASS = KineticsSoundsConfig
    VERSION = datasets.Version("1.0.0")
    DATASET = "kinetics_sounds"
    MODALITIES = {
        "audio": {"kind": "spectrogram", "encoder": "timm:resnet18", "in_chans": 1},
        "visual": {"kind": "frames", "encoder": "timm:resnet18", "in_chans": 3},
    }
    DEFAULT_NUM_FRAMES = 3
    HOMEPAGE = "https://github.com/cvdfoundation/kinetics-dataset"
    CITATION = "Arandjelovic and Zisserman, Look, Listen and Learn, ICCV 2017."

    def _resolve(self):
        cfg = self.config
        root = self._require_data_dir()
        class_file = _resolve_path(root, cfg.class_list, ("classes.txt", "class_list.txt"), "class list")
        names = read_text_lines(class_file, "class list")
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"{class_file}: duplicate class names {dup}")
        index = {n: i for i, n in enumerate(names)}
        clips_dir = (cfg.clips_dir if os.path.isabs(cfg.clips_dir) else os.path.join(root, cfg.clips_dir)) \
            if cfg.clips_dir else root
        if not os.path.isdir(clips_dir):
            raise FileNotFoundError(f"kinetics_sounds: clips_dir not found: {clips_dir}")
        audio_dir = None
        if cfg.audio_dir:
            audio_dir = cfg.audio_dir if os.path.isabs(cfg.audio_dir) else os.path.join(root, cfg.audio_dir)
            if not os.path.isdir(audio_dir):
                raise FileNotFoundError(f"kinetics_sounds: audio_dir not found: {audio_dir}")
        by_stem: Dict[str, List[str]] = {}
        for dirpath, _, files in os.walk(clips_dir):
            for f in files:
                if f.lower().endswith(VIDEO_EXTENSIONS):
                    by_stem.setdefault(os.path.splitext(f)[0], []).append(os.path.join(dirpath, f))

        files = {
            "train": _resolve_path(root, cfg.train_file, ("train.csv", "train.txt"), "train split file"),
            "test": _resolve_path(root, cfg.test_file, ("test.csv", "test.txt"), "test split file"),
        }
        val_file = _resolve_path(root, cfg.validation_file, ("val.csv", "val.txt", "validation.csv",
                                                             "validation.txt"), "validation split file",
                                 required=bool(cfg.validation_file))
        if val_file:
            files["validation"] = val_file

        items: Dict[str, List[Dict[str, Any]]] = {}
        seen: Dict[str, str] = {}
        for split, path in files.items():
            raw = []
            for clip, label, n in read_split_file(path):
                raw.append({"clip": clip, "class": label, "where": f"{path}:{n}"})

            def check(item: Dict[str, Any]) -> None:
                if item["class"] not in index:
                    raise ValueError(f"{item['where']}: label {item['class']!r} is not in the class list "
                                     f"{class_file} ({len(names)} classes)")
                clip = item["clip"]
                direct = os.path.join(clips_dir, clip)
                if os.path.isfile(direct):
                    video = direct
                else:
                    stem = os.path.splitext(os.path.basename(clip))[0]
                    found = by_stem.get(stem, [])
                    if not found:
                        raise FileNotFoundError(f"{item['where']}: clip file not found for {clip!r} under {clips_dir}")
                    if len(found) > 1:
                        raise ValueError(f"{item['where']}: clip {clip!r} is ambiguous: {sorted(found)}")
                    video = found[0]
                key = os.path.relpath(video, clips_dir)
                if key in seen:
                    raise ValueError(f"{item['where']}: clip {key} already listed in the {seen[key]} split")
                seen[key] = split
                item.update(id=key, video=video, label=index[item["class"]])
                if audio_dir is not None:
                    wav = os.path.join(audio_dir, os.path.splitext(os.path.basename(video))[0] + ".wav")
                    if not os.path.isfile(wav):
                        raise FileNotFoundError(f"{item['where']}: audio file not found: {wav}")
                    item["audio"] = wav

            items[split] = self._filter_items(raw, check, f"{split} clips")
        if val_file:
            split_record: Dict[str, Any] = {"method": "user split files", "validation": os.path.basename(val_file)}
        else:
            train = items["train"]
            keep, val = stratified_holdout([it["label"] for it in train], float(cfg.validation_fraction),
                                           int(cfg.split_seed))
            items = {"train": [train[i] for i in keep], "validation": [train[i] for i in val], "test": items["test"]}
            split_record = {"method": "user split files; validation held out of train",
                            "validation_seed": int(cfg.split_seed), "stratified_by": "label"}
        split_record["files"] = {k: os.path.basename(v) for k, v in files.items()}
        options = {"class_list": os.path.basename(class_file), "num_classes": len(names),
                   "audio_source": "audio_dir wav" if audio_dir else "clip audio track"}
        return items, names, split_record, options

    def _example(self, item: Dict[str, Any]) -> Dict[str, Any]:
        audio = self._audio_from_file(item["audio"]) if "audio" in item else self._audio_from_video(item["video"])
        return {"audio": audio, "visual": self._frames_from_video(item["video"])}
