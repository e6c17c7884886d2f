"""Command line: ``arl-hf train|evaluate|plot|compare|env``, ``arl-hf --version``.

``train``, ``evaluate`` and ``compare`` are the jobs of :mod:`arl_hf.scripts` (``make_parser()`` +
``main()`` each, used by the example scripts too); ``plot`` and ``env`` are here. Every failure
prints one ``error:`` line and exits with status 2 (:mod:`arl_hf.scripts.command`; ``--debug``
or ``ARL_HF_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Callable, Dict, List, Optional, Sequence

from .scripts.command import DEBUG_FLAG, EXIT_USER_ERROR, pop_debug, user_errors

__all__ = ["main", "plot_main", "env_main", "COMMANDS"]

USAGE = """usage: arl-hf {train,evaluate,plot,compare,env} [options]
       arl-hf --version

  train      train a model (same options as examples/run_arl.py; `arl-hf train --help`)
  evaluate   evaluate a saved checkpoint (directory or Hub id) on a dataset split (`arl-hf evaluate --help`)
  plot       redraw the plots of a run directory (`arl-hf plot --help`)
  compare    the comparison protocol (methods x seeds, tuning, unimodal bounds; `arl-hf compare --help`)
  env        versions, devices, cache folders and install source, for bug reports (`--json` for JSON)
"""


def plot_main(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> int:
    """``arl-hf plot RUN_DIR``: redraw the plots from ``trainer_state.json`` and ``config.json``."""
    import argparse

    from .plots import make_run_plots

    prog = prog or "arl-hf plot"
    parser = argparse.ArgumentParser(prog=prog, description="Draw the plots (Fig. 3 dynamics, accuracy curves) of "
                                     "a run directory or checkpoint directory.")
    parser.add_argument("run_dir", help="output_dir of a run (or a checkpoint-* directory)")
    parser.add_argument("--plots_dir", default=None, help="where to write the PNGs (default: RUN_DIR/plots)")
    argv, debug = pop_debug(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    with user_errors(prog, debug):
        state_path = os.path.join(args.run_dir, "trainer_state.json")
        config_path = os.path.join(args.run_dir, "config.json")
        for path in (state_path, config_path):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"run_dir: {path!r} does not exist (not a run or checkpoint directory)")
        with open(state_path, encoding="utf-8") as f:
            history = json.load(f).get("log_history", [])
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
        # config.json is written with sorted keys: the training order is modality_order
        modalities = list(config.get("modality_order") or (config.get("modalities") or {}).keys())
        if not modalities:
            raise ValueError(f"run_dir: {config_path!r} records no modalities")
        written = make_run_plots(history, modalities, args.plots_dir or os.path.join(args.run_dir, "plots"))
        if not written:
            raise ValueError(f"run_dir: {state_path!r} has no logged metrics to plot")
        for path in written:
            print(path)
    return 0


def env_main(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> int:
    """``arl-hf env``: what a bug report needs (versions, devices, cache folders, install source)."""
    import argparse

    from .env import environment, format_environment

    parser = argparse.ArgumentParser(prog=prog or "arl-hf env", description="Print the environment for a bug "
                                     "report: arl-hf and library versions, devices, cache folders, install source.")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a Markdown list")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    env = environment()
    print(json.dumps(env, indent=2) if args.json else format_environment(env))
    return 0


def _train(argv: Sequence[str], prog: str) -> int:
    from .scripts.train import main as train

    return train(argv, prog=prog)


def _evaluate(argv: Sequence[str], prog: str) -> int:
    from .scripts.evaluate import main as evaluate

    return evaluate(argv, prog=prog)


def _compare(argv: Sequence[str], prog: str) -> int:
    from .scripts.compare import main as compare

    return compare(argv, prog=prog)


#: command -> its ``main(argv, prog)`` (the jobs' modules are imported when run)
COMMANDS: Dict[str, Callable[..., int]] = {"train": _train, "evaluate": _evaluate, "plot": plot_main,
                                           "compare": _compare, "env": env_main}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``arl-hf`` console script."""
    argv: List[str] = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == DEBUG_FLAG:  # arl-hf --debug <command> ...
        argv = argv[1:] + [DEBUG_FLAG] if len(argv) > 1 else []
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else EXIT_USER_ERROR
    if argv[0] in ("-V", "--version"):
        from . import __version__

        print(f"arl-hf {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(command, list(COMMANDS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        print(f"arl-hf: error: unknown command {command!r}{hint}\n\n{USAGE}", file=sys.stderr)
        return EXIT_USER_ERROR
    return COMMANDS[command](rest, prog=f"arl-hf {command}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
