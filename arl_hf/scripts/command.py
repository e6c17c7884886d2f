"""What every command shares: the bare ``--debug`` flag and one ``error:`` line per failure.

Every failure of a command (unknown preset, dataset or option, a config file with an unknown
key, an output directory holding another run, a missing or damaged checkpoint, and any other
exception) prints one ``error:`` line on stderr and exits with status 2, without a traceback;
``--debug`` (a bare flag anywhere, or ``arl-hf --debug <command>``) or ``ARL_HF_DEBUG=1`` shows
the traceback instead. ``--debug VALUE...`` stays the ``TrainingArguments`` option.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator, List, Sequence, Tuple

__all__ = ["EXIT_USER_ERROR", "DEBUG_FLAG", "UserErrorExit", "pop_debug", "user_errors", "is_main_process"]

EXIT_USER_ERROR = 2
DEBUG_FLAG = "--debug"


class UserErrorExit(SystemExit):
    """Raised (as ``SystemExit(2)``) after a user error was reported."""


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


def is_main_process() -> bool:
    """Whether this process is rank 0 (``RANK`` / ``LOCAL_RANK``; a single process is)."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0) == 0
