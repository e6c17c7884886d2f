"""UCF-101 builder: RGB + optical flow action recognition (101 actions), official split lists.

Split lists: ``ucfTrainTestlist/classInd.txt`` (``1 ApplyEyeMakeup``),
``trainlist0{k}.txt`` (``ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1``) and
``testlist0{k}.txt`` (``ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi``).

RGB: the videos (``UCF-101/<Class>/<video>.avi``, decoded with PyAV) or pre-extracted
frame folders (``<rgb_dir>/<video stem>/*.jpg``; in the TSN layout the ``img_*.jpg`` files).
Optical flow: the commonly distributed pre-extracted TV-L1 flow jpgs, either
``<flow_dir>/u/<video stem>/*.jpg`` + ``<flow_dir>/v/<video stem>/*.jpg`` (two-stream
layout) or ``<flow_dir>/<video stem>/flow_x_*.jpg`` + ``flow_y_*.jpg`` (TSN layout).
Validation: whole recording groups (``gXX``) of the train list are held out (seeded), so
no clip of a validation group is in train.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Dict, List, Tuple

import datasets

from .builder import ARLBuilderConfig, read_text_lines, register_dataset
from .video_builder import VideoDatasetBuilder

_NAME_RE = re.compile(r"^v_(.+)_g(\d+)_c(\d+)$")
RGB_DIR_CANDIDATES = ("jpegs_256", "rgb", "frames")
FLOW_DIR_CANDIDATES = ("tvl1_flow", "flow")


@dataclasses.dataclass
class UCF101Config(ARLBuilderConfig):
    """UCF-101 options (folders relative to data_dir; empty: auto-detected).

    Attributes:
        split_id: official split 1, 2 or 3.
        split_dir: folder of classInd.txt and the lists (default ``ucfTrainTestlist``).
        video_dir: folder of ``<Class>/<video>.avi`` (default ``UCF-101``).
        rgb_dir: folder of per-video RGB frame folders (preferred over videos when given
            or found: ``jpegs_256``, ``rgb``, ``frames``).
        flow_dir: folder of the pre-extracted flow (``tvl1_flow`` or ``flow``).
    """

    split_id: int = 1
    split_dir: str = ""
    video_dir: str = ""
    rgb_dir: str = ""
    flow_dir: str = ""


def parse_video_name(stem: str) -> Tuple[str, int, int]:
    """``v_ApplyEyeMakeup_g08_c01`` -> ("ApplyEyeMakeup", group 8, clip 1)."""
    m = _NAME_RE.match(stem)
    if not m:
        raise ValueError(f"video name {stem!r}: expected v_<Class>_gXX_cYY")
    return m.group(1), int(m.group(2)), int(m.group(3))


@register_dataset("ucf101")
class UCF101Builder(VideoDatasetBuilder):
    """UCF-101 (Soomro et al., 2012): 13,320 clips, 101 actions, RGB + optical flow."""

    BUILDER_CONFIG_CLASS = UCF101Config
    VERSION = datasets.Version("1.1.0")  # 1.1: frame_max_side shrinks frame files
    MODALITIES = {
        "rgb": {"kind": "frames", "encoder": "timm:resnet18", "in_chans": 3},
        "flow": {"kind": "flow", "encoder": "timm:resnet18", "in_chans": 2},
    }
    AUDIO_PRESET = None
    AUDIO_DURATION = None
    FRAME_POOL = 8
    HOMEPAGE = "https://www.crcv.ucf.edu/data/UCF101.php"
    CITATION = "Soomro, Zamir and Shah, UCF101: A Dataset of 101 Human Actions Classes From Videos in The Wild, 2012."
    EXTRA_FEATURES = {"group": datasets.Value("int32")}

    def _resolve(self):
        cfg = self.config
        root = self._require_data_dir()
        if int(cfg.split_id) not in (1, 2, 3):
            raise ValueError(f"split_id: expected 1, 2 or 3, got {cfg.split_id!r}")
        split_dir = self._find(root, cfg.split_dir, ("ucfTrainTestlist",), "split list folder")
        flow_dir = self._find(root, cfg.flow_dir, FLOW_DIR_CANDIDATES, "optical flow folder")
        rgb_dir = self._find(root, cfg.rgb_dir, RGB_DIR_CANDIDATES, "RGB frame folder", required=False)
        video_dir = None if rgb_dir else self._find(root, cfg.video_dir, ("UCF-101",), "video folder")
        two_stream = os.path.isdir(os.path.join(flow_dir, "u")) and os.path.isdir(os.path.join(flow_dir, "v"))

        class_file = os.path.join(split_dir, "classInd.txt")
        names: List[str] = []
        for n, line in enumerate(read_text_lines(class_file, "class index file"), start=1):
            parts = line.split()
            if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) != len(names) + 1:
                raise ValueError(f"{class_file}:{n}: expected '<index> <ClassName>' with index {len(names) + 1}, "
                                 f"got {line!r}")
            names.append(parts[1])
        index = {c: i for i, c in enumerate(names)}

        items: Dict[str, List[Dict[str, Any]]] = {}
        split_id = int(cfg.split_id)
        for split, fname in (("train", f"trainlist0{split_id}.txt"), ("test", f"testlist0{split_id}.txt")):
            path = os.path.join(split_dir, fname)
            raw = [{"line": line, "where": f"{path}:{n}"} for n, line in
                   enumerate(read_text_lines(path, f"{split} split list"), start=1)]

            def check(item: Dict[str, Any]) -> None:
                parts = item["line"].split()
                rel = parts[0]
                folder_class = rel.split("/")[0] if "/" in rel else None
                stem = os.path.splitext(os.path.basename(rel))[0]
                cls, group, _ = parse_video_name(stem)
                if cls not in index or (folder_class is not None and folder_class not in index):
                    raise ValueError(f"{item['where']}: label {folder_class or cls!r} is not in the class list "
                                     f"{class_file}")
                label = index[folder_class or cls]
                if len(parts) > 1 and int(parts[1]) - 1 != label:
                    raise ValueError(f"{item['where']}: label index {parts[1]} disagrees with class folder "
                                     f"{folder_class!r} (index {label + 1} in classInd.txt)")
                item.update(id=stem, label=label, group=group)
                if rgb_dir:
                    item["frames"] = os.path.join(rgb_dir, stem)
                    if not os.path.isdir(item["frames"]):
                        raise FileNotFoundError(f"{item['where']}: RGB frame folder not found: {item['frames']}")
                else:
                    item["video"] = os.path.join(video_dir, rel)
                    if not os.path.isfile(item["video"]):
                        raise FileNotFoundError(f"{item['where']}: video file not found: {item['video']}")
                if two_stream:
                    item["flow_x"] = os.path.join(flow_dir, "u", stem)
                    item["flow_y"] = os.path.join(flow_dir, "v", stem)
                else:
                    item["flow_x"] = item["flow_y"] = os.path.join(flow_dir, stem)
                for p in (item["flow_x"], item["flow_y"]):
                    if not os.path.isdir(p):
                        raise FileNotFoundError(f"{item['where']}: optical-flow folder not found: {p}")

            items[split] = self._filter_items(raw, check, f"{split} videos")
        items = self._validation_from_train(items, group_by="group")
        split_record = {"method": f"official split {int(cfg.split_id)}; validation = held-out groups of the train list",
                        "validation_seed": int(cfg.split_seed),
                        "validation_groups": sorted({it["group"] for it in items["validation"]})}
        options = {"split_id": int(cfg.split_id), "rgb_source": "frames" if rgb_dir else "videos",
                   "flow_layout": "u/v folders" if two_stream else "flow_x_/flow_y_ files"}
        return items, names, split_record, options

    def _frame_prefix(self, folder: str) -> str:
        """``img_`` when the folder holds TSN-style ``img_*`` files (mixed with flow files)."""
        return "img_" if any(n.startswith("img_") for n in os.listdir(folder)) else ""
