"""FSDP2 on CPU (gloo): ARLTrainer's strategies with ``fully_shard`` applied, in a minimal loop.

Usage: torchrun --nproc_per_node 2 tests/core/fsdp_worker.py OUT_DIR     (sharded, 2 processes)
       python tests/core/fsdp_worker.py OUT_DIR --single                 (one process, global batch)

accelerate never shards on CPU (ARLTrainer refuses FSDP there: the first thing each rank checks
here), so the loop is the package's own: ``ARLTrainer(...)`` builds the model's strategy as for
any run, ``arl_hf.fsdp.shard_model`` shards the encoders, the model and the strategy's heads,
``arl_hf.fsdp.training_step`` runs each micro-batch. 32 rows, global batch 8 (4 per rank),
6 steps = 1.5 epochs (epoch-boundary work runs twice), SGD with momentum. ``<case>_resume``
checkpoints after step 3 with ``arl_hf.fsdp.save_checkpoint``, builds everything afresh, loads
it and trains steps 3..5. Each process writes ``<case>_<rank0|rank1|single>.json``.
"""

import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "strategies"))

from strategy_testutils import cfg, make_rows, mlp_model  # noqa: E402

from arl_hf import ARLTrainer  # noqa: E402
from arl_hf.distributed import rank, shutdown, world_size  # noqa: E402
from arl_hf.fsdp import (  # noqa: E402
    full_model_state_dict,
    is_sharded,
    load_checkpoint,
    save_checkpoint,
    shard_model,
    trainable_parameters,
    training_step,
)
from arl_hf.strategies.base import StepContext  # noqa: E402

ROWS, GLOBAL_BATCH, STEPS, SAVE_AT = 32, 8, 6, 3
STEPS_PER_EPOCH = ROWS // GLOBAL_BATCH

#: case -> ARLConfig overrides
CASES = {
    "arl_output": dict(strategy="arl", gradient_modulation="output"),
    "arl_parameters": dict(strategy="arl", gradient_modulation="parameters"),
    "gblending": dict(strategy="gblending", gblending_interval_epochs=1),
    "mla": dict(strategy="mla"),
    "dr": dict(strategy="dr", dr_interval_epochs=1),  # re-initialises the sharded encoders at epoch 1
}
RESUME = ("arl_parameters", "gblending", "mla")


def _jsonable(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().double().flatten().tolist()
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def build(name, out_dir, single, shard=True, track=True):
    rows, held_out = make_rows(ROWS, seed=3), make_rows(16, seed=4)
    model = mlp_model(seed=0)
    per_device = GLOBAL_BATCH if single else GLOBAL_BATCH // 2
    args = cfg(os.path.join(out_dir, f"run_{name}"), per_device_train_batch_size=per_device,
               per_device_eval_batch_size=8, max_steps=STEPS, **CASES[name.split("@")[0]])
    trainer = ARLTrainer(model=model, args=args, train_dataset=rows, eval_dataset=held_out)
    strategy = trainer.strategy
    if shard and not single:
        shard_model(model, strategy if track else None)
    optimizer = torch.optim.SGD(trainable_parameters(model), lr=0.1, momentum=0.9)
    return trainer, model, strategy, optimizer, rows


def batch(rows, step, single):
    start = step * GLOBAL_BATCH % ROWS
    part = rows[start:start + GLOBAL_BATCH]
    if not single:
        half = GLOBAL_BATCH // 2
        part = part[rank() * half:(rank() + 1) * half]
    return {k: torch.stack([r[k] for r in part]) for k in ("audio", "visual", "labels")}


def train(trainer, model, strategy, optimizer, rows, single, start, stop):
    model.train()
    for step in range(start, stop):
        if step % STEPS_PER_EPOCH == 0 or step == start:  # as Trainer: also when resuming mid-epoch
            strategy.on_epoch_begin(trainer, model, StepContext(epoch=step / STEPS_PER_EPOCH,
                                                                global_step=step, training=True))
        ctx = StepContext(epoch=step / STEPS_PER_EPOCH, global_step=step, training=True)
        training_step(strategy, model, batch(rows, step, single), ctx)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def record(name, tag, model, strategy, out_dir, extra=None):
    state = full_model_state_dict(model)  # every rank (a collective when sharded)
    result = {"world_size": world_size(),
              "sharded": is_sharded(model.encoders["audio"]),
              "params": {k: v.double().flatten().tolist() for k, v in state.items()},
              "state": _jsonable(strategy.state_dict()), **(extra or {})}
    with open(os.path.join(out_dir, f"{name}_{tag}.json"), "w") as f:
        json.dump(result, f)


def _error(fn):
    try:
        fn()
    except ValueError as err:
        return str(err)
    return None


def refusals(out_dir):
    """What is refused: ARLTrainer on MULTI_CPU with FSDP requested; shard_model with a strategy that
    does not support FSDP (MMPareto)."""
    fsdp = _error(lambda: ARLTrainer(model=mlp_model(), args=cfg(os.path.join(out_dir, "refuse"), fsdp=True,
                                                                 fsdp_config={"fsdp_version": 2})))
    trainer = ARLTrainer(model=mlp_model(), args=cfg(os.path.join(out_dir, "refuse"), strategy="mmpareto"))
    distributed_type = str(trainer.accelerator.distributed_type)
    strategy = _error(lambda: shard_model(trainer.model, trainer.strategy))
    with open(os.path.join(out_dir, f"refusal_rank{rank()}.json"), "w") as f:
        json.dump({"fsdp": fsdp, "strategy": strategy, "distributed_type": distributed_type}, f)


def main():
    out_dir = sys.argv[1]
    single = "--single" in sys.argv
    if not single:
        refusals(out_dir)  # also initialises the process group (accelerate, gloo)
    tag = "single" if single else f"rank{rank()}"
    for name in CASES:
        trainer, model, strategy, optimizer, rows = build(name, out_dir, single)
        train(trainer, model, strategy, optimizer, rows, single, 0, STEPS)
        tracked = len(getattr(strategy.modulator, "_tracked", ()) or ())
        record(name, tag, model, strategy, out_dir, {"tracked_parameters": tracked})
    for name in RESUME:
        ckpt = os.path.join(out_dir, f"ckpt_{name}_{'single' if single else 'fsdp'}")
        trainer, model, strategy, optimizer, rows = build(name, out_dir, single)
        train(trainer, model, strategy, optimizer, rows, single, 0, SAVE_AT)
        save_checkpoint(ckpt, model, optimizer, {"global_step": SAVE_AT})
        del trainer, model, strategy, optimizer
        trainer, model, strategy, optimizer, rows = build(name + "@resumed", out_dir, single)
        step = load_checkpoint(ckpt, model, optimizer)["global_step"]
        train(trainer, model, strategy, optimizer, rows, single, step, STEPS)
        record(f"{name}_resume", tag, model, strategy, out_dir, {"checkpoint": ckpt})
    if not single:
        # negative control: parameter hooks left on the pre-sharding parameters never fire
        trainer, model, strategy, optimizer, rows = build("arl_parameters", out_dir, single, track=False)
        train(trainer, model, strategy, optimizer, rows, single, 0, STEPS)
        record("arl_parameters_stale", tag, model, strategy, out_dir)


if __name__ == "__main__":
    main()
    shutdown()
