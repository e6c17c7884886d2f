"""Training strategies: ARL and the methods it is compared with, one module each."""

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
from .arl import (
    ARLStatistics,
    ARLStrategy,
    arl_coefficients,
    arl_statistics,
    coefficients_from_statistics,
    modality_shares,
)

__all__ = [
    "STRATEGIES",
    "GradientModulator",
    "NoStrategy",
    "StepContext",
    "Strategy",
    "StrategyOutput",
    "build_strategy",
    "register_strategy",
    "ARLStatistics",
    "ARLStrategy",
    "arl_coefficients",
    "arl_statistics",
    "coefficients_from_statistics",
    "modality_shares",
]

# the comparison methods register themselves on import
from . import agm, dr, fixed, gblending, mla, mmpareto, ogm_ge, pmr  # noqa: E402,F401
