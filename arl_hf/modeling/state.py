"""The model's generic slot for a training strategy's tensors (``model.strategy_state``).

The model knows nothing of the strategies: it holds one :class:`StrategyState` container (an
``nn.Module`` with parameters and persistent buffers at dotted names) and records its layout in
``config.strategy_state`` (:func:`state_spec`), from which :func:`state_from_spec` rebuilds an
empty container that ``from_pretrained`` then fills from ``model.safetensors``. Strategies fill
the slot (:mod:`arl_hf.strategies.state`).
"""

from __future__ import annotations

from typing import Any, Dict

import torch
from torch import nn

__all__ = ["STATE_ATTRIBUTE", "StrategyState", "state_spec", "state_from_spec", "set_nested_buffer"]

#: the model attribute holding the strategy's submodule, and the config key recording its layout
STATE_ATTRIBUTE = "strategy_state"


class StrategyState(nn.Module):
    """The tensors of one strategy (``strategy``: its registered name). Strategies add their
    heads as submodules and their state as buffers (:meth:`add_buffer`)."""

    def __init__(self, strategy: str):
        super().__init__()
        self.strategy = strategy

    def add_buffer(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """Register ``tensor`` as a persistent buffer at the dotted path ``name`` (intermediate
        containers are created); returns it."""
        return set_nested_buffer(self, name, tensor)

    def extra_repr(self) -> str:
        return f"strategy={self.strategy!r}"


def _parent(root: nn.Module, name: str) -> "tuple[nn.Module, str]":
    """The module holding dotted ``name`` under ``root`` (plain ``nn.Module`` containers are
    created on the way) and the leaf name."""
    *path, leaf = name.split(".")
    module = root
    for part in path:
        child = module._modules.get(part)
        if child is None:
            child = nn.Module()
            module.add_module(part, child)
        module = child
    return module, leaf


def set_nested_buffer(root: nn.Module, name: str, tensor: torch.Tensor) -> torch.Tensor:
    """``root.register_buffer`` at a dotted path, creating plain ``nn.Module`` containers."""
    module, leaf = _parent(root, name)
    module.register_buffer(leaf, tensor, persistent=True)
    return tensor


def _set_nested_parameter(root: nn.Module, name: str, param: nn.Parameter) -> None:
    module, leaf = _parent(root, name)
    module.register_parameter(leaf, param)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def state_spec(module: StrategyState) -> Dict[str, Any]:
    """``{"strategy": name, "tensors": {name: {"shape", "dtype", "parameter"}}}`` (JSON-ready):
    enough for :func:`state_from_spec` to rebuild a module that loads the saved tensors."""
    tensors: Dict[str, Any] = {}
    for name, p in module.named_parameters():
        tensors[name] = {"shape": list(p.shape), "dtype": _dtype_name(p.dtype), "parameter": True}
    for name, b in module.named_buffers():
        tensors[name] = {"shape": list(b.shape), "dtype": _dtype_name(b.dtype), "parameter": False}
    return {"strategy": module.strategy, "tensors": tensors}


def state_from_spec(spec: Dict[str, Any]) -> StrategyState:
    """A :class:`StrategyState` with zero tensors of the recorded names, shapes and dtypes (what
    ``from_pretrained`` then fills from ``model.safetensors``)."""
    if (not isinstance(spec, dict) or not isinstance(spec.get("strategy"), str)
            or not isinstance(spec.get("tensors"), dict)):
        raise ValueError(f"config.strategy_state: expected {{'strategy': name, 'tensors': {{...}}}}, got {spec!r}")
    module = StrategyState(spec["strategy"])
    for name, info in spec["tensors"].items():
        dtype = getattr(torch, str(info.get("dtype", "float32")), None)
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"config.strategy_state.tensors[{name!r}].dtype: expected a torch dtype name, "
                             f"got {info.get('dtype')!r}")
        t = torch.zeros([int(s) for s in info["shape"]], dtype=dtype)
        if info.get("parameter"):
            _set_nested_parameter(module, name, nn.Parameter(t, requires_grad=t.is_floating_point()))
        else:
            set_nested_buffer(module, name, t)
    return module
