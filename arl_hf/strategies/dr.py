"""D&R: Diagnosing and Re-learning for balanced multimodal learning (Wei, Li & Hu, ECCV 2024).

At the start of every ``dr_interval_epochs``-th epoch (20, 40, ...; at most ``dr_max_times``
times) each modality is diagnosed: its encoder's features on the training set and on the
**validation split** (eval mode, gathered over ranks) are MinMax-scaled, clustered by KMeans
with ``k = num_labels``, and the cluster purity is measured on each. The re-learning
strength is ``w_m = tanh(dr_lambda * |purity_train - purity_val|)`` and the whole encoder is
softly re-initialised: ``θ_m <- w_m θ_m^init + (1 - w_m) θ_m`` (parameters; buffers such as
BatchNorm statistics are kept). KMeans runs on rank 0 with ``random_state = seed`` on the
rows sorted by value (so the row order of the gather does not matter) and the ``w`` are
broadcast, so every rank re-initialises identically, and as one process would.

State (``strategy_state.pt``): the initial encoder parameters ``θ^init`` (captured at set-up),
the number of re-initialisations done and the last diagnosed epoch.
"""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np
import torch
from ..log import get_logger

from ..distributed import broadcast_, rank
from .base import StrategyOutput, register_strategy
from .common import StatefulStrategy, collect_features, epoch_index, gather_rows, model_device, num_labels_of, validation_dataset

logger = get_logger(__name__)


def cluster_purity(features: np.ndarray, labels: np.ndarray, num_clusters: int, seed: int = 0) -> float:
    """Purity of KMeans(``num_clusters``) on MinMax-scaled ``features``:
    ``sum_clusters max_class count / N``."""
    from sklearn.cluster import KMeans
    from sklearn.preprocessing import MinMaxScaler

    x = MinMaxScaler().fit_transform(np.asarray(features, dtype=np.float64))
    k = min(num_clusters, len(x))
    assign = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x)
    return purity(assign, labels)


def canonical_rows(features: np.ndarray, labels: np.ndarray):
    """``(features, labels)`` with rows sorted by value (feature 0, then 1, ..., then label).

    KMeans' result depends on the row order; gathered over ranks the rows come in shard
    order, in one process in loader order. Sorting makes the diagnosis the same for both
    (2-process DDP equals one process on the global batch, tested)."""
    features = np.asarray(features)
    labels = np.asarray(labels)
    keys = [labels] + [features[:, j] for j in reversed(range(features.shape[1]))]
    order = np.lexsort(keys)
    return features[order], labels[order]


def purity(assign: np.ndarray, labels: np.ndarray) -> float:
    """``sum_c max_y |{i : assign_i = c, y_i = y}| / N``."""
    assign = np.asarray(assign)
    labels = np.asarray(labels)
    total = 0
    for c in np.unique(assign):
        total += np.bincount(labels[assign == c]).max()
    return float(total) / float(len(labels))


def relearn_strength(purity_train: float, purity_val: float, lam: float) -> float:
    """``tanh(lambda * |purity_train - purity_val|)``."""
    return float(np.tanh(lam * abs(purity_train - purity_val)))


@torch.no_grad()
def soft_reinit_(params: List[torch.nn.Parameter], init: List[torch.Tensor], w: float) -> None:
    """``θ <- w θ_init + (1 - w) θ`` in place (an FSDP-sharded ``θ`` takes its shard of ``θ_init``)."""
    from ..fsdp import is_dtensor

    for p, p0 in zip(params, init):
        p0 = p0.to(p.device, p.dtype)
        if is_dtensor(p) and not is_dtensor(p0):
            from torch.distributed.tensor import distribute_tensor

            p0 = distribute_tensor(p0, p.device_mesh, p.placements, src_data_rank=None)
        p.mul_(1.0 - w).add_(p0, alpha=w)


@register_strategy("dr")
class DiagnoseRelearn(StatefulStrategy):
    """D&R (see module docstring). Hyper-parameters: ``dr_interval_epochs``, ``dr_lambda``, ``dr_max_times``."""

    search_space = {"dr_lambda": (0.5, 6.0, "log")}

    def __init__(self, args, modalities):
        super().__init__(args, modalities)
        self.init_params: Dict[str, List[torch.Tensor]] = {}
        self.times = 0
        self.last_epoch = -1
        self.history: List[Dict[str, float]] = []

    def setup(self, trainer, model) -> None:
        super().setup(trainer, model)
        self.init_params = {m: [p.detach().clone() for p in model.encoders[m].parameters()] for m in self.modalities}

    def compute_loss(self, model, inputs: Dict[str, torch.Tensor], context) -> StrategyOutput:
        out = self.forward(model, inputs, unimodal=False)
        loss = torch.nn.functional.cross_entropy(out.logits.float(), inputs["labels"])
        return StrategyOutput(loss=loss, outputs=out, logs={"loss_fused": loss.detach(), "dr_times": torch.tensor(float(self.times), device=loss.device)})

    def on_epoch_begin(self, trainer, model, context) -> None:
        e = epoch_index(context.epoch)
        if e == 0 or e == self.last_epoch or e % self.args.dr_interval_epochs != 0 or self.times >= self.args.dr_max_times:
            return
        self.diagnose_and_relearn(trainer, model, e)
        self.last_epoch = e
        self.times += 1

    def diagnose_and_relearn(self, trainer, model, epoch: int) -> Dict[str, float]:
        c = num_labels_of(model)
        tr_f, tr_y = collect_features(trainer, model, trainer.train_dataset, self.modalities)
        va_f, va_y = collect_features(trainer, model, validation_dataset(trainer, "dr"), self.modalities)
        tr_y, va_y = gather_rows(tr_y), gather_rows(va_y)
        dev = model_device(model)
        diag = torch.zeros(len(self.modalities), 3, device=dev, dtype=torch.float64)  # purity train, val, w
        for i, m in enumerate(self.modalities):
            ft, fv = gather_rows(tr_f[m]), gather_rows(va_f[m])
            if rank() == 0:
                pt = cluster_purity(*canonical_rows(ft.cpu().numpy(), tr_y.cpu().numpy()), c, self.args.seed)
                pv = cluster_purity(*canonical_rows(fv.cpu().numpy(), va_y.cpu().numpy()), c, self.args.seed)
                diag[i] = torch.tensor([pt, pv, relearn_strength(pt, pv, self.args.dr_lambda)], dtype=torch.float64)
        broadcast_(diag)  # every rank re-initialises, and records, the same
        record: Dict[str, float] = {"epoch": float(epoch)}
        for i, m in enumerate(self.modalities):
            pt, pv, w = (float(v) for v in diag[i].tolist())
            record[f"purity_train_{m}"], record[f"purity_val_{m}"], record[f"w_{m}"] = pt, pv, w
            soft_reinit_(list(model.encoders[m].parameters()), self.init_params[m], w)
        logger.info(f"dr: epoch {epoch}: re-initialisation {record}")
        self.history.append(record)
        return record

    def state_dict(self) -> Dict[str, Any]:
        return {
            "init_params": {m: [t.detach().cpu().clone() for t in v] for m, v in self.init_params.items()},
            "times": self.times,
            "last_epoch": self.last_epoch,
            "history": list(self.history),
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        dev = None
        for v in self.init_params.values():
            if v:
                dev = v[0].device
                break
        self.init_params = {m: [t.to(dev) if dev is not None else t for t in v] for m, v in state["init_params"].items()}
        self.times = int(state["times"])
        self.last_epoch = int(state["last_epoch"])
        self.history = list(state.get("history", []))
