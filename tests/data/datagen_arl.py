"""Writers of tiny raw datasets in each real layout (wav via soundfile, jpg via PIL, videos via
PyAV, feature pickles), shared by the data tests' fixtures and tests."""

from __future__ import annotations

import fractions
import os
from typing import Dict, List, Optional, Tuple

import numpy as np

# ----------------------------------------------------------------------------- writers


def write_wav(path: str, seconds: float = 0.5, sr: int = 16000, freq: float = 440.0, seed: int = 0) -> str:
    import soundfile as sf

    os.makedirs(os.path.dirname(path), exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    y = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)
    sf.write(path, y.astype(np.float32), sr, subtype="PCM_16")
    return path


def write_jpg(path: str, value: int, size: Tuple[int, int] = (40, 30), mode: str = "RGB") -> str:
    from PIL import Image

    os.makedirs(os.path.dirname(path), exist_ok=True)
    color = (value % 256, (value * 7) % 256, (value * 13) % 256) if mode == "RGB" else value % 256
    Image.new(mode, size, color).save(path, format="JPEG", quality=95)
    return path


def write_video(path: str, seconds: float = 1.0, fps: int = 10, size: Tuple[int, int] = (32, 24),
                audio_rate: Optional[int] = 16000, freq: float = 440.0, vcodec: str = "libx264",
                fmt: Optional[str] = None, base: int = 0) -> str:
    """Encode a tiny video whose frame i has grey level ``base + 20 * i`` (so frame choice is checkable)."""
    import av

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with av.open(path, "w", format=fmt) as c:
        vs = c.add_stream(vcodec, rate=fps)
        vs.width, vs.height = size
        vs.pix_fmt = "yuv420p"
        if audio_rate:
            a = c.add_stream("aac", rate=audio_rate)
            a.layout = "mono"
        for i in range(int(round(seconds * fps))):
            img = np.full((size[1], size[0], 3), (base + 20 * i) % 256, np.uint8)
            for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        if audio_rate:
            t = np.arange(int(seconds * audio_rate)) / audio_rate
            y = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
            for k in range(0, y.size, 1024):
                fr = av.AudioFrame.from_ndarray(y[None, k:k + 1024].copy(), format="fltp", layout="mono")
                fr.sample_rate, fr.pts, fr.time_base = audio_rate, k, fractions.Fraction(1, audio_rate)
                for p in a.encode(fr):
                    c.mux(p)
            for p in a.encode():
                c.mux(p)
    return path


# ----------------------------------------------------------------------------- CREMA-D

CREMAD_CODES = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")
CREMAD_ACTORS = (1001, 1002, 1003, 1004, 1005)


def cremad_clips() -> List[str]:
    return [f"{a}_DFA_{e}_XX" for a in CREMAD_ACTORS for e in CREMAD_CODES]





# ----------------------------------------------------------------------------- AVE

AVE_ROWS = {
    # (category, video id, start, end); every video is 2 s long at 10 fps
    "train": [("Church bell", "vidA0", 0, 1), ("Church bell", "vidA1", 1, 2), ("Dog bark", "vidB0", 0, 2),
              ("Dog bark", "vidB1", 0, 1), ("Rodents", "vidC0", 1, 2), ("Rodents", "vidC1", 0, 2)],
    "validation": [("Church bell", "vidA2", 0, 1), ("Dog bark", "vidB2", 1, 2)],
    "test": [("Rodents", "vidC2", 0, 1), ("Church bell", "vidA3", 1, 2)],
}
AVE_FILES = {"train": "trainSet.txt", "validation": "valSet.txt", "test": "testSet.txt"}


def write_ave(root: str) -> str:
    k = 0
    with open(os.path.join(root, "Annotations.txt"), "w") as ann:
        ann.write("Category&VideoID&Quality&StartTime&EndTime\n")
        for split, rows in AVE_ROWS.items():
            with open(os.path.join(root, AVE_FILES[split]), "w") as fh:
                for cat, vid, s, e in rows:
                    line = f"{cat}&{vid}&good&{s}&{e}\n"
                    fh.write(line)
                    ann.write(line)
                    write_video(os.path.join(root, "AVE", vid + ".mp4"), seconds=2.0, fps=10, base=3 * k,
                                freq=300 + 40 * k)
                    k += 1
    return root



# ----------------------------------------------------------------------------- Kinetics-Sounds

KS_CLASSES = ["playing bass guitar", "dog barking", "laughing", "playing drums"]  # 4 listed, 3 used


def write_kinetics_sounds(root: str) -> str:
    with open(os.path.join(root, "classes.txt"), "w") as fh:
        fh.write("\n".join(KS_CLASSES) + "\n")
    rows = {"train": [], "test": []}
    k = 0
    for c, cls in enumerate(KS_CLASSES[:3]):
        for j in range(4):
            clip = f"{cls.replace(' ', '_')}/clip{c}{j}.mp4"
            write_video(os.path.join(root, "clips", clip), seconds=1.0, fps=10, base=5 * k, freq=250 + 60 * c)
            rows["test" if j == 3 else "train"].append((clip, cls))
            k += 1
    for split, rs in rows.items():
        with open(os.path.join(root, f"{split}.csv"), "w") as fh:
            fh.write("clip,label\n")
            for clip, cls in rs:
                fh.write(f"{clip},{cls}\n")
    return root



# ----------------------------------------------------------------------------- UCF-101

UCF_CLASSES = ["ApplyEyeMakeup", "Basketball", "YoYo"]
UCF_TRAIN_GROUPS = (8, 9, 10, 11, 12)
UCF_TEST_GROUPS = (1,)


def ucf_videos() -> Dict[str, List[Tuple[str, int]]]:
    out = {"train": [], "test": []}
    for c, cls in enumerate(UCF_CLASSES):
        for split, groups in (("train", UCF_TRAIN_GROUPS), ("test", UCF_TEST_GROUPS)):
            for g in groups:
                out[split].append((f"v_{cls}_g{g:02d}_c01", c))
    return out


def write_ucf101(root: str, rgb: str = "videos", flow: str = "uv", n_frames: int = 5) -> str:
    """rgb: 'videos' (UCF-101/<Class>/*.avi) or 'frames' (frames/<stem>/img_*.jpg);
    flow: 'uv' (tvl1_flow/u|v/<stem>/*.jpg) or 'tsn' (flow/<stem>/flow_x_*.jpg, flow_y_*.jpg)."""
    lists = os.path.join(root, "ucfTrainTestlist")
    os.makedirs(lists, exist_ok=True)
    with open(os.path.join(lists, "classInd.txt"), "w") as fh:
        for i, cls in enumerate(UCF_CLASSES, start=1):
            fh.write(f"{i} {cls}\n")
    vids = ucf_videos()
    k = 0
    for split, fname in (("train", "trainlist01.txt"), ("test", "testlist01.txt")):
        with open(os.path.join(lists, fname), "w") as fh:
            for stem, c in vids[split]:
                cls = UCF_CLASSES[c]
                fh.write(f"{cls}/{stem}.avi {c + 1}\n" if split == "train" else f"{cls}/{stem}.avi\n")
                if rgb == "videos":
                    write_video(os.path.join(root, "UCF-101", cls, stem + ".avi"), seconds=0.5, fps=10,
                                audio_rate=None, vcodec="mpeg4", base=7 * k)
                else:
                    for i in range(n_frames):
                        write_jpg(os.path.join(root, "frames", stem, f"img_{i + 1:05d}.jpg"), value=7 * k + i)
                for i in range(n_frames):
                    if flow == "uv":
                        name = f"frame{i + 1:06d}.jpg"
                        write_jpg(os.path.join(root, "tvl1_flow", "u", stem, name), 100 + i, mode="L")
                        write_jpg(os.path.join(root, "tvl1_flow", "v", stem, name), 150 + i, mode="L")
                    else:
                        write_jpg(os.path.join(root, "flow", stem, f"flow_x_{i + 1:05d}.jpg"), 100 + i, mode="L")
                        write_jpg(os.path.join(root, "flow", stem, f"flow_y_{i + 1:05d}.jpg"), 150 + i, mode="L")
                k += 1
    return root




# ----------------------------------------------------------------------------- MOSI

MOSI_SIZES = {"train": 12, "valid": 4, "test": 5}
MOSI_DIMS = {"audio": 5, "vision": 7, "text": 11}
MOSI_LEN = 6


def mosi_split(n: int, seed: int, label_key: str = "regression_labels") -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = np.round(rng.uniform(-3, 3, size=n), 1)
    scores[0], scores[1] = 0.0, -0.4  # a zero score and a negative one in every split
    d = {k: rng.standard_normal((n, MOSI_LEN, dim)).astype(np.float32) for k, dim in MOSI_DIMS.items()}
    d[label_key] = scores if label_key == "regression_labels" else scores.reshape(n, 1, 1)
    d["id"] = np.array([f"vid{seed}_{i}" for i in range(n)])
    return d


