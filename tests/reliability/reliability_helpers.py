"""Helpers of the reliability tests: the flags of a short run (the tiny vector dataset it trains on is
``strategy_testutils.write_vector_dataset``)."""

from __future__ import annotations

from typing import List

#: a short run on the vector dataset: MLP encoders, plain SGD, CPU, no card
RUN_FLAGS = ["--preset", "none", "--mlp_hidden_dims", "8", "--num_train_epochs", "2",
             "--per_device_train_batch_size", "12", "--per_device_eval_batch_size", "18", "--learning_rate", "0.05",
             "--optim", "sgd", "--use_cpu", "--dataloader_num_workers", "0", "--model_card", "false",
             "--plots", "false", "--disable_tqdm", "true", "--report_to", "none"]


def run_flags(dataset_dir: str, output_dir: str, *extra: str) -> List[str]:
    return ["--dataset", dataset_dir, "--output_dir", output_dir, *RUN_FLAGS, *extra]
