"""Strategies from outside the package: ``--strategy_module path/to/file.py``.

A user strategy is one file: an options dataclass (a
:class:`~arl_hf.strategies.options.StrategyOptions` subclass) and a strategy class registered
with it (``@register_strategy("mine", options=MineOptions)``; it is not built in, so its
options are not fields of :class:`~arl_hf.ARLConfig`). :func:`load_strategy_module` imports the
file, :func:`extra_option_dataclasses` lists the options dataclasses that
:class:`~arl_hf.ARLConfig` does not already compose (the command-line parser adds them beside
it, so each field is a flag), and :func:`attach_strategy_options` puts the parsed values into
``ARLConfig.strategy_options``, where the strategy's ``options`` are read from.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
import sys
from types import ModuleType
from typing import Any, Dict, List, Optional, Sequence, Type

from .base import STRATEGIES, builtin_options
from .options import StrategyChoice, StrategyOptions

__all__ = ["load_strategy_module", "extra_option_dataclasses",
           "attach_strategy_options"]

_LOADED: Dict[str, ModuleType] = {}


def load_strategy_module(path: str) -> ModuleType:
    """Import the Python file ``path`` (its strategies register themselves); a file is imported
    once per process."""
    full = os.path.abspath(os.path.expanduser(path))
    if full in _LOADED:
        return _LOADED[full]
    if not os.path.isfile(full) or not full.endswith(".py"):
        raise FileNotFoundError(f"strategy_module: {path!r} is not a Python file")
    stem = os.path.splitext(os.path.basename(full))[0]
    name = f"arl_hf_user_strategy_{stem}_{hashlib.sha1(full.encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, full)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception:
        sys.modules.pop(name, None)
        raise
    _LOADED[full] = module
    return module


def extra_option_dataclasses() -> List[Type[StrategyOptions]]:
    """Options dataclasses of the registered strategies that :class:`~arl_hf.ARLConfig` does not
    compose (strategies registered outside the package), each once, in registration order.
    Raises ``ValueError`` when one of their fields repeats a field of ``ARLConfig`` or of another."""
    from transformers import TrainingArguments

    builtin = builtin_options()
    composed = set(builtin)
    taken = {f.name for f in dataclasses.fields(TrainingArguments)}
    for cls in builtin + [StrategyChoice]:
        taken |= {f.name for f in dataclasses.fields(cls)}
    out: List[Type[StrategyOptions]] = []
    for name, strategy in STRATEGIES.items():
        cls = getattr(strategy, "options_class", None)
        if cls is None or cls in composed or cls in out:
            continue
        clash = [f.name for f in dataclasses.fields(cls) if f.name in taken]
        if clash:
            raise ValueError(
                f"{clash[0]}: option of strategy {name!r} ({cls.__name__}) repeats an existing option name"
            )
        taken |= {f.name for f in dataclasses.fields(cls)}
        out.append(cls)
    return out


def attach_strategy_options(args: Any, parsed: Sequence[Any]) -> Optional[Dict[str, Any]]:
    """Merge the parsed options objects (instances of :func:`extra_option_dataclasses`) into
    ``args.strategy_options``; returns the merged mapping."""
    if not parsed:
        return getattr(args, "strategy_options", None)
    merged = dict(getattr(args, "strategy_options", None) or {})
    for obj in parsed:
        if not dataclasses.is_dataclass(obj):
            raise ValueError(f"parsed: expected strategy options dataclass instances, got {type(obj).__name__}")
        merged.update({f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})
    args.strategy_options = merged
    return merged
