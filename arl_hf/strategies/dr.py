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

State (buffers of ``model.strategy_state``, saved with the model): the initial encoder parameters
``θ^init`` (``init.<modality>.<parameter name>``, captured at set-up), the number of
re-initialisations done (``times``), the last diagnosed epoch and the diagnosis history
(``history``: one row ``epoch, purity_train_m, purity_val_m, w_m ...`` per re-initialisation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

import numpy as np
import torch

from ..distributed import broadcast_, rank
from ..log import get_logger
from .base import Strategy, StrategyOutput, register_strategy
from .common import collect_features, epoch_index, gather_rows, model_device, num_labels_of, validation_dataset
from .options import StrategyOptions, finite, need
from .state import StrategyState

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


@dataclass
class DROptions(StrategyOptions):
    """Options of D&R (:class:`DiagnoseRelearn`)."""

    dr_interval_epochs: int = field(default=20, metadata={"help": "D&R: diagnose and re-initialise every N epochs."})
    dr_lambda: float = field(default=3.0, metadata={"help": "D&R: lambda of w = tanh(lambda * |purity gap|) (>= 0)."})
    dr_max_times: int = field(default=3, metadata={"help": "D&R: at most this many re-initialisations."})

    def check(self) -> None:
        need(isinstance(self.dr_interval_epochs, int) and self.dr_interval_epochs >= 1, self, "dr_interval_epochs",
             "an int >= 1")
        need(finite(self.dr_lambda) and self.dr_lambda >= 0, self, "dr_lambda", "a finite number >= 0")
        need(isinstance(self.dr_max_times, int) and self.dr_max_times >= 0, self, "dr_max_times", "an int >= 0")


@register_strategy("dr", options=DROptions, label="D&R", prefix="dr_")
class DiagnoseRelearn(Strategy):
    """D&R (see module docstring). Hyper-parameters: ``dr_interval_epochs``, ``dr_lambda``, ``dr_max_times``."""

    #: the re-initialisation interval is tuned too (2-12 epochs): at its default (20) a run of the
    #: benchmark budget, which may stop from epoch 16 on, would never re-initialise
    search_space = {"dr_lambda": (0.5, 6.0, "log"), "dr_interval_epochs": (2, 12, "int")}

    def build_state(self, model) -> StrategyState:
        state = StrategyState(self.name)
        for m in self.modalities:
            for name, p in model.encoders[m].named_parameters():
                state.add_buffer(f"init.{m}.{name}", p.detach().clone())
        dev = model_device(model)
        columns = 1 + 3 * len(self.modalities)
        state.add_buffer("history", torch.zeros(self.options.dr_max_times, columns, dtype=torch.float64, device=dev))
        state.add_buffer("times", torch.zeros((), dtype=torch.int64, device=dev))
        state.add_buffer("last_epoch", torch.full((), -1, dtype=torch.int64, device=dev))
        return state

    def initial_parameters(self, model) -> Dict[str, List[torch.Tensor]]:
        """modality -> the encoder's initial parameters, in ``model.encoders[m].parameters()`` order."""
        state = self.state_module
        return {m: [state.get_buffer(f"init.{m}.{name}") for name, _ in model.encoders[m].named_parameters()]
                for m in self.modalities}

    @property
    def times(self) -> int:
        return int(self.state_module.times)

    @property
    def last_epoch(self) -> int:
        return int(self.state_module.last_epoch)

    def _keys(self) -> List[str]:
        return ["epoch"] + [f"{k}_{m}" for m in self.modalities for k in ("purity_train", "purity_val", "w")]

    @property
    def history(self) -> List[Dict[str, float]]:
        """One record per re-initialisation: ``epoch`` and ``purity_train_m``, ``purity_val_m``, ``w_m``."""
        keys = self._keys()
        rows = self.state_module.history[: self.times].detach().cpu().tolist()
        return [dict(zip(keys, row)) for row in rows]

    def compute_loss(self, model, inputs: Dict[str, torch.Tensor], context) -> StrategyOutput:
        out = self.forward(model, inputs, unimodal=False)
        loss = torch.nn.functional.cross_entropy(out.logits.float(), inputs["labels"])
        logs = {"loss_fused": loss.detach(), "dr_times": torch.tensor(float(self.times), device=loss.device)}
        return StrategyOutput(loss=loss, outputs=out, logs=logs)

    def on_epoch_begin(self, trainer, model, context) -> None:
        e = epoch_index(context.epoch)
        opts = self.options
        if e == 0 or e == self.last_epoch or e % opts.dr_interval_epochs != 0 or self.times >= opts.dr_max_times:
            return
        self.diagnose_and_relearn(trainer, model, e)
        self.state_module.last_epoch.fill_(e)
        self.state_module.times.add_(1)

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
                pt = cluster_purity(*canonical_rows(ft.cpu().numpy(), tr_y.cpu().numpy()), c, self.seed)
                pv = cluster_purity(*canonical_rows(fv.cpu().numpy(), va_y.cpu().numpy()), c, self.seed)
                diag[i] = torch.tensor([pt, pv, relearn_strength(pt, pv, self.options.dr_lambda)], dtype=torch.float64)
        broadcast_(diag)  # every rank re-initialises, and records, the same
        record: Dict[str, float] = {"epoch": float(epoch)}
        init = self.initial_parameters(model)
        for i, m in enumerate(self.modalities):
            pt, pv, w = (float(v) for v in diag[i].tolist())
            record[f"purity_train_{m}"], record[f"purity_val_{m}"], record[f"w_{m}"] = pt, pv, w
            soft_reinit_(list(model.encoders[m].parameters()), init[m], w)
        logger.info(f"dr: epoch {epoch}: re-initialisation {record}")
        times = self.times
        if times < self.state_module.history.shape[0]:
            row = torch.tensor([record[k] for k in self._keys()], dtype=torch.float64)
            self.state_module.history[times].copy_(row)
        return record
