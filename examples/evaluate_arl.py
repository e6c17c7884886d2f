#!/usr/bin/env python
"""Evaluate a saved arl-hf checkpoint on a dataset split.

    python examples/evaluate_arl.py --model_name_or_path outputs/avdigits-arl --split test
    python examples/evaluate_arl.py --model_name_or_path user/arl-cremad --dataset cremad \
        --data_dir /data/CREMA-D --split validation --output_json val.json

Prints accuracy and macro-F1 of the fused head and of each modality's unimodal head. The
dataset and its preprocessing default to the ones recorded in the checkpoint's
``config.preprocessing``.
"""

import sys

from arl_hf.scripts.evaluate import main

if __name__ == "__main__":
    sys.exit(main(prog="evaluate_arl.py"))
