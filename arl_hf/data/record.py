"""The preprocessing record: one typed contract between the builders, the data pipeline and the model.

Every dataset built by :func:`arl_hf.data.load` (or reloaded by ``load_prepared`` /
``stream_split``) carries a JSON record in ``DatasetInfo.description``: the format tag, the
dataset name, the builder version, the audio preset, the frame pool, the split seeds, one spec
per modality (storage kind, stored shape, encoder suggestion) and the label names.
:class:`PreprocessingRecord` is that record parsed once, with typed fields; its
:meth:`~PreprocessingRecord.to_json` writes the same JSON the builders always wrote (sorted
keys, unknown keys kept), so cached datasets, exported folders and model checkpoints written
before it still read.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, List, Mapping, Optional

from ..kinds import STORED_KINDS
from .processors import PROCESSOR_KINDS

__all__ = ["RECORD_FORMAT", "MODALITY_KINDS", "ModalitySpec", "PreprocessingRecord", "preprocessing_text",
           "format_value"]

#: the format tag of the record (``<family>/<revision>``); any ``arl_hf.data/*`` reads
RECORD_FORMAT = "arl_hf.data/1"

#: storage kinds of a modality column (see :mod:`arl_hf.data.builder`): the stored kinds of :mod:`arl_hf.kinds`
MODALITY_KINDS = STORED_KINDS

#: the keys of a modality spec that make up the encoder suggestion for ``MultimodalConfig``
ENCODER_KEYS = ("encoder", "in_chans", "input_dim", "hidden_dims")

_KNOWN = ("format", "dataset", "builder_version", "audio_preset", "frames", "splits", "modalities", "label_names",
          "on_error", "options")


@dataclasses.dataclass(frozen=True)
class ModalitySpec:
    """One modality of a record: its storage ``kind`` and everything recorded with it.

    Attributes:
        name: the modality (column) name.
        kind: one of :data:`MODALITY_KINDS`.
        fields: the whole recorded spec (``kind``, ``encoder``, ``in_chans`` / ``input_dim``,
            ``shape``, ``normalisation``...), exactly as stored.
    """

    name: str
    kind: str
    fields: Mapping[str, Any]

    @classmethod
    def from_dict(cls, name: str, spec: Any) -> "ModalitySpec":
        """Parse ``modalities[name]`` of a record.

        Raises:
            ValueError: the spec is not a mapping or its ``kind`` is unknown (names the field).
        """
        if not isinstance(spec, Mapping):
            raise ValueError(f"modalities[{name!r}]: expected a mapping with a 'kind', got {type(spec).__name__}")
        kind = spec.get("kind")
        if kind not in MODALITY_KINDS:
            raise ValueError(f"modalities[{name!r}]['kind']: expected one of {MODALITY_KINDS}, got {kind!r}")
        processor = spec.get("processor")
        if processor is not None and (not isinstance(processor, Mapping)
                                      or processor.get("kind") not in PROCESSOR_KINDS or not processor.get("files")):
            raise ValueError(f"modalities[{name!r}]['processor']: expected a processor entry with 'kind' in "
                             f"{sorted(PROCESSOR_KINDS)} and 'files' (arl_hf.data.processors.processor_spec), "
                             f"got {processor!r}")
        return cls(name=str(name), kind=str(kind), fields=json.loads(json.dumps(dict(spec))))

    @property
    def encoder(self) -> Optional[str]:
        """The suggested encoder (``timm:<name>``, ``mlp``...), if recorded."""
        return self.fields.get("encoder")

    @property
    def shape(self) -> Optional[List[int]]:
        """The stored per-example shape, if recorded."""
        shape = self.fields.get("shape")
        return list(shape) if shape is not None else None

    @property
    def processor(self) -> Optional[Dict[str, Any]]:
        """The processor entry (tokenizer, image processor or feature extractor of an ``hf:`` checkpoint:
        see :func:`arl_hf.data.processors.processor_spec`), if the modality has one."""
        processor = self.fields.get("processor")
        return json.loads(json.dumps(dict(processor))) if processor is not None else None

    def encoder_spec(self) -> Dict[str, Any]:
        """The encoder suggestion: the recorded ``encoder``, ``in_chans``, ``input_dim``, ``hidden_dims``."""
        return {k: v for k, v in self.fields.items() if k in ENCODER_KEYS}

    def to_dict(self) -> Dict[str, Any]:
        """The spec as recorded."""
        return json.loads(json.dumps(dict(self.fields)))


@dataclasses.dataclass(frozen=True)
class PreprocessingRecord:
    """The preprocessing record of a built dataset (see the module docstring).

    Attributes:
        format: the format tag (``arl_hf.data/1``).
        dataset: the dataset name (``avdigits``, ``cremad``...).
        modalities: modality name -> :class:`ModalitySpec`, in the recorded order.
        label_names: the class names, when recorded.
        builder_version, audio_preset, frames, splits, on_error, options: as recorded
            (``None`` when absent).
        extra: any other recorded key, kept so that :meth:`to_dict` returns the record unchanged.
        recorded_keys: the optional keys written even when ``None``.
    """

    format: str
    dataset: str
    modalities: Mapping[str, ModalitySpec]
    label_names: Optional[List[str]] = None
    builder_version: Optional[str] = None
    audio_preset: Optional[Mapping[str, Any]] = None
    frames: Optional[Mapping[str, Any]] = None
    splits: Optional[Mapping[str, Any]] = None
    on_error: Optional[str] = None
    options: Optional[Mapping[str, Any]] = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    #: the optional keys written by :meth:`to_dict` even when ``None`` (a parsed record: those it had)
    recorded_keys: tuple = _KNOWN

    # ------------------------------------------------------------------ parsing
    @classmethod
    def of_model_config(cls, config: Any) -> Optional["PreprocessingRecord"]:
        """The record of the data a model was trained on (``config.preprocessing["data"]``), or
        ``None`` when the model was trained on data without one."""
        pre = getattr(config, "preprocessing", None)
        data = pre.get("data") if isinstance(pre, dict) else None
        if not isinstance(data, dict) or not str(data.get("format", "")).startswith("arl_hf.data"):
            return None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, record: Any) -> "PreprocessingRecord":
        """Parse a record dict.

        Raises:
            ValueError: not a mapping, a ``format`` other than ``arl_hf.data/*``, no
                ``modalities``, a bad modality spec or bad ``label_names`` (names the field).
        """
        if not isinstance(record, Mapping):
            raise ValueError(
                f"record: expected a mapping (the arl_hf preprocessing record), got {type(record).__name__}"
            )
        fmt = record.get("format")
        if not isinstance(fmt, str) or fmt.split("/")[0] != RECORD_FORMAT.split("/")[0]:
            raise ValueError(f"record['format']: expected 'arl_hf.data/<revision>', got {fmt!r}")
        mods = record.get("modalities")
        if not isinstance(mods, Mapping) or not mods:
            raise ValueError(f"record['modalities']: expected a non-empty mapping modality -> spec, got {mods!r}")
        names = record.get("label_names")
        if names is not None and (not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names)):
            raise ValueError(f"record['label_names']: expected a list of class names (str), got {names!r}")
        data = json.loads(json.dumps(dict(record)))
        return cls(
            format=fmt, dataset=str(data.get("dataset") or ""),
            modalities={str(k): ModalitySpec.from_dict(k, v) for k, v in mods.items()},
            label_names=list(names) if names is not None else None,
            builder_version=data.get("builder_version"), audio_preset=data.get("audio_preset"),
            frames=data.get("frames"), splits=data.get("splits"), on_error=data.get("on_error"),
            options=data.get("options"), extra={k: v for k, v in data.items() if k not in _KNOWN},
            recorded_keys=tuple(k for k in _KNOWN if k in data))

    @classmethod
    def from_json(cls, text: Optional[str]) -> "PreprocessingRecord":
        """Parse the JSON text of a record (``DatasetInfo.description``).

        Raises:
            ValueError: empty or invalid JSON, or an invalid record (see :meth:`from_dict`).
        """
        try:
            value = json.loads(text or "")
        except (TypeError, json.JSONDecodeError):
            raise ValueError("dataset.info.description: expected the arl_hf preprocessing record (JSON); "
                             "this dataset was not built by arl_hf.data.load / load_prepared") from None
        return cls.from_dict(value)

    @classmethod
    def from_dataset(cls, dataset: Any) -> "PreprocessingRecord":
        """The record of a ``Dataset``, ``IterableDataset`` or ``DatasetDict`` (its first split).

        Raises:
            ValueError: the dataset carries no valid record (it was not built by ``arl_hf.data``).
        """
        split = dataset
        if not hasattr(split, "info") and isinstance(dataset, Mapping) and dataset:
            split = next(iter(dataset.values()))
        if not hasattr(split, "info"):
            raise ValueError(
                f"dataset: expected a Dataset, IterableDataset or DatasetDict, got {type(dataset).__name__}"
            )
        try:
            return cls.from_json(split.info.description)
        except ValueError as err:
            if str(err).startswith("dataset.info.description"):
                raise
            raise ValueError("dataset.info.description: expected the arl_hf preprocessing record (JSON); "
                             f"this dataset was not built by arl_hf.data.load / load_prepared ({err})") from None

    @classmethod
    def find(cls, dataset: Any) -> Optional["PreprocessingRecord"]:
        """:meth:`from_dataset`, or ``None`` when the dataset carries no valid record."""
        try:
            return cls.from_dataset(dataset)
        except (ValueError, StopIteration):
            return None

    # ------------------------------------------------------------------ writing
    def to_dict(self) -> Dict[str, Any]:
        """The record as a JSON-ready dict: the same keys and values that were parsed."""
        out: Dict[str, Any] = dict(self.extra)
        out.update(format=self.format, modalities={k: v.to_dict() for k, v in self.modalities.items()})
        if self.dataset or "dataset" in self.recorded_keys:
            out["dataset"] = self.dataset
        for key in ("label_names", "builder_version", "audio_preset", "frames", "splits", "on_error", "options"):
            value = getattr(self, key)
            if value is not None or key in self.recorded_keys:
                out[key] = value
        return json.loads(json.dumps(out))

    def to_json(self) -> str:
        """The JSON written into ``DatasetInfo.description`` (sorted keys)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    # ------------------------------------------------------------------ views
    def kinds(self) -> Dict[str, str]:
        """Modality name -> storage kind."""
        return {k: v.kind for k, v in self.modalities.items()}

    def processors(self) -> Dict[str, Dict[str, Any]]:
        """Modality -> processor entry, for the modalities that have one (in modality order)."""
        return {k: v.processor for k, v in self.modalities.items() if v.processor is not None}

    def suggested_encoders(self) -> Dict[str, Dict[str, Any]]:
        """Encoder suggestion per modality, ready for ``MultimodalConfig(modalities=...)``."""
        return {k: v.encoder_spec() for k, v in self.modalities.items()}

    @property
    def default_num_frames(self) -> int:
        """Frames per clip fed to the model by default (1 for datasets without frames)."""
        return int((self.frames or {}).get("default_num_frames") or 1)

    def dataset_label(self, default: str = "dataset") -> str:
        """A short name of the dataset for cards and tables: the recorded name, else ``default``."""
        return self.dataset or default


def preprocessing_text(preprocessing: Optional[Mapping[str, Any]]) -> str:
    """One line on the inputs: audio preset, each modality's kind and shape, frames."""
    if not preprocessing:
        return ""
    parts = []
    data = preprocessing.get("data") if isinstance(preprocessing.get("data"), Mapping) else {}
    audio = data.get("audio_preset")
    if isinstance(audio, Mapping) and audio.get("name"):
        shape = "x".join(str(d) for d in audio.get("output_shape") or [])
        parts.append(f"audio preset `{audio['name']}` v{audio.get('version', '?')}" + (f" ({shape})" if shape else ""))
    elif preprocessing.get("preprocessing"):
        parts.append(f"audio preset `{preprocessing['preprocessing']}`")
    for m, spec in (data.get("modalities") or {}).items():
        if isinstance(spec, Mapping):
            shape = "x".join(str(d) for d in spec.get("shape") or [])
            parts.append(f"{m}: {spec.get('kind', '?')}" + (f" {shape}" if shape else ""))
    for key in ("audio_duration", "num_frames", "image_size"):
        if preprocessing.get(key) is not None:
            parts.append(f"{key}={format_value(preprocessing[key])}")
    return "; ".join(parts)


def format_value(value: Any) -> str:
    """A value as a card or table shows it: floats to 4 significant digits, lists comma-separated."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(v) for v in value)
    return str(value)
