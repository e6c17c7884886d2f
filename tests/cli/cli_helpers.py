"""Helpers of the CLI tests: a tiny learnable audio-visual dataset, the flags of a short run."""

from __future__ import annotations

import os
import sys
from typing import Dict

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_ENCODER = "timm:test_resnet"  # 0.37M parameters: fast on CPU at 16x16 inputs
LABELS = ["zero", "one", "two"]


def make_tiny_dataset(sizes=(("train", 48), ("validation", 24), ("test", 24)), seed: int = 0):
    """``DatasetDict``: audio ``(1, 16, 16)`` and visual ``(3, 16, 16)`` float arrays, 3 classes.

    The audio carries the label in its mean (easy), the visual in which channel's corner is lit
    (harder), so both unimodal heads can learn something in a couple of epochs.
    """
    import datasets

    features = datasets.Features({
        "audio": datasets.Array3D((1, 16, 16), "float32"),
        "visual": datasets.Array3D((3, 16, 16), "float32"),
        "labels": datasets.ClassLabel(names=LABELS),
    })
    splits = {}
    for i, (split, n) in enumerate(sizes):
        rng = np.random.default_rng(seed + i)
        y = np.arange(n) % 3
        rng.shuffle(y)
        audio = rng.normal(scale=0.5, size=(n, 1, 16, 16)).astype("float32")
        audio += y[:, None, None, None].astype("float32")
        visual = rng.normal(scale=0.5, size=(n, 3, 16, 16)).astype("float32")
        visual[np.arange(n), y, :6, :6] += 1.5
        splits[split] = datasets.Dataset.from_dict({"audio": audio, "visual": visual, "labels": y}, features=features)
    return datasets.DatasetDict(splits)


def tiny_flags(dataset_dir: str, output_dir: str, *extra: str) -> list:
    """Command-line flags of a short run on the tiny dataset."""
    return [
        "--dataset", dataset_dir,
        "--output_dir", output_dir,
        "--encoder", TINY_ENCODER,
        "--num_train_epochs", "2",
        "--per_device_train_batch_size", "16",
        "--per_device_eval_batch_size", "24",
        "--learning_rate", "0.05",
        "--logging_steps", "1",
        "--use_cpu",
        "--dataloader_num_workers", "0",
        "--disable_tqdm", "true",
        # the tiny runs' accuracy thresholds were set with timm's init; the avdigits preset
        # now uses the authors' (explicit flags override the preset)
        "--init", "timm",
        *extra,
    ]


def script_env() -> Dict[str, str]:
    env = dict(os.environ)
    env["HF_HUB_OFFLINE"] = "1"
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


PYTHON = sys.executable


#: the preprocessing record of :func:`make_prepared_dataset` (what arl_hf.data.load records)
PREPARED_RECORD = {
    "format": "arl_hf.data/1", "dataset": "tinyav", "label_names": LABELS,
    "audio_preset": {"name": "tiny", "version": "1.0.0", "output_shape": [16, 16]},
    "modalities": {"audio": {"kind": "spectrogram", "shape": [16, 16]},
                   "visual": {"kind": "image", "shape": [3, 16, 16]}},
}


def make_prepared_dataset():
    """The tiny task as a dataset prepared by ``arl_hf.data`` (its record in ``info.description``):
    audio a ``(16, 16)`` spectrogram (the transform adds the channel), visual a ``(3, 16, 16)`` image."""
    import json

    import datasets

    raw = make_tiny_dataset()
    features = datasets.Features({"audio": datasets.Array2D((16, 16), "float32"),
                                  "visual": datasets.Array3D((3, 16, 16), "float32"),
                                  "labels": datasets.ClassLabel(names=LABELS)})
    info = datasets.DatasetInfo(description=json.dumps(PREPARED_RECORD), features=features)
    out = {}
    for split, ds in raw.items():
        cols = ds.with_format("numpy")[:]
        out[split] = datasets.Dataset.from_dict(
            {"audio": cols["audio"][:, 0], "visual": cols["visual"], "labels": cols["labels"]},
            features=features, info=info)
    return datasets.DatasetDict(out)
