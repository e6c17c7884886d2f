"""Own data: samples/s of ``MultimodalCollator.from_dataset`` on a plain dataset vs a hand-written transform.

A user's plain ``DatasetDict`` (``Image()`` 32x32 RGB + ``Array2D`` 40x50 spectrogram + ``ClassLabel``
``label``), read by a DataLoader (``batch_size``, ``shuffle=True``, no workers, one thread) two ways:

* **handwritten**: what one writes without arl-hf's raw path: ``with_transform`` turning each
  batch into CHW float tensors (``PIL -> uint8 array -> float / 255``, ``torch.tensor`` of the
  spectrogram lists with a channel axis), and a collate that stacks the examples;
* **arl_hf**: ``MultimodalCollator.from_dataset(ds)`` (kinds read from the features, the
  transform bound to the splits, Arrow arrays read as NumPy views, images decoded in batch).

Both give the same tensors (checked). They run interleaved (ABBA) for ``--pairs`` pairs after a
warm-up pass; the figure is the median of the per-pair ratios arl_hf / handwritten of samples/s,
by wall clock and by CPU time (``time.process_time``: less sensitive to other load). Target: >= 0.95.

    OMP_NUM_THREADS=1 python benchmarks/own_data.py              # 2000 examples, 5 pairs
    python benchmarks/own_data.py --tiny                          # smoke test
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

TARGET = 0.95


def make_dataset(n: int, seed: int = 0):
    """``DatasetDict`` with a ``train`` split of ``n`` examples: ``img`` (PNG), ``spectrogram``, ``label``."""
    import datasets
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = []
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)).save(buf, format="PNG")
        images.append({"bytes": buf.getvalue(), "path": None})
    features = datasets.Features({"img": datasets.Image(), "spectrogram": datasets.Array2D((40, 50), "float32"),
                                  "label": datasets.ClassLabel(names=["a", "b", "c"])})
    split = datasets.Dataset.from_dict({"img": images, "spectrogram": rng.normal(size=(n, 40, 50)).astype("float32"),
                                        "label": (np.arange(n) % 3).tolist()}, features=features)
    return datasets.DatasetDict({"train": split})


def handwritten(ds: Any):
    """The hand-written path: ``(split, collate_fn)``."""
    import torch

    def transform(batch: Dict[str, List[Any]]) -> Dict[str, Any]:
        return {"img": [torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).float() / 255
                        for im in batch["img"]],
                "spectrogram": [torch.tensor(s, dtype=torch.float32).unsqueeze(0) for s in batch["spectrogram"]],
                "labels": batch["label"]}

    def collate(examples: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
        return {"img": torch.stack([e["img"] for e in examples]),
                "spectrogram": torch.stack([e["spectrogram"] for e in examples]),
                "labels": torch.tensor([e["labels"] for e in examples])}

    return ds["train"].with_transform(transform), collate


def arl_hf_path(ds: Any):
    """The arl-hf path: ``(split, collator)``."""
    import datasets

    from arl_hf.data import MultimodalCollator

    dsd = datasets.DatasetDict(dict(ds))
    collator = MultimodalCollator.from_dataset(dsd)
    return dsd["train"], collator


def one_pass(split: Any, collate: Callable, batch_size: int, seed: int) -> Dict[str, float]:
    """Wall and CPU seconds of one shuffled pass, and the number of samples."""
    import torch

    g = torch.Generator()
    g.manual_seed(seed)
    loader = torch.utils.data.DataLoader(split, batch_size=batch_size, shuffle=True, generator=g, collate_fn=collate)
    wall, cpu, n = time.perf_counter(), time.process_time(), 0
    for batch in loader:
        n += int(batch["labels"].shape[0])
    return {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu, "samples": n}


def same_batches(ds: Any, batch_size: int) -> bool:
    """Both paths give the same tensors for the same rows."""
    import torch

    (a, ca), (b, cb) = handwritten(ds), arl_hf_path(ds)
    rows = list(range(min(batch_size, len(a))))
    x, y = ca([a[i] for i in rows]), cb(b.__getitems__(rows))
    return all(torch.equal(x[k], y[k]) for k in ("img", "spectrogram", "labels"))


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--tiny", action="store_true", help="a smoke test: 96 examples, 2 pairs")
    parser.add_argument("--json", default=None, help="also write the result here")
    args = parser.parse_args(argv)
    if args.tiny:
        args.examples, args.pairs, args.batch_size = 96, 2, 16
    torch.set_num_threads(1)
    ds = make_dataset(args.examples)
    equal = same_batches(ds, args.batch_size)
    paths = {"handwritten": handwritten(ds), "arl_hf": arl_hf_path(ds)}
    for name, (split, collate) in paths.items():  # warm-up: file cache, first decoders
        one_pass(split, collate, args.batch_size, 0)
    runs: Dict[str, List[Dict[str, float]]] = {k: [] for k in paths}
    for p in range(args.pairs):
        order = ["handwritten", "arl_hf"] if p % 2 == 0 else ["arl_hf", "handwritten"]
        for name in order:
            runs[name].append(one_pass(*paths[name], args.batch_size, seed=p))

    def rate(r: Dict[str, float], clock: str) -> float:
        return r["samples"] / r[clock]

    ratios = {clock: [rate(b, clock) / rate(a, clock) for a, b in zip(runs["handwritten"], runs["arl_hf"])]
              for clock in ("wall_s", "cpu_s")}
    result = {
        "examples": args.examples, "batch_size": args.batch_size, "pairs": args.pairs, "same_tensors": equal,
        "samples_per_s": {k: [round(rate(r, "wall_s"), 1) for r in v] for k, v in runs.items()},
        "samples_per_cpu_s": {k: [round(rate(r, "cpu_s"), 1) for r in v] for k, v in runs.items()},
        "median_ratio_wall": statistics.median(ratios["wall_s"]),
        "median_ratio_cpu": statistics.median(ratios["cpu_s"]), "target": TARGET,
    }
    print(f"own data ({args.examples} examples, Image 32x32 + Array2D 40x50, batch {args.batch_size}, 1 thread): "
          f"arl_hf / handwritten samples/s, median of {args.pairs} interleaved pairs: "
          f"wall {result['median_ratio_wall']:.3f}, CPU time {result['median_ratio_cpu']:.3f} "
          f"(target >= {TARGET}; same tensors: {equal})")
    print(json.dumps(result["samples_per_s"]))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    return result


if __name__ == "__main__":
    main()
