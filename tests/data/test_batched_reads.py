"""Whole-batch reads: every batch path gives the batches of the code before them (fingerprints
taken with ``batched_reads_paths.py`` on the previous commit), frames are read undecoded and
decoded once in one batched call, and the collator takes the transformed batch instead of a copy."""

from __future__ import annotations

import importlib.util
import io
import os
import sys

import datasets
import numpy as np
import pytest
import torch
from batched_reads_paths import CASES, mixed_frames_dsd, paths_of
from pipeline_reference import frames_dsd

from arl_hf.data import MultimodalCollator, MultimodalTransform
from arl_hf.data import video as V
from arl_hf.data.batches import ArrowRowReader, batch_buffer, mark_batch, rows_as_batch
from arl_hf.data.transforms import EncodedFrames, decode_frames_on_device

# ``python tests/data/batched_reads_paths.py OUT.json`` with PYTHONPATH at the commit before
# batched reads (first batches of every path: 3 training batches of 4, 2 validation batches)
OLD_HASHES = {
    "avdigits": {
        "attached": {"train": ["b3d2b01b7bbb42eb", "b5d94f7c5bb50a25", "2375c2b8c03968e2"],
                     "validation": ["6b5b390b3e06c920", "0fbc920311b7f4b7"]},
        "per_split": {"train": ["b3d2b01b7bbb42eb", "b5d94f7c5bb50a25", "2375c2b8c03968e2"],
                      "validation": ["6b5b390b3e06c920", "0fbc920311b7f4b7"]},
        "runner": {"train": ["a7e0b17e0c450e3f", "3d68c4679902ecf7", "ee7aa6a9651f87a2"],
                   "validation": ["6b5b390b3e06c920", "0fbc920311b7f4b7"]},
        "shared": {"train": ["b3d2b01b7bbb42eb", "b5d94f7c5bb50a25", "2375c2b8c03968e2"],
                   "validation": ["6b5b390b3e06c920", "0fbc920311b7f4b7"]},
        "shared_worker": {"train": ["b3d2b01b7bbb42eb", "b5d94f7c5bb50a25", "2375c2b8c03968e2"],
                          "validation": ["6b5b390b3e06c920", "0fbc920311b7f4b7"]},
    },
    "frames": {
        "attached": {"train": ["a4ed4367d5d9c17d", "ec10c9dfbfeffc5b", "b41a642d3b7ea419"],
                     "validation": ["2eaecca1f22e0e99", "8f8210274a8790cb"]},
        "per_split": {"train": ["a4ed4367d5d9c17d", "ec10c9dfbfeffc5b", "b41a642d3b7ea419"],
                      "validation": ["2eaecca1f22e0e99", "8f8210274a8790cb"]},
        "runner": {"train": ["bd83830417f528a5", "a403ddcf2b3eeb46", "5f72f7f82478b26e"],
                   "validation": ["2eaecca1f22e0e99", "8f8210274a8790cb"]},
        "shared": {"train": ["a4ed4367d5d9c17d", "ec10c9dfbfeffc5b", "b41a642d3b7ea419"],
                   "validation": ["2eaecca1f22e0e99", "8f8210274a8790cb"]},
        "shared_worker": {"train": ["1fb86bb5c767763d", "78b129c39ca486d4", "45d47277dcbbb454"],
                          "validation": ["2eaecca1f22e0e99", "8f8210274a8790cb"]},
        "stream": {"train": ["c30bb1a9e6c4afec", "c3d8f0ea546200ed", "064475308c4a4939"],
                   "validation": ["2eaecca1f22e0e99", "8f8210274a8790cb"]},
        "stream_rank1": {"train": ["e8456eb9562416c6", "14f22b722f2e5a6c"],
                         "validation": ["16649a3d57848a2d"]},
        "stream_shuffled": {"train": ["4d62eef0b866d7d3", "86a6ecfa56fa10a7", "a1bb2184e1a37149"],
                            "validation": ["b92d609856a172c7", "b9fc418a28d9fdcd"]},
    },
    "mixed": {
        "attached": {"train": ["ac3401aef6b1f014", "d7da181e0173db8c", "3f4e3af118912a77"],
                     "validation": ["2c39591eb52480b9", "8dab20186d940ff3"]},
        "per_split": {"train": ["e73f50a96126e137", "eb352f885c18329c", "66b4810a7545c2de"],
                      "validation": ["5fdfc6e0d5b3c771", "439553168033c221"]},
        "runner": {"train": ["5643283c64a1785f", "73812ce2dcb333a4", "e33af79449e87038"],
                   "validation": ["2c39591eb52480b9", "8dab20186d940ff3"]},
        "shared": {"train": ["ac3401aef6b1f014", "d7da181e0173db8c", "3f4e3af118912a77"],
                   "validation": ["2c39591eb52480b9", "8dab20186d940ff3"]},
        "shared_worker": {"train": ["736eedc107b091cc", "003898d0ed1ac572", "b6b013596f28115f"],
                          "validation": ["2c39591eb52480b9", "8dab20186d940ff3"]},
        "stream": {"train": ["81c693b692fadba0", "614e063dedf93b8c", "1bf8753e81d73c34"],
                   "validation": ["2c39591eb52480b9", "8dab20186d940ff3"]},
        "stream_rank1": {"train": ["8aff93bc127ab5e9", "49f9dcf78c2fe382"],
                         "validation": ["8dab20186d940ff3"]},
        "stream_shuffled": {"train": ["52cd663dbae71119", "edd0816ac4734e2e", "10ae7874fd2966dd"],
                            "validation": ["93924c49254d6159", "cc8b52b0472be005"]},
    },
}


def _bound(dsd, **options):
    out = datasets.DatasetDict({k: v.with_format("numpy") for k, v in dsd.items()})
    out.transform_options = dict(options)
    return out, MultimodalCollator.from_dataset(out)


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_path_gives_the_batches_of_the_previous_code(name, tmp_path):
    got = paths_of(name, str(tmp_path))
    assert sorted(got) == sorted(OLD_HASHES[name])
    for path, splits in OLD_HASHES[name].items():
        assert got[path] == splits, path


def test_bound_split_reads_frames_undecoded_and_decodes_them_in_one_call(monkeypatch):
    dsd, collator = _bound(frames_dsd(), image_size=12, seed=1)
    seen, calls = [], []
    call, batch_decode = MultimodalTransform.__call__, V.decode_jpeg_batch

    def spy(self, batch):
        seen.append((type(batch["audio"]), type(batch["visual"][0][0]), type(batch["flow"][0][0]["x"])))
        return call(self, batch)

    def spy_decode(jpegs, *a, **kw):
        calls.append(len(jpegs))
        return batch_decode(jpegs, *a, **kw)

    monkeypatch.setattr(MultimodalTransform, "__call__", spy)
    monkeypatch.setattr(V, "decode_jpeg_batch", spy_decode)
    batch = collator(dsd["train"].__getitems__([4, 1, 7]))
    assert tuple(batch["visual"].shape) == (3, 2, 3, 12, 12) and tuple(batch["audio"].shape) == (3, 1, 6, 7)
    # one read of the batch: the spectrograms as one tensor, frames and flow as their JPEG records
    assert seen == [(torch.Tensor, dict, dict)]
    # 3 clips x 2 chosen frames of the 4 stored, in one call; flow: 3 x 2 x (x, y) grey JPEGs in another
    assert sorted(calls) == [6, 12]


def test_collated_batch_is_the_transformed_batch_not_a_copy():
    dsd, collator = _bound(frames_dsd(), image_size=12)
    rows = dsd["validation"].__getitems__([0, 1, 2, 3])
    batch = collator(rows)
    for name in ("audio", "visual", "flow"):
        assert batch[name].untyped_storage().data_ptr() == rows[0][name].untyped_storage().data_ptr(), name
        assert torch.equal(batch[name], torch.stack([r[name] for r in rows]))
    # rows of the caller's own tensors are stacked (a copy), as before
    own = [{"audio": torch.ones(1, 6, 7) * i, "visual": r["visual"].clone(), "flow": r["flow"].clone(),
            "text": r["text"], "labels": r["labels"]} for i, r in enumerate(rows)]
    copied = collator(own)
    assert copied["visual"].untyped_storage().data_ptr() != own[0]["visual"].untyped_storage().data_ptr()


def test_rows_as_batch_takes_only_consecutive_rows_of_a_marked_batch():
    base = mark_batch(torch.arange(60.0).reshape(5, 3, 4))
    view = rows_as_batch([base[i] for i in range(1, 4)])
    assert view is not None and torch.equal(view, base[1:4]) and view.data_ptr() == base[1].data_ptr()
    assert torch.equal(rows_as_batch([base.unsqueeze(1)[2]]), base[2:3].unsqueeze(1))
    assert rows_as_batch([base[2], base[1]]) is None  # reordered
    assert rows_as_batch([base[0], base[2]]) is not None  # evenly spaced rows are still one view
    assert torch.equal(rows_as_batch([base[0], base[2]]), base[0:4:2])
    assert rows_as_batch([base[0], base[1][:2]]) is None  # shapes differ
    plain = torch.arange(60.0).reshape(5, 3, 4)
    assert rows_as_batch([plain[0], plain[1]]) is None  # not built as a batch: the caller's tensor
    assert rows_as_batch([base[0], np.zeros((3, 4))]) is None
    overlapping = mark_batch(torch.arange(10.0))
    assert rows_as_batch([overlapping[0:4], overlapping[1:5]]) is None


def _image(fmt, mode, size=(20, 14), seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def test_decode_frames_batches_the_jpegs_and_decodes_like_decode_pixels(monkeypatch):
    values = [{"bytes": _image("JPEG", "RGB", seed=1), "path": None}, {"bytes": _image("PNG", "RGB"), "path": None},
              {"bytes": _image("JPEG", "L", seed=2), "path": None}, {"bytes": _image("JPEG", "CMYK"), "path": None},
              np.full((14, 20, 3), 7, np.uint8), {"bytes": _image("PNG", "P"), "path": None}]
    assert [V.jpeg_components(v["bytes"]) if isinstance(v, dict) else None for v in values] == [3, 0, 1, 4, None, 0]
    calls = []
    batch_decode = V.decode_jpeg_batch
    monkeypatch.setattr(V, "decode_jpeg_batch", lambda j, *a, **kw: calls.append(len(j)) or batch_decode(j, *a, **kw))
    got = V.decode_frames(values, "visual")
    assert calls == [2]  # the RGB and the grey JPEG; CMYK, PNG and the array one by one
    for g, v in zip(got, values):
        assert torch.equal(g, V.decode_pixels(v, "visual"))
    grey = V.decode_frames(values[:3], "flow", "L")
    assert calls == [2, 1] and [tuple(g.shape) for g in grey] == [(1, 14, 20)] * 3  # only the grey JPEG batched
    assert all(torch.equal(g, V.decode_pixels(v, "flow", "L")) for g, v in zip(grey, values[:3]))


def test_jpeg_components_reads_the_frame_header_only():
    assert V.jpeg_components(_image("JPEG", "RGB")) == 3
    assert V.jpeg_components(b"\xff\xd8\xff") == 0 and V.jpeg_components(b"PNG") == 0
    assert V.jpeg_components(_image("JPEG", "RGB")[:20]) == 0  # truncated before the frame header


def test_device_decoding_works_on_bound_splits_and_equals_the_cpu_batch():
    cpu_dsd, cpu = _bound(mixed_frames_dsd(), image_size=16, seed=2)
    dev_dsd = datasets.DatasetDict({k: v.with_format("numpy") for k, v in mixed_frames_dsd().items()})
    dev_dsd.transform_options = {"image_size": 16, "seed": 2}
    dev = MultimodalCollator.from_dataset(dev_dsd, decode_frames="device")
    for split in ("train", "validation"):
        rows = [0, 2, 4, 6]  # clips of RGB JPEGs (the others hold PNG and CMYK frames: left to the CPU)
        a = cpu(cpu_dsd[split].__getitems__(rows))
        b = dev(dev_dsd[split].__getitems__(rows))
        assert isinstance(b["visual"], EncodedFrames) and len(b["visual"]) == 4
        assert all(V.jpeg_components(j) == 3 for c in b["visual"].clips for j in c.jpegs)
        assert torch.equal(decode_frames_on_device(b, "cpu")["visual"], a["visual"])
        assert torch.equal(b["audio"], a["audio"]) and torch.equal(b["labels"], a["labels"])


def test_worker_batches_are_allocated_in_shared_memory():
    dsd, collator = _bound(frames_dsd(), image_size=12)

    def collate(rows):
        out = collator(rows)
        out["shared_in_worker"] = torch.tensor([rows[0]["visual"].is_shared(), rows[0]["audio"].is_shared()])
        return out

    loader = torch.utils.data.DataLoader(dsd["train"], batch_size=4, num_workers=1, collate_fn=collate)
    first = next(iter(loader))
    assert first["shared_in_worker"].tolist() == [True, True]  # built there, not copied there
    assert first["visual"].is_shared()


def test_streamed_rows_reach_the_transform_as_arrays_and_records(tmp_path, monkeypatch):
    from streaming_data import make_frames_dataset

    from arl_hf.data.streaming import export_shards, stream_split

    export_shards(make_frames_dataset(sizes=(("train", 8), ("validation", 4), ("test", 4))), str(tmp_path),
                  num_shards=2)
    seen = []
    call = MultimodalTransform.__call__

    def spy(self, batch):
        seen.append((type(batch["audio"][0]), type(batch["visual"][0][0])))
        return call(self, batch)

    monkeypatch.setattr(MultimodalTransform, "__call__", spy)
    it = stream_split(str(tmp_path), "validation", image_size=8)
    batch = next(iter(torch.utils.data.DataLoader(it, batch_size=4, collate_fn=MultimodalCollator.from_dataset(it))))
    assert seen == [(np.ndarray, dict)]  # no nested Python lists, no decoded frames
    assert tuple(batch["audio"].shape) == (4, 1, 64, 64) and tuple(batch["visual"].shape) == (4, 1, 3, 8, 8)


def test_the_reader_reads_images_undecoded_and_names_bad_rows():
    ds = frames_dsd()["train"]
    table = ds.with_format(None).data
    reader = ArrowRowReader(table, {"audio": (6, 7)}, ["visual", "flow"])
    got = reader.rows([3, 0], tensors=["audio"])
    assert torch.is_tensor(got["audio"]) and tuple(got["audio"].shape) == (2, 6, 7)
    np.testing.assert_array_equal(got["audio"][0].numpy(), np.asarray(ds.with_format("numpy")[3]["audio"]))
    assert got["visual"][1][2]["bytes"][:2] == b"\xff\xd8" and set(got["flow"][0][0]) == {"x", "y"}
    with pytest.raises(ValueError, match=r"rows: expected positions in \[0, 10\), got 0\.\.10"):
        reader.rows([0, 10])
    feat = datasets.Features({"x": datasets.Array2D(shape=(2, 3), dtype="float32")})
    nulls = datasets.Dataset.from_dict({"x": [None, np.zeros((2, 3), np.float32)]}, features=feat)
    with pytest.raises(ValueError, match="x: a row is null"):
        ArrowRowReader(nulls.data, {"x": (2, 3)}).rows([1])


def test_batch_buffer_is_marked_and_plain_outside_workers():
    buf = batch_buffer((2, 3), torch.uint8)
    assert buf.dtype == torch.uint8 and tuple(buf.shape) == (2, 3) and not buf.is_shared()
    assert rows_as_batch([buf[0], buf[1]]) is not None


def _pipeline_module():
    path = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "data_pipeline.py")
    spec = importlib.util.spec_from_file_location("data_pipeline_bench", path)
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, os.path.dirname(path))
    spec.loader.exec_module(mod)
    return mod


def test_the_benchmark_targets_and_check():
    bench = _pipeline_module()
    args = bench.build_parser().parse_args(["--check", "--workers", "2"])
    result = {"one_core_small_frames_median_ratio": 5.2, "one_core_median_ratio": 2.9, "workers_over_one_core": 1.8,
              "small_frames_workers_over_one_core": None, "loader_over_components": 1.31,
              "small_frames_loader_over_components": 0.9}
    rows = bench.targets(result, args)
    assert [t["met"] for t in rows] == [True, False, True, None, False, True]
    assert [t["target"] for t in rows] == [5.0, 3.0, 1.7, 1.7, 1.3, 1.3]
    assert bench.unmet_targets({"targets": rows}) == [rows[1]["name"], rows[4]["name"]]


def test_the_reader_finds_rows_across_record_batches():
    parts = [frames_dsd()["train"].with_format(None), frames_dsd()["validation"].with_format(None)]
    both = datasets.concatenate_datasets(parts)
    table = both.data
    assert table.table.column("audio").num_chunks > 1
    reader = ArrowRowReader(table, {"audio": (6, 7)}, ["visual"])
    got = reader.rows([12, 9, 0, 15])
    for k, r in enumerate([12, 9, 0, 15]):
        np.testing.assert_array_equal(got["audio"][k], np.asarray(both.with_format("numpy")[r]["audio"]))
        assert got["visual"][k] == both.cast_column(
            "visual", datasets.List(datasets.Image(decode=False)))[r]["visual"]
