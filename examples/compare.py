#!/usr/bin/env python
"""Compare training strategies under one protocol (``arl_hf.protocol.compare``; see its docstring).

    python examples/compare.py --preset avdigits_bench --unimodal_bounds --tune_trials 8 --workers 2

A failure prints one ``error:`` line and exits with status 2 (``--debug`` shows the traceback).
"""

import sys

from arl_hf.scripts.compare import main

if __name__ == "__main__":
    sys.exit(main(prog="compare.py"))
