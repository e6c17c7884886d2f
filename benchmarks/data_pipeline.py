"""Data pipeline throughput: the cached dataset versus the common on-the-fly pipeline.

Both pipelines read the same generated clips (CREMA-D's pre-extracted layout: 16 kHz mono
WAVs, a folder of 480x360 JPEG frames per clip, ``train.csv`` / ``test.csv``) and deliver the
same training batches (audio ``(B, 1, 257, 188)``, one frame ``(B, 1, 3, 224, 224)``, labels):

* **cached** (``arl_hf.data``): ``load("cremad", preprocessing="ogm")`` precomputes the
  spectrograms into Arrow once; ``MultimodalCollator.from_dataset(dsd)`` binds the splits, so
  each DataLoader batch is one read of the Arrow table (spectrograms gathered into one tensor,
  frames as undecoded JPEG records), the chosen frames decoded in one batched call, cropped /
  resized on uint8 and normalised into one batch tensor, which the collator takes as it is.
  Measured twice: frame files stored as they are (the default, 480x360 JPEG), and shrunk at
  build time to a shorter side of ``--frame-max-side`` (256: ``load(..., frame_max_side=256)``).
* **on-the-fly** (the ARL/OGM-GE code's ``Dataset.__getitem__``): ``librosa.load(sr=22050)``,
  tile to 3 s, clip, ``librosa.stft(n_fft=512, hop_length=353)``, ``log(|S| + 1e-7)``; one
  frame opened with PIL, ``RandomResizedCrop(224)`` + flip + ImageNet normalisation.

Measured: samples/s on one core (``num_workers=0``, one torch thread; the process's CPU-time
rate is printed too) and with ``--workers`` DataLoader workers, interleaved (ABBA), median of
per-pair ratios. Each rate is the steady state: one iterator draws all the timed batches (one
long epoch, as a training epoch of ~100 batches; the generated split is a few batches). With
workers, printed beside it: the rate with the iterator restarted at every epoch of the split,
the start-up (fork + first batch), the CPU milliseconds per sample of the workers and of the
main process, and the rate that CPU time allows on free cores; the per-sample cost of each
component on one core (audio read, frame work) against the loader's time per sample; the
one-time build of the cache; and how many cores the cached pipeline needs to feed the GPU step
rate (``--gpu-samples-per-s``, from ``gpu_check.sh``).
The targets are printed side by side; ``--check`` exits with status 1 when one is not met (run it
for any change to the data path); ``--profile N`` adds a cProfile of the cached one-core loader.

    OMP_NUM_THREADS=1 python benchmarks/data_pipeline.py
    OMP_NUM_THREADS=1 python benchmarks/data_pipeline.py --check
    python benchmarks/data_pipeline.py --tiny      # smoke test
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402

#: GPU training rate (samples/s) used for the cores estimate when --gpu-samples-per-s is
#: not given: None until gpu_check.sh has been run on the device; then fill in its
#: "samples_per_s" (ARL, best precision) so the default reflects a measurement.
MEASURED_GPU_SAMPLES_PER_S: Optional[float] = None

EMOTIONS = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")
SAMPLE_RATE = 16000
OGM = dict(sr=22050, seconds=3.0, n_fft=512, hop=353)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ----------------------------------------------------------------------------- clips
def make_clips(root: str, num_clips: int, frames_per_clip: int = 3, seconds: float = 2.5,
               frame_size=(480, 360), seed: int = 0) -> List[str]:
    """Write ``num_clips`` CREMA-D-like clips under ``root`` (extracted layout); returns clip ids."""
    import soundfile as sf
    from PIL import Image

    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "AudioWAV"), exist_ok=True)
    frames_root = os.path.join(root, "Image-01-FPS")
    w, h = frame_size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ids = []
    for i in range(num_clips):
        emo = EMOTIONS[i % len(EMOTIONS)]
        clip = f"{1001 + i // 12:04d}_{['DFA', 'IEO', 'ITH', 'TAI'][i % 4]}_{emo}_XX"
        if clip in ids:
            clip = f"{1001 + i:04d}_DFA_{emo}_XX"
        ids.append(clip)
        n = int(seconds * SAMPLE_RATE * rng.uniform(0.8, 1.2))
        t = np.arange(n) / SAMPLE_RATE
        f0 = rng.uniform(100, 300)
        y = 0.3 * np.sin(2 * np.pi * f0 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.standard_normal(n)
        sf.write(os.path.join(root, "AudioWAV", clip + ".wav"), y.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
        d = os.path.join(frames_root, clip)
        os.makedirs(d, exist_ok=True)
        for k in range(frames_per_clip):
            phase = rng.uniform(0, 255)
            img = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy + phase) % 256], -1)
            img += rng.normal(0, 8, img.shape)
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(os.path.join(d, f"{k + 1:05d}.jpg"), quality=90)
    n_test = max(1, num_clips // 10)
    for name, part in (("train.csv", ids[n_test:]), ("test.csv", ids[:n_test])):
        with open(os.path.join(root, name), "w", newline="") as f:
            wr = csv.writer(f)
            wr.writerow(["clip", "emotion"])
            for c in part:
                wr.writerow([c, c.split("_")[2]])
    return ids


# ----------------------------------------------------------------------- on-the-fly
class OnTheFlyDataset:
    """The common pipeline: every sample loads its WAV and runs the STFT in ``__getitem__``."""

    def __init__(self, root: str, clips: List[str], image_size: int = 224):
        import torchvision.transforms as T

        self.root, self.clips = root, list(clips)
        self.transform = T.Compose([
            T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(), T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    def __len__(self) -> int:
        return len(self.clips)

    @staticmethod
    def spectrogram(path: str) -> np.ndarray:
        import librosa

        y, _ = librosa.load(path, sr=OGM["sr"])
        n = int(OGM["sr"] * OGM["seconds"])
        y = np.tile(y, int(math.ceil(n / y.size)))[:n]
        y = np.clip(y, -1.0, 1.0)
        s = librosa.stft(y, n_fft=OGM["n_fft"], hop_length=OGM["hop"])
        return np.log(np.abs(s) + 1e-7).astype(np.float32)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        import torch
        from PIL import Image

        clip = self.clips[i]
        spec = self.spectrogram(os.path.join(self.root, "AudioWAV", clip + ".wav"))
        d = os.path.join(self.root, "Image-01-FPS", clip)
        frames = sorted(os.listdir(d))
        pick = frames[np.random.randint(len(frames))]
        img = Image.open(os.path.join(d, pick)).convert("RGB")
        visual = self.transform(img).unsqueeze(0)
        return {"audio": torch.from_numpy(spec).unsqueeze(0), "visual": visual,
                "labels": EMOTIONS.index(clip.split("_")[2])}


# --------------------------------------------------------------------------- cached
def build_cached(root: str, cache_dir: str, image_size: int = 224, frame_max_side: int = 0):
    """``arl_hf.data.load`` of the clips (ogm preset, one frame): ``(train split, collator, build seconds)``."""
    from arl_hf import data

    t = time.perf_counter()
    dsd = data.load("cremad", data_dir=root, preprocessing="ogm", cache_dir=cache_dir, num_frames=1,
                    image_size=image_size, validation_fraction=0.1, frame_max_side=frame_max_side)
    built = time.perf_counter() - t
    collator = data.MultimodalCollator.from_dataset(dsd)  # binds the splits' transforms in place
    return dsd["train"], collator, built


class _Only:
    """One modality of a pipeline (for the per-modality breakdown)."""

    def __init__(self, fn, n: int):
        self.fn, self.n = fn, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return self.fn(i)


def transformed_rows(ds, name: str, transform):
    """``ds``'s ``name`` and ``labels`` columns with ``transform`` bound: ``[i]`` gives the transformed
    example. Frames stay encoded records until the transform picks one (``Image(decode=False)``)
    and fixed-shape arrays arrive as NumPy views (:func:`arl_hf.data.batches.bind_row_transform`),
    so only the frame used is decoded and no array becomes Python lists."""
    from arl_hf.data.batches import bind_row_transform
    from arl_hf.data.streaming import undecoded_features

    plain = ds.with_format(None).select_columns([name, "labels"])
    feature = undecoded_features(plain.features)[name]
    if feature != plain.features[name]:
        plain = plain.cast_column(name, feature)
    return bind_row_transform(plain, transform)


def per_sample_ms(fn, n: int, repeats: int, clock: str = "wall") -> float:
    """Mean milliseconds of ``fn(i)`` over ``repeats`` samples (one core), by the wall clock or by
    this process's CPU time (``clock="cpu"``)."""
    now = time.process_time if clock == "cpu" else time.perf_counter
    fn(0)
    t = now()
    for k in range(repeats):
        fn(k % n)
    return (now() - t) / repeats * 1e3


def breakdown(
    train, small, fly: OnTheFlyDataset, image_size: int, repeats: int, clock: str = "wall"
) -> Dict[str, float]:
    """Milliseconds per sample on one core, per modality and pipeline (``small``: the shrunk-frame cache)."""
    from arl_hf.data import MultimodalTransform

    def only(ds, name, spec, **kw):
        return transformed_rows(ds, name, MultimodalTransform({name: spec}, train=True, **kw))

    lib_audio = only(train, "audio", {"kind": "spectrogram"})
    lib_visual = only(train, "visual", {"kind": "frames"}, num_frames=1, image_size=image_size)
    small_visual = only(small, "visual", {"kind": "frames"}, num_frames=1, image_size=image_size)
    # decode_frames="device": the CPU only picks the frame and passes its JPEG bytes on
    device_visual = only(train, "visual", {"kind": "frames"}, num_frames=1, image_size=image_size,
                         decode_frames="device")
    n = len(fly)
    wav = lambda i: os.path.join(fly.root, "AudioWAV", fly.clips[i] + ".wav")  # noqa: E731

    def fly_visual(i):
        from PIL import Image

        d = os.path.join(fly.root, "Image-01-FPS", fly.clips[i])
        names = sorted(os.listdir(d))
        return fly.transform(Image.open(os.path.join(d, names[np.random.randint(len(names))])).convert("RGB"))

    return {
        "on_the_fly_audio_ms": per_sample_ms(lambda i: fly.spectrogram(wav(i)), n, repeats, clock),
        "on_the_fly_visual_ms": per_sample_ms(fly_visual, n, repeats, clock),
        "cached_audio_ms": per_sample_ms(lambda i: lib_audio[i], n, repeats, clock),
        "cached_visual_ms": per_sample_ms(lambda i: lib_visual[i], n, repeats, clock),
        "cached_small_frames_visual_ms": per_sample_ms(lambda i: small_visual[i], n, repeats, clock),
        "cached_device_decode_visual_ms": per_sample_ms(lambda i: device_visual[i], n, repeats, clock),
    }


def frame_fidelity(train, small, image_size: int, n: int = 8) -> float:
    """Mean |difference| (normalised units) of eval-mode frames: shrunk-frame cache vs full-size cache."""
    from arl_hf.data import MultimodalTransform

    t = MultimodalTransform({"visual": {"kind": "frames"}}, train=False, num_frames=1, image_size=image_size)
    a = transformed_rows(train, "visual", t)
    b = transformed_rows(small, "visual", t)
    k = min(n, len(a))
    return float(np.mean([float((a[i]["visual"] - b[i]["visual"]).abs().mean()) for i in range(k)]))


# ------------------------------------------------------------------------- measuring
def _loader(dataset, batch_size: int, workers: int, collate_fn=None, samples: Optional[int] = None):
    """The measured DataLoader: shuffled, ``drop_last``, persistent forked workers. ``samples``: one
    iterator draws that many samples (permutations of the split one after another, as one long
    epoch) instead of one epoch of the split."""
    import torch

    sampler = None
    if samples:
        sampler = torch.utils.data.RandomSampler(dataset, num_samples=samples)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=sampler is None, sampler=sampler,
                                       num_workers=workers, collate_fn=collate_fn, drop_last=True,
                                       persistent_workers=workers > 0,  # epochs restart the iterator: no re-fork
                                       multiprocessing_context="fork" if workers else None)


class _WorkerClock:
    """A collate function that stamps each batch with its worker's id and that worker's CPU time
    (``time.process_time()`` of the worker process when the batch is done)."""

    def __init__(self, collate_fn):
        self.collate_fn = collate_fn

    def __call__(self, rows):
        import torch

        out = self.collate_fn(rows) if self.collate_fn is not None else torch.utils.data.default_collate(rows)
        info = torch.utils.data.get_worker_info()
        out["_worker"] = (info.id if info is not None else -1, time.process_time())
        return out


def timed_rates(dataset, collate_fn, batch_size: int, workers: int, batches: int,
                steady: bool = True) -> Dict[str, float]:
    """Rates of the cached or on-the-fly loader over ``batches`` batches after the first one.

    ``steady`` (default): one iterator draws all the batches (one long epoch, as a training epoch
    of ~100 batches); otherwise the iterator restarts at every epoch of the split (a few batches
    here), so each epoch's start (the workers' queues drained and refilled) is counted too.
    Returns ``wall`` and ``cpu`` (samples/s by the wall clock and by this process's CPU time),
    ``startup_s`` (the loader built and its first batch delivered: forking the workers, their
    first batch), and with workers ``main_cpu_ms`` / ``worker_cpu_ms``: CPU milliseconds per
    sample of the main process and of the workers (their own CPU clocks, batch to batch)."""
    bs = batch_size
    samples = (batches + 2 + 2 * workers) * bs if steady else None
    wrapped = _WorkerClock(collate_fn)
    t0 = time.perf_counter()
    loader = _loader(dataset, batch_size, workers, wrapped, samples)
    n, it = 0, iter(loader)
    first = next(it)
    startup = time.perf_counter() - t0
    _check_batch(first)
    seen: Dict[int, List[float]] = {}
    t, c = time.perf_counter(), time.process_time()
    for _ in range(batches):
        try:
            b = next(it)
        except StopIteration:
            it = iter(loader)
            b = next(it)
        n += b["labels"].shape[0]
        worker, clock = b["_worker"]
        seen.setdefault(int(worker), []).append(float(clock))
    dt, dc = time.perf_counter() - t, time.process_time() - c
    del it
    out = {"wall": n / dt, "cpu": n / max(dc, 1e-9), "startup_s": startup}
    if workers:
        spans = [(v[-1] - v[0], len(v) - 1) for v in seen.values() if len(v) > 1]
        done = sum(k for _, k in spans)
        out["main_cpu_ms"] = dc / n * 1e3
        out["worker_cpu_ms"] = sum(d for d, _ in spans) / (done * bs) * 1e3 if done else float("nan")
    return out


def samples_per_s(dataset, collate_fn, batch_size: int, workers: int, batches: int, steady: bool = True) -> float:
    """Samples/s (wall clock) over ``batches`` batches, after the first batch."""
    return timed_rates(dataset, collate_fn, batch_size, workers, batches, steady)["wall"]


def profile_loader(dataset, collate_fn, batch_size: int, batches: int, top: int) -> str:
    """cProfile of ``batches`` batches of the one-core loader: the ``top`` functions by cumulative
    time, then by own time."""
    import cProfile
    import io
    import pstats

    loader = _loader(dataset, batch_size, 0, collate_fn)
    it = iter(loader)
    next(it)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(batches):
        try:
            next(it)
        except StopIteration:
            it = iter(loader)
            next(it)
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out).strip_dirs()
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


def _check_batch(b: Dict[str, Any]) -> None:
    a, v = b["audio"], b["visual"]
    if a.dim() != 4 or tuple(a.shape[1:]) != (1, 257, 188):
        raise ValueError(f"audio: expected (B, 1, 257, 188), got {tuple(a.shape)}")
    if v.dim() != 5 or tuple(v.shape[1:3]) != (1, 3):
        raise ValueError(f"visual: expected (B, 1, 3, H, W), got {tuple(v.shape)}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=128, help="generated clips (10%% go to test)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--batches", type=int, default=24, help="timed batches per measurement")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the multi-core measurement")
    p.add_argument("--pairs", type=int, default=2)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--frame-max-side", type=int, default=256,
                   help="shorter side of the frames in the second cache (load(..., frame_max_side=...))")
    p.add_argument("--gpu-samples-per-s", type=float, default=MEASURED_GPU_SAMPLES_PER_S,
                   help="GPU training rate to feed (gpu_check.sh's ARL samples/s)")
    p.add_argument("--target", type=float, default=5.0,
                   help="one core: cached (shrunk frames) / on-the-fly samples/s, at least")
    p.add_argument("--target-stored", type=float, default=3.0,
                   help="one core: cached (frames as stored) / on-the-fly samples/s, at least")
    p.add_argument("--target-workers", type=float, default=1.7,
                   help="cached samples/s with --workers workers / on one core, at least")
    p.add_argument("--target-overhead", type=float, default=1.3,
                   help="the one-core loader's time per sample / the sum of its component costs, at most")
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                   help="one-core rates by this process's CPU time (default: robust on a loaded machine) or by the "
                        "wall clock; both are printed, the workers' rates are wall clock")
    p.add_argument("--check", action="store_true",
                   help="exit with status 1 when a target is not met (run it for any change to the data path)")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="print a cProfile of the cached one-core loader (top N functions)")
    p.add_argument("--keep-dir", default=None, help="generate the clips and cache here (default: a temp dir)")
    p.add_argument("--json", default=None)
    p.add_argument("--tiny", action="store_true", help="24 clips, batch 4, 2 batches, 0 workers")
    return p


PIPES = ("cached", "cached_small_frames", "on_the_fly")


def _load() -> Optional[List[float]]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def run(args: argparse.Namespace) -> Dict[str, Any]:
    import _common as C
    import torch

    if args.tiny:
        args.clips, args.batch_size, args.batches, args.workers, args.pairs = 24, 4, 2, 0, 1
    load_before = _load()
    root = args.keep_dir or tempfile.mkdtemp(prefix="arl_data_bench_")
    raw_dir = os.path.join(root, "raw")
    t = time.perf_counter()
    make_clips(raw_dir, args.clips)
    gen_s = time.perf_counter() - t
    train, collator, build_s = build_cached(raw_dir, os.path.join(root, "cache"), args.image_size)
    small, _, small_build_s = build_cached(raw_dir, os.path.join(root, "cache_small"), args.image_size,
                                           frame_max_side=args.frame_max_side)
    raw = train.with_format(None)  # the stored columns, without the training transform
    if "id" not in raw.column_names:
        raise ValueError(f"cached dataset: expected an 'id' column naming the clips, got {raw.column_names}")
    train_ids = list(raw["id"])
    if list(small.with_format(None)["id"]) != train_ids:
        raise ValueError("the two caches hold different training clips")
    fly = OnTheFlyDataset(raw_dir, train_ids, args.image_size)

    # same clips, same audio features (within resampler/float tolerance)
    spec_cached = np.asarray(raw[0]["audio"], dtype=np.float32)
    spec_fly = fly.spectrogram(os.path.join(raw_dir, "AudioWAV", train_ids[0] + ".wav"))
    spec_diff = float(np.abs(spec_cached - spec_fly).max())

    pipes = {"cached": (train, collator), "cached_small_frames": (small, collator), "on_the_fly": (fly, None)}
    bs = min(args.batch_size, len(train_ids))
    res: Dict[str, Dict[str, List[float]]] = {"multi": {k: [] for k in pipes}, "one_core": {k: [] for k in pipes}}
    wall_1: Dict[str, List[float]] = {k: [] for k in pipes}
    cpu_1: Dict[str, List[float]] = {k: [] for k in pipes}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        parts = breakdown(train, small, fly, args.image_size, repeats=max(4, min(len(train_ids), 2 * args.batch_size)),
                          clock=args.clock)
        fidelity = frame_fidelity(train, small, args.image_size)
    finally:
        torch.set_num_threads(threads)
    # with workers: per pipe, the steady rate (one long iterator) and the rate with the iterator
    # restarted at every epoch of the split, start-up, CPU per sample of the workers and of the main process
    multi_epochs: Dict[str, List[float]] = {k: [] for k in pipes}
    startup: Dict[str, List[float]] = {k: [] for k in pipes}
    worker_ms: Dict[str, List[float]] = {k: [] for k in pipes}
    main_ms: Dict[str, List[float]] = {k: [] for k in pipes}
    for r in range(args.pairs):
        order = list(pipes) if r % 2 == 0 else list(reversed(list(pipes)))
        for name in order:
            ds, coll = pipes[name]
            if args.workers > 0:
                m = timed_rates(ds, coll, bs, args.workers, args.batches, steady=True)
                res["multi"][name].append(m["wall"])
                startup[name].append(m["startup_s"])
                worker_ms[name].append(m["worker_cpu_ms"])
                main_ms[name].append(m["main_cpu_ms"])
                if name != "on_the_fly":
                    multi_epochs[name].append(samples_per_s(ds, coll, bs, args.workers, args.batches, steady=False))
            torch.set_num_threads(1)
            try:
                one = timed_rates(ds, coll, bs, 0, args.batches, steady=True)
                wall_1[name].append(one["wall"])
                cpu_1[name].append(one["cpu"])
                res["one_core"][name].append(one["cpu"] if args.clock == "cpu" else one["wall"])
            finally:
                torch.set_num_threads(threads)
    profile = None
    if args.profile:
        torch.set_num_threads(1)
        try:
            profile = profile_loader(train, collator, bs, args.batches, args.profile)
        finally:
            torch.set_num_threads(threads)
    out: Dict[str, Any] = {
        "benchmark": "data_pipeline",
        "setting": {"clips": args.clips, "train_clips": len(train_ids), "batch_size": bs, "batches": args.batches,
                    "workers": args.workers, "pairs": args.pairs, "image_size": args.image_size,
                    "frame_max_side": args.frame_max_side,
                    "audio": "ogm preset 257x188 (librosa 22.05 kHz, 3 s, STFT 512/353)",
                    "frames": "480x360 JPEG, 3 per clip, one used"},
        "machine": dict(C.machine_info(), load_average_before=load_before, load_average_after=_load()),
        "target": args.target,
        "generate_s": gen_s,
        "cache_build_s": build_s,
        "cache_build_clips_per_s": args.clips / build_s,
        "small_frames_cache_build_s": small_build_s,
        "spectrogram_max_abs_diff": spec_diff,
        "small_frames_eval_mean_abs_diff": fidelity,
        "samples_per_s": res,
        "clock": args.clock,
        "one_core_wall_samples_per_s": wall_1,
        "one_core_cpu_samples_per_s": cpu_1,
        "one_core_ms_per_sample": parts,
        "workers_epoch_restart_samples_per_s": multi_epochs,
        "workers_startup_s": startup,
        "workers_cpu_ms_per_sample": worker_ms,
        "workers_main_cpu_ms_per_sample": main_ms,
        "profile": profile,
    }
    for mode in ("multi", "one_core"):
        for name in ("cached", "cached_small_frames"):
            c, f = res[mode][name], res[mode]["on_the_fly"]
            if c:
                ratios = [a / b for a, b in zip(c, f)]
                key = "" if name == "cached" else "small_frames_"
                out[f"{mode}_{key}ratios"] = ratios
                out[f"{mode}_{key}median_ratio"] = statistics.median(ratios)
    out["audio_only_ratio"] = parts["on_the_fly_audio_ms"] / parts["cached_audio_ms"]
    for name in PIPES:
        out[f"{name}_samples_per_s_per_core"] = statistics.median(res["one_core"][name])
    # end to end against the components: the loader's time per sample vs audio + frame work per sample
    visual = {"cached": parts["cached_visual_ms"], "cached_small_frames": parts["cached_small_frames_visual_ms"]}
    for name in ("cached", "cached_small_frames"):
        key = "" if name == "cached" else "small_frames_"
        loader_ms = 1000.0 / out[f"{name}_samples_per_s_per_core"]
        components_ms = parts["cached_audio_ms"] + visual[name]
        out[f"{key}loader_ms_per_sample"] = loader_ms
        out[f"{key}components_ms_per_sample"] = components_ms
        out[f"{key}loader_over_components"] = loader_ms / components_ms
        multi = res["multi"][name]  # wall clock against the one-core wall clock (workers' CPU time is not ours)
        out[f"{key}workers_over_one_core"] = (statistics.median(multi) / statistics.median(wall_1[name])
                                              if multi else None)
        # the same with the iterator restarted at every epoch of the split (the measurement before steady state)
        out[f"{key}workers_epochs_over_one_core"] = (
            statistics.median(multi_epochs[name]) / statistics.median(wall_1[name]) if multi_epochs[name] else None)
        # what the CPU time allows on `workers` free cores: workers x one-core CPU per sample / (workers' + main's)
        if multi:
            spent = statistics.median(worker_ms[name]) + statistics.median(main_ms[name])
            out[f"{key}workers_cpu_bound"] = args.workers * (1000.0 / statistics.median(cpu_1[name])) / spent
        else:
            out[f"{key}workers_cpu_bound"] = None
    gpu = args.gpu_samples_per_s
    out["gpu_samples_per_s"] = gpu
    for name in PIPES:
        out[f"{name}_cores_to_feed_gpu"] = gpu / out[f"{name}_samples_per_s_per_core"] if gpu else None
    # frames decoded on the GPU (decode_frames="device"): the CPU does the audio and picks frames; from
    # the per-modality breakdown (collation not included), so an estimate
    device_ms = parts["cached_audio_ms"] + parts["cached_device_decode_visual_ms"]
    out["device_decode_samples_per_s_per_core"] = 1000.0 / device_ms
    out["device_decode_cores_to_feed_gpu"] = gpu * device_ms / 1000.0 if gpu else None
    out["median_ratio"] = out.get("multi_median_ratio", out["one_core_median_ratio"])
    out["small_frames_median_ratio"] = out.get("multi_small_frames_median_ratio",
                                               out["one_core_small_frames_median_ratio"])
    out["targets"] = targets(out, args)
    return out


def targets(r: Dict[str, Any], args: argparse.Namespace) -> List[Dict[str, Any]]:
    """The targets of the cached pipeline: ``{"name", "value", "target", "higher", "met"}`` each
    (``value`` ``None``: not measured in this run, e.g. no workers)."""
    rows = [
        ("one core, shrunk frames: cached / on-the-fly", r["one_core_small_frames_median_ratio"], args.target, True),
        ("one core, frames as stored: cached / on-the-fly", r["one_core_median_ratio"], args.target_stored, True),
        (f"{args.workers} workers / one core, cached (frames as stored), steady state",
         r["workers_over_one_core"], args.target_workers, True),
        (f"{args.workers} workers / one core, cached (shrunk frames), steady state",
         r["small_frames_workers_over_one_core"], args.target_workers, True),
        ("one core, frames as stored: loader time / component sum", r["loader_over_components"],
         args.target_overhead, False),
        ("one core, shrunk frames: loader time / component sum", r["small_frames_loader_over_components"],
         args.target_overhead, False),
    ]
    out = []
    for name, value, target, higher in rows:
        met = None if value is None else (value >= target if higher else value <= target)
        out.append({"name": name, "value": value, "target": target, "higher": higher, "met": met})
    return out


def unmet_targets(r: Dict[str, Any]) -> List[str]:
    """The names of the targets measured and not met."""
    return [t["name"] for t in r["targets"] if t["met"] is False]


def report(r: Dict[str, Any]) -> str:
    s, sp = r["setting"], r["samples_per_s"]
    med = lambda xs: statistics.median(xs) if xs else float("nan")  # noqa: E731
    side = s["frame_max_side"]
    label = {"cached": "cached (frame files as stored)", "cached_small_frames": f"cached (frames shrunk to {side} px)"}
    m = r["machine"]
    lines = [
        f"data_pipeline: {s['train_clips']} training clips, batch {s['batch_size']}, audio {s['audio']}, {s['frames']}",
        f"  machine: {m.get('cpu_model', m.get('processor'))}, {m.get('cpu_count')} cores, load average "
        f"{m.get('load_average_before')} before, {m.get('load_average_after')} after",
        f"  cache build (one time): {r['cache_build_s']:.1f} s for {s['clips']} clips "
        f"({r['cache_build_clips_per_s']:.1f} clips/s); "
        f"with frame_max_side={side}: {r['small_frames_cache_build_s']:.1f} s; "
        f"spectrograms cached vs on-the-fly: max |diff| {r['spectrogram_max_abs_diff']:.2g}",
    ]
    cpu, wall = r["one_core_cpu_samples_per_s"], r["one_core_wall_samples_per_s"]
    other = "wall clock" if r["clock"] == "cpu" else "CPU time"
    alt = wall if r["clock"] == "cpu" else cpu
    one_core_clock = "CPU time" if r["clock"] == "cpu" else "wall clock"
    for mode, title in (("multi", f"{s['workers']} workers (wall clock)"),
                        ("one_core", f"one core (num_workers=0, 1 thread; {one_core_clock})")):
        if not sp[mode]["cached"]:
            continue
        extra = f" ({other}: {med(alt['on_the_fly']):.1f})" if mode == "one_core" else ""
        lines.append(f"  {title}: on-the-fly {med(sp[mode]['on_the_fly']):.1f} samples/s{extra}")
        for name, key in (("cached", ""), ("cached_small_frames", "small_frames_")):
            ratio = r[f"{mode}_{key}median_ratio"]
            extra = f" ({other}: {med(alt[name]):.1f})" if mode == "one_core" else ""
            lines.append(f"    {label[name]}: {med(sp[mode][name]):.1f} samples/s{extra} | ratio {ratio:.2f}")
    if sp["multi"]["cached"]:
        w = s["workers"]
        lines.append(f"  {w} workers against one core (wall clock), cached: steady state (one iterator) | iterator "
                     "restarted every epoch of the split | start-up (fork + first batch) | CPU ms per sample: "
                     "workers + main process -> at most on {w} free cores".replace("{w}", str(w)))
        for name, key in (("cached", ""), ("cached_small_frames", "small_frames_")):
            epochs = r[f"{key}workers_epochs_over_one_core"]
            lines.append(
                f"    {label[name]}: {r[f'{key}workers_over_one_core']:.2f}x | "
                f"{'n/a' if epochs is None else f'{epochs:.2f}x'} | {med(r['workers_startup_s'][name]):.2f} s | "
                f"{med(r['workers_cpu_ms_per_sample'][name]):.2f} + "
                f"{med(r['workers_main_cpu_ms_per_sample'][name]):.2f}"
                f" (one core {1000.0 / med(cpu[name]):.2f}) -> {r[f'{key}workers_cpu_bound']:.2f}x")
    b = r["one_core_ms_per_sample"]
    clock = "CPU time" if r["clock"] == "cpu" else "wall clock"
    lines.append(f"  ms per sample on one core ({clock}): audio on-the-fly {b['on_the_fly_audio_ms']:.2f} vs cached "
                 f"{b['cached_audio_ms']:.2f} (audio-only ratio {r['audio_only_ratio']:.1f}x) | frame on-the-fly "
                 f"{b['on_the_fly_visual_ms']:.2f} vs cached {b['cached_visual_ms']:.2f} (shrunk to {side} px: "
                 f"{b['cached_small_frames_visual_ms']:.2f})")
    lines.append(f"  loader vs components, ms per sample on one core ({clock}): "
                 f"frames as stored {r['loader_ms_per_sample']:.2f} vs {r['components_ms_per_sample']:.2f} "
                 f"(audio + frame); shrunk "
                 f"{r['small_frames_loader_ms_per_sample']:.2f} vs {r['small_frames_components_ms_per_sample']:.2f}")
    lines.append(f"  frames shrunk to {side} px vs as stored, eval-mode {s['image_size']} px input: mean |diff| "
                 f"{r['small_frames_eval_mean_abs_diff']:.4f} (ImageNet-normalised units)")
    if r["gpu_samples_per_s"]:
        lines.append(f"  to feed {r['gpu_samples_per_s']:.0f} samples/s on the GPU: "
                     f"{r['cached_cores_to_feed_gpu']:.1f} cores (cached), "
                     f"{r['cached_small_frames_cores_to_feed_gpu']:.1f} cores (cached, shrunk frames), "
                     f"{r['on_the_fly_cores_to_feed_gpu']:.1f} cores (on-the-fly); frames decoded on the GPU "
                     f"(decode_frames='device'): about {r['device_decode_cores_to_feed_gpu']:.1f} cores")
    else:
        lines.append("  cores to feed the GPU: pass --gpu-samples-per-s (gpu_check.sh's ARL samples/s); cores = GPU "
                     f"samples/s / {r['cached_samples_per_s_per_core']:.1f} (cached) or / "
                     f"{r['cached_small_frames_samples_per_s_per_core']:.1f} (shrunk frames)")
    lines.append("  targets:")
    for t in r["targets"]:
        op = ">=" if t["higher"] else "<="
        value = "not measured" if t["value"] is None else f"{t['value']:.2f}"
        state = "-" if t["met"] is None else ("MET" if t["met"] else "NOT MET")
        lines.append(f"    {t['name']}: {value} (target {op} {t['target']}) {state}")
    if r.get("profile"):
        lines.append("  profile of the cached one-core loader (cProfile):")
        lines.append(r["profile"])
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    import _common as C

    args = build_parser().parse_args(argv)
    result = C.run_and_report(args, run, report)
    if args.check:
        unmet = unmet_targets(result)
        if unmet:
            print(f"data_pipeline --check: {len(unmet)} target(s) not met: {'; '.join(unmet)}", file=sys.stderr)
            raise SystemExit(1)
    return result


if __name__ == "__main__":
    main()
