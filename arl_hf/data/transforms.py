"""On-the-fly transforms (``Dataset.with_transform``): cached columns -> model-ready tensors.

Images: ``RandomResizedCrop(image_size)`` + horizontal flip at training time, ``Resize``
to ``(image_size, image_size)`` at evaluation time, ImageNet mean/std. The same crop and
flip apply to every frame of a clip. Frame choice: see :func:`arl_hf.data.video.select_frame_indices`.
Training-time randomness is drawn from the transform's own seeded generator (re-seeded
per DataLoader worker), so a run is reproducible from ``seed`` alone.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .video import select_frame_indices

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "MultimodalTransform"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class MultimodalTransform:
    """Batch transform for ``Dataset.with_transform``; returns only modality tensors and ``labels``.

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
    """

    def __init__(self, modalities: Mapping[str, Mapping[str, Any]], train: bool, num_frames: int = 1,
                 image_size: int = 224, seed: int = 0, pool_sequences: bool = True,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 scale: Tuple[float, float] = (0.08, 1.0), ratio: Tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)):
        if int(num_frames) < 1:
            raise ValueError(f"num_frames: expected a positive int, got {num_frames!r}")
        if int(image_size) < 1:
            raise ValueError(f"image_size: expected a positive int, got {image_size!r}")
        self.modalities = {k: dict(v) for k, v in modalities.items()}
        for name, spec in self.modalities.items():
            if spec.get("kind") not in ("spectrogram", "frames", "flow", "sequence", "image"):
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

    def __repr__(self) -> str:
        return (f"MultimodalTransform(train={self.train}, num_frames={self.num_frames}, "
                f"image_size={self.image_size}, seed={self.seed}, modalities={list(self.modalities)})")

    def config(self) -> Dict[str, Any]:
        """The transform's parameters (for logs / model configs)."""
        return {"train": self.train, "num_frames": self.num_frames, "image_size": self.image_size,
                "seed": self.seed, "pool_sequences": self.pool_sequences, "mean": list(self.mean),
                "std": list(self.std), "scale": list(self.scale), "ratio": list(self.ratio),
                "eval_resize": "Resize((image_size, image_size))",
                "train_crop": "RandomResizedCrop(image_size, scale, ratio) + RandomHorizontalFlip(0.5)"}

    # ------------------------------------------------------------------ randomness
    def _sample_seed(self) -> int:
        import torch

        info = torch.utils.data.get_worker_info()
        if info is not None and self._worker != (info.id, info.seed):
            # each worker (and each epoch's workers) gets its own stream, derived from the
            # DataLoader's seed, which the Trainer seeds
            self._worker = (info.id, info.seed)
            self._rng = np.random.default_rng([self.seed, info.id, info.seed % (2**63)])
        return int(self._rng.integers(0, 2**63 - 1))

    # ------------------------------------------------------------------ per kind
    def _frames(self, images: List[Any], name: str, sample_seed: Optional[int]):
        import torch
        from torchvision.transforms import v2

        if not images:
            raise ValueError(f"{name}: clip has no frames")
        rng = np.random.default_rng(sample_seed) if self.train else None
        idx = select_frame_indices(len(images), self.num_frames, train=self.train, rng=rng)
        chosen = [images[i].convert("RGB") for i in idx]
        size = chosen[0].size
        chosen = [im if im.size == size else im.resize(size) for im in chosen]
        x = torch.stack([v2.functional.pil_to_tensor(im) for im in chosen]).float().div_(255.0)
        x = self._spatial(x, sample_seed)
        return v2.functional.normalize(x, list(self.mean), list(self.std))

    def _flow(self, pairs: Any, name: str, sample_seed: Optional[int]):
        import torch
        from torchvision.transforms import v2

        xs, ys = (pairs["x"], pairs["y"]) if isinstance(pairs, Mapping) else ([p["x"] for p in pairs], [p["y"] for p in pairs])
        if not xs or len(xs) != len(ys):
            raise ValueError(f"{name}: expected equally many x and y flow frames, got {len(xs)} and {len(ys)}")
        rng = np.random.default_rng(sample_seed) if self.train else None
        idx = select_frame_indices(len(xs), self.num_frames, train=self.train, rng=rng)
        chan = lambda im: v2.functional.pil_to_tensor(im.convert("L"))[0]
        x = torch.stack([torch.stack([chan(xs[i]), chan(ys[i])]) for i in idx]).float().div_(255.0)
        x = self._spatial(x, sample_seed, flow=True)
        return (x - 0.5) / 0.5

    def _spatial(self, x, sample_seed: Optional[int], flow: bool = False):
        import torch
        from torchvision.transforms import RandomResizedCrop, v2

        if not self.train:
            return v2.functional.resize(x, [self.image_size, self.image_size], antialias=True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed)
            top, left, h, w = RandomResizedCrop.get_params(x, scale=list(self.scale), ratio=list(self.ratio))
            flip = bool(torch.rand(()) < 0.5)
        x = v2.functional.resized_crop(x, top, left, h, w, [self.image_size, self.image_size], antialias=True)
        if flip:
            x = x.flip(-1)
            if flow:  # mirrored motion: horizontal flow changes sign (x -> 1 - x in [0, 1])
                x[:, 0] = 1.0 - x[:, 0]
        return x

    # ------------------------------------------------------------------ call
    def __call__(self, batch: Dict[str, List[Any]]) -> Dict[str, List[Any]]:
        import torch

        if "labels" not in batch:
            raise ValueError(f"batch: expected a 'labels' column, got columns {sorted(batch)}")
        n = len(batch["labels"])
        out: Dict[str, List[Any]] = {}
        seeds = [self._sample_seed() if self.train else None for _ in range(n)]
        for name, spec in self.modalities.items():
            if name not in batch:
                raise ValueError(f"batch: modality column {name!r} missing; got columns {sorted(batch)}")
            kind, col = spec["kind"], batch[name]
            if kind == "frames":
                out[name] = [self._frames(col[i], name, seeds[i]) for i in range(n)]
            elif kind == "flow":
                out[name] = [self._flow(col[i], name, seeds[i]) for i in range(n)]
            else:
                arrs = [torch.as_tensor(np.asarray(v, dtype=np.float32)) for v in col]
                if kind == "spectrogram":
                    arrs = [a.unsqueeze(0) for a in arrs]
                elif kind == "sequence" and self.pool_sequences:
                    arrs = [a.mean(dim=0) for a in arrs]
                out[name] = arrs
        out["labels"] = [int(v) for v in batch["labels"]]
        return out
