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
from typing import Any, Dict, List, Tuple

import datasets

from .builder import ARLBuilderConfig, read_text_lines, register_dataset
from .video_builder import VideoDatasetBuilder


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
                raise ValueError(
                    f"{path}:{n}: expected label,youtube_id,time_start,time_end values, got {row!r}"
                ) from None
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


@register_dataset("kinetics_sounds")
class KineticsSoundsBuilder(VideoDatasetBuilder):
    """Kinetics-Sounds (Arandjelovic & Zisserman, 2017) on the user's class list and splits."""

    BUILDER_CONFIG_CLASS = KineticsSoundsConfig
    VERSION = datasets.Version("1.0.0")
    HOMEPAGE = "https://github.com/cvdfoundation/kinetics-dataset"
    CITATION = "Arandjelovic and Zisserman, Look, Listen and Learn, ICCV 2017."

    def _resolve(self):
        cfg = self.config
        root = self._require_data_dir()
        class_file = self._find(root, cfg.class_list, ("classes.txt", "class_list.txt"), "class list", folder=False)
        names = self._read_class_list(class_file)
        index = {n: i for i, n in enumerate(names)}
        clips_dir = self._find(root, cfg.clips_dir, (), "clips folder", required=False) or root
        audio_dir = self._find(root, cfg.audio_dir, (), "audio folder", required=False)
        by_stem = self._index_videos(clips_dir, recursive=True)

        files = {
            "train": self._find(root, cfg.train_file, ("train.csv", "train.txt"), "train split file", folder=False),
            "test": self._find(root, cfg.test_file, ("test.csv", "test.txt"), "test split file", folder=False),
        }
        val_file = self._find(root, cfg.validation_file, ("val.csv", "val.txt", "validation.csv", "validation.txt"),
                              "validation split file", folder=False, required=False)
        if val_file:
            files["validation"] = val_file

        items: Dict[str, List[Dict[str, Any]]] = {}
        seen: Dict[str, str] = {}
        for split, path in files.items():
            raw = [{"clip": clip, "class": label, "where": f"{path}:{n}"} for clip, label, n in read_split_file(path)]

            def check(item: Dict[str, Any]) -> None:
                if item["class"] not in index:
                    raise ValueError(f"{item['where']}: label {item['class']!r} is not in the class list "
                                     f"{class_file} ({len(names)} classes)")
                video = self._video_of(by_stem, item["clip"], clips_dir, item["where"], what="clip file")
                key = os.path.relpath(video, clips_dir)
                self._claim(seen, key, split, item["where"])
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
            items = self._validation_from_train(items)
            split_record = {"method": "user split files; validation held out of train",
                            "validation_seed": int(cfg.split_seed), "stratified_by": "label"}
        split_record["files"] = {k: os.path.basename(v) for k, v in files.items()}
        options = {"class_list": os.path.basename(class_file), "num_classes": len(names),
                   "audio_source": "audio_dir wav" if audio_dir else "clip audio track"}
        return items, names, split_record, options
