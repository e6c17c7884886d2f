"""MLA: Multimodal Learning with Alternating unimodal adaptation (Zhang et al., CVPR 2024).

Every modality is trained on its own through one shared head ``h = Linear(D, C)`` (a
strategy-owned module; all encoders must have the same feature size ``D``). For each
micro-batch the modalities are visited in order; modality ``m``'s loss is
``CE(h(z_m), y)`` and the gradient reaching ``h.weight`` from it is right-multiplied by the
orthogonal projector ``P`` (OWM), which is then updated with the batch-mean feature
``r = mean_i z_m,i`` of that modality:

    P <- P - (P r)(P r)^T / (alpha + r^T P r),   alpha = mla_alpha ** (1 + b / B)

(``b``: the batch index in the epoch, ``B``: batches per epoch), so later modalities'
head updates do not undo what earlier ones learnt. The projection acts in-graph (an
identity on ``h.weight`` whose backward multiplies by ``P``), so it composes with
gradient accumulation and DDP.

Inference: ``sum_m w_m h(z_m)`` with per-sample weights ``w_m ∝ exp(max_j H_j - H_m)`` (``H``:
prediction entropy; ``mla_dynamic_fusion=True``) or equal weights; the per-modality logits
are ``h(z_m)``. The model's own fusion head is not trained by MLA.

Deviations (docs/strategies.md): the paper runs one optimizer step per modality per batch;
here the M modality updates of a batch are one optimizer step (the encoders are disjoint,
so only the shared head sees a difference: modality m's head gradient is taken at the
pre-step head, and P already holds the earlier modalities' directions). The released code's
projection branch never runs (a parameter-name test that never matches); the projection
follows the paper. Under DDP, ``r`` is averaged over ranks so ``P`` is identical everywhere.

Added to the model (``model.strategy_state``): the parameters of ``head`` (``Linear(D, C)``) and the
buffers ``projector`` (``P``), ``batch_in_epoch`` and ``epoch``; a checkpoint loaded with
``from_pretrained`` predicts through the saved head.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..distributed import all_reduce_mean
from .base import Strategy, StrategyOutput, register_strategy
from .common import encoder_dims, epoch_index, make_linear, model_device, model_dtype, num_labels_of
from .options import StrategyOptions, finite, need
from .state import StrategyState


@dataclass
class MLAOptions(StrategyOptions):
    """Options of MLA (:class:`MLA`)."""

    mla_alpha: float = field(
        default=0.1,
        metadata={"help": "MLA: base of the projector's regulariser alpha = mla_alpha ** (1 + batch / batches)."},
    )
    mla_dynamic_fusion: bool = field(
        default=True,
        metadata={"help": "MLA: fuse the shared head's outputs with entropy-based weights (False: equal weights)."},
    )

    def check(self) -> None:
        need(finite(self.mla_alpha) and 0 < self.mla_alpha, self, "mla_alpha", "a finite number > 0")


class _ProjectGrad(torch.autograd.Function):
    """Identity on a ``(C, D)`` weight; backward ``grad @ P``."""

    @staticmethod
    def forward(ctx, weight, projector):
        ctx.save_for_backward(projector)
        return weight.view_as(weight)

    @staticmethod
    def backward(ctx, grad):
        (projector,) = ctx.saved_tensors
        return (grad.to(projector.dtype) @ projector).to(grad.dtype), None


class ProjectedLinear(nn.Linear):
    """MLA's shared head: ``Linear(D, C)`` whose weight gradient is right-multiplied by an OWM
    projector when one is given (``head(z, projector)``). The projection runs inside the module's
    ``forward``, so the head can be an FSDP unit of its own (its weight is only unsharded there)."""

    def forward(self, x: torch.Tensor, projector: Optional[torch.Tensor] = None) -> torch.Tensor:
        weight = self.weight if projector is None else _ProjectGrad.apply(self.weight, projector)
        return F.linear(x, weight, self.bias)


def owm_update(projector: torch.Tensor, r: torch.Tensor, alpha: float) -> torch.Tensor:
    """``P - (P r)(P r)^T / (alpha + r^T P r)`` (float64 for stability)."""
    p = projector.double()
    r = r.double().reshape(-1, 1)
    pr = p @ r
    return (p - (pr @ pr.T) / (alpha + (r.T @ pr).squeeze())).to(projector.dtype)


def entropy_weights(logits: List[torch.Tensor]) -> torch.Tensor:
    """``(M, B)`` per-sample fusion weights ``∝ exp(max_j H_j - H_m)``."""
    ent = torch.stack([-(z.float().log_softmax(-1) * z.float().softmax(-1)).sum(-1) for z in logits])
    e = torch.exp(ent.max(0, keepdim=True).values - ent)
    return e / e.sum(0, keepdim=True)


@register_strategy("mla", options=MLAOptions, label="MLA", prefix="mla_")
class MLA(Strategy):
    """MLA (see module docstring). Hyper-parameters: ``mla_alpha``, ``mla_dynamic_fusion``."""

    search_space = {"mla_alpha": (0.1, 1.0, "log")}
    #: the model's own fusion head gets no gradient (MLA predicts through its shared head)
    ddp_find_unused_parameters = True

    def __init__(self, args, modalities):
        super().__init__(args, modalities)
        self._per_epoch = 1

    def build_state(self, model) -> StrategyState:
        dims = encoder_dims(model, self.modalities)
        if len(set(dims.values())) != 1:
            raise ValueError(
                f"mla: the shared head needs every encoder to output the same feature size, got {dims} "
                "(encoders[m].out_dim)"
            )
        d = next(iter(dims.values()))
        dev, dt = model_device(model), model_dtype(model)
        plain = make_linear(d, num_labels_of(model), self.seed + 31, dev, dt)
        state = StrategyState(self.name)
        with torch.random.fork_rng(devices=[]):  # its own init is overwritten: keep the global RNG untouched
            state.head = ProjectedLinear(d, plain.out_features, device=dev, dtype=dt)
        state.head.load_state_dict(plain.state_dict())
        state.add_buffer("projector", torch.eye(d, device=dev, dtype=torch.promote_types(dt, torch.float32)))
        state.add_buffer("batch_in_epoch", torch.zeros((), dtype=torch.int64, device=dev))
        state.add_buffer("epoch", torch.full((), -1, dtype=torch.int64, device=dev))
        return state

    @property
    def head(self) -> ProjectedLinear:
        return self.state_module.head

    @property
    def projector(self) -> torch.Tensor:
        return self.state_module.projector

    @property
    def batch_in_epoch(self) -> int:
        return int(self.state_module.batch_in_epoch)

    def owned_modules(self):
        return [self.head]

    def _batches_per_epoch(self) -> int:
        n = self.trainer.num_train_batches() if self.trainer is not None else 0
        return max(n, 1)

    def on_epoch_begin(self, trainer, model, context) -> None:
        e = epoch_index(context.epoch)
        if e != int(self.state_module.epoch):
            self.state_module.epoch.fill_(e)
            self.state_module.batch_in_epoch.zero_()
        self._per_epoch = self._batches_per_epoch()

    def logits(self, features: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        return {m: self.head(features[m]) for m in self.modalities}

    def fuse(self, per_modality: Dict[str, torch.Tensor]) -> torch.Tensor:
        logits = [per_modality[m].float() for m in self.modalities]
        if self.options.mla_dynamic_fusion:
            w = entropy_weights(logits)
        else:
            w = torch.full((len(logits), logits[0].shape[0]), 1.0 / len(logits), device=logits[0].device)
        return sum(w[i][:, None] * logits[i] for i in range(len(logits)))

    # ---- the head runs inside the model's forward -------------------------------------------
    def setup(self, trainer, model) -> None:
        super().setup(trainer, model)
        self._mode: Optional[str] = None
        self._head_logits: Optional[Dict[str, torch.Tensor]] = None
        model.register_forward_hook(self._heads_in_forward)

    def _heads_in_forward(self, module, args, output):
        """Forward hook of the model: the shared head's per-modality logits (``training``: through
        the projector, which then takes in each modality's mean feature), returned as the output's
        ``unimodal_logits`` (MLA's own per-modality logits; the model is run without its unimodal
        path). Inside the forward, DDP sees the head among the parameters the output depends on
        (MLA runs with ``find_unused_parameters``)."""
        mode, self._mode = self._mode, None
        if mode is None:
            return output
        features = output["features"] if isinstance(output, dict) else output.features
        if mode == "eval":
            per = self.logits(features)
        else:
            per_epoch = self._per_epoch
            self._alpha = self.options.mla_alpha ** (1.0 + min(self.batch_in_epoch, per_epoch) / per_epoch)
            per = {}
            for m in self.modalities:
                z = features[m]
                per[m] = self.head(z, self.projector.detach().clone())
                with torch.no_grad():
                    r = all_reduce_mean(z.detach().float().mean(0))
                    self.projector.copy_(owm_update(self.projector, r, self._alpha))
        self._head_logits = per
        if isinstance(output, dict):
            output["unimodal_logits"] = per
        return output

    def _forward_heads(self, model, inputs, training: bool):
        self._mode = "train" if training else "eval"
        try:
            out = self.forward(model, inputs, unimodal=False)
        finally:
            self._mode = None
        per, self._head_logits = self._head_logits, None
        returned = out.get("unimodal_logits") if isinstance(out, dict) else None
        return out, dict(returned) if returned is not None else per

    def compute_loss(self, model, inputs: Dict[str, torch.Tensor], context) -> StrategyOutput:
        labels = inputs["labels"]
        out, per = self._forward_heads(model, inputs, context.training)
        logs: Dict[str, torch.Tensor] = {}
        if not context.training:
            loss = F.cross_entropy(self.fuse(per), labels)
            return StrategyOutput(loss=loss, outputs=out, logs={"loss_fused": loss.detach()})
        loss = torch.zeros((), device=out.logits.device)
        for m in self.modalities:
            lm = F.cross_entropy(per[m].float(), labels)
            loss = loss + lm
            logs[f"loss_{m}"] = lm.detach()
        with torch.no_grad():  # the fused prediction's cross-entropy, logged beside the optimised loss
            logs["loss_fused"] = F.cross_entropy(self.fuse({m: per[m].detach() for m in self.modalities}), labels)
        self.state_module.batch_in_epoch.add_(1)
        logs["owm_alpha"] = torch.tensor(self._alpha, device=loss.device)
        return StrategyOutput(loss=loss, outputs=out, logs=logs)

    def predict(self, model, inputs):
        out, per = self._forward_heads(model, inputs, training=False)
        return self.fuse(per), per
