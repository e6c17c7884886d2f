"""Command line: ``arl-hf train|evaluate|plot|compare|env``, ``arl-hf --version`` (and the example scripts that call the same code).

Every failure of a command (unknown preset, dataset or option, a config file with an unknown
key, an output directory holding another run, a missing or damaged checkpoint, and any other
exception) prints one ``error:`` line on stderr and exits with status 2, without a traceback;
``--debug`` (a bare flag anywhere, or ``arl-hf --debug <command>``) or ``ARL_HF_DEBUG=1`` shows
the traceback instead. ``--debug VALUE...`` stays the ``TrainingArguments`` option.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import Iterator, List, Optional, Sequence, Tuple

__all__ = ["main", "train_main", "evaluate_main", "plot_main", "compare_main", "env_main", "UserErrorExit",
           "user_errors", "pop_debug"]

USAGE = """usage: arl-hf {train,evaluate,plot,compare,env} [options]
       arl-hf --version

  train      train a model (same options as examples/run_arl.py; `arl-hf train --help`)
  evaluate   evaluate a saved checkpoint (directory or Hub id) on a dataset split (`arl-hf evaluate --help`)
  plot       redraw the plots of a run directory (`arl-hf plot --help`)
  compare    the comparison protocol (methods x seeds, tuning, unimodal bounds; `arl-hf compare --help`)
  env        versions, devices, cache folders and install source, for bug reports (`--json` for JSON)
"""

EXIT_USER_ERROR = 2


class UserErrorExit(SystemExit):
    """Raised (as ``SystemExit(2)``) after a user error was reported."""


DEBUG_FLAG = "--debug"


def pop_debug(argv: Sequence[str]) -> Tuple[List[str], bool]:
    """``argv`` without the bare ``--debug`` flag (one not followed by a value: ``--debug
    underflow_overflow`` is ``TrainingArguments.debug``), and whether it was there."""
    argv = list(argv)
    out: List[str] = []
    debug = False
    for i, arg in enumerate(argv):
        following = argv[i + 1] if i + 1 < len(argv) else None
        if arg == DEBUG_FLAG and (following is None or following.startswith("-")):
            debug = True
        else:
            out.append(arg)
    return out, debug


def _one_line(e: BaseException) -> str:
    text = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
    if isinstance(e, (ValueError, OSError)) and text:
        return text
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


@contextlib.contextmanager
def user_errors(prog: str, debug: bool = False) -> Iterator[None]:
    """Turn any exception into one ``error:`` line on stderr and exit status 2 (the traceback
    with ``debug`` or ``ARL_HF_DEBUG=1``). ``ValueError`` / ``OSError`` are the user errors the
    package raises, their message names the field or file; others are shown with their type."""
    try:
        yield
    except Exception as e:  # SystemExit (argparse, a nested report) and KeyboardInterrupt pass through
        if debug or os.environ.get("ARL_HF_DEBUG"):
            raise
        print(f"{prog}: error: {_one_line(e)} (--debug shows the traceback)", file=sys.stderr)
        raise UserErrorExit(EXIT_USER_ERROR) from None


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0) == 0


def train_main(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> int:
    """``arl-hf train`` (and ``examples/run_arl.py --help``): parse, train, print the results."""
    from .arguments import apply_help_defaults, build_parser, parse_args, setup_logging
    from .evaluation import format_results
    from .runner import train_and_evaluate

    argv, debug = pop_debug(sys.argv[1:] if argv is None else argv)
    prog = prog or os.path.basename(sys.argv[0]) or "run_arl.py"
    if any(a in ("-h", "--help") for a in argv):
        parser = build_parser(prog=prog)
        with user_errors(prog, debug):
            apply_help_defaults(parser, argv)
        parser.print_help()
        return 0
    from .distributed import shutdown

    with user_errors(prog, debug):
        training_args, model_args, data_args, run_args = parse_args(argv)
        setup_logging(training_args, training_args.process_index, summary=(
            f"device {training_args.device}, world size {training_args.world_size}, "
            f"mixed precision {'bf16' if training_args.bf16 else 'fp16' if training_args.fp16 else 'no'}"))
        metrics = train_and_evaluate(training_args, model_args, data_args, run_args, argv=argv)
        if training_args.process_index == 0:
            print("\nResults (checkpoint selected on the validation split; test evaluated once):")
            print(format_results(metrics))
            print(f"\nOutputs in {training_args.output_dir}: checkpoint, README.md model card, plots/, results.json")
    shutdown()
    return 0


def evaluate_main(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> int:
    """``examples/evaluate_arl.py`` / ``arl-hf evaluate``: metrics of a checkpoint on a split."""
    from .arguments import setup_logging
    from .evaluation import build_eval_parser, evaluate_checkpoint, format_results

    argv, debug = pop_debug(sys.argv[1:] if argv is None else argv)
    prog = prog or os.path.basename(sys.argv[0]) or "evaluate_arl.py"
    parser = build_eval_parser(prog=prog)
    with user_errors(prog, debug):
        (eval_args,) = parser.parse_args_into_dataclasses(args=argv)
        setup_logging(eval_args.log_level)
        metrics = evaluate_checkpoint(eval_args)
        if _is_main_process():
            print(f"{eval_args.model_name_or_path} on the {eval_args.split} split:")
            print(format_results({eval_args.split: metrics}))
    return 0


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


def compare_main(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> int:
    """``arl-hf compare`` / ``examples/compare.py``: the comparison protocol
    (:mod:`arl_hf.protocol.compare`)."""
    from .protocol.compare import main as protocol_main

    argv, debug = pop_debug(sys.argv[1:] if argv is None else argv)
    with user_errors(prog or "arl-hf compare", debug):
        return int(protocol_main(argv) or 0)



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


COMMANDS = {"train": train_main, "evaluate": evaluate_main, "plot": plot_main, "env": env_main}


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
    if command == "compare":
        return compare_main(rest)
    if command not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(command, list(COMMANDS) + ["compare"], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        print(f"arl-hf: error: unknown command {command!r}{hint}\n\n{USAGE}", file=sys.stderr)
        return EXIT_USER_ERROR
    return COMMANDS[command](rest, prog=f"arl-hf {command}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
