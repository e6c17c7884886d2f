"""Every strategy for 2 epochs under torchrun (gloo, CPU), or in one process on the global batch.

Usage: torchrun --nproc_per_node 2 tests/strategies/ddp_strategies_worker.py OUT_DIR
       python tests/strategies/ddp_strategies_worker.py OUT_DIR --single

32 rows, global batch 16 (8 per rank under DDP), 4 steps = 2 epochs, so the strategies'
epoch-boundary work (PMR prototypes, G-Blending weights, D&R re-initialisation) runs too.
Each process writes ``<case>_rank<r>.json`` (or ``<case>_single.json``) with its final
parameters (the strategy's heads included: they are model parameters, averaged by DDP itself)
and the strategy's state (buffers of ``model.strategy_state``).
"""

import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from strategy_testutils import cfg, make_rows, mlp_model  # noqa: E402

from arl_hf import ARLTrainer  # noqa: E402

#: case name -> ARLConfig overrides (per-epoch work every epoch)
CASES = {
    "arl": dict(strategy="arl"),
    "arl_parameters": dict(strategy="arl", gradient_modulation="parameters"),
    "ogm_ge": dict(strategy="ogm_ge", ogm_noise=False),
    "ogm_ge_noise": dict(strategy="ogm_ge", ogm_noise=True),  # noise seeded by (seed, step): same everywhere
    "agm": dict(strategy="agm"),
    "pmr": dict(strategy="pmr", pmr_interval_epochs=1),
    "gblending": dict(strategy="gblending", gblending_interval_epochs=1),
    "mmpareto": dict(strategy="mmpareto"),
    "mla": dict(strategy="mla"),
    "dr": dict(strategy="dr", dr_interval_epochs=1),
}


def _jsonable(obj):
    """Strategy state as JSON: tensors -> flat float lists, containers recursively."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().double().flatten().tolist()
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def main():
    out_dir = sys.argv[1]
    single = "--single" in sys.argv
    only = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--cases=")]
    cases = only[0].split(",") if only else list(CASES)
    rows = make_rows(32, seed=3)
    held_out = make_rows(16, seed=4)  # G-Blending's held-out estimates
    for name in cases:
        model = mlp_model(seed=0)
        args = cfg(os.path.join(out_dir, f"run_{name}"), per_device_train_batch_size=16 if single else 8,
                   max_steps=4, logging_steps=100, **CASES[name])
        trainer = ARLTrainer(model=model, args=args, train_dataset=rows, eval_dataset=held_out)
        trainer.train()
        tag = "single" if single else f"rank{args.process_index}"
        result = {"world_size": args.world_size,
                  "params": {k: p.detach().flatten().tolist() for k, p in model.named_parameters()},
                  "state": _jsonable(trainer.strategy.state_dict()),
                  "history": getattr(trainer.strategy, "history", None)}
        with open(os.path.join(out_dir, f"{name}_{tag}.json"), "w") as f:
            json.dump(result, f)


if __name__ == "__main__":
    from arl_hf.distributed import shutdown

    main()
    shutdown()
