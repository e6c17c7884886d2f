"""Share a prepared dataset: a local Parquet export or a Hub dataset repo, each carrying the
preprocessing record in its dataset card.

* ``export_prepared(dsd, folder)`` writes ``data/<split>.parquet`` (features embedded in the
  Parquet schema), ``arl_hf_preprocessing.json`` (the record, the features, the builder
  configuration) and a ``README.md`` :class:`~huggingface_hub.DatasetCard` whose YAML has
  ``configs`` / ``dataset_info`` (so plain ``datasets.load_dataset(folder)`` works) and the
  record under ``arl_hf_preprocessing``.
* ``push_prepared(dsd, repo_id)`` uploads through ``DatasetDict.push_to_hub`` (Parquet
  shards, ``configs`` and ``dataset_info`` written by ``datasets``), then pushes the card
  with the record added (:func:`dataset_card`).
* ``load_prepared(folder_or_repo)`` reads either back with ``datasets.load_dataset`` (a repo
  is fetched with ``snapshot_download``, so ``HF_HUB_OFFLINE=1`` works from the cache) and
  restores the record into ``info.description``: another user trains on identical
  features without rebuilding. ``--dataset`` of the training script accepts both.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, Optional, Tuple

from ..log import get_logger

logger = get_logger(__name__)

__all__ = [
    "RECORD_FILE",
    "RECORD_KEY",
    "dataset_card",
    "export_prepared",
    "is_hub_id",
    "load_prepared",
    "push_prepared",
    "read_record",
    "resolve_dataset_repo",
]

RECORD_FILE = "arl_hf_preprocessing.json"
#: key of the record in the dataset card's YAML metadata
RECORD_KEY = "arl_hf_preprocessing"
#: key of the builder configuration (name, version) in the card's YAML metadata
BUILD_KEY = "arl_hf_build"
SPLITS = ("train", "validation", "test")

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def is_hub_id(name: str) -> bool:
    """``owner/name`` that is not an existing local path: a Hub repo id."""
    return bool(_HUB_ID.fullmatch(str(name))) and not os.path.exists(os.path.expanduser(str(name)))


def _raw(ds):
    """The dataset without the on-the-fly transform (the stored columns)."""
    return ds.with_format(None)


def _check_splits(dataset_dict: Any) -> None:
    missing = [s for s in SPLITS if s not in dataset_dict]
    if missing:
        raise ValueError(f"dataset_dict: missing splits {missing}; expected {list(SPLITS)}")
    features = dataset_dict["train"].features
    for split in SPLITS:
        if dataset_dict[split].features != features:
            raise ValueError(f"dataset_dict[{split!r}]: features differ from the train split's")


def _card_text(record: Dict[str, Any], num_labels: Optional[int], where: str) -> str:
    from .record import preprocessing_text

    preset = record.get("audio_preset") or {}
    lines = [f"# {record.get('dataset')} (prepared with arl_hf.data)", ""]
    lines.append(f"Preprocessing: {preprocessing_text({'data': record}) or 'see the record below'}.")
    if preset.get("name"):
        lines.append(f"Audio preset `{preset.get('name')}` v{preset.get('version')}.")
    if num_labels:
        lines.append(f"Labels: {num_labels} classes.")
    lines += [
        "",
        f"The full preprocessing record (preset parameters, frames, splits, seeds) is the `{RECORD_KEY}` entry of "
        "this card's metadata.",
        "",
        "```python",
        "from arl_hf.data import load_prepared",
        f'dsd = load_prepared("{where}")   # train / validation / test with the record and the transforms',
        "```",
        "",
        f"or train on it directly: `arl-hf train --dataset {where}`; plain `datasets.load_dataset(...)` reads the "
        "Parquet files.",
        "",
    ]
    return "\n".join(lines)


def dataset_card(dataset_dict: Any, where: str, data: Any = None) -> "DatasetCard":  # noqa: F821
    """The dataset card of a prepared dataset: the metadata ``data`` (a ``DatasetCardData``,
    e.g. with the ``configs`` and ``dataset_info`` that ``push_to_hub`` wrote) plus the record
    (``arl_hf_preprocessing``), the builder configuration, tags, and a text saying how to load
    it from ``where`` (the folder or repo id)."""
    from huggingface_hub import DatasetCard, DatasetCardData

    from .catalog import preprocessing_info

    record = json.loads(json.dumps(preprocessing_info(dataset_dict)))
    first = _first_split(dataset_dict)
    data = data if data is not None else DatasetCardData()
    data[RECORD_KEY] = record
    data[BUILD_KEY] = {"config_name": first.info.config_name,
                       "version": str(first.info.version) if first.info.version else None}
    tags = list(data.get("tags") or [])
    for tag in ("arl-hf", "multimodal", str(record.get("dataset") or "")):
        if tag and tag not in tags:
            tags.append(tag)
    data["tags"] = tags
    labels = first.features.get("labels")
    text = _card_text(record, len(labels.names) if getattr(labels, "names", None) else None, where)
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{text}")


def _first_split(dataset_dict: Any):
    return dataset_dict["train"] if "train" in dataset_dict else next(iter(dataset_dict.values()))


def export_prepared(dataset_dict: Any, folder: str) -> str:
    """Write a built ``DatasetDict`` as a self-describing Parquet folder; returns the folder.

    Raises:
        ValueError: the dataset has no arl_hf preprocessing record or lacks a split.
    """
    import datasets
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCardData

    from .catalog import preprocessing_info

    record = preprocessing_info(dataset_dict)
    _check_splits(dataset_dict)
    os.makedirs(os.path.join(folder, "data"), exist_ok=True)
    first = dataset_dict["train"]
    features = first.features
    for split in SPLITS:
        _raw(dataset_dict[split]).to_parquet(os.path.join(folder, "data", f"{split}.parquet"))
    full = dict(record, features=features.to_dict(), config_name=first.info.config_name,
                version=str(first.info.version) if first.info.version else None)
    from ..safety import atomic_write_json

    atomic_write_json(os.path.join(folder, RECORD_FILE), full, indent=1, sort_keys=True)
    data = DatasetCardData()
    MetadataConfigs({"default": {"data_files": [{"split": s, "path": f"data/{s}.parquet"} for s in SPLITS]}}) \
        .to_dataset_card_data(data)
    DatasetInfosDict({"default": datasets.DatasetInfo(features=features)}).to_dataset_card_data(data)
    dataset_card(dataset_dict, folder, data).save(os.path.join(folder, "README.md"))
    logger.info("exported %s to %s", record.get("dataset"), folder)
    return folder


def push_prepared(dataset_dict: Any, repo_id: str, *, private: Optional[bool] = None, token: Optional[str] = None,
                  revision: Optional[str] = None,
                  commit_message: str = "Upload dataset prepared with arl_hf.data", **push_kwargs: Any) -> str:
    """Upload a built ``DatasetDict`` as a Hub dataset repo; returns the repo id.

    ``DatasetDict.push_to_hub`` writes the Parquet shards and the card's ``configs`` /
    ``dataset_info``; the card is then pushed again with the preprocessing record
    (:func:`dataset_card`). Other users call ``load_prepared(repo_id)`` or train with
    ``--dataset repo_id``. ``push_kwargs`` go to ``push_to_hub`` (``max_shard_size``, ...).
    """
    import datasets
    from huggingface_hub import DatasetCard, hf_hub_download

    from .catalog import preprocessing_info

    preprocessing_info(dataset_dict)
    if not _HUB_ID.fullmatch(str(repo_id)):
        raise ValueError(f"repo_id: expected a Hub repo id 'owner/name', got {repo_id!r}")
    _check_splits(dataset_dict)
    raw = datasets.DatasetDict({s: _raw(dataset_dict[s]) for s in SPLITS})
    raw.push_to_hub(repo_id, private=private, token=token, revision=revision, commit_message=commit_message,
                    **push_kwargs)
    # the card push_to_hub wrote (configs, dataset_info), with the record added
    pushed = DatasetCard.load(hf_hub_download(repo_id, "README.md", repo_type="dataset", revision=revision,
                                              token=token))
    dataset_card(dataset_dict, repo_id, pushed.data).push_to_hub(
        repo_id, repo_type="dataset", token=token, revision=revision,
        commit_message="Dataset card: arl_hf preprocessing record")
    logger.info("pushed %s to the Hub dataset repo %s", preprocessing_info(dataset_dict).get("dataset"), repo_id)
    return repo_id


def resolve_dataset_repo(repo_id: str, revision: Optional[str] = None) -> Tuple[str, Optional[str]]:
    """Local folder of a Hub dataset repo (``snapshot_download``; the cache under
    ``HF_HUB_OFFLINE=1``) and the commit it resolved to."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    from ..safety import check_revision

    check_revision(revision, "dataset_revision")  # joined to cache paths: '../x' would leave the cache
    try:
        folder = snapshot_download(repo_id=repo_id, repo_type="dataset", revision=revision)
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as e:
        raise FileNotFoundError(
            f"dataset: {repo_id!r} is not a local folder, and the Hub dataset repo is not reachable nor in the "
            f"local cache ({type(e).__name__}); download it first or pass a local folder") from None
    except HfHubHTTPError as e:
        raise FileNotFoundError(f"dataset: Hub dataset repo {repo_id!r} could not be fetched: {e}") from None
    sha = os.path.basename(os.path.normpath(folder))
    return folder, sha if re.fullmatch(r"[0-9a-f]{40}", sha) else revision


def read_record(folder: str) -> Tuple[Optional[Dict[str, Any]], Dict[str, Any]]:
    """``(record, build)`` of a prepared folder: the card's ``arl_hf_preprocessing`` (else
    ``arl_hf_preprocessing.json``) and the builder configuration / features; ``(None, {})``
    when the folder holds no record."""
    from huggingface_hub import DatasetCard

    readme = os.path.join(folder, "README.md")
    if os.path.isfile(readme):
        data = DatasetCard.load(readme).data.to_dict()
        if isinstance(data.get(RECORD_KEY), dict):
            return dict(data[RECORD_KEY]), dict(data.get(BUILD_KEY) or {})
    path = os.path.join(folder, RECORD_FILE)
    if os.path.isfile(path):
        with open(path) as fh:
            full = json.load(fh)
        build = {k: full.pop(k, None) for k in ("features", "config_name", "version")}
        return full, build
    return None, {}


def load_prepared(path_or_repo: str, *, cache_dir: Optional[str] = None, transform: bool = False,
                  num_frames: Optional[int] = None, image_size: Optional[int] = None, seed: int = 0,
                  revision: Optional[str] = None):
    """Reload a folder written by :func:`export_prepared` or a Hub dataset repo written by
    :func:`push_prepared`, with ``datasets.load_dataset``.

    The record is put back into each split's ``info.description``, so
    :func:`preprocessing_info`, :func:`modality_spec` and the collator work as on a freshly
    built dataset; recorded features are checked. Like :func:`arl_hf.data.load`, the splits hold
    the stored columns (``transform=True`` binds the transforms) and ``num_frames`` /
    ``image_size`` / ``seed`` are the transform settings kept for ``MultimodalCollator.from_dataset``.

    Raises:
        FileNotFoundError: no such folder or repo / no record in it / a missing split.
        ValueError: the Parquet features differ from the recorded ones.
    """
    import datasets

    from .catalog import finish
    from .record import PreprocessingRecord

    folder = os.path.expanduser(str(path_or_repo))
    if not os.path.isdir(folder):
        if not is_hub_id(path_or_repo):
            raise FileNotFoundError(f"prepared dataset folder not found: {path_or_repo} "
                                    "(and it is not a Hub repo id 'owner/name')")
        folder, _ = resolve_dataset_repo(path_or_repo, revision)
    record, build = read_record(folder)
    if record is None:
        raise FileNotFoundError(f"{folder}: no arl_hf preprocessing record (neither '{RECORD_KEY}' in README.md "
                                f"nor {RECORD_FILE}); expected a folder written by arl_hf.data.export_prepared or "
                                "a repo written by push_prepared")
    dsd = datasets.load_dataset(folder, cache_dir=cache_dir)
    missing = [s for s in SPLITS if s not in dsd]
    if missing:
        raise FileNotFoundError(f"prepared dataset {path_or_repo}: split(s) {missing} not found "
                                f"(found {sorted(dsd)})")
    features = datasets.Features.from_dict(build["features"]) if build.get("features") else None
    description = PreprocessingRecord.from_dict(record).to_json()
    out = {}
    for s in SPLITS:
        ds = dsd[s]
        if features is not None and ds.features != features:
            raise ValueError(f"{path_or_repo} [{s}]: features {ds.features} differ from the recorded {features}")
        ds.info.description = description
        ds.info.config_name = build.get("config_name")
        if build.get("version"):
            ds.info.version = datasets.Version(build["version"])
        out[s] = ds
    return finish(datasets.DatasetDict(out), transform, num_frames=num_frames, image_size=image_size, seed=seed)
