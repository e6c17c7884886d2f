"""Embedded-style data for the streaming tests: AV-Digits' layout (a 64x64 spectrogram per sample,
10 digit classes) with the visual side stored as a clip of JPEG frames (``List(Image())``), the
storage of the video benchmarks, and the arl_hf preprocessing record in the info."""

from __future__ import annotations

import io
import json

import numpy as np


def make_frames_dataset(sizes=(("train", 48), ("validation", 16), ("test", 16)), frames: int = 2, seed: int = 0):
    """``DatasetDict``: ``audio`` Array2D (64, 64) float32, ``visual`` 2 JPEG frames (24x24 RGB) per
    sample, ``labels`` (10 classes), ``id`` (``<split>_<i>``, unique)."""
    import datasets
    from PIL import Image

    features = datasets.Features({
        "id": datasets.Value("string"),
        "audio": datasets.Array2D((64, 64), "float32"),
        "visual": datasets.List(datasets.Image()),
        "labels": datasets.ClassLabel(names=[str(d) for d in range(10)]),
    })
    record = {
        "format": "arl_hf.data/1", "dataset": "avdigits_frames", "builder_version": "1.0.0",
        "audio_preset": None,
        "frames": {"pool_size": frames, "default_num_frames": 1},
        "splits": {"method": "synthetic"},
        "modalities": {"audio": {"kind": "spectrogram", "encoder": "mlp", "shape": [64, 64]},
                       "visual": {"kind": "frames", "encoder": "mlp"}},
        "label_names": [str(d) for d in range(10)], "on_error": "raise", "options": {},
    }
    out = {}
    for k, (split, n) in enumerate(sizes):
        rng = np.random.default_rng(seed + k)
        y = np.arange(n) % 10
        audio = (rng.normal(size=(n, 64, 64)) + y[:, None, None] * 0.1).astype("float32")
        clips = []
        for i in range(n):
            clip = []
            for f in range(frames):
                img = np.full((24, 24, 3), 20 * int(y[i]) + f, dtype=np.uint8)
                buf = io.BytesIO()
                Image.fromarray(img).save(buf, format="JPEG", quality=95)
                clip.append({"bytes": buf.getvalue(), "path": None})
            clips.append(clip)
        ds = datasets.Dataset.from_dict({"id": [f"{split}_{i}" for i in range(n)], "audio": audio,
                                         "visual": clips, "labels": y.tolist()}, features=features)
        ds.info.description = json.dumps(record, sort_keys=True)
        out[split] = ds
    return datasets.DatasetDict(out)
