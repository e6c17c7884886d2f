"""Tiny models, synthetic rows and trainer arguments shared by the strategy tests."""

import numpy as np
import torch

from arl_hf import ARLConfig, MultimodalConfig, MultimodalModel

MODS = ("audio", "visual")


def mlp_model(seed=0, dims=(6, 4), hidden=8, num_labels=3):
    torch.manual_seed(seed)
    cfg = MultimodalConfig(
        modalities={
            "audio": {"encoder": "mlp", "input_dim": dims[0], "hidden_dims": [hidden]},
            "visual": {"encoder": "mlp", "input_dim": dims[1], "hidden_dims": [hidden]},
        },
        num_labels=num_labels,
    )
    return MultimodalModel(cfg)


def make_rows(n=24, seed=0, num_labels=3):
    """Audio is the informative modality, visual a weak one (an imbalanced toy problem)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, num_labels, (n,), generator=g)
    a = torch.randn(n, 6, generator=g) + y[:, None] * 1.0
    v = torch.randn(n, 4, generator=g) * 2 + y[:, None] * 0.3
    return [{"audio": a[i], "visual": v[i], "labels": y[i]} for i in range(n)]


def batch_of(rows):
    return {k: torch.stack([r[k] for r in rows]) for k in ("audio", "visual", "labels")}


def cfg(tmp_path, **kw):
    base = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        optim="sgd",
        learning_rate=0.1,
        lr_scheduler_type="constant",
        max_steps=1,
        train_sampling_strategy="sequential",
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        logging_steps=1,
        weight_decay=0.0,
        disable_tqdm=True,
        seed=0,
        dataloader_num_workers=0,
    )
    base.update(kw)
    return ARLConfig(**base)


def grads_of(module):
    return [None if p.grad is None else p.grad.detach().clone() for p in module.parameters()]


def assert_params_close(m1, m2, atol=1e-6):
    for (n, a), b in zip(m1.named_parameters(), m2.parameters()):
        assert torch.allclose(a, b, atol=atol), (n, (a - b).abs().max().item())


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
