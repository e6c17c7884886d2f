"""AVE builder: audio-visual event classification (28 events) on event-localised segments.

Reads the official release: ``AVE/<VideoID>.mp4`` plus ``Annotations.txt``,
``trainSet.txt``, ``valSet.txt``, ``testSet.txt`` (rows
``Category&VideoID&Quality&StartTime&EndTime``, an optional header row). Audio and frames
are taken from the annotated ``[StartTime, EndTime)`` segment of each video (Tian et al.,
2018). The official validation list is a real held-out split (never the test list).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, List, Optional, Tuple

import datasets

from .builder import ARLBuilderConfig, read_text_lines, register_dataset
from .video_builder import VideoDatasetBuilder

SPLIT_FILES = {"train": "trainSet.txt", "validation": "valSet.txt", "test": "testSet.txt"}


@dataclasses.dataclass
class AVEConfig(ARLBuilderConfig):
    """AVE options.

    Attributes:
        video_dir: folder of the videos under data_dir (empty: ``AVE``, else data_dir itself).
        segment: ``True`` cuts audio and frames to the annotated event segment; ``False``
            uses the whole video.
        validation: ``"official"`` (valSet.txt) or ``"holdout"`` (seeded stratified share of
            trainSet.txt; valSet.txt ignored).
        class_list: optional file with one category per line (default: the sorted
            categories of Annotations.txt).
    """

    video_dir: str = ""
    segment: bool = True
    validation: str = "official"
    class_list: str = ""


def parse_ave_line(line: str, where: str) -> Tuple[str, str, str, float, float]:
    """``"Church bell&RUhOCu3LNXM&good&0&10"`` -> (category, video id, quality, start, end)."""
    parts = line.split("&")
    if len(parts) != 5:
        raise ValueError(f"{where}: expected 5 '&'-separated fields "
                         f"Category&VideoID&Quality&StartTime&EndTime, got {line!r}")
    cat, vid, quality, start, end = (p.strip() for p in parts)
    try:
        s, e = float(start), float(end)
    except ValueError:
        raise ValueError(f"{where}: StartTime/EndTime must be numbers, got {start!r}, {end!r}") from None
    if not 0 <= s < e:
        raise ValueError(f"{where}: expected 0 <= StartTime < EndTime, got {s} and {e}")
    return cat, vid, quality, s, e


def _rows(path: str, what: str) -> List[Tuple[str, str, str, float, float]]:
    lines = read_text_lines(path, what)
    rows = []
    for n, line in enumerate(lines, start=1):
        if n == 1 and line.replace(" ", "").lower().startswith("category&videoid"):
            continue
        rows.append(parse_ave_line(line, f"{path}:{n}"))
    return rows


@register_dataset("ave")
class AVEBuilder(VideoDatasetBuilder):
    """AVE (Tian et al., ECCV 2018): 4,143 10-second videos, 28 event categories."""

    BUILDER_CONFIG_CLASS = AVEConfig
    VERSION = datasets.Version("1.0.0")
    HOMEPAGE = "https://github.com/YapengTian/AVE-ECCV18"
    CITATION = "Tian et al., Audio-Visual Event Localization in Unconstrained Videos, ECCV 2018."
    EXTRA_FEATURES = {"start": datasets.Value("float32"), "end": datasets.Value("float32")}

    def _resolve(self):
        cfg = self.config
        root = self._require_data_dir()
        if cfg.validation not in ("official", "holdout"):
            raise ValueError(f"validation: expected 'official' or 'holdout', got {cfg.validation!r}")
        video_dir = self._find(root, cfg.video_dir, ("AVE",), "video folder", required=False) or root
        if cfg.class_list:
            names = self._read_class_list(self._find(root, cfg.class_list, (), "class list", folder=False))
        else:
            names = sorted({r[0] for r in _rows(os.path.join(root, "Annotations.txt"), "annotation file")})
        index = {n: i for i, n in enumerate(names)}
        videos = self._index_videos(video_dir)

        wanted = ("train", "validation", "test") if cfg.validation == "official" else ("train", "test")
        items: Dict[str, List[Dict[str, Any]]] = {}
        seen: Dict[str, str] = {}
        for split in wanted:
            path = os.path.join(root, SPLIT_FILES[split])
            raw = []
            for n, (cat, vid, _, s, e) in enumerate(_rows(path, f"{split} split file"), start=1):
                key = f"{vid}_{s:g}_{e:g}"
                self._claim(seen, key, split, f"{path}:{n}", what="segment")
                raw.append({"id": key, "category": cat, "video_id": vid, "start": s, "end": e,
                            "where": f"{path}:{n}"})

            def check(item: Dict[str, Any]) -> None:
                if item["category"] not in index:
                    raise ValueError(f"{item['where']}: label {item['category']!r} is not in the class list "
                                     f"({len(names)} classes)")
                item["video"] = self._video_of(videos, item["video_id"], video_dir, item["where"])
                item["label"] = index[item["category"]]

            items[split] = self._filter_items(raw, check, f"{split} segments")
        split_record: Dict[str, Any] = {"method": "official lists", "files": dict(SPLIT_FILES)}
        if cfg.validation == "holdout":
            items = self._validation_from_train(items)
            split_record = {"method": "official train/test, validation held out of trainSet.txt",
                            "validation_seed": int(cfg.split_seed), "stratified_by": "label"}
        options = {"segment": bool(cfg.segment), "video_dir": os.path.relpath(video_dir, root),
                   "class_list": cfg.class_list or "sorted categories of Annotations.txt"}
        return items, names, split_record, options

    def _segment(self, item: Dict[str, Any]) -> Tuple[Optional[float], Optional[float]]:
        """The annotated event segment, or the whole video with ``segment=False``."""
        return (item["start"], item["end"]) if self.config.segment else (None, None)
