"""The protocol tests build their tiny models and rows with the strategies' test helpers."""

import os
import sys

STRATEGY_TESTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "strategies")
if os.path.abspath(STRATEGY_TESTS) not in sys.path:
    sys.path.insert(0, os.path.abspath(STRATEGY_TESTS))
