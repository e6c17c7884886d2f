"""The ``arl_hf`` format: NumPy array columns, undecoded frames, same tensors as ``with_transform``."""

from __future__ import annotations

import io
import pickle

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from arl_hf.data import MultimodalTransform, load, preprocessing_info
from arl_hf.data import transforms as transforms_module
from arl_hf.data.formatting import FORMAT_TYPE, ArrowTransformFormatter, contains_image
from arl_hf.data.transforms import decode_pixels

KINDS = {"visual": {"kind": "frames"}, "audio": {"kind": "spectrogram"}}


def _jpeg(value: int, size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(value)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "JPEG", quality=95)
    return buf.getvalue()


@pytest.fixture
def tiny() -> datasets.Dataset:
    features = datasets.Features({
        "audio": datasets.Array2D(shape=(4, 5), dtype="float32"),
        "visual": datasets.List(datasets.Image()),
        "labels": datasets.ClassLabel(names=["a", "b", "c"]),
        "id": datasets.Value("string"),
    })
    rows = {"audio": [np.full((4, 5), i + 0.25, np.float32) for i in range(3)],
            "visual": [[{"bytes": _jpeg(10 * i + j), "path": None} for j in range(3)] for i in range(3)],
            "labels": [2, 0, 1], "id": ["x", "y", "z"]}
    return datasets.Dataset.from_dict(rows, features=features)


def test_batch_types_arrays_as_numpy_frames_undecoded_rest_as_with_transform(tiny):
    seen = {}

    def spy(batch):
        seen.update(batch)
        return batch

    tiny.with_format(FORMAT_TYPE, transform=spy)[0:2]
    assert isinstance(seen["audio"], np.ndarray) and seen["audio"].shape == (2, 4, 5)
    assert seen["audio"].dtype == np.float32 and float(seen["audio"][1, 3, 4]) == 1.25
    assert isinstance(seen["visual"][0][1], dict) and seen["visual"][0][1]["bytes"] == _jpeg(1)
    assert seen["labels"] == [2, 0] and seen["id"] == ["x", "y"]
    with pytest.raises(ValueError, match="transform: expected a callable"):
        tiny.with_format(FORMAT_TYPE, transform=3)


def test_same_tensors_as_with_transform_and_survives_pickling(tiny):
    t = MultimodalTransform(KINDS, train=False, num_frames=2, image_size=16)
    fast = tiny.with_format(FORMAT_TYPE, transform=t)
    slow = tiny.with_transform(MultimodalTransform(KINDS, train=False, num_frames=2, image_size=16))
    for i in range(3):
        a, b = fast[i], slow[i]
        assert set(a) == {"audio", "visual", "labels"} and a["labels"] == b["labels"]
        assert torch.equal(a["audio"], b["audio"]) and tuple(a["audio"].shape) == (1, 4, 5)
        assert tuple(a["visual"].shape) == (2, 3, 16, 16)
        # bytes decoded by torchvision (libjpeg-turbo) vs PIL images: the JPEG decoders' rounding only
        assert float((a["visual"] - b["visual"]).abs().mean()) < 0.02
    a["audio"].add_(1.0)  # writable copy: the Arrow memory stays untouched
    assert float(fast[2]["audio"][0, 0, 0]) == 2.25
    clone = pickle.loads(pickle.dumps(fast))  # what a spawned DataLoader worker receives
    assert clone.format["type"] == FORMAT_TYPE and torch.equal(clone[1]["visual"], fast[1]["visual"])


def test_only_the_chosen_frames_are_decoded(tiny, monkeypatch):
    calls = []
    real = transforms_module.decode_pixels

    def counting(value, name="image", mode="RGB"):
        calls.append(name)
        return real(value, name, mode)

    monkeypatch.setattr(transforms_module, "decode_pixels", counting)
    ds = tiny.with_format(FORMAT_TYPE, transform=MultimodalTransform(KINDS, train=True, num_frames=1, image_size=8))
    ds[0:3]
    assert calls == ["visual"] * 3  # one of the three stored frames per clip


def test_decode_pixels_bytes_path_pil_and_fallback(tmp_path):
    data = _jpeg(4)
    x = decode_pixels({"bytes": data, "path": None})
    assert x.dtype == torch.uint8 and tuple(x.shape) == (3, 30, 40)
    ref = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).transpose(2, 0, 1).astype(np.float32)
    assert np.abs(x.numpy().astype(np.float32) - ref).mean() < 2.0  # same pixels up to decoder rounding
    path = tmp_path / "f.jpg"
    path.write_bytes(data)
    assert torch.equal(decode_pixels({"bytes": None, "path": str(path)}), x)
    assert tuple(decode_pixels({"bytes": data, "path": None}, mode="L").shape) == (1, 30, 40)
    img = Image.fromarray(np.arange(24, dtype=np.uint8).reshape(2, 4, 3))
    buf = io.BytesIO()
    img.save(buf, "BMP")  # not a torchvision format: decoded by PIL, lossless
    assert decode_pixels({"bytes": buf.getvalue()}).permute(1, 2, 0).flatten().tolist() == list(range(24))
    assert decode_pixels(img).permute(1, 2, 0).flatten().tolist() == list(range(24))
    with pytest.raises(ValueError, match=r"visual: image record has neither 'bytes' nor 'path'"):
        decode_pixels({"bytes": None, "path": None}, "visual")
    with pytest.raises(ValueError, match=r"visual: expected a PIL image or an image record"):
        decode_pixels(3, "visual")


def test_contains_image():
    assert contains_image(datasets.List({"x": datasets.Image(), "y": datasets.Image()}))
    assert not contains_image(datasets.Array2D(shape=(2, 2), dtype="float32"))
    assert issubclass(ArrowTransformFormatter, datasets.formatting.formatting.CustomFormatter)


def test_load_attaches_the_format_and_frame_max_side_shrinks_frame_files(cremad_extracted, tmp_path):
    plain = load("cremad", cremad_extracted, cache_dir=str(tmp_path / "a"), image_size=16)
    assert plain["train"].format["type"] == FORMAT_TYPE
    assert preprocessing_info(plain)["frames"]["max_side"] is None
    small = load("cremad", cremad_extracted, cache_dir=str(tmp_path / "b"), image_size=16, frame_max_side=20,
                 transform=False)
    assert preprocessing_info(small)["frames"]["max_side"] == 20
    frames = small["train"][0]["visual"]
    assert [im.size for im in frames] == [(27, 20)] * 3  # 40x30 files -> shorter side 20, aspect kept
    same = load("cremad", cremad_extracted, cache_dir=str(tmp_path / "c"), frame_max_side=30, transform=False)
    raw = plain["train"].with_format(None).cast_column("visual", datasets.List(datasets.Image(decode=False)))
    kept = same["train"].cast_column("visual", datasets.List(datasets.Image(decode=False)))
    assert kept[0]["visual"][0]["bytes"] == raw[0]["visual"][0]["bytes"]  # not larger than 30: stored unchanged


def test_fixed_shape_fast_path_equals_generic_extraction_across_chunks_and_slices():
    from datasets.formatting.formatting import NumpyArrowExtractor

    from arl_hf.data.formatting import _fixed_shape_numpy

    feat = datasets.Features({"a": datasets.Array2D(shape=(2, 3), dtype="float32"), "labels": datasets.Value("int64")})
    parts = [datasets.Dataset.from_dict({"a": [np.full((2, 3), 10 * p + i, np.float32) + np.arange(3) for i in range(4)],
                                         "labels": [0] * 4}, features=feat) for p in range(2)]
    ds = datasets.concatenate_datasets(parts)
    table = ds.data.table.slice(2, 5)  # crosses the chunk boundary, starts at an offset
    assert table.column("a").num_chunks == 2
    fast = _fixed_shape_numpy(table.column("a"), feat["a"])
    generic = NumpyArrowExtractor().extract_column(table.select(["a"]))
    assert fast.shape == (5, 2, 3) and np.array_equal(fast, generic)
    assert fast[:, 0, 0].tolist() == [2.0, 3.0, 10.0, 11.0, 12.0]
    free = datasets.Array2D(shape=(None, 3), dtype="float32")
    assert _fixed_shape_numpy(table.column("a"), free) is None  # free dimension: generic path
    picked = ds.select([5, 1]).with_format(FORMAT_TYPE, transform=lambda b: b)[0:2]
    assert picked["a"][:, 1, 2].tolist() == [13.0, 3.0]
