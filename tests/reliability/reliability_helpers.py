"""Helpers of the reliability tests: a tiny vector dataset on disk, the flags of a short run."""

from __future__ import annotations

from typing import List

import numpy as np

#: a short run on the vector dataset: MLP encoders, plain SGD, CPU, no card
RUN_FLAGS = ["--preset", "none", "--mlp_hidden_dims", "8", "--num_train_epochs", "2",
             "--per_device_train_batch_size", "12", "--per_device_eval_batch_size", "18", "--learning_rate", "0.05",
             "--optim", "sgd", "--use_cpu", "--dataloader_num_workers", "0", "--model_card", "false",
             "--plots", "false", "--disable_tqdm", "true", "--report_to", "none"]


def write_vector_dataset(path, columns=("audio", "visual")) -> str:
    """A 3-class ``DatasetDict`` saved at ``path``: a 6-d modality carrying the label clearly and a
    4-d one faintly (36 / 18 / 18 examples); ``columns`` names the two modality columns."""
    import datasets

    a_name, v_name = columns
    feats = datasets.Features({
        a_name: datasets.Sequence(datasets.Value("float32"), length=6),
        v_name: datasets.Sequence(datasets.Value("float32"), length=4),
        "labels": datasets.ClassLabel(names=["a", "b", "c"]),
    })
    splits = {}
    for i, (split, n) in enumerate((("train", 36), ("validation", 18), ("test", 18))):
        rng = np.random.default_rng(i)
        y = np.arange(n) % 3
        a = rng.normal(size=(n, 6)).astype("float32") + y[:, None]
        v = rng.normal(size=(n, 4)).astype("float32") * 2 + 0.3 * y[:, None]
        splits[split] = datasets.Dataset.from_dict({a_name: a, v_name: v, "labels": y}, features=feats)
    datasets.DatasetDict(splits).save_to_disk(str(path))
    return str(path)


def run_flags(dataset_dir: str, output_dir: str, *extra: str) -> List[str]:
    return ["--dataset", dataset_dir, "--output_dir", output_dir, *RUN_FLAGS, *extra]
