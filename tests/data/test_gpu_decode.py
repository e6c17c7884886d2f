"""Frames decoded on the training device (``decode_frames="device"``): the same batches as the CPU
transform. On CPU the device path must be bit-identical; the CUDA comparison runs where CUDA is."""

import io
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from arl_hf.data import MultimodalCollator, MultimodalTransform
from arl_hf.data.transforms import EncodedFrames, decode_frames_on_device, decode_jpeg_batch


def _jpeg(h, w, seed):
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) % 256], -1) + rng.integers(0, 30, (h, w, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
    return {"bytes": buf.getvalue(), "path": None}


def _batch(n=6, frames=3):
    return {"visual": [[_jpeg(48, 64, 10 * i + f) for f in range(frames)] for i in range(n)],
            "audio": [np.random.default_rng(i).normal(size=(8, 8)).astype("float32") for i in range(n)],
            "labels": list(range(n))}


def _collated(train, decode, num_frames=2, seed=3):
    t = MultimodalTransform({"visual": {"kind": "frames"}, "audio": {"kind": "spectrogram"}}, train=train,
                            num_frames=num_frames, image_size=32, seed=seed, decode_frames=decode)
    out = t(_batch())
    rows = [{k: out[k][i] for k in out} for i in range(len(out["labels"]))]
    return MultimodalCollator({"visual": {"kind": "frames"}, "audio": {"kind": "spectrogram"}})(rows)


@pytest.mark.parametrize("train", [False, True])
def test_device_decode_on_cpu_equals_the_cpu_transform(train):
    cpu = _collated(train, "cpu")
    enc = _collated(train, "device")
    assert isinstance(enc["visual"], EncodedFrames) and len(enc["visual"]) == 6
    assert all(len(c.jpegs) == 2 and isinstance(c.jpegs[0], bytes) for c in enc["visual"].clips)  # still JPEG
    dev = decode_frames_on_device(enc, "cpu")
    assert dev["visual"].shape == cpu["visual"].shape == (6, 2, 3, 32, 32)
    assert torch.equal(dev["visual"], cpu["visual"])  # same decoder, same seeded crop/flip, same resize
    assert torch.equal(dev["audio"], cpu["audio"]) and torch.equal(dev["labels"], cpu["labels"])


def test_arl_trainer_decodes_encoded_frames_in_prepare_inputs(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent.parent / "strategies"))
    from strategy_testutils import cfg, mlp_model

    from arl_hf import ARLTrainer

    trainer = ARLTrainer(model=mlp_model(), args=cfg(tmp_path))
    got = trainer._prepare_inputs(_collated(True, "device"))
    assert torch.equal(got["visual"], _collated(True, "cpu")["visual"])


def test_device_decode_needs_undecoded_frames_and_a_known_mode():
    from PIL import Image

    t = MultimodalTransform({"visual": {"kind": "frames"}}, train=False, image_size=8, decode_frames="device")
    with pytest.raises(ValueError, match=r"^visual: decode_frames='device' needs undecoded frames"):
        t({"visual": [[Image.new("RGB", (8, 8))]], "labels": [0]})
    with pytest.raises(ValueError, match=r"^decode_frames: expected 'cpu' or 'device', got 'gpu'"):
        MultimodalTransform({"visual": {"kind": "frames"}}, train=False, decode_frames="gpu")


def test_streamed_split_can_leave_frames_for_the_device(tmp_path):
    pytest.importorskip("datasets")
    from streaming_data import make_frames_dataset

    from arl_hf.data.streaming import export_shards, stream_split

    export_shards(make_frames_dataset(sizes=(("train", 8), ("validation", 4), ("test", 4))), str(tmp_path),
                  num_shards=2)
    rows = list(stream_split(str(tmp_path), "validation", image_size=16, decode_frames="device"))
    batch = MultimodalCollator({"audio": {"kind": "spectrogram"}, "visual": {"kind": "frames"}})(rows)
    assert isinstance(batch["visual"], EncodedFrames)
    ref = MultimodalCollator({"audio": {"kind": "spectrogram"}, "visual": {"kind": "frames"}})(
        list(stream_split(str(tmp_path), "validation", image_size=16)))
    assert torch.equal(decode_frames_on_device(batch, "cpu")["visual"], ref["visual"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (nvJPEG)")
def test_gpu_decode_matches_cpu_decode():
    """nvJPEG and libjpeg-turbo may round the IDCT / chroma upsampling differently: equal up to a few
    grey levels on the raw pixels, and to ~0.05 after resizing and normalisation."""
    jpegs = [_jpeg(48, 64, s)["bytes"] for s in range(8)]
    cpu = decode_jpeg_batch(jpegs, device="cpu")
    gpu = decode_jpeg_batch(jpegs, device="cuda")
    for a, b in zip(cpu, gpu):
        assert b.device.type == "cuda" and a.shape == b.shape and b.dtype == torch.uint8
        diff = (a.int() - b.cpu().int()).abs()
        assert diff.float().mean() < 1.0 and diff.max() <= 16
    for train in (False, True):
        enc = _collated(train, "device")
        on_gpu = decode_frames_on_device(enc, "cuda")["visual"]
        on_cpu = _collated(train, "cpu")["visual"]
        assert on_gpu.device.type == "cuda"
        assert (on_gpu.cpu() - on_cpu).abs().mean() < 0.05
