"""Offline text-to-speech with eSpeak NG through ctypes (library and voice data from ``espeakng-loader``).

Calls ``espeak_Initialize``, ``espeak_SetSynthCallback``, ``espeak_SetVoiceByName``,
``espeak_SetParameter`` and ``espeak_Synth`` of the bundled library. Used to synthesise the
spoken digits of AV-Digits. The library is initialised once per process
(``AUDIO_OUTPUT_SYNCHRONOUS``: samples go to a callback, nothing is played) and calls are
serialised with a lock.

Determinism: eSpeak NG keeps synthesis state across calls for the life of the process
(``espeak_Terminate`` does not reset it; measured: the same word twice gives waveforms
that differ by a few samples), so one utterance depends on every earlier one.
:func:`synthesize_batch` therefore runs the whole job list in a fresh interpreter, in
order: the same list gives bit-identical audio every time, whatever ran before.
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import List, Tuple

import numpy as np

__all__ = ["ESpeakError", "synthesize", "synthesize_batch", "english_voices", "VARIANTS", "ENGLISH_VOICES"]

# espeak_AUDIO_OUTPUT, espeak_PARAMETER, espeak_POSITION_TYPE and flags from speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4
_EE_OK = 0

#: voice variants (espeak-ng-data/voices/!v) whose output is reproducible. Variants with
#: breath noise (f2, f3, f5, Alicia, Demonic, sandro, victor, whisper, whisperf) draw it from
#: a clock-seeded generator and differ from run to run (measured), so they are left out.
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f4", "klatt", "klatt2", "klatt3",
            "grandma", "grandpa", "aunty", "linda", "steph", "anika", "belinda", "Annie", "shelby")
#: base English voices used by AV-Digits (en-shaw, for the Shavian script, is left out)
ENGLISH_VOICES = ("en", "en-029", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-gb-x-rp",
                  "en-us", "en-us-nyc")


class ESpeakError(RuntimeError):
    """eSpeak NG could not be loaded or failed to synthesise."""


_lock = threading.Lock()
_state: dict = {}

_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


def _library():
    """Load and initialise the bundled library once per process; returns ``(lib, sample_rate)``."""
    pid = os.getpid()
    if _state.get("pid") == pid:
        return _state["lib"], _state["rate"]
    try:
        import espeakng_loader
    except ImportError as err:
        raise ESpeakError("espeakng-loader is not installed (pip install espeakng-loader)") from err
    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Synchronize.restype = ctypes.c_int
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0)
    if rate <= 0:
        raise ESpeakError(f"espeak_Initialize failed (returned {rate}) with data path "
                          f"{espeakng_loader.get_data_path()}")
    chunks: List[np.ndarray] = []

    def callback(wav, n, events):
        if n > 0 and wav:
            chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    cb = _SynthCallback(callback)
    lib.espeak_SetSynthCallback(cb)
    _state.update(pid=pid, lib=lib, rate=rate, chunks=chunks, callback=cb)  # keep the callback alive
    return lib, rate


def english_voices() -> List[str]:
    """The English voices in the bundled data (``lang/gmw/en*``), lower-cased, sorted."""
    import espeakng_loader

    folder = os.path.join(espeakng_loader.get_data_path(), "lang", "gmw")
    if not os.path.isdir(folder):
        return ["en"]
    return sorted(n.lower() for n in os.listdir(folder) if n.lower().startswith("en"))


def synthesize(text: str, voice: str = "en", rate: int = 175, pitch: int = 50, pitch_range: int = 50,
               volume: int = 100) -> Tuple[np.ndarray, int]:
    """Speak ``text``; returns ``(float32 waveform in [-1, 1], sample rate)``.

    Args:
        voice: eSpeak voice name, optionally with a variant (``"en-us+f3"``).
        rate: words per minute (80-450). pitch, pitch_range: 0-100. volume: 0-200.

    Raises:
        ValueError: unknown voice or out-of-range parameter. ESpeakError: synthesis failed.
    """
    if not 80 <= rate <= 450:
        raise ValueError(f"rate: expected 80-450 words per minute, got {rate}")
    for field, value, hi in (("pitch", pitch, 100), ("pitch_range", pitch_range, 100), ("volume", volume, 200)):
        if not 0 <= value <= hi:
            raise ValueError(f"{field}: expected 0-{hi}, got {value}")
    with _lock:
        lib, sr = _library()
        if lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
            raise ValueError(f"voice: eSpeak NG has no voice {voice!r}; try one of {english_voices()}")
        for param, value in ((_RATE, rate), (_PITCH, pitch), (_RANGE, pitch_range), (_VOLUME, volume)):
            lib.espeak_SetParameter(param, int(value), 0)
        chunks = _state["chunks"]
        chunks.clear()
        data = text.encode("utf-8") + b"\0"
        err = lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        lib.espeak_Synchronize()
        if err != _EE_OK:
            raise ESpeakError(f"espeak_Synth failed with code {err} for text {text!r}, voice {voice!r}")
        y = np.concatenate(chunks).astype(np.float32) / 32768.0 if chunks else np.zeros(0, np.float32)
        chunks.clear()
    if y.size == 0:
        raise ESpeakError(f"eSpeak NG produced no samples for text {text!r}, voice {voice!r}")
    return y, sr


def synthesize_batch(jobs: List[dict], timeout: float = 600.0) -> Tuple[List[np.ndarray], int]:
    """Speak every job (``synthesize`` keyword arguments) in a fresh Python process, in order.

    Returns ``(waveforms, sample_rate)``. Deterministic: see the module docstring.

    Raises:
        ESpeakError: the worker process failed (its stderr is in the message).
        ValueError: a job has an invalid parameter (raised by the worker).
    """
    import json
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="arl_espeak_") as tmp:
        job_file = os.path.join(tmp, "jobs.json")
        out_file = os.path.join(tmp, "out.npz")
        with open(job_file, "w") as fh:
            json.dump(jobs, fh)
        # run this file as a script: it imports only numpy, ctypes and espeakng_loader
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), job_file, out_file],
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            msg = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit code {proc.returncode}"
            if msg.startswith("ValueError:"):
                raise ValueError(msg[len("ValueError:"):].strip())
            raise ESpeakError(f"eSpeak NG worker failed: {msg}")
        with np.load(out_file) as z:
            flat, offsets, rate = z["samples"], z["offsets"], int(z["rate"])
    waves = [flat[offsets[i]:offsets[i + 1]].astype(np.float32) / 32768.0 for i in range(len(jobs))]
    return waves, rate


def _worker(job_file: str, out_file: str) -> None:
    import json

    with open(job_file) as fh:
        jobs = json.load(fh)
    waves, rate = [], 0
    for job in jobs:
        y, rate = synthesize(**job)
        waves.append(np.round(np.clip(y, -1.0, 32767 / 32768) * 32768.0).astype(np.int16))
    offsets = np.cumsum([0] + [w.size for w in waves]).astype(np.int64)
    flat = np.concatenate(waves) if waves else np.zeros(0, np.int16)
    np.savez(out_file, samples=flat, offsets=offsets, rate=np.int64(rate))


if __name__ == "__main__":
    import sys

    _worker(sys.argv[1], sys.argv[2])
