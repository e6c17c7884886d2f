"""Every way the package turns a prepared dataset into batches, and the fingerprints of their first
batches (``test_batched_reads.py`` compares them with the fingerprints stored there).

Paths: ``per_split`` (``MultimodalCollator.from_dataset(split)`` on the plain NumPy split),
``shared`` (``from_dataset(DatasetDict)``: the splits bound in place), ``shared_worker`` (the
same in one DataLoader worker), ``attached`` (``attach_transforms``), ``runner`` (the training
script's ``load_data`` on an exported folder, batches from ``ARLTrainer``'s loaders) and
``stream`` (``export_shards`` + ``stream_split``). Datasets: AV-Digits (``load``), the tiny
frames / flow / sequence dataset of ``pipeline_reference.py`` and ``mixed_frames_dsd``: clips
whose frames differ in size and in format (RGB and grey JPEG, PNG, CMYK JPEG).

``python tests/data/batched_reads_paths.py OUT.json`` writes the fingerprints of the code on
``PYTHONPATH``.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
from typing import Any, Dict, List

import datasets
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pipeline_reference import frames_dsd, h_batch

TRAIN_BATCHES = 3
EVAL_BATCHES = 2
BATCH = 4


def _image_bytes(seed: int, size, fmt: str, mode: str = "RGB") -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) % 256], -1) + rng.integers(0, 40, (h, w, 3))
    img = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    if mode != "RGB":
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def mixed_frames_dsd() -> datasets.DatasetDict:
    """Spectrogram + frames; the frames of a clip share one size, the clips do not (48x36 or 40x30),
    and some frames are grey JPEGs, PNGs (RGB, palette) or CMYK JPEGs."""
    feats = datasets.Features({"id": datasets.Value("string"),
                               "audio": datasets.Array2D(shape=(5, 9), dtype="float32"),
                               "visual": datasets.List(datasets.Image()),
                               "labels": datasets.ClassLabel(names=["a", "b"])})
    rec = {"format": "arl_hf.data/1", "dataset": "fake_mixed", "label_names": ["a", "b"],
           "modalities": {"audio": {"kind": "spectrogram"}, "visual": {"kind": "frames"}},
           "frames": {"default_num_frames": 2}}
    kinds = [("JPEG", "RGB"), ("JPEG", "L"), ("PNG", "RGB"), ("PNG", "P"), ("JPEG", "CMYK")]
    out = {}
    for s, n in (("train", 12), ("validation", 8), ("test", 4)):
        off = {"train": 0, "validation": 300, "test": 600}[s]
        clips = []
        for i in range(n):
            size = (48, 36) if i % 3 else (40, 30)
            clip = []
            for j in range(3):
                fmt, mode = kinds[(i + j) % len(kinds)] if i % 2 else ("JPEG", "RGB")
                clip.append({"bytes": _image_bytes(off + 10 * i + j, size, fmt, mode), "path": None})
            clips.append(clip)
        rows = {"id": [f"{s}{i}" for i in range(n)],
                "audio": [np.random.default_rng(off + i).standard_normal((5, 9)).astype(np.float32) for i in range(n)],
                "visual": clips, "labels": [i % 2 for i in range(n)]}
        ds = datasets.Dataset.from_dict(rows, features=feats)
        ds.info.description = json.dumps(rec, sort_keys=True)
        out[s] = ds
    return datasets.DatasetDict(out)


def _fresh(dsd, **options) -> datasets.DatasetDict:
    out = datasets.DatasetDict({k: v.with_format("numpy") for k, v in dsd.items()})
    out.transform_options = dict(getattr(dsd, "transform_options", None) or {}, **options)
    return out


def _first(loader, count: int) -> List[str]:
    out = []
    for b in loader:
        out.append(h_batch(b))
        if len(out) == count:
            break
    return out


def _loaders(dsd, collators, seed: int, workers: int = 0) -> Dict[str, List[str]]:
    g = torch.Generator()
    g.manual_seed(seed)
    train = torch.utils.data.DataLoader(dsd["train"], batch_size=BATCH, shuffle=True, generator=g,
                                        collate_fn=collators["train"], num_workers=workers)
    val = torch.utils.data.DataLoader(dsd["validation"], batch_size=BATCH, collate_fn=collators["validation"],
                                      num_workers=workers)
    return {"train": _first(train, TRAIN_BATCHES), "validation": _first(val, EVAL_BATCHES)}


def per_split(dsd, seed: int, **options) -> Dict[str, List[str]]:
    from arl_hf.data import MultimodalCollator

    plain = _fresh(dsd)
    coll = {s: MultimodalCollator.from_dataset(plain[s], train=(s == "train"), seed=seed, **options)
            for s in ("train", "validation")}
    return _loaders(plain, coll, seed)


def shared(dsd, seed: int, workers: int = 0, **options) -> Dict[str, List[str]]:
    from arl_hf.data import MultimodalCollator

    bound = _fresh(dsd, seed=seed, **options)
    coll = MultimodalCollator.from_dataset(bound)
    return _loaders(bound, {"train": coll, "validation": coll}, seed, workers)


def attached(dsd, seed: int, **options) -> Dict[str, List[str]]:
    from arl_hf.data import MultimodalCollator, attach_transforms

    bound = attach_transforms(_fresh(dsd), seed=seed, **options)
    coll = MultimodalCollator.from_dataset(bound)
    return _loaders(bound, {"train": coll, "validation": coll}, seed)


def runner(dsd, seed: int, tmp: str, **options) -> Dict[str, List[str]]:
    """``load_data`` on an ``export_prepared`` folder; batches from ``ARLTrainer``'s loaders."""
    from arl_hf import ARLConfig, ARLTrainer, MultimodalConfig, MultimodalModel
    from arl_hf.arguments import DataArguments
    from arl_hf.building import load_data
    from arl_hf.data import export_prepared

    folder = os.path.join(tmp, "prepared")
    if not os.path.isdir(folder):
        export_prepared(_fresh(dsd), folder)
    ds, collator, _ = load_data(DataArguments(dataset=folder, cache_dir=os.path.join(tmp, "cache"),
                                              image_size=options.get("image_size")), seed=seed)
    names = [k for k in ds["train"].features if k not in ("id", "labels")]
    torch.manual_seed(0)
    model = MultimodalModel(MultimodalConfig(
        modalities={m: {"encoder": "mlp", "input_dim": 4, "hidden_dims": [4]} for m in names},
        num_labels=ds["train"].features["labels"].num_classes))
    args = ARLConfig(output_dir=os.path.join(tmp, "out"), per_device_train_batch_size=BATCH,
                     per_device_eval_batch_size=BATCH, report_to="none", use_cpu=True, seed=seed,
                     dataloader_num_workers=0, disable_tqdm=True, save_strategy="no")
    trainer = ARLTrainer(model=model, args=args, train_dataset=ds["train"], eval_dataset=ds["validation"],
                         data_collator=collator)
    return {"train": _first(trainer.get_train_dataloader(), TRAIN_BATCHES),
            "validation": _first(trainer.get_eval_dataloader(), EVAL_BATCHES)}


def stream(dsd, seed: int, tmp: str, **options) -> Dict[str, List[str]]:
    """``stream_split`` of 2 shards per split (``options`` may add ``shuffle_buffer``, ``rank`` ...)."""
    from arl_hf.data import MultimodalCollator
    from arl_hf.data.streaming import export_shards, stream_split

    folder = os.path.join(tmp, "shards")
    if not os.path.isdir(folder):
        export_shards(_fresh(dsd), folder, num_shards=2)
    out = {}
    for split, count in (("train", TRAIN_BATCHES), ("validation", EVAL_BATCHES)):
        it = stream_split(folder, split, seed=seed, **options)
        out[split] = _first(torch.utils.data.DataLoader(it, batch_size=BATCH,
                                                        collate_fn=MultimodalCollator.from_dataset(it)), count)
    return out


def avdigits(tmp: str):
    from arl_hf.data import load

    return load("avdigits", cache_dir=os.path.join(tmp, "avd"), num_samples=60)


#: dataset -> (builder, transform options)
CASES = {
    "avdigits": (None, {}),
    "frames": (frames_dsd, {"image_size": 12}),
    "mixed": (mixed_frames_dsd, {"image_size": 16}),
}


def paths_of(name: str, tmp: str) -> Dict[str, Any]:
    """``{path: {split: [hashes]}}`` of one dataset of :data:`CASES` (files written under ``tmp``)."""
    build, options = CASES[name]
    dsd = avdigits(tmp) if build is None else build()
    sub = os.path.join(tmp, name)
    os.makedirs(sub, exist_ok=True)
    seed = 3
    res = {"per_split": per_split(dsd, seed, **options), "shared": shared(dsd, seed, **options),
           "shared_worker": shared(dsd, seed, workers=1, **options),
           "attached": attached(dsd, seed, **options), "runner": runner(dsd, seed, sub, **options)}
    if name != "avdigits":  # export_shards: frames datasets (AV-Digits has a test in test_streaming)
        res["stream"] = stream(dsd, seed, sub, **options)
        res["stream_shuffled"] = stream(dsd, seed, sub, shuffle_buffer=5, shuffle_seed=1, **options)
        res["stream_rank1"] = stream(dsd, seed, sub, rank=1, world_size=2, uneven="truncate",
                                     keep_columns=["id"], map_batch_size=3, **options)
    return res


if __name__ == "__main__":
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        result = {name: paths_of(name, tmp) for name in CASES}
    with open(sys.argv[1], "w") as fh:
        json.dump(result, fh, indent=1, sort_keys=True)
