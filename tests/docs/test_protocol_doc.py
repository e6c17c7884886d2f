"""docs/protocol.md states the search spaces the code declares, and nothing else."""

import os
import re

from arl_hf.protocol.tuning import LR_RANGE, TUNING_SEED
from arl_hf.strategies import STRATEGIES

DOC = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "protocol.md")


def test_search_space_table_matches_the_strategies():
    text = open(DOC, encoding="utf-8").read()
    rows = re.findall(r"^\| `(\w+)` \| `(\w+)` \| ([\d.]+) – ([\d.]+) \| (\w+) \|$", text, flags=re.M)
    documented = {(s, o): (float(lo), float(hi), scale) for s, o, lo, hi, scale in rows}
    declared = {(name, opt): tuple(v) for name, cls in STRATEGIES.items()
                for opt, v in (getattr(cls, "search_space", {}) or {}).items()}
    assert documented == declared
    assert f"{LR_RANGE[0]}x to {LR_RANGE[1]:.0f}x" in text
    assert f"default {TUNING_SEED}" in text
