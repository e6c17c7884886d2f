"""Share a prepared dataset: Parquet export (+ Hub upload) that carries the preprocessing record.

``export_prepared(dsd, folder)`` writes ``data/<split>.parquet`` (features embedded in the
Parquet schema), ``arl_hf_preprocessing.json`` (the record: preset name and parameters,
frames, splits, seeds, and the features) and a ``README.md`` dataset card whose YAML has
``configs`` / ``dataset_info`` (so plain ``datasets.load_dataset(folder)`` works) and the
record under ``arl_hf_preprocessing``. ``load_prepared(folder_or_repo)`` reloads it with the
record restored into ``info.description``: another user trains on identical features
without rebuilding. ``push_prepared`` uploads the same folder to the Hub.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from typing import Any, Optional

from ..log import get_logger

logger = get_logger(__name__)

__all__ = ["RECORD_FILE", "export_prepared", "load_prepared", "push_prepared"]

RECORD_FILE = "arl_hf_preprocessing.json"
SPLITS = ("train", "validation", "test")


def _raw(ds):
    """The dataset without the on-the-fly transform (the stored columns)."""
    return ds.with_format(None)


def export_prepared(dataset_dict: Any, folder: str) -> str:
    """Write a built ``DatasetDict`` as a self-describing Parquet folder; returns the folder.

    Raises:
        ValueError: the dataset has no arl_hf preprocessing record or lacks a split.
    """
    import datasets
    import yaml

    from .registry import preprocessing_info

    record = preprocessing_info(dataset_dict)
    missing = [s for s in SPLITS if s not in dataset_dict]
    if missing:
        raise ValueError(f"dataset_dict: missing splits {missing}; expected {list(SPLITS)}")
    os.makedirs(os.path.join(folder, "data"), exist_ok=True)
    first = dataset_dict["train"]
    features = first.features
    for split in SPLITS:
        ds = _raw(dataset_dict[split])
        if ds.features != features:
            raise ValueError(f"dataset_dict[{split!r}]: features differ from the train split's")
        ds.to_parquet(os.path.join(folder, "data", f"{split}.parquet"))
    full = dict(record, features=features.to_dict(), config_name=first.info.config_name,
                version=str(first.info.version) if first.info.version else None)
    with open(os.path.join(folder, RECORD_FILE), "w") as fh:
        json.dump(full, fh, indent=1, sort_keys=True)
    info = datasets.DatasetInfo(features=features, config_name=first.info.config_name or "default")
    card_yaml = {
        "configs": [{"config_name": "default",
                     "data_files": [{"split": s, "path": f"data/{s}.parquet"} for s in SPLITS]}],
        "dataset_info": info._to_yaml_dict(),
        "arl_hf_preprocessing": json.loads(json.dumps(record)),
        "tags": ["arl-hf", "multimodal", record.get("dataset", "")],
    }
    card_yaml["dataset_info"].pop("config_name", None)
    preset = record.get("audio_preset") or {}
    body = (
        f"# {record.get('dataset')} (prepared with arl_hf.data)\n\n"
        f"Audio preset: `{preset.get('name')}` v{preset.get('version')}; "
        f"labels: {len(features['labels'].names)} classes.\n\n"
        "Load with `arl_hf.data.load_prepared(<this folder or repo>)` (restores the preprocessing record "
        f"from `{RECORD_FILE}`) or `datasets.load_dataset(...)`.\n"
    )
    with open(os.path.join(folder, "README.md"), "w") as fh:
        fh.write("---\n" + yaml.safe_dump(card_yaml, sort_keys=False) + "---\n\n" + body)
    logger.info("exported %s to %s", record.get("dataset"), folder)
    return folder


def load_prepared(path_or_repo: str, *, cache_dir: Optional[str] = None, transform: bool = True,
                  num_frames: Optional[int] = None, image_size: Optional[int] = None, seed: int = 0,
                  revision: Optional[str] = None):
    """Reload a folder written by :func:`export_prepared` (or a Hub dataset repo holding one).

    The features are checked against the record and the record is put back into each
    split's ``info.description``, so :func:`preprocessing_info`, :func:`modality_spec` and the
    collator work as on a freshly built dataset.

    Raises:
        FileNotFoundError: no such folder / no record file in it.
        ValueError: the Parquet features differ from the recorded ones.
    """
    import datasets

    from .registry import attach_transforms

    folder = path_or_repo
    if not os.path.isdir(folder):
        if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", path_or_repo):
            raise FileNotFoundError(f"prepared dataset folder not found: {path_or_repo} "
                                    "(and it is not a Hub repo id 'owner/name')")
        from huggingface_hub import snapshot_download

        folder = snapshot_download(repo_id=path_or_repo, repo_type="dataset", revision=revision)
    record_path = os.path.join(folder, RECORD_FILE)
    if not os.path.isfile(record_path):
        raise FileNotFoundError(f"{record_path}: no arl_hf preprocessing record; expected a folder written by "
                                "arl_hf.data.export_prepared")
    with open(record_path) as fh:
        full = json.load(fh)
    features = datasets.Features.from_dict(full.pop("features"))
    config_name = full.pop("config_name", None)
    version = full.pop("version", None)
    files = {s: os.path.join(folder, "data", f"{s}.parquet") for s in SPLITS}
    for s, f in files.items():
        if not os.path.isfile(f):
            raise FileNotFoundError(f"prepared dataset: {s} split file not found: {f}")
    dsd = datasets.load_dataset("parquet", data_files=files, cache_dir=cache_dir)
    description = json.dumps(full, sort_keys=True)
    out = {}
    for s in SPLITS:
        ds = dsd[s]
        if ds.features != features:
            raise ValueError(f"{files[s]}: features {ds.features} differ from the recorded {features}")
        ds.info.description = description
        ds.info.config_name = config_name
        if version:
            ds.info.version = datasets.Version(version)
        out[s] = ds
    dsd = datasets.DatasetDict(out)
    if transform:
        dsd = attach_transforms(dsd, num_frames=num_frames, image_size=image_size, seed=seed)
    return dsd


def push_prepared(dataset_dict: Any, repo_id: str, *, private: bool = False, token: Optional[str] = None,
                  commit_message: str = "Upload dataset prepared with arl_hf.data") -> str:
    """Export to a temporary folder and upload it as a Hub dataset repo; returns the repo id.

    Other users then call ``load_prepared(repo_id)``. Needs network access and a token.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="arl_hf_export_") as tmp:
        export_prepared(dataset_dict, tmp)
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(folder_path=tmp, repo_id=repo_id, repo_type="dataset", commit_message=commit_message)
    return repo_id
