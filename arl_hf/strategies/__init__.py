"""Training strategies: ARL and the methods it is compared with, one module each.

Each strategy declares its options (:mod:`arl_hf.strategies.options`), keeps its tensors in
the model's ``strategy_state`` slot (:mod:`arl_hf.strategies.state`) and sees the trainer
through :class:`~arl_hf.strategies.view.TrainerView`. Every module of this package other than
the shared machinery is a built-in strategy and is imported here, which registers it
(:func:`register_strategy`); :func:`builtin_strategies` is then the single list the options of
:class:`~arl_hf.ARLConfig`, the table labels, the documented flag prefixes and the default
methods of ``arl-hf compare`` derive from. Strategies from outside the package:
:mod:`arl_hf.strategies.plugins`.
"""

import importlib
import pkgutil

from .arl import (
    ARLOptions,
    ARLStatistics,
    ARLStrategy,
    arl_coefficients,
    arl_statistics,
    coefficients_from_statistics,
    modality_shares,
)
from .base import (
    STRATEGIES,
    GradientModulator,
    NoStrategy,
    StepContext,
    Strategy,
    StrategyOutput,
    build_strategy,
    builtin_options,
    builtin_strategies,
    register_strategy,
    strategy_labels,
    strategy_prefixes,
)
from .options import ModulationOptions, StrategyChoice, StrategyOptions
from .state import StrategyState
from .view import TrainerView

#: modules of this package that hold the shared machinery, not a strategy
INFRASTRUCTURE_MODULES = frozenset({"base", "common", "options", "plugins", "state", "view"})


def _import_builtin_strategies() -> None:
    """Import every strategy module of the package (sorted by name; ARL first): each registers itself."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if not info.ispkg and info.name not in INFRASTRUCTURE_MODULES and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


_import_builtin_strategies()

from .plugins import (  # noqa: E402  (after the built-in strategies registered)
    attach_strategy_options,
    extra_option_dataclasses,
    load_strategy_module,
)

#: the options dataclasses :class:`~arl_hf.ARLConfig` is assembled from, in flag order
BUILTIN_OPTIONS = builtin_options()

__all__ = [
    "STRATEGIES",
    "GradientModulator",
    "NoStrategy",
    "StepContext",
    "Strategy",
    "StrategyOutput",
    "StrategyOptions",
    "StrategyChoice",
    "ModulationOptions",
    "StrategyState",
    "TrainerView",
    "build_strategy",
    "builtin_options",
    "builtin_strategies",
    "register_strategy",
    "strategy_labels",
    "strategy_prefixes",
    "BUILTIN_OPTIONS",
    "INFRASTRUCTURE_MODULES",
    "attach_strategy_options",
    "extra_option_dataclasses",
    "load_strategy_module",
    "ARLOptions",
    "ARLStatistics",
    "ARLStrategy",
    "arl_coefficients",
    "arl_statistics",
    "coefficients_from_statistics",
    "modality_shares",
]
