"""``fixed``: constant per-modality gradient multipliers (ARL paper, Fig. 1(b): "audio x5").

The fused cross-entropy is trained as in the concatenation baseline; the gradient entering
``model.encoders[m]`` is multiplied by ``ARLConfig.fixed_multipliers[m]`` inside the
autograd graph (so every micro-batch of an accumulation window is scaled once).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F

from .base import Strategy, StrategyOutput, register_strategy
from .options import StrategyOptions, finite, need


@dataclass
class FixedOptions(StrategyOptions):
    """Options of ``fixed`` (:class:`FixedMultipliers`)."""

    fixed_multipliers: Optional[List[float]] = field(
        default=None,
        metadata={"help": "fixed: constant gradient multiplier per modality, in modality order "
                  "(e.g. '5 1' = audio x5, Fig. 1(b)); default all 1."},
    )

    def check(self) -> None:
        fm = self.fixed_multipliers
        if fm is not None:
            values = list(fm.values()) if isinstance(fm, dict) else list(fm) if isinstance(fm, (list, tuple)) else None
            need(values is not None and len(values) > 0 and all(finite(v) and v >= 0 for v in values), self,
                 "fixed_multipliers", "a non-empty list of finite numbers >= 0 (one per modality, in order)")


@register_strategy("fixed", options=FixedOptions, label="Fixed multipliers", prefix="fixed_")
class FixedMultipliers(Strategy):
    """Fused loss; encoder ``m``'s gradients times a constant ``fixed_multipliers[m]``.

    ``fixed_multipliers`` is a list in modality order (``[5, 1]`` = audio x5 for
    ``("audio", "visual")``) or, from Python, a dict ``{modality: multiplier}`` (missing
    modalities keep 1). ``None`` means all 1 (identical to ``none``).
    """

    def __init__(self, args, modalities):
        super().__init__(args, modalities)
        self.multipliers = torch.tensor(self._parse(self.options.fixed_multipliers), dtype=torch.float32)

    def _parse(self, spec):
        mods = self.modalities
        if spec is None:
            return [1.0] * len(mods)
        if isinstance(spec, dict):
            unknown = [k for k in spec if k not in mods]
            if unknown:
                raise ValueError(f"fixed_multipliers: unknown modality {unknown[0]!r}; expected keys among {mods}")
            return [float(spec.get(m, 1.0)) for m in mods]
        values = [float(v) for v in spec]
        if len(values) != len(mods):
            raise ValueError(
                f"fixed_multipliers: expected {len(mods)} values (one per modality {mods}), got {len(values)}"
            )
        return values

    def uses_gradient_scaling(self) -> bool:
        return True

    def compute_loss(self, model, inputs: Dict[str, torch.Tensor], context) -> StrategyOutput:
        out = self.forward(model, inputs, unimodal=False)
        loss = F.cross_entropy(out.logits.float(), inputs["labels"])
        if context.training:
            self.set_gradient_scales(self.multipliers.to(out.logits.device))
        logs = {"loss_fused": loss.detach()}
        for i, m in enumerate(self.modalities):
            logs[f"grad_scale_{m}"] = self.multipliers[i].to(loss.device)
        return StrategyOutput(loss=loss, outputs=out, logs=logs)
