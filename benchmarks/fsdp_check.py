"""FSDP2 through accelerate and ARLTrainer, one process on one GPU, against the same run unsharded.

The CPU tests prove the strategies equal under ``fully_shard`` with the package's own loop
(accelerate never shards on CPU); this check covers the path GPU users take:
``ARLConfig(fsdp=True, fsdp_config={"fsdp_version": 2})``, accelerate's ``fully_shard`` of the
model, ARLTrainer's sharding of the strategy's heads, parameter-mode hooks re-attached after
sharding, checkpoint and resume through ``Trainer``. Each mode runs in its own process (accelerate
keeps one distributed state per process):

    torchrun --nproc_per_node 1 benchmarks/fsdp_check.py --mode plain --out-dir DIR
    torchrun --nproc_per_node 1 benchmarks/fsdp_check.py --mode fsdp --out-dir DIR
    python benchmarks/fsdp_check.py --compare DIR        # max |FSDP - plain| per case (target <= 1e-5)

Cases: ARL (output and parameter modulation), G-Blending and MLA (strategy-owned heads). Each
trains 6 steps (2 epochs), saves at step 3, then a fresh trainer resumes from that checkpoint;
the final parameters of both runs are recorded. ``--mode plain --device cpu`` is the CPU smoke test.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _common as C  # noqa: E402,F401  (puts the repository on sys.path)
import torch  # noqa: E402

from arl_hf import ARLConfig, ARLTrainer, MultimodalConfig, MultimodalModel  # noqa: E402

CASES = {
    "arl_output": dict(strategy="arl", gradient_modulation="output"),
    "arl_parameters": dict(strategy="arl", gradient_modulation="parameters"),
    "gblending": dict(strategy="gblending", gblending_interval_epochs=1),
    "mla": dict(strategy="mla"),
}


def rows(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    a = torch.randn(n, 6, generator=g) + y[:, None]
    v = torch.randn(n, 4, generator=g) * 2 + y[:, None] * 0.3
    return [{"audio": a[i], "visual": v[i], "labels": y[i]} for i in range(n)]


def model(seed: int = 0) -> MultimodalModel:
    torch.manual_seed(seed)
    return MultimodalModel(MultimodalConfig(modalities={
        "audio": {"encoder": "mlp", "input_dim": 6, "hidden_dims": [8]},
        "visual": {"encoder": "mlp", "input_dim": 4, "hidden_dims": [8]}}, num_labels=3))


def full_params(trainer) -> Dict[str, Any]:
    sd = trainer.accelerator.get_state_dict(trainer.model)  # gathered under FSDP
    return {k: v.detach().float().cpu().flatten().tolist() for k, v in sd.items()}


def run_case(name: str, mode: str, out_dir: str, device: str) -> Dict[str, Any]:
    from arl_hf.fsdp import is_sharded

    kw = dict(output_dir=os.path.join(out_dir, f"{mode}_{name}"), per_device_train_batch_size=8,
              per_device_eval_batch_size=8, optim="sgd", learning_rate=0.1, lr_scheduler_type="constant",
              max_steps=6, save_strategy="steps", save_steps=3, train_sampling_strategy="sequential",
              report_to="none", disable_tqdm=True, logging_steps=1, weight_decay=0.0, seed=0,
              use_cpu=device == "cpu", **CASES[name])
    if mode == "fsdp":
        kw.update(fsdp=True, fsdp_config={"fsdp_version": 2, "reshard_after_forward": True})
    train, held = rows(24, 3), rows(16, 4)
    trainer = ARLTrainer(model=model(), args=ARLConfig(**kw), train_dataset=train, eval_dataset=held)
    trainer.train()
    heads = trainer.strategy.owned_modules()
    in_optimizer = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    result = {
        "sharded": is_sharded(trainer.model),
        "heads_sharded": [is_sharded(h) for h in heads],
        "heads_in_optimizer": all(id(p) in in_optimizer for h in heads for p in h.parameters()),
        "tracked_parameters": len(getattr(trainer.strategy.modulator, "_tracked", None) or ()),
        "params": full_params(trainer),
    }
    resumed = ARLTrainer(model=model(), args=ARLConfig(**kw), train_dataset=train, eval_dataset=held)
    resumed.train(resume_from_checkpoint=os.path.join(kw["output_dir"], "checkpoint-3"))
    result["resumed_params"] = full_params(resumed)
    return result


def compare(out_dir: str) -> Dict[str, Any]:
    import numpy as np

    with open(os.path.join(out_dir, "fsdp_check_plain.json")) as f:
        plain = json.load(f)
    with open(os.path.join(out_dir, "fsdp_check_fsdp.json")) as f:
        fsdp = json.load(f)
    out = {}
    for name in CASES:
        p, q = plain[name], fsdp[name]

        def diff(a, b):
            return max(float(np.abs(np.array(a[k]) - np.array(b[k])).max()) for k in a)

        out[name] = {"max_abs_fsdp_vs_plain": diff(q["params"], p["params"]),
                     "max_abs_resumed_vs_uninterrupted": diff(q["resumed_params"], q["params"]),
                     "sharded": q["sharded"], "heads_sharded": q["heads_sharded"],
                     "heads_in_optimizer": q["heads_in_optimizer"], "tracked_parameters": q["tracked_parameters"]}
        print(f"fsdp_check {name}: max|FSDP - plain| {out[name]['max_abs_fsdp_vs_plain']:.2e}, max|resumed - "
              f"uninterrupted| {out[name]['max_abs_resumed_vs_uninterrupted']:.2e}, DTensor parameters "
              f"{q['sharded']}, heads sharded {q['heads_sharded']}, heads in optimizer {q['heads_in_optimizer']}, "
              f"parameter hooks after sharding {q['tracked_parameters']}")
    ok = all(v["max_abs_fsdp_vs_plain"] <= 1e-5 and v["max_abs_resumed_vs_uninterrupted"] <= 1e-5 and v["sharded"]
             for v in out.values())
    print(f"fsdp_check: {'PASS' if ok else 'FAIL'} (target <= 1e-5)")
    with open(os.path.join(out_dir, "fsdp_check.json"), "w") as f:
        json.dump({"cases": out, "pass": ok}, f, indent=1)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=("plain", "fsdp"))
    p.add_argument("--out-dir", default=os.environ.get("OUT") or "fsdp_check_out")
    p.add_argument("--device", default="cuda")
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--compare", default=None, metavar="DIR")
    args = p.parse_args(argv)
    if args.compare:
        compare(args.compare)
        return
    if args.mode is None:
        p.error("--mode or --compare is required")
    os.makedirs(args.out_dir, exist_ok=True)
    results = {}
    for name in args.cases.split(","):
        results[name] = run_case(name, args.mode, args.out_dir, args.device)
        print(f"fsdp_check {args.mode} {name}: sharded {results[name]['sharded']}", flush=True)
    with open(os.path.join(args.out_dir, f"fsdp_check_{args.mode}.json"), "w") as f:
        json.dump(results, f)
    from arl_hf.distributed import shutdown

    shutdown()


if __name__ == "__main__":
    main()
