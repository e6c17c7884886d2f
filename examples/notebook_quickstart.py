# %% [markdown]
# # ARL on your own model, in a notebook
#
# `ARLTrainer` trains **any** `nn.Module` that follows the arl-hf model contract:
#
# * an `encoders` attribute: `nn.ModuleDict` keyed by modality name, in order (ARL scales the
#   gradients that flow into each of them, Eq. 19-20);
# * `forward(**{modality: tensor}, labels=None, return_unimodal_logits=False)` returning an object
#   with `logits` (fused, `(B, C)`) and, on request, `unimodal_logits` (modality -> `(B, C)`):
#   the fused head applied with every *other* modality's features zeroed (Sec. 3.2).
#
# Run it as a script (`python examples/notebook_quickstart.py`, about a minute on a CPU) or cell
# by cell (`# %%` markers: VS Code / Jupytext). It needs no download.

# %%
from dataclasses import dataclass
from typing import Dict, Optional

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

from arl_hf import ARLConfig, ARLTrainer
from arl_hf.plots import make_run_plots

torch.manual_seed(0)

# %% [markdown]
# ## 1. Data: two modalities of unequal quality
# A toy 4-class problem: the "audio" vector carries the label clearly, the "video" vector only
# faintly — the modality imbalance ARL is about. Any `datasets.Dataset` with one column per
# modality and `labels` works.


# %%
def make_split(n: int, seed: int) -> datasets.Dataset:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    centers_a, centers_v = rng.normal(size=(4, 20)), rng.normal(size=(4, 30))
    rng = np.random.default_rng(seed + 100)
    audio = centers_a[y] * 0.45 + rng.normal(size=(n, 20))
    video = centers_v[y] * 0.3 + rng.normal(size=(n, 30))
    return datasets.Dataset.from_dict(
        {"audio": audio.astype("float32"), "video": video.astype("float32"), "labels": y}
    ).with_format("torch")


# the class centres come from the seed of the generator above: use the same seed for all splits
full = make_split(1200, seed=0)
train = full.select(range(0, 800))
validation = full.select(range(800, 1000))
test = full.select(range(1000, 1200))

# %% [markdown]
# ## 2. Your model, following the contract


# %%
@dataclass
class Output(ModelOutput):
    loss: Optional[torch.Tensor] = None
    logits: Optional[torch.Tensor] = None
    unimodal_logits: Optional[Dict[str, torch.Tensor]] = None


class TwoTowerClassifier(nn.Module):
    """Two MLP encoders and a linear head on the concatenated features."""

    def __init__(self, dims: Dict[str, int], num_classes: int, hidden: int = 64):
        super().__init__()
        self.encoders = nn.ModuleDict(
            {m: nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
             for m, d in dims.items()}
        )
        self.head = nn.Linear(hidden * len(dims), num_classes)

    def forward(self, labels=None, return_unimodal_logits=False, **inputs):
        feats = {m: enc(inputs[m]) for m, enc in self.encoders.items()}
        logits = self.head(torch.cat(list(feats.values()), dim=-1))
        unimodal = None
        if return_unimodal_logits:
            unimodal = {}
            for m in feats:  # same head, the other modalities' features zeroed
                parts = [f if k == m else torch.zeros_like(f) for k, f in feats.items()]
                unimodal[m] = self.head(torch.cat(parts, dim=-1))
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return Output(loss=loss, logits=logits, unimodal_logits=unimodal)


# %% [markdown]
# ## 3. Train with ARL, then with the plain baseline, same everything else
# `ARLConfig` is a `TrainingArguments`: every Trainer option works. The checkpoint is selected
# on the validation split; the test split is only looked at once, at the end.


# %%
def fit(strategy: str):
    model = TwoTowerClassifier({"audio": 20, "video": 30}, num_classes=4)
    args = ARLConfig(
        output_dir=f"outputs/quickstart-{strategy}",
        strategy=strategy,              # "arl" or "none" (or any registered strategy)
        arl_temperature=4.0,            # T of Eq. 18
        arl_gamma=1.0,                  # weight of the unimodal losses, Eq. 22
        num_train_epochs=8,
        per_device_train_batch_size=32,
        learning_rate=1e-2,
        optim="sgd",
        optim_args="momentum=0.9",
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=1,
        load_best_model_at_end=True,
        metric_for_best_model="accuracy",
        logging_steps=5,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = ARLTrainer(model=model, args=args, train_dataset=train, eval_dataset=validation)
    trainer.train()
    return trainer, trainer.evaluate(test, metric_key_prefix="test")


results = {}
for strategy in ("arl", "none"):
    trainer, metrics = fit(strategy)
    results[strategy] = metrics
    if strategy == "arl":
        # the paper's Fig. 3 for this run + accuracy curves, from trainer.state.log_history
        print("plots:", make_run_plots(trainer.state.log_history, ["audio", "video"], "outputs/quickstart-arl/plots"))

# %%
for strategy, m in results.items():
    print(
        f"{strategy:>5} [test split]  fused acc {100 * m['test_accuracy']:.1f}  F1 {100 * m['test_macro_f1']:.1f}"
        f" | audio acc {100 * m['test_accuracy_audio']:.1f} | video acc {100 * m['test_accuracy_video']:.1f}"
    )
