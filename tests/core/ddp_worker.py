"""One ARL step under torchrun (gloo, CPU); each rank writes what it saw and its parameters.

Usage: torchrun --nproc_per_node 2 tests/core/ddp_worker.py OUT_DIR [--no-all-reduce]
       python tests/core/ddp_worker.py OUT_DIR --single      (the whole batch in one process)
"""

import json
import os
import sys

import torch

from arl_hf import ARLConfig, ARLTrainer, MultimodalConfig, MultimodalModel


def main():
    out_dir = sys.argv[1]
    single = "--single" in sys.argv
    all_reduce = "--no-all-reduce" not in sys.argv
    g = torch.Generator().manual_seed(0)
    n = 16
    y = torch.randint(0, 3, (n,), generator=g)
    a = torch.randn(n, 6, generator=g) + y[:, None]
    v = torch.randn(n, 4, generator=g) * 3
    # make the two halves of the global batch look different to each modality
    a[8:] *= 4.0
    rows = [{"audio": a[i], "visual": v[i], "labels": y[i], "idx": torch.tensor(i)} for i in range(n)]
    torch.manual_seed(0)
    model = MultimodalModel(
        MultimodalConfig(
            modalities={
                "audio": {"encoder": "mlp", "input_dim": 6, "hidden_dims": [8]},
                "visual": {"encoder": "mlp", "input_dim": 4, "hidden_dims": [8]},
            },
            num_labels=3,
        )
    )
    args = ARLConfig(
        output_dir=os.path.join(out_dir, "run"),
        per_device_train_batch_size=n if single else n // 2,
        optim="sgd",
        learning_rate=0.1,
        lr_scheduler_type="constant",
        max_steps=1,
        train_sampling_strategy="sequential",
        use_cpu=True,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        arl_all_reduce=all_reduce,
        remove_unused_columns=False,
    )

    class Recording(ARLTrainer):
        seen_idx = []

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            self.seen_idx.extend(inputs["idx"].tolist())
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    trainer = Recording(model=model, args=args, train_dataset=rows)
    scales = []
    orig = trainer.strategy.set_gradient_scales
    trainer.strategy.set_gradient_scales = lambda s: (scales.append(s.tolist()), orig(s))
    trainer.train()
    rank = args.process_index
    result = {
        "rank": rank,
        "world_size": args.world_size,
        "seen_idx": Recording.seen_idx,
        "scales": scales,
        "params": {k: p.detach().flatten().tolist() for k, p in model.named_parameters()},
    }
    name = "single.json" if single else f"rank{rank}{'' if all_reduce else '_noreduce'}.json"
    with open(os.path.join(out_dir, name), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    from arl_hf.distributed import shutdown

    main()
    shutdown()
