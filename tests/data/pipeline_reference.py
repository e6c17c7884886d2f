"""Batch fingerprints of the data pipeline, and the tiny frames dataset they are taken on.

``pipeline_reference.json`` holds the fingerprints of the pipeline as it was when the
transform was a dataset format (taken before the collator applied the transforms): the
training batches of two epochs and the evaluation batches, per dataset and seed. The tests
compare today's batches with them, so the RNG draws and the tensors stay the same.
"""
import hashlib
import io
import json

import datasets
import numpy as np
from PIL import Image


def h_batch(b) -> str:
    """SHA-256 (16 hex digits) of a collated batch: keys, dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for k in sorted(b):
        v = b[k]
        h.update(k.encode())
        h.update(str(v.dtype).encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(v.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]

def jpeg(v, size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(v)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()

def gray(v, size=(24, 18)) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(v)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0]), dtype=np.uint8), mode="L").save(buf, "JPEG", quality=90)
    return buf.getvalue()

def frames_dsd() -> datasets.DatasetDict:
    """Stored columns of every kind but image: spectrogram, frames (4 JPEGs), flow (3 pairs), sequence."""
    feats = datasets.Features({"id": datasets.Value("string"),
        "audio": datasets.Array2D(shape=(6, 7), dtype="float32"),
        "visual": datasets.List(datasets.Image()),
        "flow": datasets.List({"x": datasets.Image(), "y": datasets.Image()}),
        "text": datasets.Array2D(shape=(None, 5), dtype="float32"),
        "labels": datasets.ClassLabel(names=["a", "b", "c"])})
    rec = {"format": "arl_hf.data/1", "dataset": "fake", "label_names": ["a", "b", "c"],
           "modalities": {"audio": {"kind": "spectrogram"}, "visual": {"kind": "frames"},
                          "flow": {"kind": "flow"}, "text": {"kind": "sequence", "input_dim": 5}},
           "frames": {"default_num_frames": 2}}
    out = {}
    for s, n in (("train", 10), ("validation", 6), ("test", 6)):
        off = {"train": 0, "validation": 100, "test": 200}[s]
        rows = {"id": [f"{s}{i}" for i in range(n)],
                "audio": [np.random.default_rng(off + i).standard_normal((6, 7)).astype(np.float32) for i in range(n)],
                "visual": [[{"bytes": jpeg(off * 10 + 10 * i + j), "path": None} for j in range(4)] for i in range(n)],
                "flow": [[{"x": {"bytes": gray(off * 7 + i * 3 + j), "path": None},
                           "y": {"bytes": gray(off * 7 + i * 3 + j + 50), "path": None}} for j in range(3)]
                         for i in range(n)],
                "text": [np.random.default_rng(off + 50 + i).standard_normal((3, 5)).astype(np.float32)
                         for i in range(n)],
                "labels": [i % 3 for i in range(n)]}
        ds = datasets.Dataset.from_dict(rows, features=feats)
        ds.info.description = json.dumps(rec, sort_keys=True)
        out[s] = ds
    return datasets.DatasetDict(out)
