"""Data loading cost: CPU time of one shuffled pass over a split, per collator path.

Two ways of collating a dataset from :func:`arl_hf.data.load` are measured on the same
DataLoader (``batch_size``, ``shuffle=True``, no workers, one thread):

* **split**: ``MultimodalCollator.from_dataset(ds["train"])``: the split stays in NumPy
  format and the collator applies the split's transform to each batch;
* **dict**: ``MultimodalCollator.from_dataset(ds)`` on the whole ``DatasetDict`` (what one
  collator shared by every split does): each split is bound in place to its transform, which
  reads each batch's fixed-shape arrays as NumPy views (``arl_hf.data.batches``).

The two are run interleaved (ABBA: split, dict, dict, split, ...) so that load on the machine
falls on both alike; the figures are the medians over the rounds and the median of the
per-pair ratios dict / split. Values are CPU seconds of the loop only (``time.process_time``),
not counting imports or the dataset build.

    OMP_NUM_THREADS=1 python benchmarks/data_loading.py --cache-dir /tmp/avd
    python benchmarks/data_loading.py --tiny     # smoke test (a small generated AV-Digits)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any, Dict, List


def one_pass(ds: Any, split: str, path: str, batch_size: int, seed: int) -> float:
    """CPU seconds of one shuffled pass over ``ds[split]`` collated by the collator of ``path``
    (``"split"`` or ``"dict"``); the collator is built on a fresh copy of the dict."""
    import datasets
    import torch

    from arl_hf.data import MultimodalCollator

    dsd = datasets.DatasetDict(dict(ds))
    if hasattr(ds, "transform_options"):
        dsd.transform_options = dict(ds.transform_options)
    collator = MultimodalCollator.from_dataset(dsd[split] if path == "split" else dsd)
    g = torch.Generator()
    g.manual_seed(seed)
    loader = torch.utils.data.DataLoader(dsd[split], batch_size=batch_size, shuffle=True, generator=g,
                                         collate_fn=collator)
    start = time.process_time()
    n = 0
    for batch in loader:
        n += int(batch["labels"].shape[0])
    elapsed = time.process_time() - start
    if n != len(dsd[split]):
        raise RuntimeError(f"one_pass: read {n} examples of {len(dsd[split])}")
    return elapsed


def measure(ds: Any, split: str, batch_size: int, rounds: int) -> Dict[str, Any]:
    """ABBA rounds of both paths; per-path medians and the median of per-pair ratios dict / split."""
    times: Dict[str, List[float]] = {"split": [], "dict": []}
    one_pass(ds, split, "split", batch_size, 0)  # warm the page cache and the lazy imports
    one_pass(ds, split, "dict", batch_size, 0)
    for r in range(rounds):
        order = ("split", "dict") if r % 2 == 0 else ("dict", "split")
        for path in order:
            times[path].append(one_pass(ds, split, path, batch_size, r))
    ratios = [d / s for s, d in zip(times["split"], times["dict"])]
    return {"split": split, "batch_size": batch_size, "rounds": rounds,
            "cpu_s": {k: round(statistics.median(v), 4) for k, v in times.items()},
            "cpu_s_all": {k: [round(x, 4) for x in v] for k, v in times.items()},
            "ratio_dict_over_split": round(statistics.median(ratios), 3)}


def main(argv=None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cache-dir", default=None, help="Arrow cache of the AV-Digits build")
    p.add_argument("--config", default="bench", help="AV-Digits configuration (default: bench)")
    p.add_argument("--split", default="train")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=6, help="ABBA rounds (each runs both paths once)")
    p.add_argument("--reference-s", type=float, default=None,
                   help="CPU seconds of the same pass measured elsewhere (e.g. an older version): "
                        "the ratios to it are printed too")
    p.add_argument("--tiny", action="store_true", help="smoke test: 60 generated examples, 2 rounds")
    p.add_argument("--json", default=None, help="also write the result here")
    args = p.parse_args(argv)

    import torch

    import arl_hf.data as D

    torch.set_num_threads(1)
    if args.tiny:
        import tempfile

        ds = D.load("avdigits", cache_dir=args.cache_dir or tempfile.mkdtemp(prefix="avd_tiny_"), num_samples=60)
        args.rounds, args.batch_size = 2, 8
    else:
        ds = D.load("avdigits", config=args.config, cache_dir=args.cache_dir)
    result = measure(ds, args.split, args.batch_size, args.rounds)
    if args.reference_s:
        result["reference_s"] = args.reference_s
        result["ratio_to_reference"] = {k: round(v / args.reference_s, 3) for k, v in result["cpu_s"].items()}
    print(f"{len(ds[args.split])} examples, batches of {args.batch_size}, {args.rounds} ABBA rounds (CPU s, median)")
    print(f"  split collator  from_dataset(ds[{args.split!r}]): {result['cpu_s']['split']:.3f} s")
    print(f"  dict collator   from_dataset(ds):          {result['cpu_s']['dict']:.3f} s")
    print(f"  dict / split (median of pairs): {result['ratio_dict_over_split']:.3f}")
    if args.reference_s:
        print(f"  reference {args.reference_s:.3f} s; split / ref {result['ratio_to_reference']['split']:.3f}, "
              f"dict / ref {result['ratio_to_reference']['dict']:.3f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return result


if __name__ == "__main__":
    main()
