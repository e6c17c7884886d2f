"""Data and model of a run: load the dataset, check and subset its splits, build the model.

:func:`load_data` reads ``--dataset`` (a registered name through :func:`arl_hf.data.load`, a
local folder or a Hub dataset repo) into a ``DatasetDict``, its collator and a preprocessing
record; :func:`prepare_splits` checks and subsets the splits; :func:`build_model` builds a
:class:`~arl_hf.MultimodalModel` with one encoder per modality of a collated batch
(:func:`modality_specs`), or loads ``--model_name_or_path``.
"""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass, fields
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from .arguments import DataArguments, ModelArguments
from .log import get_logger

logger = get_logger(__name__)

__all__ = [
    "RunRecord",
    "load_data",
    "prepare_splits",
    "dataset_record",
    "label_names",
    "num_labels",
    "check_splits",
    "truncate",
    "sample_batch",
    "modality_specs",
    "modality_summary",
    "build_model",
]


def _parse_mapping(text: Optional[str], field_name: str) -> Dict[str, str]:
    if not text:
        return {}
    out = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise ValueError(f"{field_name}: expected 'modality=value[,modality=value]', got {text!r}")
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    return out


@dataclass
class RunRecord:
    """What a run's data is, built once when the data is loaded: saved as the model's
    ``config.preprocessing`` (:meth:`to_dict`), shown in ``results.json`` and the model card.

    Attributes:
        dataset: what ``--dataset`` takes to find the data again: the registry name, a local
            folder's absolute path, or a Hub dataset repo id.
        dataset_config, preprocessing, audio_duration, num_frames, image_size: the data options
            given (``None``: the dataset's own).
        dataset_revision: the commit a Hub dataset repo resolved to.
        label_column, modality_columns, validation_split_percentage: the options given for a plain
            dataset (its label column, the columns used as modalities, the validation part held out).
        data: the preprocessing record the prepared dataset carries, if any.
        preset: the preset the run started from.
    """

    dataset: str
    dataset_config: Optional[str] = None
    preprocessing: Optional[str] = None
    audio_duration: Optional[float] = None
    num_frames: Optional[int] = None
    image_size: Optional[int] = None
    dataset_revision: Optional[str] = None
    data: Optional[Dict[str, Any]] = None
    preset: Optional[str] = None
    label_column: Optional[str] = None
    modality_columns: Optional[str] = None
    validation_split_percentage: Optional[int] = None

    def to_dict(self) -> Dict[str, Any]:
        """The record as ``config.preprocessing`` stores it (the fields that are set)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> "RunRecord":
        """The record of a ``config.preprocessing`` mapping; ``ValueError`` naming a key that is no field."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(record) - known)
        if unknown:
            raise ValueError(f"preprocessing record: unknown key(s) {unknown}; expected keys among {sorted(known)}")
        return cls(**dict(record))

    @classmethod
    def of_dataset(cls, name: str, ds: Any) -> "RunRecord":
        """The record of an already-built ``DatasetDict`` given for ``name``."""
        return cls(dataset=name, data=dataset_record(ds) or None)


def load_data(data_args: DataArguments, seed: int = 0, model_args: Optional[ModelArguments] = None,
              raw_record: Optional[Mapping[str, Any]] = None, class_names: Optional[Sequence[str]] = None
              ) -> Tuple[Any, Callable, RunRecord]:
    """Load the dataset: ``(DatasetDict, collator, run record)`` (:class:`RunRecord`).

    ``data_args.dataset`` is one of:

    * a name known to :func:`arl_hf.data.load` (built from the raw files, or embedded);
    * a local folder: one written by ``DatasetDict.save_to_disk``, by
      :func:`arl_hf.data.export_prepared`, or any folder ``datasets.load_dataset`` reads
      (Parquet, CSV, JSON, Arrow files...);
    * a Hub dataset repo id ``owner/name`` (``snapshot_download``, so ``HF_HUB_OFFLINE=1``
      works from the cache; ``dataset_revision`` picks a branch, tag or commit), e.g. one
      written by :func:`arl_hf.data.push_prepared`.

    Datasets prepared by ``arl_hf.data`` get their transforms and collator back; for others each
    modality's kind comes from its feature (:mod:`arl_hf.data.features`: ``Image``, ``Audio``,
    ``Video``, ``ArrayND``, number lists), the labels from ``labels`` / ``label`` /
    ``--label_column`` (:func:`normalise_labels`), and the collator applies the raw-data transform
    (:mod:`arl_hf.data.raw`) whose record is ``record.data``: text columns read by the
    tokenizer of an ``hf:`` encoder ``model_args.modality_encoders`` names; ``raw_record`` (a
    saved model's ``config.preprocessing["data"]``) instead of inferring them again; ``class_names``
    (a saved model's classes) maps string and ``ClassLabel`` labels to the model's ids by name. The
    record stores what ``--dataset`` takes to find the data again: the registry name, the
    folder's absolute path, or the repo id and the commit it resolved to.
    """
    plain = {"processors": _hf_processors(model_args), "raw_record": raw_record, "class_names": class_names}
    ds, collator, record = _load(data_args, seed, plain)
    return ds, collator, RunRecord.from_dict(record)


def _load(data_args: DataArguments, seed: int, plain: Optional[Dict[str, Any]] = None
          ) -> Tuple[Any, Callable, Dict[str, Any]]:
    name = data_args.dataset
    record: Dict[str, Any] = {"dataset": name}
    for key in ("dataset_config", "preprocessing", "audio_duration", "num_frames", "image_size", "label_column",
                "modality_columns", "validation_split_percentage"):
        value = getattr(data_args, key)
        if value is not None:
            record[key] = value
    local = os.path.expanduser(str(name))
    if os.path.isdir(local):
        record["dataset"] = os.path.abspath(local)
        return _load_folder(record["dataset"], data_args, record, seed, plain)
    from .data.sharing import is_hub_id

    registry = _registry_names()
    if name not in registry and is_hub_id(name):
        from .data.sharing import resolve_dataset_repo

        folder, revision = resolve_dataset_repo(name, data_args.dataset_revision)
        if revision:
            record["dataset_revision"] = revision
        logger.info("dataset %s: Hub dataset repo at revision %s (%s)", name, revision, folder)
        return _load_folder(folder, data_args, record, seed, plain)
    from .data import MultimodalCollator, load

    available = _registry_names()
    if name not in available:
        close = difflib.get_close_matches(name, available, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"dataset: unknown dataset {name!r}{hint}; expected one of {available}, a local folder (save_to_disk, "
            "export_prepared or data files) or a Hub dataset repo id 'owner/name'"
        )
    ds = load(name, data_dir=data_args.data_dir, config=data_args.dataset_config, cache_dir=data_args.cache_dir,
              preprocessing=data_args.preprocessing, audio_duration=data_args.audio_duration,
              num_frames=data_args.num_frames, image_size=data_args.image_size, seed=seed)
    info = dataset_record(ds)
    if info:
        record["data"] = info
    return ds, MultimodalCollator.from_dataset(ds), record


def _registry_names() -> List[str]:
    from .data import available_datasets

    return list(available_datasets())


def _load_folder(folder: str, data_args: DataArguments, record: Dict[str, Any], seed: int,
                 plain: Optional[Dict[str, Any]] = None                 ) -> Tuple[Any, Callable, Dict[str, Any]]:
    """A local folder (or a downloaded Hub repo): save_to_disk, arl_hf export, or data files."""
    import datasets

    from .data.sharing import read_record

    shown = record["dataset"]
    if os.path.isfile(os.path.join(folder, "dataset_dict.json")):
        ds = datasets.load_from_disk(folder)
        if not isinstance(ds, datasets.DatasetDict):
            raise ValueError(f"dataset: {shown!r} holds a single Dataset; expected a DatasetDict with splits")
    elif read_record(folder)[0] is not None:
        from .data import MultimodalCollator, load_prepared

        ds = load_prepared(folder, cache_dir=data_args.cache_dir, num_frames=data_args.num_frames,
                           image_size=data_args.image_size, seed=seed)
        record["data"] = dataset_record(ds)
        return ds, MultimodalCollator.from_dataset(ds), record
    elif (os.path.isfile(os.path.join(folder, "dataset_info.json"))
          or os.path.isfile(os.path.join(folder, "state.json"))):
        raise ValueError(f"dataset: {shown!r} holds a single Dataset saved with save_to_disk; expected a DatasetDict "
                         "with splits")
    else:
        try:
            ds = datasets.load_dataset(folder, name=data_args.dataset_config, cache_dir=data_args.cache_dir)
        except (FileNotFoundError, ValueError) as e:
            raise ValueError(
                f"dataset: {shown!r} is neither a DatasetDict saved with save_to_disk, nor a folder written by "
                f"arl_hf.data.export_prepared / push_prepared, nor data files datasets.load_dataset reads ({e})"
            ) from None
        if not isinstance(ds, datasets.DatasetDict):
            raise ValueError(f"dataset: {shown!r} loads as a single Dataset; expected splits")
    info = dataset_record(ds)
    if info and str(info.get("format", "")).startswith("arl_hf.data"):
        # a dataset prepared by arl_hf.data and saved to disk: same transforms and collator
        from .data import MultimodalCollator, attach_transforms

        record["data"] = info
        ds = attach_transforms(ds, num_frames=data_args.num_frames, image_size=data_args.image_size, seed=seed)
        return ds, MultimodalCollator.from_dataset(ds), record
    return _load_plain(ds, data_args, record, **(plain or {}))


def _hf_processors(model_args: Optional[ModelArguments]) -> Dict[str, str]:
    """Modality -> checkpoint of the ``hf:`` encoders named by ``--modality_encoders`` (their tokenizer or
    processor reads a text column)."""
    overrides = _parse_mapping(getattr(model_args, "modality_encoders", None), "modality_encoders")
    return {m: enc.partition(":")[2] for m, enc in overrides.items() if enc.startswith("hf:")}


def _load_plain(ds: Any, data_args: DataArguments, record: Dict[str, Any], processors: Optional[Dict[str, str]] = None,
                raw_record: Optional[Mapping[str, Any]] = None, class_names: Optional[Sequence[str]] = None,
                **_: Any) -> Tuple[Any, Callable, Dict[str, Any]]:
    """A plain ``DatasetDict`` (not prepared by arl_hf.data): labels into ``labels`` (class ids), a
    validation split held out of train when asked, and the raw-data collator
    (:meth:`~arl_hf.data.MultimodalCollator.from_dataset`) whose record becomes ``record["data"]``."""
    from .data import MultimodalCollator
    from .data.labels import LABEL_SOURCE, hold_out_validation, normalise_labels

    ds = normalise_labels(ds, data_args.label_column, class_names)
    ds = hold_out_validation(ds, data_args.validation_split_percentage)
    collator = MultimodalCollator.from_dataset(
        ds, label_column="labels", modality_columns=data_args.modality_columns, audio_preset=data_args.preprocessing,
        audio_duration=data_args.audio_duration, num_frames=data_args.num_frames, image_size=data_args.image_size,
        processors=processors, record=raw_record)
    data = dict(collator.record)
    source = getattr(ds, LABEL_SOURCE, None)
    if source:
        data["label"] = {**data["label"], "source": source}
    record["data"] = data
    return ds, collator, record


def dataset_record(ds: Any) -> Optional[Dict[str, Any]]:
    """The preprocessing record a ``DatasetDict`` carries (JSON in ``info.description``), if any."""
    try:
        split = next(iter(ds.values()))
        text = split.info.description
    except Exception:  # optional metadata
        return None
    if not text:
        return None
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def label_names(ds: Any) -> Optional[List[str]]:
    """The class names of the train split's ``labels`` (a ``ClassLabel``), else ``None``."""
    split = ds["train"]
    feature = split.features.get("labels") if hasattr(split, "features") else None
    names = getattr(feature, "names", None)
    return list(names) if names else None


def num_labels(ds: Any) -> int:
    """The number of classes: the ``ClassLabel``'s, else the largest train label + 1."""
    names = label_names(ds)
    if names:
        return len(names)
    labels = ds["train"]["labels"]
    labels = labels.tolist() if hasattr(labels, "tolist") else list(labels)
    return int(max(int(x) for x in labels)) + 1


def check_splits(ds: Any) -> None:
    """``ValueError`` unless there are train and validation splits and every split has ``labels``."""
    if "train" not in ds:
        raise ValueError(f"dataset: no 'train' split (splits: {sorted(ds)})")
    if "validation" not in ds:
        raise ValueError(
            f"dataset: no 'validation' split (splits: {sorted(ds)}); model selection uses the validation split "
            "only, never the test split: hold one out of train with --validation_split_percentage N"
        )
    for split in ds:
        if "labels" not in ds[split].column_names:
            raise ValueError(f"dataset[{split!r}]: no 'labels' column (columns: {ds[split].column_names})")


def truncate(ds: Any, data_args: DataArguments) -> Any:
    """A new ``DatasetDict`` whose splits keep the first ``max_{train,eval,test}_samples`` examples."""
    ds = type(ds)({k: v for k, v in ds.items()})  # never shorten the caller's DatasetDict in place
    limits = {"train": data_args.max_train_samples, "validation": data_args.max_eval_samples,
              "test": data_args.max_test_samples}
    for split, n in limits.items():
        if n is not None and split in ds:
            if n < 1:
                raise ValueError(f"max_{'eval' if split == 'validation' else split}_samples: expected >= 1, got {n}")
            ds[split] = ds[split].select(range(min(n, len(ds[split]))))
    return ds


def prepare_splits(ds: Any, data_args: DataArguments, record: Optional[RunRecord] = None,
                   preset: Optional[str] = None) -> Any:
    """:func:`check_splits` then :func:`truncate`; records ``preset`` (if any) in ``record``."""
    check_splits(ds)
    ds = truncate(ds, data_args)
    if preset and record is not None:
        record.preset = preset
    return ds


def sample_batch(dataset: Any, collator: Callable, n: int = 2) -> Dict[str, Any]:
    """A collated batch of the first ``n`` examples (to read the modality shapes)."""
    n = min(n, len(dataset))
    if n == 0:
        raise ValueError("dataset: the train split is empty")
    return collator([dataset[i] for i in range(n)])


# ------------------------------------------------------------------------------- model
#: the option of :class:`~arl_hf.arguments.ModelArguments` that names the encoder of a modality kind
#: (``"auto"``: the registry's default for the kind); kinds not listed have none
KIND_OPTIONS = {"image": "encoder", "spectrogram": "encoder", "frames": "encoder", "flow": "encoder",
                "vector": "vector_encoder", "sequence": "sequence_encoder"}


def modality_specs(batch: Mapping[str, Any], model_args: ModelArguments,
                   suggested: Optional[Mapping[str, Mapping[str, Any]]] = None,
                   kinds: Optional[Mapping[str, str]] = None) -> Dict[str, Dict[str, Any]]:
    """Encoder spec per modality of a collated batch (every key but the labels).

    Each tensor's modality kind (:mod:`arl_hf.kinds`) is the one the dataset records (``kinds``)
    when its rank and dtype fit, else the one its rank and dtype imply (``(B, D)`` vector,
    ``(B, L, D)`` sequence, ``(B, C, H, W)`` image, ``(B, T, C, H, W)`` frames, integer
    ``(B, 2, L)`` tokens). Its encoder: ``model_args.modality_encoders`` for the modality, else
    the option of the kind (:data:`KIND_OPTIONS`: ``--encoder`` for image-like kinds,
    ``--vector_encoder``, ``--sequence_encoder``), else the encoder ``suggested`` for the
    modality (the dataset's record, see
    :meth:`~arl_hf.data.PreprocessingRecord.suggested_encoders`), else the registry's default for
    the kind (``timm:resnet18`` for image-like kinds, ``mlp`` for vectors, ``transformer`` for
    sequences); ``"auto"`` asks for that default. The encoder's family must take the kind and
    gives the rest of the spec (``in_chans``, ``input_dim``, ``hidden_dims``...).
    """
    from .kinds import KINDS, describe_kinds, dtype_class, kind_of_input
    from .modeling.encoders import default_encoder, encoder_spec_for_input

    overrides = _parse_mapping(model_args.modality_encoders, "modality_encoders")
    modalities = [k for k in batch if k not in ("labels", "label", "label_ids")]
    unknown = [m for m in overrides if m not in modalities]
    if unknown:
        raise ValueError(f"modality_encoders: {unknown[0]!r} is not a modality of the dataset {modalities}")
    specs: Dict[str, Dict[str, Any]] = {}
    for m in modalities:
        x = batch[m]
        if not isinstance(x, (torch.Tensor, Mapping)):
            raise ValueError(f"{m}: the collator returned {type(x).__name__}, expected a tensor or a dict of named "
                             "inputs (input_ids, attention_mask, pixel_values...)")
        kind = kind_of_input(x, (kinds or {}).get(m))
        if kind is None:
            inferred = [k for k, v in KINDS.items() if v.inferred]
            raise ValueError(f"{m}: unsupported input of shape {tuple(x.shape)} and dtype {dtype_class(x)}; "
                             f"expected (B, ...) inputs of a kind: {describe_kinds(inferred)}")
        option = KIND_OPTIONS.get(kind)
        flag = getattr(model_args, option, None) if option else None
        enc = overrides.get(m) or (None if flag == "auto" else flag)
        if not enc and flag != "auto":
            enc = (suggested or {}).get(m, {}).get("encoder")
        enc = enc or default_encoder(kind)
        if not enc:
            raise ValueError(f"{m}: no registered encoder family takes {describe_kinds([kind])} inputs by default; "
                             f"name one with --modality_encoders {m}=<encoder>")
        shape = tuple(x.shape[1:]) if isinstance(x, torch.Tensor) else ()  # named inputs: the encoder's own
        specs[m] = encoder_spec_for_input(m, str(enc), kind, shape, model_args)
    if not specs:
        raise ValueError(f"dataset: the collated batch has no modality columns (keys: {sorted(batch)})")
    return specs


def modality_summary(batch: Mapping[str, Any], config: Any,
                     preprocessing: Optional[Union[RunRecord, Mapping[str, Any]]] = None) -> List[str]:
    """One line per modality of a built model (its input: column and feature of a plain dataset, kind,
    per-example shape; its encoder), then one per column of a plain dataset that was renamed or ignored."""
    from .kinds import kind_of_input

    if isinstance(preprocessing, RunRecord):
        preprocessing = preprocessing.to_dict()
    data = (preprocessing or {}).get("data") or {}
    raw = (data.get("modalities") or {}) if str(data.get("format", "")).startswith("arl_hf.raw") else {}
    recorded = _recorded_kinds(preprocessing)
    lines = []
    for m, spec in config.modalities.items():
        x = batch.get(m)
        kind = kind_of_input(x, recorded.get(m)) if isinstance(x, torch.Tensor) else recorded.get(m, "?")
        dims = [str(d) for d in x.shape[1:]] if isinstance(x, torch.Tensor) else []
        if kind == "sequence" and dims:  # the length varies from batch to batch
            dims[0] = "L"
        shape = f" ({', '.join(dims)})" if dims else ""
        source = f"column {raw[m]['column']!r} {raw[m]['feature']} -> " if m in raw else ""
        lines.append(f"modality {m}: {source}{kind}{shape}, encoder {spec.get('encoder')} "
                     f"(--modality_encoders {m}=<encoder> to change)")
    for column, name in (data.get("renamed") or {}).items():
        lines.append(f"column {column!r}: renamed {name!r} (a modality name cannot hold '.')")
    for column, why in (data.get("ignored") or {}).items():
        lines.append(f"column {column!r}: ignored ({why})")
    return lines


def build_model(
    batch: Mapping[str, Any],
    num_labels: int,
    model_args: ModelArguments,
    preprocessing: Optional[Union[RunRecord, Mapping[str, Any]]] = None,
    label_names: Optional[Sequence[str]] = None,
):
    """A new :class:`~arl_hf.MultimodalModel` for the modalities of ``batch`` (or the checkpoint
    of ``model_args.model_name_or_path``), with ``config.preprocessing`` recorded (the run
    record, :class:`RunRecord`, or a mapping)."""
    from transformers import AutoModel

    from .modeling import MultimodalConfig, MultimodalModel, load_backbone_weights

    if isinstance(preprocessing, RunRecord):
        preprocessing = preprocessing.to_dict()

    if model_args.model_name_or_path:
        model = AutoModel.from_pretrained(model_args.model_name_or_path)
        if getattr(model.config, "num_labels", None) != num_labels:
            raise ValueError(
                f"model_name_or_path: checkpoint has {model.config.num_labels} labels, the dataset {num_labels}"
            )
        if preprocessing is not None:
            model.config.preprocessing = dict(preprocessing)
        return model
    specs = modality_specs(batch, model_args, _suggested_encoders(preprocessing), _recorded_kinds(preprocessing))
    kwargs: Dict[str, Any] = {}
    if label_names:
        kwargs["id2label"] = {i: n for i, n in enumerate(label_names)}
        kwargs["label2id"] = {n: i for i, n in enumerate(label_names)}
    config = MultimodalConfig(
        modalities=specs,
        num_labels=num_labels,
        fusion=model_args.fusion,
        init=model_args.init,
        preprocessing=dict(preprocessing) if preprocessing else None,
        **kwargs,
    )
    model = MultimodalModel(config)
    for m, path in _parse_mapping(model_args.pretrained_weights, "pretrained_weights").items():
        if m not in specs:
            raise ValueError(f"pretrained_weights: {m!r} is not a modality of the dataset {list(specs)}")
        load_backbone_weights(model, m, path)
    return model


def _recorded_kinds(record: Optional[Mapping[str, Any]]) -> Dict[str, str]:
    """Modality -> the kind a run record's dataset (``record["data"]``) records for it, if any."""
    data = (record or {}).get("data")
    mods = data.get("modalities") if isinstance(data, Mapping) else None
    if not isinstance(mods, Mapping):
        return {}
    return {str(m): str(s["kind"]) for m, s in mods.items() if isinstance(s, Mapping) and "kind" in s}


def _suggested_encoders(record: Optional[Mapping[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """The encoder suggestions of a run record's dataset (``record["data"]``), if it has one."""
    data = (record or {}).get("data")
    if not data:
        return {}
    from .data.features import is_raw_record
    from .data.record import PreprocessingRecord

    if is_raw_record(data):  # a plain dataset: the kinds' default encoders
        return {}

    try:
        return PreprocessingRecord.from_dict(data).suggested_encoders()
    except ValueError as e:  # a record of another format: no suggestion
        logger.warning("dataset record gives no encoder suggestion (%s)", e)
        return {}
