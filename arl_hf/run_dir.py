"""The output folder of a run: who owns it, what the run wrote there, which checkpoint resumes it.

A run *claims* its ``output_dir`` before training (:func:`claim_output_dir`): the marker file
:data:`RUN_MARKER` is created there and held under an exclusive lock (``fcntl.flock``) for as
long as the run's process lives, so a second run started into the same folder is refused
instead of mixing its files in. The marker lists what the run writes (``outputs``) and what
was in the folder before it (``kept``); :func:`finish_output_dir` records the files actually
written. ``--overwrite_output_dir`` deletes the ``outputs`` a marker lists and the
``checkpoint-<step>`` folders, nothing else, each deletion confined to the folder
(:func:`arl_hf.safety.remove_path`). The marker's name starts with ``_``: ``Trainer.push_to_hub``
does not upload it.

A checkpoint is *complete* (:func:`checkpoint_problem`) when its ``trainer_state.json`` parses,
its model weights are there and whole, and its optimizer / scheduler / RNG files, if any, are
not empty; ``--resume`` takes the newest complete one (:func:`newest_complete_checkpoint`) and
refuses one trained with another strategy (:func:`require_same_strategy`).
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .log import get_logger
from .safety import remove_path, safetensors_problem

logger = get_logger(__name__)

__all__ = ["RUN_MARKER", "claim_output_dir", "finish_output_dir", "release_output_dir", "refuse_if_holding_a_run",
           "checkpoint_problem", "newest_complete_checkpoint", "require_complete", "require_same_strategy"]

RUN_MARKER = "_arl_hf_run.json"
MARKER_FORMAT = "arl_hf.run/1"
CHECKPOINT_NAME = re.compile(rf"{PREFIX_CHECKPOINT_DIR}-(\d+)")
_HELD: Dict[str, int] = {}  # real path of an output_dir this process claimed -> the marker's locked descriptor


def _lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # no advisory locks (Windows): the O_EXCL creation is the only claim
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _read_fd(fd: int) -> Dict[str, Any]:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = b""
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        raw += chunk
    try:
        data = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (UnicodeDecodeError, ValueError):
        data = {}
    return data if isinstance(data, dict) else {}


def _write_fd(fd: int, data: Dict[str, Any]) -> None:
    raw = (json.dumps(data, indent=1, sort_keys=True) + "\n").encode("utf-8")
    os.ftruncate(fd, 0)
    os.pwrite(fd, raw, 0)
    os.fsync(fd)


def _entries(out: str) -> List[str]:
    return sorted(n for n in os.listdir(out) if n != RUN_MARKER) if os.path.isdir(out) else []


def _holding_error(out: str, entries: Sequence[str]) -> ValueError:
    shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
    return ValueError(
        f"output_dir: {out!r} already holds a run ({shown}). Pass --overwrite_output_dir to replace it, --resume to "
        "continue it from its last checkpoint, or choose another --output_dir.")


def refuse_if_holding_a_run(out: str, overwrite: bool) -> None:
    """``ValueError`` if ``out`` holds files (other than a run marker) and ``overwrite`` is off."""
    entries = _entries(out)
    if entries and not overwrite:
        raise _holding_error(out, entries)


def _legacy_run(out: str) -> bool:
    """A run of a version that left no marker: its ``results.json`` has arl-hf's keys."""
    try:
        with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("selection_split") == "validation" and "strategy" in data


def _remove_previous_run(out: str, entries: Sequence[str], previous: Optional[Dict[str, Any]],
                         known_outputs: Iterable[str]) -> List[str]:
    known = set(known_outputs)
    if previous is None:  # no marker: only a recognised older run's files may go
        declared = known if _legacy_run(out) else set()
        collide = [n for n in entries if n in known and n not in declared]
        if collide:
            raise ValueError(
                f"overwrite_output_dir: {out!r} holds {collide}, which no run marker ({RUN_MARKER}) says a run wrote, "
                "and which this run would overwrite; move them away or choose another --output_dir")
    else:
        listed = previous.get("outputs")
        declared = {n for n in listed if isinstance(n, str)} if isinstance(listed, list) else known
    kept = []
    for name in entries:
        path = os.path.join(out, name)
        checkpoint = CHECKPOINT_NAME.fullmatch(name) and os.path.isdir(path) and not os.path.islink(path)
        if name in declared or checkpoint:
            remove_path(path, out, "overwrite_output_dir")
        else:
            kept.append(name)
    return kept


def claim_output_dir(out: str, overwrite: bool = False, resume: bool = False,
                     known_outputs: Sequence[str] = ()) -> Dict[str, Any]:
    """Claim ``out`` for this process's run (created if needed) and apply the folder policy
    under the claim; returns the marker written.

    ``ValueError`` if another live run holds ``out``, or if ``out`` holds files and neither
    ``overwrite`` nor ``resume`` is set. With ``overwrite`` the previous run's outputs are
    deleted first (see the module docstring); with ``resume`` nothing is deleted."""
    os.makedirs(out, exist_ok=True)
    key = os.path.realpath(out)
    marker = os.path.join(out, RUN_MARKER)
    created = False
    fd = _HELD.pop(key, None)
    if fd is None:
        try:
            fd = os.open(marker, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
            created = True
        except FileExistsError:
            fd = os.open(marker, os.O_RDWR)
        if not _lock(fd):
            other = _read_fd(fd)
            os.close(fd)
            raise ValueError(
                f"output_dir: {out!r} is being written by another run (pid {other.get('pid', '?')}, started "
                f"{other.get('started', '?')}; lock held on {marker}); wait for it to end or choose another "
                "--output_dir")
    try:
        previous = None if created else _read_fd(fd)
        if previous is not None and previous.get("format") != MARKER_FORMAT:
            previous = {}  # unreadable marker: the declared outputs are the known ones
        entries = _entries(out)
        if resume:
            kept = list((previous or {}).get("kept") or [])
            outputs = sorted(set((previous or {}).get("outputs") or []) | set(known_outputs))
        else:
            if entries and not overwrite:
                raise _holding_error(out, entries)
            kept = _remove_previous_run(out, entries, previous, known_outputs) if entries else []
            outputs = sorted(set(known_outputs))
        data = {"format": MARKER_FORMAT, "pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "finished": False, "outputs": outputs, "kept": kept}
        _write_fd(fd, data)
    except BaseException:
        os.close(fd)
        if created and os.path.exists(marker):
            os.remove(marker)
        raise
    _HELD[key] = fd
    return data


def finish_output_dir(out: str) -> Optional[Dict[str, Any]]:
    """Record in the marker every file the run wrote (what is in ``out`` now, less what was
    there before), mark it finished and release the claim. ``None`` if this process holds no
    claim on ``out``."""
    fd = _HELD.pop(os.path.realpath(out), None)
    if fd is None:
        return None
    try:
        data = _read_fd(fd)
        kept = set(data.get("kept") or [])
        data["outputs"] = sorted(set(data.get("outputs") or []) | {n for n in _entries(out) if n not in kept})
        data["finished"] = True
        _write_fd(fd, data)
    finally:
        os.close(fd)
    return data


def release_output_dir(out: str) -> None:
    """Release this process's claim on ``out`` (if any) without recording anything."""
    fd = _HELD.pop(os.path.realpath(out), None)
    if fd is not None:
        os.close(fd)


# ---- checkpoints -----------------------------------------------------------------------------------
_STATE_FILES = ("optimizer.pt", "scheduler.pt", "scaler.pt")


def checkpoint_problem(folder: str) -> Optional[str]:
    """``None`` if ``folder`` is a complete Trainer checkpoint, else what is wrong with it.

    Complete: ``trainer_state.json`` parses as a JSON object; the model weights are present and
    whole (``model.safetensors`` checked against its header, or every shard of
    ``model.safetensors.index.json``, or a non-empty ``pytorch_model.bin``); the optimizer,
    scheduler, scaler and RNG files, where present, are not empty."""
    state = os.path.join(folder, "trainer_state.json")
    try:
        with open(state, encoding="utf-8") as f:
            if not isinstance(json.load(f), dict):
                return "trainer_state.json is not a JSON object"
    except FileNotFoundError:
        return "no trainer_state.json"
    except (OSError, ValueError) as err:
        return f"trainer_state.json does not parse ({type(err).__name__}: {err})"
    single, index = os.path.join(folder, "model.safetensors"), os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(single):
        problem = safetensors_problem(single)
        if problem:
            return f"model.safetensors: {problem}"
    elif os.path.isfile(index):
        try:
            with open(index, encoding="utf-8") as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            return f"model.safetensors.index.json does not parse ({type(err).__name__}: {err})"
        for shard in shards:
            path = os.path.join(folder, str(shard))
            problem = "missing" if not os.path.isfile(path) else safetensors_problem(path)
            if problem:
                return f"{shard}: {problem}"
    elif os.path.isfile(os.path.join(folder, "pytorch_model.bin")):
        if os.path.getsize(os.path.join(folder, "pytorch_model.bin")) == 0:
            return "pytorch_model.bin is empty"
    else:
        return "no model weights (model.safetensors)"
    for name in sorted(os.listdir(folder)):
        if (name in _STATE_FILES or (name.startswith("rng_state") and name.endswith(".pth"))) \
                and os.path.getsize(os.path.join(folder, name)) == 0:
            return f"{name} is empty"
    return None


def newest_complete_checkpoint(out: str) -> Optional[str]:
    """The complete ``checkpoint-<step>`` of ``out`` with the highest step (``None`` if ``out``
    holds no checkpoint folder). Newer incomplete ones are skipped with a warning naming them;
    ``FileNotFoundError`` if every checkpoint is incomplete."""
    found = []
    for name in os.listdir(out):
        m = CHECKPOINT_NAME.fullmatch(name)
        if m and os.path.isdir(os.path.join(out, name)):
            found.append((int(m.group(1)), os.path.join(out, name)))
    broken = []
    for _, path in sorted(found, reverse=True):
        problem = checkpoint_problem(path)
        if problem is None:
            if broken:
                logger.warning("resume: skipping incomplete checkpoint(s) %s; resuming from %s",
                               "; ".join(broken), path)
            return path
        broken.append(f"{path} ({problem})")
    if broken:
        raise FileNotFoundError(f"resume: output_dir {out!r} holds no complete checkpoint: {'; '.join(broken)}")
    return None


def require_complete(folder: str, field: str = "resume_from_checkpoint") -> str:
    """``folder`` if it is a complete checkpoint, else ``ValueError`` naming ``field`` and the fault."""
    problem = checkpoint_problem(folder)
    if problem:
        raise ValueError(f"{field}: {folder!r} is not a complete checkpoint: {problem}")
    return folder


def require_same_strategy(checkpoint: str, strategy: str) -> None:
    """``ValueError`` if ``checkpoint``'s ``config.json`` records a ``training_strategy`` other
    than ``strategy``: resuming would carry one method's state into another."""
    try:
        with open(os.path.join(checkpoint, "config.json"), encoding="utf-8") as f:
            recorded = json.load(f).get("training_strategy")
    except (OSError, ValueError, AttributeError):
        return
    if recorded and recorded != strategy:
        raise ValueError(
            f"strategy: checkpoint {checkpoint!r} was trained with strategy {recorded!r} (config.json "
            f"training_strategy), not {strategy!r}; resume it with --strategy {recorded}, or start a new run "
            "(--overwrite_output_dir or another --output_dir)")
