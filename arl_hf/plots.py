"""Plots of a run from ``trainer.state.log_history`` (matplotlib, Agg backend, PNG).

* :func:`plot_arl_dynamics` — the paper's Fig. 3 (Sec. 4.4): (a) the dependency ratio
  ``d_0/d_1`` against the inverse-variance ratio ``q_0/q_1`` over training (for M > 2 the
  dependency shares ``delta_m`` against the inverse-variance shares ``kappa_m``), which ARL
  drives together; (b) the modulation coefficients ``a_m`` (Eq. 18). Read from the
  ``dependency_share_<m>``, ``inverse_variance_share_<m>`` and ``a_<m>`` values that
  :class:`~arl_hf.strategies.arl.ARLStrategy` logs (ratios of shares equal ratios of the
  raw quantities: ``delta_0/delta_1 = d_0/d_1``, ``kappa_0/kappa_1 = q_0/q_1``).
* :func:`plot_accuracy_curves` — fused and per-modality accuracy on the evaluation
  (validation) split after each evaluation, plus the training loss.
"""

from __future__ import annotations

import os
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

__all__ = ["arl_series", "accuracy_series", "plot_arl_dynamics", "plot_accuracy_curves", "make_run_plots"]

ARL_PLOT_NAME = "arl_dynamics.png"
ACCURACY_PLOT_NAME = "accuracy.png"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def arl_series(log_history: Sequence[Mapping[str, float]], modalities: Sequence[str]) -> Dict[str, np.ndarray]:
    """The Fig. 3 series from training logs.

    Returns ``{"epoch", "dependency_share_<m>", "inverse_variance_share_<m>", "a_<m>"}``
    (one entry per logging step that carries all of them) and, for two modalities,
    ``"dependency_ratio"`` (``delta_0/delta_1``) and ``"inverse_variance_ratio"``
    (``kappa_0/kappa_1``). Empty arrays when the run logged no ARL statistics
    (e.g. ``--strategy none``).
    """
    mods = list(modalities)
    keys = [f"{k}_{m}" for k in ("dependency_share", "inverse_variance_share", "a") for m in mods]
    rows = [e for e in log_history if all(k in e for k in keys) and "epoch" in e]
    out: Dict[str, np.ndarray] = {"epoch": np.array([float(e["epoch"]) for e in rows])}
    for k in keys:
        out[k] = np.array([float(e[k]) for e in rows])
    if len(mods) == 2:
        d0, d1 = out[f"dependency_share_{mods[0]}"], out[f"dependency_share_{mods[1]}"]
        k0, k1 = out[f"inverse_variance_share_{mods[0]}"], out[f"inverse_variance_share_{mods[1]}"]
        with np.errstate(divide="ignore", invalid="ignore"):
            out["dependency_ratio"] = d0 / d1
            out["inverse_variance_ratio"] = k0 / k1
    return out


def accuracy_series(
    log_history: Sequence[Mapping[str, float]], modalities: Sequence[str], prefix: str = "eval"
) -> Dict[str, np.ndarray]:
    """Evaluation accuracies over training: ``{"epoch", "accuracy", "accuracy_<m>"}``.

    Only the periodic evaluations (keys ``<prefix>_accuracy...``) are read; the final
    ``validation_*`` / ``test_*`` entries written after training are not.
    """
    keys = ["accuracy"] + [f"accuracy_{m}" for m in modalities]
    rows = [e for e in log_history if f"{prefix}_accuracy" in e and "epoch" in e]
    out = {"epoch": np.array([float(e["epoch"]) for e in rows])}
    for k in keys:
        out[k] = np.array([float(e.get(f"{prefix}_{k}", np.nan)) for e in rows])
    return out


def _loss_series(log_history: Sequence[Mapping[str, float]]):
    rows = [e for e in log_history if "loss" in e and "epoch" in e]
    return np.array([float(e["epoch"]) for e in rows]), np.array([float(e["loss"]) for e in rows])


def plot_arl_dynamics(
    log_history: Sequence[Mapping[str, float]], modalities: Sequence[str], path: str, title: Optional[str] = None
) -> Optional[str]:
    """Write the Fig. 3 plot to ``path`` (PNG); ``None`` when there are no ARL logs."""
    mods = list(modalities)
    s = arl_series(log_history, mods)
    if s["epoch"].size == 0:
        return None
    plt = _pyplot()
    fig, (ax_a, ax_b) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    if len(mods) == 2:
        ax_a.plot(s["epoch"], s["dependency_ratio"], label=f"dependency ratio $d_{{{mods[0]}}}/d_{{{mods[1]}}}$")
        ax_a.plot(
            s["epoch"], s["inverse_variance_ratio"], "--",
            label=f"inverse-variance ratio $q_{{{mods[0]}}}/q_{{{mods[1]}}}$",
        )
        ratios = np.concatenate([s["dependency_ratio"], s["inverse_variance_ratio"]])
        ratios = ratios[np.isfinite(ratios) & (ratios > 0)]
        if ratios.size and ratios.max() / ratios.min() > 20:
            ax_a.set_yscale("log")
        ax_a.set_ylabel("ratio")
        ax_a.set_title("(a) optimisation dependency vs modality variance")
    else:
        for i, m in enumerate(mods):
            color = f"C{i}"
            ax_a.plot(s["epoch"], s[f"dependency_share_{m}"], color=color, label=f"dependency share {m}")
            ax_a.plot(s["epoch"], s[f"inverse_variance_share_{m}"], "--", color=color,
                      label=f"inverse-variance share {m}")
        ax_a.set_ylabel("share")
        ax_a.set_title("(a) dependency shares vs inverse-variance shares")
    ax_a.set_xlabel("epoch")
    ax_a.legend(fontsize=8)
    ax_a.grid(alpha=0.3)
    for i, m in enumerate(mods):
        ax_b.plot(s["epoch"], s[f"a_{m}"], color=f"C{i}", label=f"$a_{{{m}}}$")
    ax_b.set_xlabel("epoch")
    ax_b.set_ylabel("coefficient")
    ax_b.set_title("(b) modulation coefficients $a_m$ (Eq. 18)")
    ax_b.legend(fontsize=8)
    ax_b.grid(alpha=0.3)
    return _finish(plt, fig, path, title)


def plot_accuracy_curves(
    log_history: Sequence[Mapping[str, float]], modalities: Sequence[str], path: str, title: Optional[str] = None
) -> Optional[str]:
    """Write validation accuracy (fused and per modality) and training loss curves; ``None`` if no evaluations."""
    mods = list(modalities)
    s = accuracy_series(log_history, mods)
    loss_epoch, loss = _loss_series(log_history)
    if s["epoch"].size == 0 and loss.size == 0:
        return None
    plt = _pyplot()
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    if s["epoch"].size:
        ax_acc.plot(s["epoch"], s["accuracy"], "o-", color="k", label="fused")
        for i, m in enumerate(mods):
            ax_acc.plot(s["epoch"], s[f"accuracy_{m}"], "o--", color=f"C{i}", label=m)
        ax_acc.legend(fontsize=8)
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_title("validation accuracy")
    ax_acc.grid(alpha=0.3)
    if loss.size:
        ax_loss.plot(loss_epoch, loss, color="C3")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("training loss")
    ax_loss.grid(alpha=0.3)
    return _finish(plt, fig, path, title)


def _finish(plt, fig, path: str, title: Optional[str]) -> str:
    """Title, layout, write and close ``fig``; returns ``path``."""
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def _save(fig, path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fig.savefig(path, format="png")


def make_run_plots(
    log_history: Sequence[Mapping[str, float]], modalities: Sequence[str], directory: str,
    title: Optional[str] = None,
) -> List[str]:
    """Write every plot of a run into ``directory``; returns the paths written."""
    written = []
    for fn, name in ((plot_arl_dynamics, ARL_PLOT_NAME), (plot_accuracy_curves, ACCURACY_PLOT_NAME)):
        path = fn(log_history, modalities, os.path.join(directory, name), title=title)
        if path is not None:
            written.append(path)
    return written
