"""Options dataclasses: what a strategy can be told, declared next to the strategy itself.

Every strategy registers an options dataclass with it
(``@register_strategy("ogm_ge", options=OGMGEOptions, label="OGM-GE", prefix="ogm_")``): fields
with ``metadata={"help": ...}`` (they become command-line flags) and a
:meth:`StrategyOptions.check` raising ``ValueError`` naming the field and what was expected.
:class:`~arl_hf.ARLConfig` is assembled from the built-in strategies' options, so
``ARLConfig(strategy="ogm_ge", ogm_alpha=0.3)`` and ``--ogm_alpha 0.3`` work; a strategy
receives its own options object as ``self.options`` (:meth:`StrategyOptions.from_args`).
Strategies registered outside the package get their flags through ``--strategy_module``
(:mod:`arl_hf.strategies.plugins`); their values travel in ``ARLConfig.strategy_options``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from typing import Any, List, Mapping, Optional, Union

__all__ = ["StrategyOptions", "StrategyChoice", "ModulationOptions", "need", "finite"]


def finite(x: Any) -> bool:
    """Whether ``x`` is a finite real number."""
    return isinstance(x, (int, float)) and math.isfinite(x)


def need(ok: bool, options: Any, name: str, expected: str) -> None:
    """``ValueError("<name>: expected <expected>, got <value>")`` unless ``ok``."""
    if not ok:
        raise ValueError(f"{name}: expected {expected}, got {getattr(options, name)!r}")


@dataclass
class StrategyOptions:
    """Base of every strategy's options dataclass: validation on construction, and
    :meth:`from_args` to read the options out of an :class:`~arl_hf.ARLConfig`."""

    def __post_init__(self) -> None:
        from ..numerics import check_finite_fields

        self.check()
        check_finite_fields(self)  # every float option finite, within float32's range

    def check(self) -> None:
        """Raise ``ValueError`` naming the first invalid field. Override (and call it for the
        parent's fields, if any); it also runs on :class:`~arl_hf.ARLConfig` for the built-ins."""

    @classmethod
    def from_args(cls, args: Any) -> "StrategyOptions":
        """The options of ``args``: each field from ``args.strategy_options`` (a mapping, set by
        ``--strategy_module`` flags) when present there, else from the attribute of ``args`` with
        the field's name, else the field's default.

        Options are checked once, where they are constructed: an ``args`` that is itself an
        instance of ``cls`` (:class:`~arl_hf.ARLConfig` for the built-in options) and reports
        them checked (``args.options_checked()``: unchanged since it checked them) hands them
        over as they are; any other source is checked here."""
        given = getattr(args, "strategy_options", None) or {}
        if not isinstance(given, Mapping):
            raise ValueError(f"strategy_options: expected a mapping of option names to values, got {given!r}")
        names = [f.name for f in fields(cls) if f.init]
        checked = getattr(args, "options_checked", None)
        if isinstance(args, cls) and not any(n in given for n in names) and checked is not None and checked():
            out = cls.__new__(cls)
            for n in names:
                object.__setattr__(out, n, getattr(args, n))
            return out
        values = {}
        for n in names:
            if n in given:
                values[n] = given[n]
            elif hasattr(args, n):
                values[n] = getattr(args, n)
        return cls(**values)


@dataclass
class StrategyChoice:
    """Which strategy trains, and where options of strategies outside the package come from."""

    strategy: str = field(
        default="arl",
        metadata={
            "help": "Training strategy: 'arl' (default), 'none' (plain fused loss, the concatenation "
            "baseline) or another registered strategy (see arl_hf.strategies.STRATEGIES)."
        },
    )
    strategy_module: Optional[List[str]] = field(
        default=None,
        metadata={"help": "Python file(s) registering more strategies (@register_strategy), imported before "
                  "the options are parsed, so that their options become flags of their own."},
    )
    strategy_options: Optional[Union[dict, str]] = field(
        default=None,
        metadata={"help": "Options of strategies registered outside the package, as a JSON object "
                  "(the --strategy_module flags fill it)."},
    )

    def check_strategy_options(self) -> None:
        """Decode a JSON ``strategy_options`` string; raise unless it is a mapping."""
        if isinstance(self.strategy_options, str):
            try:
                self.strategy_options = json.loads(self.strategy_options)
            except json.JSONDecodeError as e:
                raise ValueError(
                    f"strategy_options: expected a JSON object, got {self.strategy_options!r} ({e})"
                ) from None
        if self.strategy_options is not None and not isinstance(self.strategy_options, Mapping):
            raise ValueError(
                f"strategy_options: expected a mapping of option names to values, got {self.strategy_options!r}"
            )


@dataclass
class ModulationOptions(StrategyOptions):
    """How gradient-scaling strategies reach the encoders (``GradientModulator``)."""

    gradient_modulation: str = field(
        default="auto",
        metadata={
            "help": "How encoder gradients are scaled: 'output' (an identity autograd function on each "
            "encoder's output), 'parameters' (hooks on every encoder parameter, for intermediate fusion) "
            "or 'auto' (the model's `arl_gradient_modulation` attribute, else the strategy's choice).",
            "choices": ["auto", "output", "parameters"],
        },
    )

    def check(self) -> None:
        need(self.gradient_modulation in ("auto", "output", "parameters"), self, "gradient_modulation",
             "'auto', 'output' or 'parameters'")
