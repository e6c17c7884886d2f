"""``arl-hf compare`` and ``examples/compare.py``: the comparison protocol (methods x seeds,
tuning, unimodal bounds; :mod:`arl_hf.protocol.compare` describes it).

:func:`make_parser` is the protocol's own options; every other option is a run option of
``arl-hf train`` given to every run. :func:`main` is the command.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Sequence, Tuple

from ..protocol import compare as protocol
from ..protocol.tuning import TUNING_SEED
from .command import pop_debug, user_errors

__all__ = ["make_parser", "parse_args", "main"]


def make_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    """The parser of the protocol's own options."""
    p = argparse.ArgumentParser(prog=prog or "arl-hf compare", description=protocol.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--strategies", nargs="+", default=protocol.ALL_STRATEGIES,
                   help="Methods to compare (registered names).")
    p.add_argument("--seeds", nargs="+", type=int, default=None,
                   help="Reported seeds (default 0 1 2 3 4; with fewer than 5 the results warn).")
    p.add_argument("--compare_dir", default=None, help="Output directory (default outputs/compare-<dataset>).")
    p.add_argument("--data_seed", type=int, default=0, help="Seed given to the dataset loader (same for every run).")
    p.add_argument("--split", default="test", choices=["test", "validation"], help="Split reported in the table.")
    p.add_argument("--unimodal_bounds", action="store_true",
                   help="Train each modality's encoder alone (same recipe and budget): the unimodal bounds and "
                        "the suppression gaps.")
    p.add_argument("--tune_trials", type=int, default=0, help="Optuna trials per method and per bound (0: no tuning).")
    p.add_argument("--tuning_seed", type=int, default=TUNING_SEED,
                   help="Seed of the sampler and of the tuning runs (must not be a reported seed).")
    p.add_argument("--fixed_factor", type=float, default=5.0, help="fixed: multiplier of the dominant modality.")
    p.add_argument("--workers", type=int, default=1, help="Runs side by side (one process each).")
    p.add_argument("--keep_checkpoints", action="store_true", help="Keep each run's checkpoints.")
    p.add_argument("--no_plots", action="store_true", help="Skip results.png and suppression.png.")
    p.add_argument("--smoke", action="store_true",
                   help="A budget that tries the protocol on your own data in minutes: seeds 0 1 (unless --seeds), "
                        "at most 2 tuning trials, 2 epochs, the first 256 / 128 / 128 train / validation / test "
                        "examples (run options given on the command line win). Not evidence: for a first look.")
    p.add_argument("--tuned_from", default=None,
                   help="results.json of an earlier table: rerun its tuned values (with --tune_trials 0).")
    return p


def parse_args(argv: Sequence[str], prog: Optional[str] = None) -> Tuple[argparse.Namespace, List[str]]:
    """Split ``argv`` into the protocol's own options and the run options given to every run;
    ``ValueError`` for options that cannot run (:func:`arl_hf.protocol.compare.check_compare_args`)."""
    own, rest = make_parser(prog).parse_known_args(list(argv))
    rest = protocol.apply_budget(own, rest)
    protocol.check_compare_args(own, rest)
    return own, rest


def main(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> int:
    """``arl-hf compare`` / ``examples/compare.py``; a failure is one ``error:`` line and exit
    status 2 (``--debug`` shows the traceback)."""
    argv, debug = pop_debug(sys.argv[1:] if argv is None else argv)
    prog = prog or "arl-hf compare"
    with user_errors(prog, debug):
        own, rest = parse_args(argv, prog)
        return int(protocol.run(own, rest) or 0)
