#!/usr/bin/env python
"""Train a multimodal classifier with ARL on the HuggingFace stack.

    python examples/run_arl.py                                   # AV-Digits, a few minutes on CPU
    python examples/run_arl.py --preset cremad --data_dir /data/CREMA-D
    python examples/run_arl.py --preset cremad_official --data_dir /data/CREMA-D --arl_gamma 3
    python examples/run_arl.py --strategy none                   # the concatenation baseline
    python examples/run_arl.py config.yaml                       # options from a JSON/YAML file
    accelerate launch --mixed_precision bf16 examples/run_arl.py --preset ave --data_dir /data/AVE
    accelerate launch --multi_gpu --num_processes 2 examples/run_arl.py --use_cpu   # 2-process CPU DDP

What it does, top to bottom (arl_hf.runner):
  1. options: ARLConfig + model + data + run arguments (HfArgumentParser); --preset, then a
     config file, then the flags you give, each overriding the previous (`--help` lists all);
  2. data: arl_hf.data.load(dataset) -> train / validation / test + collator;
  3. model: one encoder per modality of the dataset (timm ResNet-18 by default) + fusion;
  4. ARLTrainer.train(): evaluates on the validation split every epoch and keeps the best
     checkpoint (load_best_model_at_end, metric_for_best_model=accuracy);
  5. the selected checkpoint is evaluated on validation and, once, on test;
  6. writes output_dir: model.safetensors + config.json (AutoModel.from_pretrained after
     `import arl_hf`), README.md model card, plots/*.png, results.json; --push_to_hub pushes it.

An output_dir that already holds a run is refused: pass --overwrite_output_dir or --resume.
"""

import sys

from arl_hf.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main(prog="run_arl.py"))
