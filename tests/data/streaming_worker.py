"""ARLTrainer on a streamed, sharded Parquet split under torchrun (gloo, CPU).

Usage: torchrun --nproc_per_node 2 tests/data/streaming_worker.py SHARDS_DIR OUT_DIR

Each rank streams its own shards (``stream_split``: ``split_dataset_by_node``, shuffled with a
buffer, frames undecoded until the transform), trains 2 epochs with ``max_steps`` and records,
per optimizer step, the ids of the samples it trained on. It first records the error of the
default ``dispatch_batches``.
"""

import json
import os
import sys

import torch

from arl_hf import ARLConfig, ARLTrainer, MultimodalConfig, MultimodalModel
from arl_hf.data import MultimodalCollator
from arl_hf.data.streaming import steps_per_epoch, stream_split

EPOCHS, BATCH = 2, 4


class IdCollator(MultimodalCollator):
    """The modality batch plus ``idx`` (the sample number in ``id``)."""

    def __call__(self, features):
        out = super().__call__(features)
        out["idx"] = torch.tensor([int(f["id"].split("_")[1]) for f in features])
        return out


class Recording(ARLTrainer):
    seen = []

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        self.seen.append({"step": self.state.global_step, "idx": inputs.pop("idx").tolist()})
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


def main():
    shards, out = sys.argv[1], sys.argv[2]
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    train = stream_split(shards, "train", image_size=16, keep_columns=["id"], shuffle_buffer=8, shuffle_seed=1)
    steps = EPOCHS * steps_per_epoch(shards, "train", per_device_batch_size=BATCH, world_size=world)
    torch.manual_seed(0)
    model = MultimodalModel(MultimodalConfig(modalities={
        "audio": {"encoder": "timm:test_resnet", "in_chans": 1},
        "visual": {"encoder": "timm:test_resnet", "in_chans": 3}}, num_labels=10))
    common = dict(per_device_train_batch_size=BATCH, max_steps=steps, use_cpu=True, report_to="none",
                  save_strategy="no", disable_tqdm=True, logging_steps=1, remove_unused_columns=False,
                  learning_rate=0.05, optim="sgd", dataloader_num_workers=0)
    try:  # accelerate's default dispatch_batches for an IterableDataset
        Recording(model=model, args=ARLConfig(output_dir=os.path.join(out, "refused"), **common),
                  train_dataset=train, data_collator=IdCollator(["audio", "visual"])).get_train_dataloader()
        dispatch_error = None
    except ValueError as err:
        dispatch_error = str(err)
    args = ARLConfig(output_dir=os.path.join(out, "run"), accelerator_config={"dispatch_batches": False}, **common)
    trainer = Recording(model=model, args=args, train_dataset=train, data_collator=IdCollator(["audio", "visual"]))
    Recording.seen = []
    trainer.train()
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"rank": rank, "world_size": world, "max_steps": steps, "seen": Recording.seen,
                   "examples_per_rank": train.examples_per_rank,
                   "global_step": trainer.state.global_step, "dispatch_error": dispatch_error,
                   "losses": [e["loss"] for e in trainer.state.log_history if "loss" in e]}, f)


if __name__ == "__main__":
    from arl_hf.distributed import shutdown

    main()
    shutdown()
