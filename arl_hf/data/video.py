"""Video and frame-folder reading (PyAV), deterministic frame selection and frame decoding.

The cache keeps a *pool* of evenly spaced frames per clip (JPEG bytes); the transform later
picks ``num_frames`` of them: sorted, evenly spaced segment centres at evaluation time,
one seeded random frame per segment at training time (:func:`select_frame_indices`).
"""

from __future__ import annotations

import io
import os
import re
from typing import Any, List, Mapping, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "IMAGE_EXTENSIONS",
    "natural_key",
    "list_frame_files",
    "pool_indices",
    "select_frame_indices",
    "decode_video_frames",
    "decode_video_audio",
    "read_image_bytes",
    "encode_jpeg",
    "decode_pixels",
    "encoded_bytes",
    "jpeg_components",
    "decode_jpeg_batch",
    "decode_frames",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


def natural_key(name: str) -> List[Any]:
    """Sort key putting ``frame_2`` before ``frame_10`` (filesystem listing order is not used)."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]


def list_frame_files(folder: str, prefix: str = "") -> List[str]:
    """Image files in ``folder`` whose names start with ``prefix``, naturally sorted.

    Raises:
        FileNotFoundError: the folder does not exist.
        ValueError: it holds no matching image (a clip with no frames).
    """
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"frame folder not found: {folder}")
    names = [n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS) and n.startswith(prefix)]
    if not names:
        what = f"image files starting with {prefix!r}" if prefix else "image files (.jpg/.jpeg/.png/.bmp)"
        raise ValueError(f"{folder}: clip has no frames: expected {what}")
    return [os.path.join(folder, n) for n in sorted(names, key=natural_key)]


def pool_indices(num_available: int, pool_size: int) -> List[int]:
    """Indices of ``min(pool_size, num_available)`` evenly spaced frames (segment centres), sorted.

    ``pool_size <= 0`` keeps every frame.
    """
    if num_available <= 0:
        return []
    if pool_size <= 0 or pool_size >= num_available:
        return list(range(num_available))
    return [int((2 * j + 1) * num_available // (2 * pool_size)) for j in range(pool_size)]


def select_frame_indices(num_available: int, num_frames: int, train: bool = False,
                         rng: Optional[np.random.Generator] = None) -> List[int]:
    """Pick ``num_frames`` indices out of ``num_available`` (TSN-style segments).

    The clip is cut into ``num_frames`` equal segments. Evaluation (``train=False``): the
    centre frame of each segment, deterministic. Training: a uniformly random frame of each
    segment drawn from ``rng``. With fewer frames than requested, frames repeat (sorted).
    """
    if num_available <= 0:
        raise ValueError("frames: clip has no frames to select from")
    if num_frames <= 0:
        raise ValueError(f"num_frames: expected a positive int, got {num_frames}")
    if not train:
        return [min(num_available - 1, (2 * j + 1) * num_available // (2 * num_frames)) for j in range(num_frames)]
    if rng is None:
        raise ValueError("select_frame_indices: train=True needs a seeded numpy Generator 'rng'")
    out = []
    for j in range(num_frames):
        lo = j * num_available // num_frames
        hi = max(lo + 1, (j + 1) * num_available // num_frames)
        out.append(int(rng.integers(lo, min(hi, num_available))) if lo < num_available else num_available - 1)
    return out


def read_image_bytes(path: str) -> bytes:
    """Raw bytes of an image file, verified to decode with PIL (the bytes are stored unchanged).

    Raises:
        FileNotFoundError / ValueError naming the file (missing, empty, undecodable).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file not found: {path}")
    with open(path, "rb") as fh:
        data = fh.read()
    if not data:
        raise ValueError(f"{path}: image file is empty (0 bytes)")
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except Exception as err:
        raise ValueError(f"{path}: corrupt or unreadable image ({type(err).__name__}: {err})") from err
    return data


def encode_jpeg(image: Any, quality: int = 95, max_side: Optional[int] = None) -> bytes:
    """Encode a PIL image (RGB) as JPEG bytes, optionally resizing so the shorter side is ``max_side``."""
    from PIL import Image

    image = image.convert("RGB")
    if max_side:
        w, h = image.size
        s = max_side / min(w, h)
        if s < 1.0:
            image = image.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _open(path: str):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"video file not found: {path}")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path}: video file is empty (0 bytes)")
    import av

    try:
        return av.open(path)
    except Exception as err:
        raise ValueError(f"{path}: corrupt or unreadable video container ({type(err).__name__}: {err})") from err


def _in_window(t: Optional[float], start: Optional[float], end: Optional[float]) -> bool:
    if t is None:
        return start is None and end is None
    return (start is None or t >= start - 1e-6) and (end is None or t < end - 1e-6)


def decode_video_frames(path: str, pool_size: int, start: Optional[float] = None, end: Optional[float] = None,
                        max_side: Optional[int] = None, quality: int = 95) -> Tuple[List[bytes], int]:
    """Decode ``pool_size`` evenly spaced frames of a video (optionally within ``[start, end)`` s).

    Two passes with PyAV: the first counts the decodable frames in the window, the second
    keeps the chosen ones and encodes them as JPEG. Returns ``(jpeg_bytes_list, frames_in_window)``.

    Raises:
        FileNotFoundError: missing file. ValueError: empty/corrupt file, no video stream,
        or no frame in the window (the message names the file and the window).
    """
    def frames(container):
        if not container.streams.video:
            raise ValueError(f"{path}: no video stream in the container")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            yield frame

    count = 0
    try:
        with _open(path) as container:
            for frame in frames(container):
                if _in_window(frame.time, start, end):
                    count += 1
                elif end is not None and frame.time is not None and frame.time >= end:
                    break
    except (ValueError, FileNotFoundError):
        raise
    except Exception as err:
        if count == 0:
            raise ValueError(f"{path}: corrupt video stream ({type(err).__name__}: {err})") from err
    if count == 0:
        window = "" if start is None and end is None else f" in window [{start}, {end}) s"
        raise ValueError(f"{path}: clip has no decodable video frames{window}")
    wanted = set(pool_indices(count, pool_size))
    out: List[bytes] = []
    i = 0
    try:
        with _open(path) as container:
            for frame in frames(container):
                if not _in_window(frame.time, start, end):
                    if end is not None and frame.time is not None and frame.time >= end:
                        break
                    continue
                if i in wanted:
                    out.append(encode_jpeg(frame.to_image(), quality=quality, max_side=max_side))
                i += 1
                if i >= count:
                    break
    except Exception as err:
        if len(out) < len(wanted):
            raise ValueError(f"{path}: video stream failed while decoding frame {i} "
                             f"({type(err).__name__}: {err})") from err
    if len(out) != len(wanted):
        raise ValueError(f"{path}: decoded {len(out)} of the {len(wanted)} selected frames (unstable decode)")
    return out, count


def decode_video_audio(path: str, sample_rate: int, start: Optional[float] = None,
                       end: Optional[float] = None) -> np.ndarray:
    """The audio track of a video as mono float32 at ``sample_rate`` (PyAV decode, librosa soxr_hq resample).

    Channels are averaged; ``[start, end)`` (seconds from the first audio sample) cuts a segment.

    Raises:
        ValueError naming the file: no audio stream, undecodable, or an empty segment.
    """
    import av

    chunks: List[np.ndarray] = []
    native_rate = None
    try:
        with _open(path) as container:
            if not container.streams.audio:
                raise ValueError(f"{path}: no audio stream in the container")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="fltp")
            for frame in container.decode(stream):
                native_rate = frame.sample_rate
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().astype(np.float32))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().astype(np.float32))
    except (ValueError, FileNotFoundError):
        raise
    except Exception as err:
        raise ValueError(f"{path}: corrupt audio stream ({type(err).__name__}: {err})") from err
    if not chunks or native_rate is None:
        raise ValueError(f"{path}: audio stream holds no samples")
    y = np.concatenate(chunks, axis=1).mean(axis=0)
    if start is not None or end is not None:
        a = int(round((start or 0.0) * native_rate))
        b = y.size if end is None else int(round(end * native_rate))
        y = y[a:b]
        if y.size == 0:
            raise ValueError(f"{path}: no audio samples in window [{start}, {end}) s "
                             f"(track is {len(np.concatenate(chunks, axis=1)[0]) / native_rate:.2f} s)")
    if native_rate != sample_rate:
        import librosa

        y = librosa.resample(y, orig_sr=native_rate, target_sr=sample_rate)
    return np.asarray(y, dtype=np.float32)


# ----------------------------------------------------------------------------- frame pixels
def decode_pixels(value: Any, name: str = "image", mode: str = "RGB"):
    """uint8 ``(C, H, W)`` pixels (``mode`` ``"RGB"``: C = 3, ``"L"``: C = 1) of a PIL image, the
    uint8 ``(H, W[, C])`` array of a decoded image (``with_format("numpy")``) or an undecoded
    ``{"bytes", "path"}`` record. Encoded bytes are decoded by
    ``torchvision.io.decode_image`` (libjpeg-turbo straight to a tensor: ~2x faster than
    PIL + conversion), with PIL as the fallback for formats it does not read (and for a
    torchvision without ``torchvision.io`` decoders: they are deprecated since 0.29).

    Raises:
        ValueError: ``value`` is none of these (names ``name``).
    """
    import warnings

    import torch
    from PIL import Image
    from torchvision.transforms import v2

    if isinstance(value, np.ndarray) and value.dtype == np.uint8 and value.ndim in (2, 3):
        channels = 1 if value.ndim == 2 else value.shape[2]
        if channels == (3 if mode == "RGB" else 1):  # what PIL's convert(mode) would leave unchanged
            x = torch.from_numpy(np.array(value))  # a writable copy, as pil_to_tensor makes
            return x.unsqueeze(0) if value.ndim == 2 else x.permute(2, 0, 1)
        value = Image.fromarray(value)
    if isinstance(value, Mapping):
        data = encoded_bytes(value, name)
        try:
            from torchvision.io import ImageReadMode, decode_image

            with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders for torchcodec's
                warnings.simplefilter("ignore", DeprecationWarning)
                return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                                    mode=ImageReadMode.RGB if mode == "RGB" else ImageReadMode.GRAY)
        except (ImportError, RuntimeError):
            value = Image.open(io.BytesIO(data))
    if isinstance(value, Image.Image):
        return v2.functional.pil_to_tensor(value.convert(mode))
    raise ValueError(f"{name}: expected a PIL image, a uint8 image array or an image record with 'bytes' or "
                     f"'path', got {type(value).__name__}")


def encoded_bytes(value: Any, name: str) -> bytes:
    """The encoded bytes of an undecoded ``{"bytes", "path"}`` image record."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{name}: decode_frames='device' needs undecoded frames ({{'bytes', 'path'}} records: a "
                         f"column cast to Image(decode=False), or a stream), got {type(value).__name__}")
    data, path = value.get("bytes"), value.get("path")
    if data is None and path:
        with open(path, "rb") as fh:
            data = fh.read()
    if data is None:
        raise ValueError(f"{name}: image record has neither 'bytes' nor 'path'")
    return data


def jpeg_components(data: bytes) -> int:
    """Colour components of a baseline/progressive JPEG (its SOF marker: 1 grey, 3 colour, 4 CMYK),
    0 when ``data`` is not a JPEG or has no frame header."""
    if data[:2] != b"\xff\xd8":
        return 0
    pos, n = 2, len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return 0
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01,) or 0xD0 <= marker <= 0xD7:  # no length field
            pos += 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return data[pos + 9] if pos + 9 < n else 0
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return 0
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    return 0


def decode_jpeg_batch(jpegs: Sequence[Any], device: Any = "cuda", mode: str = "RGB") -> List[Any]:
    """Decode a list of JPEGs (bytes or 1-D uint8 CPU tensors) in one
    ``torchvision.io.decode_jpeg(..., device=device)`` call (nvJPEG batched on CUDA, libjpeg-turbo
    on CPU); returns uint8 ``(C, H, W)`` tensors on ``device``."""
    import warnings

    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    data = [j if torch.is_tensor(j) else torch.frombuffer(bytearray(j), dtype=torch.uint8) for j in jpegs]
    if not data:
        return []
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders for torchcodec's
        warnings.simplefilter("ignore", DeprecationWarning)
        out = decode_jpeg(data, mode=ImageReadMode.RGB if mode == "RGB" else ImageReadMode.GRAY, device=device)
    return list(out)


def decode_frames(values: Sequence[Any], name: str = "image", mode: str = "RGB") -> List[Any]:
    """uint8 ``(C, H, W)`` pixels of each of ``values`` (what :func:`decode_pixels` accepts), the
    JPEG records among them decoded together in one batched ``torchvision.io.decode_jpeg`` call.

    A JPEG goes to the batched call when libjpeg's conversion to ``mode`` is the one
    :func:`decode_pixels` gives (grey or colour JPEGs for ``"RGB"``, grey ones for ``"L"``); every
    other value (PNG, CMYK JPEG, PIL images, arrays) is decoded by :func:`decode_pixels`, as is
    every JPEG of a call the batched decoder refuses."""
    wanted = (1, 3) if mode == "RGB" else (1,)
    out: List[Any] = [None] * len(values)
    batch_at, batch = [], []
    for k, value in enumerate(values):
        if isinstance(value, Mapping):
            data = encoded_bytes(value, name)
            if jpeg_components(data) in wanted:
                batch_at.append(k)
                batch.append(data)
                continue
        out[k] = decode_pixels(value, name, mode)
    if batch:
        try:
            decoded = decode_jpeg_batch(batch, device="cpu", mode=mode)
        except (ImportError, RuntimeError):
            decoded = [decode_pixels({"bytes": b, "path": None}, name, mode) for b in batch]
        for k, x in zip(batch_at, decoded):
            out[k] = x
    return out
