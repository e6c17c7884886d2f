"""A strategy's own tensors as a submodule of the model (``model.strategy_state``).

Heads are parameters; prototypes, projectors, running statistics, initial weights and
counters are persistent buffers. Attached in :meth:`Strategy.setup`, before the optimizer and
the DDP / FSDP wrapping exist, they are then handled as any other part of the model: the
optimizer holds the heads (with the Trainer's weight-decay rule), DDP averages their gradients,
``zero_grad`` clears them, and ``model.safetensors`` saves, resumes and reloads everything (the
best checkpoint included). ``config.strategy_state`` records which strategy the tensors belong
to and their layout, so ``MultimodalModel.from_pretrained`` / ``AutoModel`` rebuild the
submodule (:func:`arl_hf.modeling.state.state_from_spec`: the model's side of the slot, which
knows no strategy) and a strategy that predicts through its own head (MLA) evaluates a loaded
checkpoint as trained.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import nn

from ..modeling.state import STATE_ATTRIBUTE, StrategyState, set_nested_buffer, state_from_spec, state_spec

__all__ = ["STATE_ATTRIBUTE", "StrategyState", "attach_state", "state_spec", "state_from_spec", "set_nested_buffer",
           "module_state", "load_module_state"]


def _layout(module: nn.Module) -> Dict[str, tuple]:
    return {k: (tuple(v.shape), v.dtype) for k, v in module.state_dict().items()}


def attach_state(model: nn.Module, strategy: str, module: Optional[StrategyState]) -> Optional[StrategyState]:
    """Make ``module`` the model's ``strategy_state`` (``None``: the model has none) and record its
    layout in ``model.config.strategy_state``.

    A ``strategy_state`` the model already holds (loaded from a checkpoint) is replaced; when it
    belongs to the same strategy and has the same layout, ``module`` first takes over its values
    (a saved MLA head predicts again, a run continues with its heads and statistics). Strategy
    buffers are identical on every rank by construction (reduced statistics, seeded heads), so
    DDP is told not to broadcast them every step (``_ddp_params_and_buffers_to_ignore``)."""
    old = model._modules.get(STATE_ATTRIBUTE)
    if old is not None:
        if (module is not None and getattr(old, "strategy", None) == strategy
                and _layout(old) == _layout(module)):
            ref = next(iter(module.state_dict().values()), None)
            with torch.no_grad():
                module.load_state_dict({k: v.to(ref.device if ref is not None else v.device)
                                        for k, v in old.state_dict().items()})
        del model._modules[STATE_ATTRIBUTE]
    prefix = STATE_ATTRIBUTE + "."
    ignored = [n for n in getattr(model, "_ddp_params_and_buffers_to_ignore", []) if not n.startswith(prefix)]
    if module is not None:
        model.add_module(STATE_ATTRIBUTE, module)
        ignored += [prefix + n for n, _ in module.named_buffers()]
    model._ddp_params_and_buffers_to_ignore = ignored
    config = getattr(model, "config", None)
    if config is not None:
        try:
            setattr(config, STATE_ATTRIBUTE, state_spec(module) if module is not None else None)
        except AttributeError:  # pragma: no cover - a read-only config object
            pass
    return module


def module_state(module: nn.Module) -> Dict[str, torch.Tensor]:
    """Full CPU copies of a module's state. FSDP-sharded entries (``DTensor``) are gathered, so
    every rank must call it when the module is sharded."""
    from ..fsdp import is_dtensor

    out = {}
    for k, v in module.state_dict().items():
        if is_dtensor(v):
            v = v.full_tensor()
        out[k] = v.detach().cpu().clone()
    return out


def load_module_state(module: nn.Module, state: Dict[str, torch.Tensor]) -> None:
    """Load full tensors (what :func:`module_state` returns) into a plain or FSDP-sharded module:
    a sharded entry keeps this rank's shard of the full tensor."""
    from ..fsdp import is_dtensor

    current = module.state_dict()
    fixed = {}
    for k, v in state.items():
        cur = current.get(k)
        if is_dtensor(cur):
            from torch.distributed.tensor import distribute_tensor

            fixed[k] = distribute_tensor(v.to(device=cur.device, dtype=cur.dtype), cur.device_mesh, cur.placements,
                                         src_data_rank=None)  # every rank holds the full tensor: no communication
        else:
            fixed[k] = v.to(cur.device) if cur is not None else v
    module.load_state_dict(fixed)
