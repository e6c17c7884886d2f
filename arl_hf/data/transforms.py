"""On-the-fly transforms (applied by :class:`~arl_hf.data.MultimodalCollator`, or
``Dataset.with_transform``): cached columns -> model-ready tensors.

Images: ``RandomResizedCrop(image_size)`` + horizontal flip at training time, ``Resize``
to ``(image_size, image_size)`` at evaluation time, ImageNet mean/std. Only the chosen
frames are decoded (when given undecoded ``{"bytes", "path"}`` records, e.g. a stream or a column
cast to ``Image(decode=False)``), and
crop + resize run on the uint8 pixels before the float conversion. The same crop and
flip apply to every frame of a clip. Frame choice: see :func:`arl_hf.data.video.select_frame_indices`.
Training-time randomness is drawn from the transform's own seeded generator (re-seeded
per DataLoader worker), so a run is reproducible from ``seed`` alone.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..kinds import STORED_KINDS
from ..validation import class_indices
from .batches import batch_buffer, mark_batch
from .video import decode_frames, decode_jpeg_batch, decode_pixels, select_frame_indices
from .video import encoded_bytes as _encoded_bytes

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "MultimodalTransform", "crop_params", "EncodedClip", "EncodedFrames",
           "decode_jpeg_batch", "decode_frames_on_device", "decode_pixels"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class EncodedClip:
    """The frames of one clip chosen by the transform, still JPEG-encoded (``decode_frames="device"``),
    with the sample's seed (its crop and flip are drawn from it at decoding time, as on CPU)."""

    __slots__ = ("jpegs", "seed", "spec")

    def __init__(self, jpegs: List[Any], seed: Optional[int], spec: Optional[Dict[str, Any]] = None):
        self.jpegs, self.seed, self.spec = jpegs, seed, spec


class EncodedFrames:
    """A batch of :class:`EncodedClip` (what :class:`~arl_hf.data.MultimodalCollator` emits for a
    ``frames`` modality decoded on the device) and the spatial settings of the transform.
    Deliberately not a tensor, list or mapping (and without ``.to``): accelerate and ``Trainer``
    pass it through unchanged to :func:`decode_frames_on_device`."""

    def __init__(self, clips: List[EncodedClip], spec: Dict[str, Any]):
        self.clips, self.spec = list(clips), dict(spec)

    def __len__(self) -> int:
        return len(self.clips)

    def __repr__(self) -> str:
        return f"EncodedFrames({len(self.clips)} clips, spec={self.spec})"


def _stacked_float32(column: Any):
    """The values of a column (arrays or nested lists of one shape) as one float32 ``(n, ...)``
    tensor (a copy: the values may be read-only views of the Arrow memory map); ``None`` when
    their shapes differ or a value is not numeric (the caller converts them one by one)."""
    import torch

    if len(column) == 0:
        return None
    try:
        arr = np.array(column, dtype=np.float32)
    except (ValueError, TypeError):
        return None
    if arr.ndim < 2 or arr.shape[0] != len(column):
        return None
    return mark_batch(torch.from_numpy(arr))


def decode_frames_on_device(batch: Mapping[str, Any], device: Any) -> Dict[str, Any]:
    """Replace every :class:`EncodedFrames` in ``batch`` by its float ``(B, T, 3, S, S)`` tensor on
    ``device``: one batched JPEG decode for all frames of the batch, then the same crop / flip /
    resize / normalisation as the CPU transform (torch ops, run on ``device``)."""
    import torch

    out = dict(batch)
    for name, value in batch.items():
        if not isinstance(value, EncodedFrames):
            continue
        spec = value.spec
        t = MultimodalTransform({name: {"kind": "frames"}}, train=spec["train"], image_size=spec["image_size"],
                                mean=spec["mean"], std=spec["std"], scale=spec["scale"], ratio=spec["ratio"])
        flat = [j for clip in value.clips for j in clip.jpegs]
        decoded = decode_jpeg_batch(flat, device=device)
        scale, shift = t._scale_shift
        scale_shift = (scale.to(device), shift.to(device))
        clips, k = [], 0
        for clip in value.clips:
            frames = decoded[k:k + len(clip.jpegs)]
            k += len(clip.jpegs)
            x, _ = t._spatial(frames, clip.seed)
            clips.append(t._to_float(x, scale_shift))
        out[name] = torch.stack(clips)
    return out


def crop_params(height: int, width: int, scale: Sequence[float], ratio: Sequence[float],
                rng: np.random.Generator) -> Tuple[int, int, int, int]:
    """``(top, left, h, w)`` of a random resized crop: torchvision's ``RandomResizedCrop``
    rule (10 tries of area share ``~U(scale)`` and log-uniform aspect ``ratio``, then the
    centre crop clamped to ``ratio``), drawn from a NumPy generator. Seeding the torch
    generator per sample instead costs ~1 ms (``torch.manual_seed`` also seeds CUDA lazily).
    """
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class MultimodalTransform:
    """Batch transform (column -> values of a batch) applied by
    :class:`~arl_hf.data.MultimodalCollator` or set with ``Dataset.with_transform``. Frames may
    be PIL images, decoded uint8 arrays or undecoded ``{"bytes", "path"}`` records;
    spectrograms / sequences nested lists or arrays.

    Args:
        modalities: modality name -> spec with a ``kind`` (``spectrogram``, ``frames``,
            ``flow``, ``sequence``, ``image``), as recorded in the dataset info.
        train: training-time augmentation and random frame choice.
        num_frames: frames per clip for ``frames`` / ``flow`` modalities.
        image_size: output height and width of frames.
        seed: seed of the training-time randomness.
        pool_sequences: average ``sequence`` features over time -> ``(D,)`` (for MLP
            encoders); ``False`` keeps ``(L, D)``.
        scale, ratio: ``RandomResizedCrop`` parameters.
        decode_frames: ``"cpu"`` (default): ``frames`` are decoded and transformed here (in the
            DataLoader workers); ``"device"``: the chosen frames stay JPEG bytes
            (:class:`EncodedClip`), the collator batches them (:class:`EncodedFrames`) and
            :class:`~arl_hf.ARLTrainer` decodes each batch on the training device in one
            ``torchvision.io.decode_jpeg(device=...)`` call (:func:`decode_frames_on_device`), then
            crops, flips, resizes and normalises there with the same seeded parameters. Frees the
            CPU cores of JPEG decoding (see docs/scale.md). Optical flow is always decoded on CPU.
        strict: ``True``: every modality and ``labels`` must be in the batch and only modality
            tensors and ``labels`` are returned; ``False``: modality columns absent from the batch
            are skipped and every other column is passed through unchanged (what a
            ``with_transform`` transform needs to keep ``ds["id"]``, ``select_columns``... working).
    """

    def __init__(self, modalities: Mapping[str, Mapping[str, Any]], train: bool, num_frames: int = 1,
                 image_size: int = 224, seed: int = 0, pool_sequences: bool = True,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 scale: Tuple[float, float] = (0.08, 1.0), ratio: Tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
                 decode_frames: str = "cpu", strict: bool = True):
        self.strict = bool(strict)
        if decode_frames not in ("cpu", "device"):
            raise ValueError(f"decode_frames: expected 'cpu' or 'device', got {decode_frames!r}")
        self.decode_frames = decode_frames
        if int(num_frames) < 1:
            raise ValueError(f"num_frames: expected a positive int, got {num_frames!r}")
        if int(image_size) < 1:
            raise ValueError(f"image_size: expected a positive int, got {image_size!r}")
        self.modalities = {k: dict(v) for k, v in modalities.items()}
        for name, spec in self.modalities.items():
            if spec.get("kind") not in STORED_KINDS:
                raise ValueError(f"modalities[{name!r}]['kind']: unknown kind {spec.get('kind')!r}")
        self.train = bool(train)
        self.num_frames = int(num_frames)
        self.image_size = int(image_size)
        self.seed = int(seed)
        self.pool_sequences = bool(pool_sequences)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.scale = tuple(scale)
        self.ratio = tuple(ratio)
        self._rng = np.random.default_rng(self.seed)
        self._worker: Optional[Tuple[int, int]] = None
        self._cached_scale_shift = None

    def __repr__(self) -> str:
        return (f"MultimodalTransform(train={self.train}, num_frames={self.num_frames}, strict={self.strict}, "
                f"image_size={self.image_size}, seed={self.seed}, modalities={list(self.modalities)})")

    def config(self) -> Dict[str, Any]:
        """The transform's parameters (for logs / model configs)."""
        return {"train": self.train, "num_frames": self.num_frames, "image_size": self.image_size,
                "seed": self.seed, "pool_sequences": self.pool_sequences, "mean": list(self.mean),
                "std": list(self.std), "scale": list(self.scale), "ratio": list(self.ratio),
                "decode_frames": self.decode_frames,
                "eval_resize": "Resize((image_size, image_size))",
                "train_crop": "RandomResizedCrop(image_size, scale, ratio) + RandomHorizontalFlip(0.5)"}

    # ------------------------------------------------------------------ randomness
    def _sample_seeds(self, n: int) -> List[int]:
        """One seed per example of a batch, from the transform's stream."""
        import torch

        info = torch.utils.data.get_worker_info()
        if info is not None and self._worker != (info.id, info.seed):
            # each worker (and each epoch's workers) gets its own stream, derived from the
            # DataLoader's seed, which the Trainer seeds
            self._worker = (info.id, info.seed)
            self._rng = np.random.default_rng([self.seed, info.id, info.seed % (2**63)])
        return [int(self._rng.integers(0, 2**63 - 1)) for _ in range(n)]

    # ------------------------------------------------------------------ per kind
    def _picks(self, clip: Any, count: int, name: str, sample_seed: Optional[int]) -> List[int]:
        """The frame indices of one clip (``count`` stored frames) for this transform."""
        if count == 0:
            raise ValueError(f"{name}: clip has no frames")
        rng = np.random.default_rng(sample_seed) if self.train else None
        return select_frame_indices(count, self.num_frames, train=self.train, rng=rng)

    def _frames(self, column: Sequence[Any], name: str, seeds: Sequence[Optional[int]]):
        """A batch of clips: one float ``(n, T, 3, S, S)`` tensor (or :class:`EncodedClip` s). Only the
        chosen frames are decoded, JPEGs in one batched call."""
        picks = []
        for images, seed in zip(column, seeds):
            picks.append([images[i] for i in self._picks(images, len(images), name, seed)])
        if self.decode_frames == "device":
            return [EncodedClip([_encoded_bytes(v, name) for v in p], seed) for p, seed in zip(picks, seeds)]
        flat = decode_frames([v for p in picks for v in p], name)
        t = self.num_frames
        return self._float_batch([flat[k * t:(k + 1) * t] for k in range(len(picks))], seeds, self._scale_shift)

    def _flow(self, column: Sequence[Any], name: str, seeds: Sequence[Optional[int]]):
        """A batch of flow clips: one float ``(n, T, 2, S, S)`` tensor in [-1, 1]."""
        import torch

        picks = []
        for pairs, seed in zip(column, seeds):
            xs, ys = (pairs["x"], pairs["y"]) if isinstance(pairs, Mapping) else (
                [p["x"] for p in pairs], [p["y"] for p in pairs])
            if not xs or len(xs) != len(ys):
                raise ValueError(f"{name}: expected equally many x and y flow frames, got {len(xs)} and {len(ys)}")
            picks.extend(v for i in self._picks(pairs, len(xs), name, seed) for v in (xs[i], ys[i]))
        flat = decode_frames(picks, name, "L")
        planes = [torch.cat([flat[k], flat[k + 1]]) for k in range(0, len(flat), 2)]
        t = self.num_frames
        # mirrored motion: horizontal flow changes sign (v -> 255 - v, i.e. x -> 1 - x in [0, 1])
        return self._float_batch([planes[k * t:(k + 1) * t] for k in range(len(seeds))], seeds,
                                 (2.0 / 255.0, -1.0), flip_x=True)  # [0, 255] -> [-1, 1]

    def _float_batch(self, clips: List[List[Any]], seeds: Sequence[Optional[int]], scale_shift, flip_x: bool = False):
        """uint8 ``(C, H, W)`` frames of each clip -> one float ``(n, T, C, S, S)`` batch: the spatial
        transform per clip (one crop per clip at training time), at evaluation time one resize for
        the whole batch when every frame has one size; then the float conversion and normalisation
        (``x * scale + shift``, rounded after each operation as ``_to_float`` does)."""
        import torch

        n, t = len(clips), self.num_frames
        sizes = {tuple(f.shape) for clip in clips for f in clip}
        if not self.train and len(sizes) == 1 and t * n > 1:
            x, _ = self._spatial([f for clip in clips for f in clip], None)
            resized = [x[k * t:(k + 1) * t] for k in range(n)]
        else:
            resized = []
            for clip, seed in zip(clips, seeds):
                x, flipped = self._spatial(clip, seed)
                if flip_x and flipped:
                    x[:, 0] = 255 - x[:, 0]
                resized.append(x)
        out = batch_buffer((n,) + tuple(resized[0].shape), torch.float32)
        scale, shift = scale_shift
        for k, x in enumerate(resized):  # uint8 -> float32 times scale, in one pass per clip
            torch.mul(x, scale, out=out[k])
        return out.add_(shift)

    def device_spec(self) -> Dict[str, Any]:
        """The spatial settings :func:`decode_frames_on_device` needs (carried by :class:`EncodedFrames`)."""
        return {"train": self.train, "image_size": self.image_size, "mean": list(self.mean), "std": list(self.std),
                "scale": list(self.scale), "ratio": list(self.ratio)}

    def _spatial(self, frames: List[Any], sample_seed: Optional[int]):
        """Resize (eval) or random resized crop + flip (train) of uint8 ``(C, H, W)`` frames (one
        crop for all): ``(uint8 (T, C, S, S), flipped)``. The crop is a view; the resize runs on
        uint8 (antialiased bilinear)."""
        import torch
        from torchvision.transforms import v2

        resize = v2.functional.resize_image  # the kernel v2.functional.resize picks for a plain tensor
        size = tuple(frames[0].shape[-2:])
        if len(frames) > 1:
            frames = [f if tuple(f.shape[-2:]) == size else resize(f, list(size), antialias=True) for f in frames]
        flip = False
        if self.train:
            rng = np.random.default_rng([int(sample_seed), 1])
            top, left, h, w = crop_params(size[0], size[1], self.scale, self.ratio, rng)
            flip = bool(rng.random() < 0.5)
            frames = [f[:, top:top + h, left:left + w] for f in frames]
        x = frames[0].unsqueeze(0) if len(frames) == 1 else torch.stack(frames)
        x = resize(x, [self.image_size, self.image_size], antialias=True)
        return (x.flip(-1) if flip else x), flip

    @staticmethod
    def _to_float(x, scale_shift):
        """uint8 pixels -> ``x * scale + shift`` in float32 (scale/shift per channel or scalar)."""
        import torch

        scale, shift = scale_shift
        # the resized pixels are channels-last (PIL's HWC); the float copy also makes them
        # contiguous, which makes the per-channel affine ~3x faster
        y = x.to(torch.float32, memory_format=torch.contiguous_format)
        return y.mul_(scale).add_(shift)

    @property
    def _scale_shift(self):
        """Per-channel ``(1 / (255 std), -mean / std)``: ImageNet normalisation in one pass each."""
        import torch

        if self._cached_scale_shift is None:
            std = torch.tensor(self.std, dtype=torch.float32).reshape(-1, 1, 1)
            mean = torch.tensor(self.mean, dtype=torch.float32).reshape(-1, 1, 1)
            self._cached_scale_shift = (1.0 / (255.0 * std), -mean / std)
        return self._cached_scale_shift

    # ------------------------------------------------------------------ call
    def __call__(self, batch: Dict[str, List[Any]]) -> Dict[str, List[Any]]:
        import torch

        present = [name for name in self.modalities if name in batch]
        if self.strict:
            if "labels" not in batch:
                raise ValueError(f"batch: expected a 'labels' column, got columns {sorted(batch)}")
            missing = [name for name in self.modalities if name not in batch]
            if missing:
                raise ValueError(f"batch: modality column {missing[0]!r} missing; got columns {sorted(batch)}")
            out: Dict[str, List[Any]] = {}
        else:
            out = {k: v for k, v in batch.items() if k not in self.modalities and k != "labels"}
        if not present and "labels" not in batch:
            return out
        n = len(batch["labels"]) if "labels" in batch else len(batch[present[0]])
        # one seed per example, drawn whether or not its modalities are all present
        seeds = self._sample_seeds(n) if self.train and present else [None] * n
        for name in present:
            kind, col = self.modalities[name]["kind"], batch[name]
            if kind == "frames":
                out[name] = self._frames(col, name, seeds)
                if self.decode_frames == "device":
                    spec = self.device_spec()
                    for clip in out[name]:
                        clip.spec = spec
            elif kind == "flow":
                out[name] = self._flow(col, name, seeds)
            else:
                stacked = None
                if kind in ("spectrogram", "image"):
                    if torch.is_tensor(col) and col.dim() >= 2 and col.shape[0] == n:
                        stacked = col if col.dtype == torch.float32 else col.float()  # already the batch
                    else:
                        stacked = _stacked_float32(col)
                if stacked is not None:
                    # one (n, ...) tensor whose rows are the examples: one copy of the batch
                    out[name] = stacked.unsqueeze(1) if kind == "spectrogram" else stacked
                    continue
                # np.array copies: values may be read-only views of the Arrow memory map
                arrs = [torch.from_numpy(np.array(v, dtype=np.float32)) for v in col]
                if kind == "spectrogram":
                    arrs = [a.unsqueeze(0) for a in arrs]
                elif kind == "sequence" and self.pool_sequences:
                    arrs = [a.mean(dim=0) for a in arrs]
                out[name] = arrs
        if "labels" in batch:
            out["labels"] = class_indices(batch["labels"], "labels").tolist()
        return out
