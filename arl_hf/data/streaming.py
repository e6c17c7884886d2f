"""Training from sharded Parquet, streamed: for benchmarks that do not fit on one disk.

Two steps:

1. ``export_shards(dataset_dict, folder, num_shards=...)`` writes each split of a dataset built
   by :func:`arl_hf.data.load` as ``data/<split>-<i>-of-<n>.parquet`` (equal row counts per
   shard, frames embedded as their encoded bytes, the ``datasets`` features in the Parquet
   schema), the preprocessing record (``arl_hf_preprocessing.json``, as
   :func:`arl_hf.data.export_prepared`) and a dataset card whose ``configs`` name the shards, so
   the folder (or a Hub repo holding it) also loads with plain ``datasets.load_dataset``.
2. ``stream_split(folder, "train")`` streams one split back:
   ``datasets.load_dataset("parquet", data_files=..., streaming=True)``; frame columns cast to
   ``Image(decode=False)`` (public ``datasets`` API: frames stay encoded until the transform picks
   and decodes the ones it uses); under DDP ``split_dataset_by_node(..., strategy="shards")``, so
   each rank reads only its own shards; the record's :class:`MultimodalTransform` applied lazily
   (``IterableDataset.map``, batched), exactly as on the cached dataset.

Pitfalls handled here and in :class:`arl_hf.ARLTrainer`:

* **Uneven shards.** Ranks with different numbers of examples per epoch run different numbers
  of steps per epoch: epoch-boundary work (evaluation, checkpoints, the strategies' per-epoch
  statistics, all collective) then meets a rank still training and hangs. ``stream_split``
  requires the shard count to be a multiple of the world size and equal shard sizes
  (``uneven="error"``), or truncates every rank to the smallest share (``uneven="truncate"``).
* **dispatch_batches.** For an ``IterableDataset`` accelerate defaults to
  ``dispatch_batches=True``: rank 0 reads and broadcasts, so with ``split_dataset_by_node`` the
  other ranks' shards are never read. ``ARLTrainer`` raises unless
  ``accelerator_config={"dispatch_batches": False}``.
* **Double sharding.** With ``dispatch_batches=False`` accelerate shards a ``datasets``
  ``IterableDataset`` again (``.shard(num_processes, rank)``): a split already split by node
  would lose half of its shards (measured: 20 of 40 examples seen on 2 ranks). ``ARLTrainer``
  prepares such a loader without re-sharding it.
* **max_steps.** A stream has no length: ``Trainer`` needs ``max_steps``
  (:func:`steps_per_epoch` gives the count per epoch).
"""

from __future__ import annotations

import glob
import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from ..log import get_logger
from ..safety import atomic_write_json, remove_path

logger = get_logger(__name__)

__all__ = ["export_shards", "shard_files", "shard_rows", "stream_split", "steps_per_epoch", "undecoded_features"]

SPLITS = ("train", "validation", "test")


def _pattern(split: str) -> str:
    return f"data/{split}-*-of-*.parquet"


def export_shards(dataset_dict: Any, folder: str, num_shards: Union[int, Mapping[str, int]] = 8) -> str:
    """Write a built ``DatasetDict`` as sharded Parquet for :func:`stream_split`; returns ``folder``.

    Args:
        dataset_dict: a ``DatasetDict`` from :func:`arl_hf.data.load` / ``load_prepared`` (with
            its preprocessing record), transforms attached or not.
        folder: output folder (created).
        num_shards: shards per split (an int for every split, or ``{split: n}``). For streaming
            on ``W`` ranks pick a multiple of ``W`` and, for equal shards, a divisor of the
            split's size (otherwise shards differ by one row and :func:`stream_split` asks for
            ``uneven="truncate"``).

    Raises:
        ValueError: no preprocessing record, a split missing, a shard count < 1 or larger than
            the split.
    """
    import yaml

    from .catalog import preprocessing_info
    from .sharing import RECORD_FILE

    record = preprocessing_info(dataset_dict)
    missing = [s for s in SPLITS if s not in dataset_dict]
    if missing:
        raise ValueError(f"dataset_dict: missing splits {missing}; expected {list(SPLITS)}")
    counts = {s: int(num_shards[s] if isinstance(num_shards, Mapping) else num_shards) for s in SPLITS}
    features = dataset_dict["train"].with_format(None).features
    os.makedirs(os.path.join(folder, "data"), exist_ok=True)
    for split in SPLITS:
        ds = dataset_dict[split].with_format(None)
        n = counts[split]
        if n < 1 or n > len(ds):
            raise ValueError(f"num_shards[{split!r}]: expected an int in [1, {len(ds)}] (the split's rows), got {n}")
        if ds.features != features:
            raise ValueError(f"dataset_dict[{split!r}]: features differ from the train split's")
        for old in glob.glob(os.path.join(folder, _pattern(split))):
            remove_path(old, folder, "folder")
        for i in range(n):
            ds.shard(num_shards=n, index=i, contiguous=True).to_parquet(
                os.path.join(folder, "data", f"{split}-{i:05d}-of-{n:05d}.parquet"))
    first = dataset_dict["train"]
    full = dict(record, features=features.to_dict(), config_name=first.info.config_name,
                version=str(first.info.version) if first.info.version else None)
    atomic_write_json(os.path.join(folder, RECORD_FILE), full, indent=1, sort_keys=True)
    card = {"configs": [{"config_name": "default",
                         "data_files": [{"split": s, "path": _pattern(s)} for s in SPLITS]}],
            "arl_hf_preprocessing": json.loads(json.dumps(record)),
            "tags": ["arl-hf", "multimodal", record.get("dataset", "")]}
    body = (f"# {record.get('dataset')} (sharded for streaming with arl_hf.data)\n\n"
            + ", ".join(f"{s}: {counts[s]} shards" for s in SPLITS) + ".\n\n"
            "Stream with `arl_hf.data.streaming.stream_split(<this folder>, 'train')`, or "
            "`datasets.load_dataset(<this folder>, streaming=True)`.\n")
    with open(os.path.join(folder, "README.md"), "w") as fh:
        fh.write("---\n" + yaml.safe_dump(card, sort_keys=False) + "---\n\n" + body)
    logger.info("exported %s to %s as %s", record.get("dataset"), folder, counts)
    return folder


def shard_files(folder: str, split: str) -> List[str]:
    """The Parquet shards of ``split`` written by :func:`export_shards`, in order.

    Raises:
        FileNotFoundError: none found.
    """
    files = sorted(glob.glob(os.path.join(folder, _pattern(split))))
    if not files:
        raise FileNotFoundError(f"{os.path.join(folder, _pattern(split))}: no shards of split {split!r} "
                                "(expected a folder written by arl_hf.data.streaming.export_shards)")
    return files


def shard_rows(folder: str, split: str) -> List[int]:
    """Rows of each shard of ``split``, from the Parquet footers (nothing else is read)."""
    import pyarrow.parquet as pq

    return [int(pq.read_metadata(f).num_rows) for f in shard_files(folder, split)]


def _world(rank: Optional[int], world_size: Optional[int]):
    import torch.distributed as dist

    if world_size is None:
        if dist.is_available() and dist.is_initialized():
            world_size = dist.get_world_size()
        else:
            world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if rank is None:
        if dist.is_available() and dist.is_initialized():
            rank = dist.get_rank()
        else:
            rank = int(os.environ.get("RANK", "0"))
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank: expected 0 <= rank < world_size, got rank {rank} and world_size {world_size}")
    return int(rank), int(world_size)


def _rows_per_rank(rows: Sequence[int], world_size: int, uneven: str, split: str) -> int:
    """Examples every rank gets per epoch (the same on each)."""
    n = len(rows)
    if n % world_size != 0:
        raise ValueError(
            f"{split}: {n} shards cannot be split evenly over {world_size} processes (split_dataset_by_node gives "
            "each rank whole shards); re-export with num_shards a multiple of the world size")
    per = n // world_size
    if len(set(rows)) == 1:
        return rows[0] * per
    if uneven == "error":
        raise ValueError(
            f"uneven: the {split} shards hold different numbers of rows ({sorted(set(rows))}), so ranks would run "
            "different numbers of steps per epoch and the epoch-boundary collectives would hang; re-export with a "
            "num_shards that divides the split, or pass uneven='truncate' (every rank stops at the smallest share)")
    return sum(sorted(rows)[:per])  # a share no rank can fall below, whichever shards it got


def undecoded_features(features: Any) -> Any:
    """``features`` with every ``Image`` (nested in lists and dicts too) set to ``decode=False``."""
    import datasets

    def walk(f):
        if isinstance(f, datasets.Image):
            return datasets.Image(decode=False)
        if isinstance(f, datasets.List):
            return datasets.List(walk(f.feature), length=f.length)
        if isinstance(f, datasets.LargeList):
            return datasets.LargeList(walk(f.feature))
        if isinstance(f, dict):
            return type(f)({k: walk(v) for k, v in f.items()})
        return f

    return walk(features)


def _shard_rows(files: List[str], features: Dict[str, Any]):
    """The rows of Parquet shards, read a record batch at a time: fixed-shape ``ArrayXD`` columns as
    NumPy views of the batch, image columns as undecoded ``{"bytes", "path"}`` records, the other
    columns as Python values (what ``datasets`` streams with the images undecoded)."""
    import datasets
    import pyarrow.parquet as pq

    from .batches import _is_array_xd, fixed_shape_arrays

    feats = datasets.Features.from_dict(features)
    columns = list(feats)
    for path in files:
        for rb in pq.ParquetFile(path).iter_batches(batch_size=256, columns=columns):
            values = {}
            for c in columns:
                arr = fixed_shape_arrays(rb.column(c), feats[c].shape) if _is_array_xd(feats[c]) else None
                values[c] = arr if arr is not None else rb.column(c).to_pylist()
            for i in range(rb.num_rows):
                yield {c: values[c][i] for c in columns}


class _KeepColumns:
    """The transform's output plus some raw columns (e.g. ``id``) passed through unchanged."""

    def __init__(self, transform, keep: Sequence[str]):
        self.transform, self.keep = transform, list(keep)

    def __call__(self, batch: Dict[str, List[Any]]) -> Dict[str, List[Any]]:
        out = self.transform(batch)
        for k in self.keep:
            out[k] = list(batch[k])
        return out


def stream_split(folder: str, split: str = "train", *, transform: bool = True, num_frames: Optional[int] = None,
                 image_size: Optional[int] = None, seed: int = 0, pool_sequences: bool = True,
                 rank: Optional[int] = None, world_size: Optional[int] = None, uneven: str = "error",
                 shuffle_buffer: int = 0, shuffle_seed: int = 0, keep_columns: Sequence[str] = (),
                 map_batch_size: int = 16, decode_frames: str = "cpu"):
    """Stream one split of an :func:`export_shards` folder as a ``datasets.IterableDataset``.

    Args:
        folder: the exported folder.
        split: ``train``, ``validation`` or ``test``.
        transform: apply :class:`MultimodalTransform` (training augmentation on ``train``);
            ``False`` yields the stored columns, frames as undecoded ``{"bytes", "path"}`` records.
        num_frames, image_size, seed, pool_sequences: as :func:`arl_hf.data.attach_transforms`.
        rank, world_size: this process and the number of processes (default: from the process
            group, else ``RANK`` / ``WORLD_SIZE``, else one process). With more than one, the split
            is divided with ``datasets.distributed.split_dataset_by_node(..., strategy="shards")``.
        uneven: ``"error"`` (default) when shards differ in size, or ``"truncate"``: every rank
            stops at the smallest share (``IterableDataset.take``), so all ranks run the same
            steps per epoch.
        shuffle_buffer: ``IterableDataset.shuffle(buffer_size=...)`` (shard order and a buffer,
            re-seeded per epoch by ``set_epoch``); 0: sequential.
        keep_columns: raw columns kept beside the transform's output (e.g. ``["id"]``).
        map_batch_size: rows per transform call.
        decode_frames: ``"cpu"`` or ``"device"`` (frames decoded by ARLTrainer on the training
            device, see :class:`MultimodalTransform`).

    The result's ``info.description`` holds the preprocessing record (so
    :meth:`MultimodalCollator.from_dataset` works), ``transformed`` (attribute) whether the
    transform is applied, and ``examples_per_rank`` (attribute) the examples this rank sees per epoch.

    Raises:
        ValueError: shards not divisible over the ranks, uneven shards with ``uneven="error"``,
            an unknown ``uneven`` or split. FileNotFoundError: no shards / record.
    """
    import datasets
    from datasets.distributed import split_dataset_by_node

    from .catalog import make_transform
    from .record import PreprocessingRecord
    from .sharing import RECORD_FILE

    if split not in SPLITS:
        raise ValueError(f"split: expected one of {list(SPLITS)}, got {split!r}")
    if uneven not in ("error", "truncate"):
        raise ValueError(f"uneven: expected 'error' or 'truncate', got {uneven!r}")
    record_path = os.path.join(folder, RECORD_FILE)
    if not os.path.isfile(record_path):
        raise FileNotFoundError(f"{record_path}: no arl_hf preprocessing record; expected a folder written by "
                                "arl_hf.data.streaming.export_shards")
    with open(record_path) as fh:
        full = json.load(fh)
    features = datasets.Features.from_dict(full.pop("features"))
    for k in ("config_name", "version"):
        full.pop(k, None)
    rank, world_size = _world(rank, world_size)
    files = shard_files(folder, split)
    rows = shard_rows(folder, split)
    per_rank = _rows_per_rank(rows, world_size, uneven, split) if world_size > 1 else sum(rows)

    if transform:
        # whole record batches from the shards: fixed-shape arrays as NumPy views (no nested Python
        # lists), frames as their undecoded records; one shard per source, as load_dataset streams them
        ds = datasets.IterableDataset.from_generator(
            _shard_rows, gen_kwargs={"files": files, "features": features.to_dict()}, split=split)
    else:
        ds = datasets.load_dataset("parquet", data_files={split: files}, split=split, streaming=True)
        ds = ds.cast(undecoded_features(features))  # frames stay encoded bytes until the transform
    if shuffle_buffer > 0:
        ds = ds.shuffle(seed=shuffle_seed, buffer_size=shuffle_buffer)
    if world_size > 1:
        ds = split_dataset_by_node(ds, rank=rank, world_size=world_size, strategy="shards")
        if per_rank < sum(rows) // world_size or len(set(rows)) > 1:
            ds = ds.take(per_rank)
    record = PreprocessingRecord.from_dict(full)
    ds.info.description = record.to_json()
    if transform:
        fn = make_transform(record, train=(split == "train"), num_frames=num_frames, image_size=image_size, seed=seed,
                            pool_sequences=pool_sequences, decode_frames=decode_frames)
        if keep_columns:
            fn = _KeepColumns(fn, keep_columns)
        ds = ds.map(fn, batched=True, batch_size=map_batch_size, remove_columns=list(features))
        ds.info.description = record.to_json()
    #: whether the examples are model-ready (MultimodalCollator.from_dataset then only stacks)
    ds.transformed = bool(transform)
    ds.examples_per_rank = per_rank
    return ds


def steps_per_epoch(folder: str, split: str = "train", *, per_device_batch_size: int, world_size: int = 1,
                    uneven: str = "error", drop_last: bool = False) -> int:
    """Optimizer steps in one epoch of a streamed split on ``world_size`` ranks (for ``max_steps``)."""
    import math

    if per_device_batch_size < 1:
        raise ValueError(f"per_device_batch_size: expected an int >= 1, got {per_device_batch_size}")
    rows = shard_rows(folder, split)
    per_rank = _rows_per_rank(rows, world_size, uneven, split) if world_size > 1 else sum(rows)
    return per_rank // per_device_batch_size if drop_last else math.ceil(per_rank / per_device_batch_size)
