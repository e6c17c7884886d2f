"""Raw column values -> model inputs, from a raw preprocessing record (:mod:`arl_hf.data.features`).

:class:`RawTransform` turns a batch of a plain dataset's columns into one float tensor per modality
(built once per batch, :func:`arl_hf.data.batches.batch_buffer`) and the ``labels`` ids.
:func:`bind_raw` binds it to the splits of a ``DatasetDict`` so that every batch is one read of
the Arrow table (fixed-shape arrays as NumPy views, images undecoded until the transform decodes
them); :func:`raw_preprocessor` rebuilds the same preprocessing from a saved model's
``config.preprocessing`` and applies it to a list of example dicts (a pipeline's inputs).

Per kind: ``image`` from ``Image()`` is decoded (torchvision, else PIL), resized (bilinear) to the
recorded ``(H, W)`` when it differs, and divided by 255; arrays are cast to float32 (uint8 ones
divided by 255), a 2-D array gains its channel axis; ``vector`` and ``sequence`` are stacked
(sequences zero-padded at the end to the longest); ``spectrogram`` is the recorded audio preset
of the decoded waveform (soundfile; librosa resamples); ``frames`` are ``T`` evenly spaced frames
of a video decoded with PyAV; ``text`` goes through ``arl_hf.data.processors.apply_processor``.
"""

from __future__ import annotations

import io
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

from .batches import batch_buffer, bind_row_transform
from .features import TEXT_NEEDS_PROCESSOR, is_raw_record

__all__ = ["RawTransform", "bind_raw", "bound_record", "raw_preprocessor", "undecoded"]


def _as_record(record_or_config: Any) -> Dict[str, Any]:
    """The raw record of a record, a ``config.preprocessing`` mapping (its ``"data"``) or a model config."""
    value = getattr(record_or_config, "preprocessing", record_or_config)
    if isinstance(value, Mapping) and not is_raw_record(value) and is_raw_record(value.get("data")):
        value = value["data"]
    if not is_raw_record(value):
        raise ValueError("preprocessing: expected a raw preprocessing record (format 'arl_hf.raw/1', as "
                         "config.preprocessing['data'] of a model trained on a plain dataset), got "
                         f"{type(value).__name__}")
    return dict(value)


class RawTransform:
    """A batch of raw columns (column -> per-example values, or one array) -> ``{modality: float
    tensor (B, ...), "labels": int64 array (B,)}``.

    Args:
        record: the raw preprocessing record (:func:`arl_hf.data.features.infer_record`), or a
            ``config.preprocessing`` mapping holding it under ``"data"``.
    """

    def __init__(self, record: Mapping[str, Any]):
        self.record = _as_record(record)
        self.specs: Dict[str, Dict[str, Any]] = dict(self.record["modalities"])
        label = self.record.get("label") or {}
        self.label_column: Optional[str] = label.get("column")
        names = label.get("names") if label.get("type") == "string" else None
        self.label_ids = {n: i for i, n in enumerate(names)} if names else None
        self._preset = None
        #: column -> {"kind"}: what a row reader gives as one tensor (:class:`~arl_hf.data.batches.RowBatchTransform`)
        self.modalities = {s["column"]: {"kind": s["kind"]} for s in self.specs.values()
                           if s["feature"].startswith("Array")}

    def __repr__(self) -> str:
        return "RawTransform(" + ", ".join(f"{m}: {s['kind']}" for m, s in self.specs.items()) + ")"

    # ------------------------------------------------------------------ batches
    def __call__(self, batch: Mapping[str, Any]) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        for name, spec in self.specs.items():
            values = batch.get(spec["column"], batch.get(name))
            if values is None:
                raise ValueError(f"{name}: the batch has no column {spec['column']!r} (columns: {sorted(batch)})")
            out[name] = self._convert(name, spec, values)
        labels = batch.get(self.label_column) if self.label_column else None
        if labels is None and "labels" in batch:
            labels = batch["labels"]
        if labels is not None:
            out["labels"] = self._labels(labels)
        return out

    def from_examples(self, examples: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
        """The batch of a list of example dicts (keyed by modality name or column; the label optional)."""
        if not examples:
            raise ValueError("examples: expected a non-empty list of example dicts")
        columns: Dict[str, List[Any]] = {}
        for name, spec in self.specs.items():
            key = name if name in examples[0] else spec["column"]
            for i, ex in enumerate(examples):
                if key not in ex:
                    raise ValueError(f"examples[{i}]: modality {name!r} missing; got keys {sorted(ex)}")
            columns[spec["column"]] = [ex[key] for ex in examples]
        for key in (self.label_column, "labels"):
            if key and all(key in ex for ex in examples):
                columns[self.label_column or "labels"] = [ex[key] for ex in examples]
                break
        return self(columns)

    def _labels(self, values: Any) -> np.ndarray:
        field = self.label_column or "labels"
        if self.label_ids is not None:
            out = np.empty(len(values), dtype=np.int64)
            for i, v in enumerate(values):
                if v not in self.label_ids:
                    raise ValueError(f"{field}: label {v!r} is not one of the recorded classes "
                                     f"{list(self.label_ids)[:10]}")
                out[i] = self.label_ids[v]
            return out
        from ..validation import class_indices

        if len(values) and isinstance(values[0], (str, bytes)):
            raise ValueError(f"{field}: the labels are strings ({values[0]!r}, ...); the record maps no class "
                             "names to ids")
        return class_indices(values, field)

    # ------------------------------------------------------------------ per kind
    def _convert(self, name: str, spec: Mapping[str, Any], values: Any):
        kind, feature = spec["kind"], spec["feature"]
        if kind == "text":
            return _processed(name, spec, values)
        if feature == "Image":
            return _images(name, spec, values)
        if feature == "Audio":
            return self._spectrograms(name, spec, values)
        if feature == "Video":
            return _videos(name, spec, values)
        if kind == "sequence":
            return _sequences(name, spec, values)
        return _arrays(name, spec, values)

    def _spectrograms(self, name: str, spec: Mapping[str, Any], values: Sequence[Any]):
        import torch

        from .audio import compute_features, get_audio_preset

        if self._preset is None:
            self._preset = get_audio_preset(self.record["audio_preset"])
        shape = tuple(spec["shape"])
        buf = batch_buffer((len(values),) + shape)
        for i, v in enumerate(values):
            y = _waveform(name, v, self._preset.sample_rate)
            feats = compute_features(y, self._preset, source=f"{name}[{i}]")
            buf[i, 0].copy_(torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32)))
        return buf


def _check_shape(name: str, got: Sequence[int], expected: Sequence[Any]) -> None:
    if len(got) != len(expected) or any(e is not None and int(g) != int(e) for g, e in zip(got, expected)):
        shown = ", ".join("L" if e is None else str(e) for e in expected)
        raise ValueError(f"{name}: expected examples of shape ({shown}), got {tuple(got)}")


def _arrays(name: str, spec: Mapping[str, Any], values: Any):
    """Fixed-shape arrays and vectors: one float32 ``(B, *shape)`` tensor (uint8 divided by 255; a
    channels-last image or clip moved to channels-first)."""
    import torch

    shape = tuple(int(d) for d in spec["shape"])
    stored = tuple(int(d) for d in spec.get("stored_shape") or shape)
    last = spec.get("layout") == "channels_last"
    divide = (spec.get("normalisation") or {}).get("divide")

    def fits(got: Sequence[int]) -> bool:  # a 2-D map is stored (H, W) for its (1, H, W) input
        return tuple(got) == stored or (not last and len(shape) > 1 and shape[0] == 1 and tuple(got) == shape[1:])

    if torch.is_tensor(values) or isinstance(values, np.ndarray):
        arr = values
    else:
        rows = []
        for i, v in enumerate(values):
            a = np.asarray(v)
            if a.dtype == object or not fits(a.shape):
                _check_shape(f"{name}[{i}]", a.shape if a.dtype != object else (len(v),), stored)
            rows.append(a)
        arr = np.stack(rows) if rows else np.zeros((0,) + stored, np.float32)
    n = int(arr.shape[0])
    if not fits(arr.shape[1:]):
        _check_shape(name, tuple(int(d) for d in arr.shape[1:]), stored)
    if torch.is_tensor(arr) and arr.dtype == torch.float32 and divide is None and not last:
        return arr.view((n,) + shape)  # the reader's batch tensor (a view keeps it marked)
    buf = batch_buffer((n,) + shape)
    src = arr if torch.is_tensor(arr) else torch.from_numpy(np.ascontiguousarray(arr))
    buf.copy_(src.movedim(-1, 1 if len(shape) == 3 else 2) if last else src.reshape((n,) + shape))
    if divide:
        buf.div_(float(divide))
    return buf


def _sequences(name: str, spec: Mapping[str, Any], values: Sequence[Any]):
    """Variable-length ``(L, D)`` sequences, zero-padded at the end to the longest: ``(B, L_max, D)``."""
    import torch

    dim = int(spec["shape"][1])
    rows = []
    for v in values:
        a = np.asarray(v, dtype=np.float32)
        if a.size == 0:
            a = a.reshape(0, dim)
        _check_shape(name, a.shape, (None, dim))
        rows.append(a)
    longest = max([1] + [len(a) for a in rows])
    buf = batch_buffer((len(rows), longest, dim))
    buf.zero_()
    for i, a in enumerate(rows):
        if len(a):
            buf[i, :len(a)].copy_(torch.from_numpy(a))
    return buf


def _images(name: str, spec: Mapping[str, Any], values: Sequence[Any]):
    """Decoded images: ``(B, C, H, W)`` float32 in [0, 1], resized to the recorded size when they differ."""
    import torch

    from .video import decode_pixels

    c, h, w = (int(d) for d in spec["shape"])
    mode = spec.get("mode", "RGB")
    buf = batch_buffer((len(values), c, h, w))
    for i, v in enumerate(values):
        if isinstance(v, (bytes, bytearray)):
            v = {"bytes": bytes(v), "path": None}
        elif isinstance(v, str):
            v = {"bytes": None, "path": v}
        pix = decode_pixels(v, f"{name}[{i}]", mode)
        if tuple(pix.shape[1:]) != (h, w):
            pix = torch.nn.functional.interpolate(pix[None].float(), size=(h, w), mode="bilinear",
                                                  align_corners=False, antialias=True)[0].round_().clamp_(0, 255)
        buf[i].copy_(pix)
    return buf.div_(float((spec.get("normalisation") or {}).get("divide", 255.0)))


def _waveform(name: str, value: Any, sample_rate: int) -> np.ndarray:
    """A mono float32 waveform at ``sample_rate`` of an audio record (``{"bytes", "path"}``), a decoded
    ``{"array", "sampling_rate"}`` dict or a ``(waveform, sampling_rate)`` pair."""
    if isinstance(value, Mapping) and value.get("array") is not None:
        y, sr = np.asarray(value["array"], dtype=np.float32), value.get("sampling_rate")
    elif isinstance(value, (tuple, list)) and len(value) == 2 and np.ndim(value[0]) >= 1:
        y, sr = np.asarray(value[0], dtype=np.float32), value[1]
    elif isinstance(value, Mapping) and (value.get("bytes") is not None or value.get("path")):
        import soundfile as sf

        source = io.BytesIO(value["bytes"]) if value.get("bytes") is not None else value["path"]
        try:
            y, sr = sf.read(source, dtype="float32", always_2d=True)
        except Exception as err:  # soundfile raises LibsndfileError / RuntimeError / TypeError
            raise ValueError(f"{name}: unreadable audio ({type(err).__name__}: {err})") from err
        y = y.mean(axis=1)
    else:
        raise ValueError(f"{name}: expected an audio record {{'bytes', 'path'}}, {{'array', 'sampling_rate'}} or a "
                         f"(waveform, sampling_rate) pair, got {type(value).__name__}")
    if sr is None:
        raise ValueError(f"{name}: the waveform has no sampling rate")
    if y.ndim == 2:  # (channels, samples)
        y = y.mean(axis=0)
    if int(sr) != int(sample_rate):
        import librosa

        y = librosa.resample(y, orig_sr=int(sr), target_sr=int(sample_rate), res_type="soxr_hq")
    return np.ascontiguousarray(y, dtype=np.float32)


def _videos(name: str, spec: Mapping[str, Any], values: Sequence[Any]):
    """``T`` evenly spaced RGB frames of each clip, decoded with PyAV: ``(B, T, 3, S, S)`` in [0, 1]."""
    import torch

    try:
        import av
    except ImportError:
        raise ValueError(f"{name}: decoding a Video column needs PyAV: pip install 'arl-hf[video]' (or av)") from None
    t, c, h, w = (int(d) for d in spec["shape"])
    buf = batch_buffer((len(values), t, c, h, w))
    for i, v in enumerate(values):
        if isinstance(v, str):
            v = {"path": v, "bytes": None}
        if not isinstance(v, Mapping) or (v.get("bytes") is None and not v.get("path")):
            raise ValueError(f"{name}[{i}]: expected a video record {{'bytes', 'path'}} or a path, "
                             f"got {type(v).__name__}")
        source = io.BytesIO(v["bytes"]) if v.get("bytes") is not None else v["path"]
        try:
            with av.open(source) as container:
                frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        except Exception as err:
            raise ValueError(f"{name}[{i}]: unreadable video ({type(err).__name__}: {err})") from err
        if not frames:
            raise ValueError(f"{name}[{i}]: the video holds no frames")
        picks = np.linspace(0, len(frames) - 1, t).round().astype(int)
        clip = torch.from_numpy(np.stack([frames[k] for k in picks])).permute(0, 3, 1, 2).float()
        if tuple(clip.shape[-2:]) != (h, w):
            clip = torch.nn.functional.interpolate(clip, size=(h, w), mode="bilinear", align_corners=False,
                                                   antialias=True).round_().clamp_(0, 255)
        buf[i].copy_(clip)
    return buf.div_(float((spec.get("normalisation") or {}).get("divide", 255.0)))


def _processed(name: str, spec: Mapping[str, Any], values: Sequence[Any]):
    processor = spec.get("processor")
    if not processor:
        raise ValueError(TEXT_NEEDS_PROCESSOR.format(name=name))
    try:
        from .processors import apply_processor
    except ImportError:
        raise ValueError(TEXT_NEEDS_PROCESSOR.format(name=name)) from None
    return apply_processor(processor, spec["kind"], list(values))


# ---------------------------------------------------------------------------------- datasets
def bound_record(split: Any) -> Optional[Dict[str, Any]]:
    """The raw record of a split whose :class:`RawTransform` is bound (:func:`bind_raw`), else ``None``."""
    fmt = getattr(split, "format", None) or {}
    bound = (fmt.get("format_kwargs") or {}).get("transform")
    inner = getattr(bound, "transform", bound)
    return inner.record if isinstance(inner, RawTransform) else None


def undecoded(split: Any, record: Mapping[str, Any]) -> Any:
    """``split`` with its ``Audio`` / ``Video`` modality columns read undecoded (``decode=False``: arl-hf
    decodes them, without torchcodec)."""
    for spec in record["modalities"].values():
        feature = split.features[spec["column"]]
        if spec["feature"] in ("Audio", "Video") and getattr(feature, "decode", False):
            split = split.cast_column(spec["column"], type(feature)(decode=False))
    return split


def bind_raw(dataset: Any, record: Mapping[str, Any]) -> None:
    """Bind a :class:`RawTransform` of ``record`` to every split of the ``DatasetDict`` ``dataset`` (in
    place, through :func:`arl_hf.data.batches.bind_row_transform`); splits already bound are kept."""
    for split, ds in list(dataset.items()):
        if bound_record(ds) is None:
            dataset[split] = bind_row_transform(undecoded(ds, record), RawTransform(record))


def raw_preprocessor(record_or_config: Any) -> Callable[[Sequence[Mapping[str, Any]]], Dict[str, Any]]:
    """``f(list of example dicts) -> batch dict`` (one float tensor per modality, ``labels`` when every
    example has one), rebuilt from a raw record, a ``config.preprocessing`` mapping or a model config.

    An example maps each modality name (or its column) to a raw value: a PIL image, an image or
    video record / path, an array or list, ``{"array", "sampling_rate"}`` or ``(waveform, rate)``.
    """
    return RawTransform(_as_record(record_or_config)).from_examples
