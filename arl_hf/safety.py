"""The package's file-safety rules, in one place.

* :func:`safe_name`: the one rule for a name built from data or options (a modality, a
  method, a run) that becomes a file or folder name: one path component of letters, digits
  and ``_ . + = @ -``, not starting with a dot; anything else is a ``ValueError``.
* :func:`confine` / :func:`remove_path`: a path, and every deletion, proven to lie inside its
  root (real paths compared, so ``..`` and symbolic links cannot lead outside).
* :func:`atomic_write_json` / :func:`atomic_write_text`: a temporary file in the same folder
  then ``os.replace``, so a reader sees the old file or the new one, never a torn one.
* :func:`fingerprint`, :func:`code_fingerprint`, :func:`data_fingerprint`, :func:`config_diff`:
  what keys a reusable result (a comparison run's record) to the configuration that made it.
* :func:`check_revision`: a Hub revision is a valid Git ref name or a commit hash.
* :func:`safetensors_problem`: a ``.safetensors`` file checked against its own header.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import struct
import tempfile
from typing import Any, Dict, List, Mapping, Optional

__all__ = ["safe_name", "confine", "remove_path", "atomic_write_json", "atomic_write_text", "fingerprint",
           "code_fingerprint", "data_fingerprint", "config_diff", "check_revision", "safetensors_problem"]

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=@-]*")
MAX_NAME_LENGTH = 128


def safe_name(name: Any, field: str) -> str:
    """``name`` if it can be used as one file or folder name, else ``ValueError`` naming ``field``.

    Allowed: 1 to 128 characters among letters, digits and ``_ . + = @ -``, not starting with
    a dot (so never ``.``, ``..``, a hidden file nor a path with separators)."""
    text = str(name)
    if not isinstance(name, str) or len(text) > MAX_NAME_LENGTH or not _NAME.fullmatch(text):
        raise ValueError(
            f"{field}: {text!r} cannot be used as a file or folder name; expected 1 to {MAX_NAME_LENGTH} letters, "
            "digits or '_.+=@-', not starting with '.' (no path separator, no '..')")
    return text


def _inside(path: str, root: str) -> bool:
    real, base = os.path.realpath(path), os.path.realpath(root)
    try:
        return os.path.commonpath([real, base]) == base
    except ValueError:  # different drives
        return False


def confine(path: str, root: str, field: str = "path") -> str:
    """``path`` if its real path (symbolic links and ``..`` resolved) lies inside ``root``'s,
    else ``ValueError`` naming ``field``, the path and the root."""
    if not _inside(path, root):
        raise ValueError(f"{field}: {path!r} resolves to {os.path.realpath(path)!r}, outside {root!r} "
                         f"({os.path.realpath(root)!r}); refusing to write or delete there")
    return path


def remove_path(path: str, root: str, field: str = "path") -> bool:
    """Delete the file or folder ``path``, only if it lies strictly inside ``root`` (real paths
    compared); ``ValueError`` otherwise, naming ``field``. Returns whether something was removed.

    A symbolic link is never followed: one inside ``root`` that points outside is refused."""
    if not os.path.lexists(path):
        return False
    confine(path, root, field)
    if os.path.realpath(path) == os.path.realpath(root):
        raise ValueError(f"{field}: {path!r} is the folder {root!r} itself; refusing to delete it")
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.remove(path)
    return True


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_text(path: str, text: str) -> str:
    """Write ``text`` to ``path`` through a temporary file of the same folder and ``os.replace``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def atomic_write_json(path: str, obj: Any, **dump_kwargs: Any) -> str:
    """``json.dump(obj)`` to ``path`` atomically (``indent=2`` unless given)."""
    dump_kwargs.setdefault("indent", 2)
    return atomic_write_text(path, json.dumps(obj, **dump_kwargs))


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=repr)


def fingerprint(obj: Any) -> str:
    """SHA-256 of the canonical JSON of ``obj`` (sorted keys; other objects by ``repr``)."""
    return hashlib.sha256(_canonical(obj).encode("utf-8")).hexdigest()


@functools.lru_cache(maxsize=None)
def code_fingerprint() -> str:
    """SHA-256 of the package's ``.py`` sources (relative paths and contents, in sorted order):
    the version string is not bumped on every change, the sources are what ran."""
    root = os.path.dirname(os.path.abspath(__file__))
    digest = hashlib.sha256()
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        files += [os.path.join(folder, n) for n in names if n.endswith(".py")]
    for path in sorted(files, key=lambda p: os.path.relpath(p, root)):
        digest.update(os.path.relpath(path, root).replace(os.sep, "/").encode("utf-8") + b"\0")
        with open(path, "rb") as f:
            digest.update(f.read() + b"\0")
    return digest.hexdigest()


def data_fingerprint(dataset: Any) -> Dict[str, Optional[str]]:
    """``{split: Dataset._fingerprint}`` of a ``DatasetDict`` (``{"": ...}`` for one ``Dataset``);
    ``None`` for a split without one (an iterable dataset)."""
    if isinstance(dataset, Mapping):
        return {str(k): getattr(v, "_fingerprint", None) for k, v in dataset.items()}
    return {"": getattr(dataset, "_fingerprint", None)}


def _flatten(obj: Any, prefix: str = "") -> Dict[str, Any]:
    if isinstance(obj, Mapping) and obj:
        out: Dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: obj}


def config_diff(old: Any, new: Any, limit: int = 8) -> List[str]:
    """``["key: old -> new", ...]`` between two nested configurations (dotted keys, at most
    ``limit`` entries and a count of the rest)."""
    a, b = _flatten(old if isinstance(old, Mapping) else {}), _flatten(new if isinstance(new, Mapping) else {})
    diffs = [f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}" for k in sorted(set(a) | set(b))
             if _canonical(a.get(k, "<absent>")) != _canonical(b.get(k, "<absent>"))]
    return diffs[:limit] + ([f"... {len(diffs) - limit} more"] if len(diffs) > limit else [])


_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_BAD_REF_CHARS = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


def check_revision(revision: Optional[str], field: str = "revision") -> Optional[str]:
    """``revision`` if it is ``None``, a commit hash or a valid Git ref name (the rules of
    ``git check-ref-format --allow-onelevel``: no ``..``, no component starting with ``.`` or
    ending with ``.lock``, no ``//``, no leading/trailing ``/``, no trailing ``.``, no ``@{``,
    not ``@``, no control character, space, ``~ ^ : ? * [ \\``); else ``ValueError`` naming
    ``field``. A revision is joined to paths of the Hub cache: ``../x`` would leave it."""
    if revision is None:
        return None
    text = revision if isinstance(revision, str) else ""
    if _COMMIT.fullmatch(text):
        return text
    problem = None
    if not text:
        problem = "empty"
    elif ".." in text:
        problem = "contains '..'"
    elif _BAD_REF_CHARS.search(text):
        problem = "contains a control character, a space or one of ~ ^ : ? * [ \\"
    elif text.startswith("/") or text.endswith("/") or "//" in text:
        problem = "starts or ends with '/' or contains '//'"
    elif text.endswith(".") or text == "@" or "@{" in text:
        problem = "ends with '.', is '@' or contains '@{'"
    elif any(c.startswith(".") or c.endswith(".lock") for c in text.split("/")):
        problem = "has a component starting with '.' or ending with '.lock'"
    if problem:
        raise ValueError(f"{field}: {revision!r} is not a valid revision ({problem}); expected a branch or tag "
                         "name (Git ref rules) or a commit hash")
    return text


def safetensors_problem(path: str) -> Optional[str]:
    """``None`` if ``path`` is a complete ``.safetensors`` file (its header parses and the file
    is as long as the tensors it declares), else what is wrong with it."""
    try:
        size = os.path.getsize(path)
        if size < 8:
            return f"{size} bytes, shorter than a safetensors header"
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8:
                return f"header of {n} bytes declared, file has {size} bytes"
            header = json.loads(f.read(n))
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError, struct.error) as err:
        return f"unreadable header ({type(err).__name__}: {err})"
    if size != 8 + n + end:
        return f"{size} bytes, expected {8 + n + end} from its header (truncated or padded)"
    return None
