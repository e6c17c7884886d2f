"""Behaviour fingerprints: every strategy's short run, as metrics and per-tensor weight hashes.

Each strategy trains one epoch of a fixed recipe (the ``avdigits_main`` preset — the embedded
AV-Digits ``main`` data, small CNNs, SGD 5e-2 — with a constant learning rate after 40 warm-up
steps) through ``examples/run_arl.py`` with the threads fixed by
``OMP_NUM_THREADS`` (default 1). For each run the script records the test and validation
metrics written to ``results.json`` and the SHA-256 of every tensor in ``model.safetensors``.

Two fingerprint files from two versions of the code are compared with ``--compare``: for
every strategy it prints whether the metrics are identical, which tensors differ and by how
much (largest absolute difference, when the weights are kept with ``--keep``), and which
tensors exist in only one of them (state that moved into, or out of, the model).

    OMP_NUM_THREADS=1 python benchmarks/behaviour_hashes.py --out outputs/hashes-a --json a.json
    python benchmarks/behaviour_hashes.py --compare a.json b.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from typing import Any, Dict, List, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

#: (name, extra options): every registered strategy, and ARL's authors'-code variant
RUNS: List[tuple] = [
    ("none", []), ("arl", []), ("arl_official", ["--arl_variant", "official"]), ("ogm_ge", []), ("agm", []),
    ("pmr", []), ("mmpareto", []), ("gblending", []), ("mla", []), ("dr", []), ("fixed", []),
]


def tensor_hashes(path: str) -> Dict[str, str]:
    """``{tensor name: sha256 of its dtype, shape and bytes}`` for a safetensors file."""
    from safetensors.numpy import load_file

    out = {}
    for name, array in sorted(load_file(path).items()):
        h = hashlib.sha256(f"{array.dtype}{tuple(array.shape)}".encode())
        h.update(array.tobytes())
        out[name] = h.hexdigest()
    return out


def run(name: str, extra: Sequence[str], out_dir: str, epochs: str) -> Dict[str, Any]:
    strategy = "arl" if name.startswith("arl") else name
    run_dir = os.path.join(out_dir, name)
    cmd = [sys.executable, os.path.join(ROOT, "examples", "run_arl.py"), "--preset", "avdigits_main",
           "--lr_scheduler_type", "constant_with_warmup",
           "--strategy", strategy, "--num_train_epochs", epochs, "--seed", "0", "--output_dir", run_dir,
           "--overwrite_output_dir", "true", "--report_to", "none", *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        return {"error": proc.stderr[-2000:]}
    with open(os.path.join(run_dir, "results.json")) as f:
        results = json.load(f)
    metrics = {k: v for k, v in results["metrics"].items() if k in ("test", "validation")}
    return {"metrics": metrics, "tensors": tensor_hashes(os.path.join(run_dir, "model.safetensors"))}


def compare(a_path: str, b_path: str) -> int:
    with open(a_path) as f:
        a = json.load(f)
    with open(b_path) as f:
        b = json.load(f)
    changed = 0
    for name in a["runs"]:
        ra, rb = a["runs"][name], b["runs"].get(name)
        if rb is None or "error" in ra or "error" in rb:
            print(f"{name:<13} missing or failed in one of them")
            changed += 1
            continue
        shared = sorted(set(ra["tensors"]) & set(rb["tensors"]))
        diff = [k for k in shared if ra["tensors"][k] != rb["tensors"][k]]
        only_a = sorted(set(ra["tensors"]) - set(rb["tensors"]))
        only_b = sorted(set(rb["tensors"]) - set(ra["tensors"]))
        same_metrics = ra["metrics"] == rb["metrics"]
        status = "identical" if same_metrics and not diff else "CHANGED"
        changed += status != "identical"
        print(f"{name:<13} {status}: metrics {'equal' if same_metrics else 'differ'}, "
              f"{len(shared) - len(diff)}/{len(shared)} shared tensors equal"
              + (f", only before: {len(only_a)}" if only_a else "")
              + (f", only after: {len(only_b)}" if only_b else ""))
        if not same_metrics:
            for split in ("validation", "test"):
                ma, mb = ra["metrics"].get(split, {}), rb["metrics"].get(split, {})
                deltas = {k: mb[k] - ma[k] for k in ma
                          if k in mb and isinstance(ma[k], (int, float)) and ma[k] != mb[k]}
                if deltas:
                    print(f"    {split}: " + ", ".join(f"{k} {v:+.4f}" for k, v in sorted(deltas.items())))
        for k in diff[:8]:
            print(f"    differs: {k}")
        for k in only_b[:8]:
            print(f"    new tensor: {k}")
    return 1 if changed else 0


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="outputs/behaviour-hashes", help="Run directories.")
    p.add_argument("--json", default=None, help="Write the fingerprints here.")
    p.add_argument("--epochs", default="1")
    p.add_argument("--only", nargs="*", default=None, help="Run only these names.")
    p.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"), help="Compare two fingerprint files.")
    args = p.parse_args(argv)
    if args.compare:
        return compare(*args.compare)
    out: Dict[str, Any] = {"epochs": args.epochs, "threads": os.environ.get("OMP_NUM_THREADS", "1"), "runs": {}}
    for name, extra in RUNS:
        if args.only and name not in args.only:
            continue
        r = run(name, extra, args.out, args.epochs)
        out["runs"][name] = r
        if "error" in r:
            print(f"{name:<13} FAILED\n{r['error']}", flush=True)
        else:
            acc = r["metrics"].get("test", {}).get("accuracy")
            print(f"{name:<13} test accuracy {acc:.4f}  {len(r['tensors'])} tensors", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
