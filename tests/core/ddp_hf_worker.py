"""One ARL step with hf encoders (tiny BERT + ViT saved here) under torchrun (gloo, CPU), or the whole
global batch in one process; writes the coefficients and the parameters after the step.

Usage: torchrun --nproc_per_node 2 tests/core/ddp_hf_worker.py OUT_DIR
       python tests/core/ddp_hf_worker.py OUT_DIR --single
"""

import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "modeling"))

from hf_checkpoints import save_bert, save_vit, text_image_rows  # noqa: E402

from arl_hf import ARLConfig, ARLTrainer, MultimodalConfig, MultimodalModel  # noqa: E402
from arl_hf.data.collator import MultimodalCollator  # noqa: E402


def main():
    out_dir = sys.argv[1]
    single = "--single" in sys.argv
    rank = int(os.environ.get("RANK", 0))
    folder = os.path.join(out_dir, f"ckpt_{'single' if single else rank}")  # one copy per process
    no_dropout = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    bert, vit = save_bert(folder + "/bert", **no_dropout), save_vit(folder + "/vit", **no_dropout)
    n = 16
    rows = text_image_rows(bert, n=n)
    for i, r in enumerate(rows):  # make the two halves of the global batch look different
        r["image"] = r["image"] * (4.0 if i >= n // 2 else 1.0)
    torch.manual_seed(0)
    model = MultimodalModel(MultimodalConfig(
        modalities={"text": {"encoder": f"hf:{bert}"}, "image": {"encoder": f"hf:{vit}"}}, num_labels=3))
    args = ARLConfig(output_dir=os.path.join(out_dir, "run"), per_device_train_batch_size=n if single else n // 2,
                     optim="sgd", learning_rate=0.1, lr_scheduler_type="constant", max_steps=1,
                     train_sampling_strategy="sequential", use_cpu=True, save_strategy="no", report_to="none",
                     disable_tqdm=True)
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    trainer = ARLTrainer(model=model, args=args, train_dataset=rows,
                         data_collator=MultimodalCollator(["text", "image"]))
    scales = []
    orig = trainer.strategy.set_gradient_scales
    trainer.strategy.set_gradient_scales = lambda s: (scales.append(s.tolist()), orig(s))
    trainer.train()
    result = {"world_size": args.world_size, "scales": scales,
              "params": {k: p.detach().flatten().tolist() for k, p in model.named_parameters()},
              "moved": [k for k, p in model.named_parameters() if not torch.equal(p.detach(), before[k])]}
    name = "single.json" if single else f"rank{args.process_index}.json"
    with open(os.path.join(out_dir, name), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    from arl_hf.distributed import shutdown

    main()
    shutdown()
