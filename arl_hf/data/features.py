"""Read a plain ``datasets`` dataset's features: which columns are modalities, of which kind
(:data:`arl_hf.kinds.KINDS`), with which input shape, and which column holds the labels.

:func:`infer_record` turns any ``Dataset`` / ``DatasetDict`` (one not built by :func:`arl_hf.data.load`)
into a *raw preprocessing record* (format ``arl_hf.raw/1``, a JSON-ready dict): per modality its
column, feature type, kind, per-example input shape and normalisation; the audio preset; the label
column, its type and class names; the columns renamed or ignored (and why). The record is all that
:mod:`arl_hf.data.raw` needs to turn raw column values into model inputs, so a saved model's
``config.preprocessing["data"]`` rebuilds the same preprocessing.

Feature -> kind: ``Image()`` -> ``image`` ``(C, H, W)`` (uint8 / 255); a fixed-size ``Array2D`` -> a
one-channel map ``image`` ``(1, H, W)``; ``Array3D`` -> ``image`` ``(C, H, W)``; ``Array4D`` ->
``frames`` ``(T, C, H, W)``; a fixed-length list of numbers -> ``vector`` ``(D,)``; a list of
number lists -> ``sequence`` ``(L, D)``; ``Audio`` -> ``spectrogram`` ``(1, F, T)`` (an audio preset);
``Video`` -> ``frames`` ``(T, 3, S, S)`` (PyAV); a string column -> ``text`` (needs a processor).
"""

from __future__ import annotations

import io
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

__all__ = ["RAW_FORMAT", "DEFAULT_AUDIO_PRESET", "DEFAULT_VIDEO_FRAMES", "DEFAULT_VIDEO_SIZE", "LABEL_COLUMNS",
           "infer_record", "label_record", "is_raw_record", "parse_columns", "label_column_of", "describe_record",
           "TEXT_NEEDS_PROCESSOR"]

#: the format tag of a raw preprocessing record
RAW_FORMAT = "arl_hf.raw/1"
#: the audio preset of ``Audio`` columns when none is given (``--preprocessing``)
DEFAULT_AUDIO_PRESET = "ogm"
#: frames per clip and frame side of ``Video`` columns when none is given (``--num_frames``, ``--image_size``)
DEFAULT_VIDEO_FRAMES = 4
DEFAULT_VIDEO_SIZE = 112
#: the label columns looked for, in order, when ``--label_column`` is not given
LABEL_COLUMNS = ("labels", "label")
#: the error of a string column without a processor
TEXT_NEEDS_PROCESSOR = ("{name}: a string column needs an hf: encoder with a tokenizer "
                        "(--modality_encoders {name}=hf:<checkpoint>), or leave it out with --modality_columns")

_NUMBER = ("float", "int", "uint", "bool")


def is_raw_record(record: Any) -> bool:
    """Whether ``record`` is a raw preprocessing record (:data:`RAW_FORMAT`)."""
    return isinstance(record, Mapping) and str(record.get("format", "")).split("/")[0] == RAW_FORMAT.split("/")[0]


def parse_columns(text: Optional[str], field: str = "modality_columns") -> Dict[str, str]:
    """``"image=img,spec=spectrogram"`` -> ``{"image": "img", "spec": "spectrogram"}`` (modality -> column);
    a bare ``"img"`` keeps the column's name. ``ValueError`` naming ``field`` for a bad entry."""
    out: Dict[str, str] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        name, eq, column = part.partition("=")
        name, column = name.strip(), (column.strip() if eq else name.strip())
        if not name or not column:
            raise ValueError(f"{field}: expected 'modality=column[,modality=column]', got {text!r}")
        if name in out:
            raise ValueError(f"{field}: modality {name!r} given twice in {text!r}")
        out[name] = column
    return out


#: a column name that only its dots keep from being a modality name
_SAFE = re.compile(r"[A-Za-z0-9_+=@.-]+")


def _valid_name(name: str) -> bool:
    return bool(name) and "." not in name and name not in ("", "labels") and name.isprintable()


def _dtype_ok(dtype: Any) -> bool:
    return str(dtype).startswith(_NUMBER)


def _kind_of(feature: Any, column: str) -> Tuple[Optional[Dict[str, Any]], str]:
    """``(spec without shape details, reason)``: the modality spec a feature makes, or ``None`` and why not."""
    t = type(feature).__name__
    if t == "Image":
        return {"feature": "Image", "kind": "image"}, ""
    if t == "Audio":
        return {"feature": "Audio", "kind": "spectrogram"}, ""
    if t == "Video":
        return {"feature": "Video", "kind": "frames"}, ""
    if t in ("Array2D", "Array3D", "Array4D"):
        shape = [int(d) if d is not None else None for d in feature.shape]
        if None in shape:
            return None, f"{t} with a variable first dimension {tuple(feature.shape)}"
        if not _dtype_ok(feature.dtype):
            return None, f"{t} of {feature.dtype}"
        if t == "Array2D":
            return {"feature": t, "kind": "image", "shape": [1] + shape, "dtype": str(feature.dtype)}, ""
        return _channels_first({"feature": t, "kind": "image" if t == "Array3D" else "frames", "shape": shape,
                                "dtype": str(feature.dtype)}), ""
    if t == "ClassLabel":
        return None, "a ClassLabel that is not the label column"
    if t == "Value":
        if str(feature.dtype) in ("string", "large_string"):
            return {"feature": "Value(string)", "kind": "text"}, ""
        return None, f"one {feature.dtype} per example (an id or a target?)"
    if t in ("List", "LargeList", "Sequence"):
        lengths, inner = [], feature
        while type(inner).__name__ in ("List", "LargeList", "Sequence"):
            length = getattr(inner, "length", -1)
            lengths.append(int(length) if length is not None and length >= 0 else None)
            inner = inner.feature
        if type(inner).__name__ != "Value" or not _dtype_ok(inner.dtype) or len(lengths) > 4:
            return None, f"a {len(lengths)}-level list of {type(inner).__name__}"
        dtype = str(inner.dtype)
        if len(lengths) == 1:  # a variable length is checked on the data (every row must have the same)
            return {"feature": "List", "kind": "vector", "shape": lengths, "dtype": dtype}, ""
        if len(lengths) == 2:
            return {"feature": "List(List)", "kind": "sequence", "shape": ["L", lengths[1]], "dtype": dtype}, ""
        # nested lists of numbers (a NumPy array stored without features): the first row gives the shape
        return {"feature": f"{len(lengths)}-level List", "kind": "image" if len(lengths) == 3 else "frames",
                "shape": lengths, "dtype": dtype}, ""
    return None, f"a {t} feature"


def label_column_of(features: Mapping[str, Any], label_column: Optional[str] = None) -> str:
    """The label column: ``label_column`` (``--label_column``), else ``labels``, else ``label``.

    Raises:
        ValueError: the named column is missing, or none of the usual names is a column.
    """
    columns = list(features)
    if label_column:
        if label_column not in features:
            raise ValueError(f"label_column: {label_column!r} is not a column of the dataset (columns: {columns})")
        return label_column
    for name in LABEL_COLUMNS:
        if name in features:
            return name
    raise ValueError(f"dataset: no label column: expected 'labels' or 'label', or name it with --label_column "
                     f"(columns: {columns})")


def label_record(dataset: Mapping[str, Any], column: str) -> Dict[str, Any]:
    """``{"column", "type", "names"}`` of the label column of a ``DatasetDict``: a ``ClassLabel``'s names,
    the sorted distinct strings of every split, or ``None`` for integer ids.

    Raises:
        ValueError: the column holds no class labels (floats, lists...).
    """
    first = next(iter(dataset.values()))
    feature = first.features[column]
    t = type(feature).__name__
    if t == "ClassLabel":
        return {"column": column, "type": "ClassLabel", "names": list(feature.names)}
    dtype = str(getattr(feature, "dtype", ""))
    if t == "Value" and dtype in ("string", "large_string"):
        values = set()
        for split in dataset.values():
            values.update(v for v in split.with_format(None)[column] if v is not None)
        return {"column": column, "type": "string", "names": sorted(str(v) for v in values)}
    if t == "Value" and dtype.startswith(("int", "uint")):
        return {"column": column, "type": "int", "names": None}
    raise ValueError(f"{column}: expected class labels (a ClassLabel, integer ids or strings), got {feature!r}; "
                     "name another column with --label_column")


def _image_shape(split: Any, column: str) -> Tuple[List[int], str]:
    """``([C, H, W], mode)`` of a column's first image (``mode`` ``"L"`` for grey images, else ``"RGB"``)."""
    import datasets

    from .video import decode_pixels, encoded_bytes

    if len(split) == 0:
        raise ValueError(f"{column}: the split is empty; cannot read the image size")
    from PIL import Image

    one = split.select_columns([column]).cast_column(column, datasets.Image(decode=False))
    record = one.with_format(None)[0][column]
    data = encoded_bytes(record, column)
    img = Image.open(io.BytesIO(data))
    mode = "L" if img.mode in ("L", "I", "I;16", "F", "1") else "RGB"
    pixels = decode_pixels({"bytes": data, "path": None}, column, mode)
    return [int(d) for d in pixels.shape], mode


def _sequence_dim(split: Any, column: str) -> int:
    for row in split.with_format(None).select(range(min(len(split), 8)))[column]:
        if row:
            return len(row[0])
    raise ValueError(f"{column}: every sequence of the first rows is empty; cannot read the feature size D")


def _channels_first(spec: Dict[str, Any]) -> Dict[str, Any]:
    """An image ``(H, W, C)`` or frames ``(T, H, W, C)`` array (``C`` of 1, 3 or 4 last, not first): the
    input is channels-first (``shape``), the stored layout is kept as ``stored_shape``."""
    shape = spec.get("shape") or []
    if None in shape or len(shape) not in (3, 4):
        return spec
    channel_axis = 0 if len(shape) == 3 else 1
    if shape[-1] in (1, 3, 4) and shape[channel_axis] not in (1, 3, 4):
        moved = list(shape[:channel_axis]) + [shape[-1]] + list(shape[channel_axis:-1])
        return {**spec, "shape": moved, "stored_shape": list(shape), "layout": "channels_last"}
    return spec


def _list_length(splits: Mapping[str, Any], column: str) -> Tuple[Optional[int], str]:
    """``(D, "")`` when every row of every split holds ``D`` numbers (read from the Arrow offsets), else
    ``(None, why)``."""
    import pyarrow.compute as pc

    found = set()
    for split in splits.values():
        lengths = pc.list_value_length(split.data.table.column(column) if hasattr(split.data, "table")
                                       else split.data.column(column))
        bounds = pc.min_max(lengths)
        if bounds["min"].as_py() is not None:
            found.update({bounds["min"].as_py(), bounds["max"].as_py()})
    if len(found) == 1 and next(iter(found)) > 0:
        return next(iter(found)), ""
    return None, (f"a list of numbers of varying length {sorted(found)[:2]}...; give it a fixed length "
                  "(List(Value('float32'), length=D)) to use it as a vector")


def _first_row_shape(split: Any, column: str) -> List[int]:
    if len(split) == 0:
        raise ValueError(f"{column}: the split is empty; cannot read the array shape")
    return [int(d) for d in np.asarray(split.select_columns([column]).with_format(None)[0][column],
                                       dtype=np.float32).shape]


def _module_name(column: str, field: str) -> str:
    name = column.replace(".", "_")
    if not name or name == "labels":
        raise ValueError(f"{field}: column {column!r} cannot be a modality name; rename it with "
                         "--modality_columns name=column")
    return name


def infer_record(dataset: Any, *, label_column: Optional[str] = None, modality_columns: Optional[Any] = None,
                 audio_preset: Optional[Any] = None, audio_duration: Optional[float] = None,
                 num_frames: Optional[int] = None, image_size: Optional[int] = None,
                 processors: Optional[Mapping[str, Any]] = None, dataset_name: Optional[str] = None
                 ) -> Dict[str, Any]:
    """The raw preprocessing record of a plain ``Dataset`` or ``DatasetDict`` (see the module docstring).

    Args:
        dataset: the data (its ``train`` split, else its first, gives the features and the image sizes).
        label_column: the label column (default: ``labels``, else ``label``).
        modality_columns: modality -> column (or its text, ``"image=img,spec=spectrogram"``): only
            these columns become modalities, under these names. Default: every usable column, named
            after it (a ``.`` becomes ``_``, recorded in ``renamed``).
        audio_preset: the audio preset of ``Audio`` columns (a name of :data:`arl_hf.data.AUDIO_PRESETS`).
        audio_duration: seconds of audio per clip (the preset's by default).
        num_frames, image_size: frames per clip and frame side of ``Video`` columns.
        processors: modality -> a processor (checkpoint name or object) for ``text`` columns.
        dataset_name: recorded as ``dataset`` (a name, never a local path).

    Raises:
        ValueError: no label column, a chosen column missing or unusable, a string column without a
            processor, no modality left (each names the column and the flag).
    """
    if hasattr(dataset, "features"):
        splits = {str(getattr(dataset, "split", None) or "train"): dataset}
    elif isinstance(dataset, Mapping) and dataset:
        splits = dict(dataset)
    else:
        raise ValueError(f"dataset: expected a datasets Dataset or DatasetDict, got {type(dataset).__name__}")
    first = splits.get("train") or next(iter(splits.values()))
    features = getattr(first, "features", None)
    if features is None or not hasattr(first, "__getitem__") or not hasattr(first, "data"):
        raise ValueError(f"dataset: expected a map-style datasets Dataset or DatasetDict with known features, got "
                         f"{type(first).__name__}; load it without streaming, or build the batches yourself")
    label = label_column_of(features, label_column)
    label_info = label_record(splits, label)
    chosen = parse_columns(modality_columns) if isinstance(modality_columns, (str, type(None))) \
        else {str(k): str(v) for k, v in dict(modality_columns).items()}
    processors = dict(processors or {})
    modalities: Dict[str, Dict[str, Any]] = {}
    renamed: Dict[str, str] = {}
    ignored: Dict[str, str] = {}
    if chosen:
        for name, column in chosen.items():
            if column not in features:
                raise ValueError(f"modality_columns: {column!r} is not a column of the dataset "
                                 f"(columns: {list(features)})")
            if column == label:
                raise ValueError(f"modality_columns: {column!r} is the label column; choose other columns")
            if not _valid_name(name):
                raise ValueError(f"modality_columns: {name!r} cannot be a modality name (no '.', not 'labels')")
        pairs = list(chosen.items())
        ignored.update({c: "not chosen by --modality_columns" for c in features if c != label
                        and c not in chosen.values()})
    else:
        pairs = []
        for column in features:
            if column == label:
                continue
            name = column
            if not _valid_name(column) and _SAFE.fullmatch(column):  # 'a.b' -> 'a_b'; others are refused downstream
                name = _module_name(column, "dataset")
            if name != column:
                renamed[column] = name
            pairs.append((name, column))
    names = [n for n, _ in pairs]
    if len(set(names)) != len(names):
        raise ValueError(f"dataset: two columns make the same modality name {names}; name them with "
                         "--modality_columns name=column")
    for name, column in pairs:
        spec, reason = _kind_of(features[column], column)
        if spec is None:
            if chosen:
                raise ValueError(f"modality_columns: column {column!r} cannot be a modality ({reason})")
            ignored[column] = reason
            continue
        spec = {"column": column, **spec}
        kind = spec["kind"]
        if kind == "text":
            if name not in processors:
                if not chosen and _looks_like_id(column):
                    ignored[column] = "a string column named like an identifier"
                    continue
                raise ValueError(TEXT_NEEDS_PROCESSOR.format(name=name))
            spec["processor"] = processors[name] if isinstance(processors[name], str) else \
                getattr(processors[name], "name_or_path", type(processors[name]).__name__)
        elif kind == "image" and spec["feature"] == "Image":
            shape, mode = _image_shape(first, column)
            spec.update(shape=shape, mode=mode, dtype="uint8", normalisation={"divide": 255.0},
                        resize="bilinear to the recorded (H, W)")
        elif kind == "sequence" and spec["shape"][1] is None:
            spec["shape"][1] = _sequence_dim(first, column)
        elif kind == "vector" and spec["shape"][0] is None:
            length, why = _list_length(splits, column)
            if length is None:
                if chosen:
                    raise ValueError(f"modality_columns: column {column!r} cannot be a modality ({why})")
                ignored[column] = why
                continue
            spec["shape"] = [length]
        elif spec["feature"].endswith("-level List"):  # nested lists: the first row's shape
            spec = _channels_first({**spec, "shape": _first_row_shape(first, column)})
        elif kind == "spectrogram":
            from .audio import get_audio_preset

            preset = get_audio_preset(audio_preset or DEFAULT_AUDIO_PRESET, audio_duration)
            spec["shape"] = [1, *preset.output_shape]
        elif kind == "frames" and spec["feature"] == "Video":
            nf, size = int(num_frames or DEFAULT_VIDEO_FRAMES), int(image_size or DEFAULT_VIDEO_SIZE)
            spec.update(shape=[nf, 3, size, size], normalisation={"divide": 255.0})
        if kind in ("image", "frames") and spec.get("dtype") == "uint8":
            spec.setdefault("normalisation", {"divide": 255.0})
        modalities[name] = spec
    if not modalities:
        raise ValueError(f"dataset: no column can be a modality (ignored: {ignored}); expected Image, Audio, Video, "
                         "ArrayND or fixed-length number lists")
    record: Dict[str, Any] = {"format": RAW_FORMAT, "modalities": modalities,
                              "label": label_info}
    if dataset_name:
        record["dataset"] = str(dataset_name)
    if record["label"]["names"]:
        record["label_names"] = list(record["label"]["names"])
    if any(s["kind"] == "spectrogram" and s["feature"] == "Audio" for s in modalities.values()):
        from .audio import get_audio_preset

        record["audio_preset"] = get_audio_preset(audio_preset or DEFAULT_AUDIO_PRESET, audio_duration).to_dict()
    if renamed:
        record["renamed"] = renamed
    if ignored:
        record["ignored"] = ignored
    return record


def _looks_like_id(column: str) -> bool:
    low = column.lower()
    return low in ("id", "idx", "uid", "key", "name", "path", "file", "filename", "file_name", "url") \
        or low.endswith(("_id", "_path", "_file", "_url", "_name"))


def describe_record(record: Mapping[str, Any]) -> List[str]:
    """One line per modality (``image <- img: Image() -> image (3, 32, 32), encoder timm:resnet18``), one per
    renamed or ignored column, and one for the labels: what a run prints."""
    from ..kinds import KINDS

    lines = []
    for name, spec in record.get("modalities", {}).items():
        shape = ", ".join(str(d) for d in spec.get("shape") or [])
        where = f"{name} <- column {spec['column']!r}" if spec["column"] != name else name
        layout = f"({shape})" if shape else KINDS[spec["kind"]].layout if spec["kind"] in KINDS else ""
        lines.append(f"{where}: {spec['feature']} -> {spec['kind']} {layout}")
    for column, name in (record.get("renamed") or {}).items():
        lines.append(f"column {column!r} renamed {name!r} (a modality name cannot hold '.')")
    for column, why in (record.get("ignored") or {}).items():
        lines.append(f"column {column!r} ignored: {why}")
    label = record.get("label") or {}
    names = label.get("names")
    shown = f"{len(names)} classes" if names else "integer class ids"
    lines.append(f"labels <- column {label.get('column')!r} ({label.get('type')}, {shown})")
    return lines
