"""Shared base of the builders that read raw video datasets (AVE, Kinetics-Sounds, CREMA-D, UCF-101).

:class:`VideoDatasetBuilder` holds what these builders have in common: the defaults (an audio
spectrogram and a pool of frames, the ``scipy`` preset of 10 s, 6 cached frames, 3 given to the
model), finding folders and files under ``data_dir``, reading a class list, indexing the video
files, refusing a clip listed in two splits, holding a split out (stratified by label or by
whole groups) and turning a resolved item into an example.

A subclass implements ``_resolve`` only. Each item it returns holds ``id``, ``label`` and where
the clip's data is, read by :meth:`VideoDatasetBuilder._example` per modality kind:

* ``spectrogram``: ``audio`` (an audio file) if present, else the audio track of ``video``;
* ``frames``: ``frames`` (a folder of frame files) if present, else frames decoded from ``video``;
* ``flow``: ``flow_x`` / ``flow_y`` (folders of x and y optical-flow frames);

``start`` / ``end`` (seconds) cut a segment of ``video`` (see :meth:`~VideoDatasetBuilder._segment`),
and every column of ``EXTRA_FEATURES`` is copied from the item.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterable, List, Optional, Tuple

from .builder import ARLBuilder, read_text_lines
from .splits import group_holdout, stratified_holdout
from .video import list_frame_files, pool_indices, read_image_bytes

__all__ = ["VIDEO_EXTENSIONS", "VideoDatasetBuilder"]

#: file extensions taken as videos when a folder is indexed
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov")

Items = List[Dict[str, Any]]


class VideoDatasetBuilder(ARLBuilder):
    """Base of the video dataset builders (see the module docstring): audio + frames by default."""

    MODALITIES = {
        "audio": {"kind": "spectrogram", "encoder": "timm:resnet18", "in_chans": 1},
        "visual": {"kind": "frames", "encoder": "timm:resnet18", "in_chans": 3},
    }
    DEFAULT_NUM_FRAMES = 3
    AUDIO_PRESET = "scipy"
    AUDIO_DURATION = 10.0
    FRAME_POOL = 6

    # ------------------------------------------------------------------ reading the layout
    def _find(self, root: str, value: str, defaults: Iterable[str], what: str, *, folder: bool = True,
              required: bool = True) -> Optional[str]:
        """The path of ``value`` (when given) or else of the first of ``defaults`` that exists,
        each relative to ``root`` or absolute; ``None`` when none exists and neither ``required``
        nor ``value`` (a value given must exist).

        Raises:
            FileNotFoundError: naming ``what``, ``root`` and the names looked for.
        """
        names = [value] if value else list(defaults)
        exists = os.path.isdir if folder else os.path.isfile
        for name in names:
            path = os.path.join(root, name)
            if exists(path):
                return path
        if required or value:
            raise FileNotFoundError(f"{self.DATASET}: {what} not found under {root}; looked for {names}")
        return None

    @staticmethod
    def _read_class_list(path: str) -> List[str]:
        """Class names of a class list file, one per line (``ValueError`` on duplicates)."""
        names = read_text_lines(path, "class list")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"{path}: duplicate class names {dup}")
        return names

    @staticmethod
    def _index_videos(folder: str, recursive: bool = False) -> Dict[str, List[str]]:
        """Video file stem -> the video files of ``folder`` (and below it when ``recursive``)."""
        found: Dict[str, List[str]] = {}
        walk = os.walk(folder) if recursive else [(folder, [], os.listdir(folder))]
        for dirpath, _, files in walk:
            for name in sorted(files):
                if name.lower().endswith(VIDEO_EXTENSIONS):
                    found.setdefault(os.path.splitext(name)[0], []).append(os.path.join(dirpath, name))
        return found

    @staticmethod
    def _video_of(index: Dict[str, List[str]], clip: str, folder: str, where: str, what: str = "video file") -> str:
        """The video file of ``clip``: a path relative to ``folder``, else a file stem of ``index``.

        Raises:
            FileNotFoundError: no such file; ValueError: the stem names several files.
        """
        direct = os.path.join(folder, clip)
        if os.path.isfile(direct):
            return direct
        found = index.get(os.path.splitext(os.path.basename(clip))[0], [])
        if not found:
            raise FileNotFoundError(f"{where}: {what} not found for {clip!r} under {folder}")
        if len(found) > 1:
            raise ValueError(f"{where}: clip {clip!r} is ambiguous: {sorted(found)}")
        return found[0]

    @staticmethod
    def _claim(seen: Dict[str, str], key: str, split: str, where: str, what: str = "clip") -> None:
        """Record that ``key`` is in ``split``; ``ValueError`` when another split listed it."""
        if key in seen:
            raise ValueError(f"{where}: {what} {key} already listed in the {seen[key]} split")
        seen[key] = split

    # ------------------------------------------------------------------ splits
    @staticmethod
    def _hold_out(items: Items, fraction: float, seed: int, group_by: Optional[str] = None,
                  field: str = "validation_fraction") -> Tuple[Items, Items]:
        """``(kept, held out)`` items: ``fraction`` of them, stratified by ``label``, or whole
        groups of the item key ``group_by`` (seeded; see :mod:`arl_hf.data.splits`)."""
        if group_by is None:
            keep, held = stratified_holdout([it["label"] for it in items], float(fraction), int(seed), field=field)
        else:
            keep, held = group_holdout([it[group_by] for it in items], float(fraction), int(seed), field=field)
        return [items[i] for i in keep], [items[i] for i in held]

    def _validation_from_train(self, items: Dict[str, Items], group_by: Optional[str] = None) -> Dict[str, Items]:
        """The splits with ``validation`` held out of ``train`` (``validation_fraction``, ``split_seed``)."""
        train, validation = self._hold_out(items["train"], self.config.validation_fraction, self.config.split_seed,
                                           group_by=group_by)
        return {"train": train, "validation": validation, "test": items["test"]}

    # ------------------------------------------------------------------ examples
    def _segment(self, item: Dict[str, Any]) -> Tuple[Optional[float], Optional[float]]:
        """The ``(start, end)`` seconds of the video read for ``item`` (``None``: its start / end)."""
        return item.get("start"), item.get("end")

    def _frame_prefix(self, folder: str) -> str:
        """The name prefix of the frame files of a frame folder ("": every image file)."""
        return ""

    def _clip_audio(self, item: Dict[str, Any]) -> Any:
        """The spectrogram of the item's audio file, else of its video's audio track."""
        if "audio" in item:
            return self._audio_from_file(item["audio"])
        return self._audio_from_video(item["video"], *self._segment(item))

    def _clip_frames(self, item: Dict[str, Any]) -> List[Dict[str, Any]]:
        """The frame pool of the item's frame folder, else of its video."""
        if "frames" in item:
            return self._frames_from_folder(item["frames"], self._frame_prefix(item["frames"]))
        return self._frames_from_video(item["video"], *self._segment(item))

    def _clip_flow(self, item: Dict[str, Any]) -> List[Dict[str, Any]]:
        """The pool of x/y optical-flow frame pairs: ``flow_x`` and ``flow_y`` folders, or one
        folder holding ``flow_x_*`` and ``flow_y_*`` files."""
        same = item["flow_x"] == item["flow_y"]
        xs = list_frame_files(item["flow_x"], "flow_x_" if same else "")
        ys = list_frame_files(item["flow_y"], "flow_y_" if same else "")
        if len(xs) != len(ys):
            raise ValueError(f"{item['flow_x']}: {len(xs)} x-flow frames but {len(ys)} y-flow frames in "
                             f"{item['flow_y']}; expected equally many")
        chosen = pool_indices(len(xs), int(self.config.frame_pool))
        return [{"x": {"bytes": read_image_bytes(xs[i]), "path": None},
                 "y": {"bytes": read_image_bytes(ys[i]), "path": None}} for i in chosen]

    def _example(self, item: Dict[str, Any]) -> Dict[str, Any]:
        readers = {"spectrogram": self._clip_audio, "frames": self._clip_frames, "flow": self._clip_flow}
        example: Dict[str, Any] = {}
        for name, spec in self.MODALITIES.items():
            if spec["kind"] not in readers:
                raise ValueError(f"MODALITIES[{name!r}]['kind']: {spec['kind']!r} is not read from videos; "
                                 f"expected one of {sorted(readers)}")
            example[name] = readers[spec["kind"]](item)
        example.update({key: item[key] for key in self.EXTRA_FEATURES})
        return example
