"""Training strategies: ARL and the methods it is compared with, one module each.

Each strategy declares its options (:mod:`arl_hf.strategies.options`), keeps its tensors in
the model (:mod:`arl_hf.strategies.state`) and sees the trainer through
:class:`~arl_hf.strategies.view.TrainerView`. Strategies from outside the package:
:mod:`arl_hf.strategies.plugins`.
"""

from .base import (
    STRATEGIES,
    GradientModulator,
    NoStrategy,
    StepContext,
    Strategy,
    StrategyOutput,
    build_strategy,
    register_strategy,
)
from .options import ModulationOptions, StrategyChoice, StrategyOptions
from .state import StrategyState
from .view import TrainerView
from .arl import (
    ARLOptions,
    ARLStatistics,
    ARLStrategy,
    arl_coefficients,
    arl_statistics,
    coefficients_from_statistics,
    modality_shares,
)

# the comparison methods register themselves on import
from . import agm, dr, fixed, gblending, mla, mmpareto, ogm_ge, pmr  # noqa: E402,F401
from .plugins import (  # noqa: E402
    BUILTIN_OPTIONS,
    attach_strategy_options,
    extra_option_dataclasses,
    load_strategy_module,
    load_strategy_modules_from_argv,
)

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
    "register_strategy",
    "BUILTIN_OPTIONS",
    "attach_strategy_options",
    "extra_option_dataclasses",
    "load_strategy_module",
    "load_strategy_modules_from_argv",
    "ARLOptions",
    "ARLStatistics",
    "ARLStrategy",
    "arl_coefficients",
    "arl_statistics",
    "coefficients_from_statistics",
    "modality_shares",
]
