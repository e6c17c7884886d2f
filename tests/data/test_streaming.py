"""Streaming sharded Parquet: export, undecoded frames, split by node, and ARLTrainer on 2 processes
(every sample exactly once per epoch), with the pitfalls refused loudly."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("datasets")

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
REPO = HERE.parent.parent

from streaming_data import make_frames_dataset  # noqa: E402

from arl_hf.data.streaming import export_shards, shard_rows, steps_per_epoch, stream_split  # noqa: E402


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("shards"))
    export_shards(make_frames_dataset(), folder, num_shards={"train": 4, "validation": 2, "test": 2})
    return folder


def test_export_writes_equal_shards_a_record_and_a_card(shards):
    files = sorted(os.listdir(os.path.join(shards, "data")))
    assert files[:2] == ["test-00000-of-00002.parquet", "test-00001-of-00002.parquet"]
    assert [f for f in files if f.startswith("train")] == [f"train-{i:05d}-of-00004.parquet" for i in range(4)]
    assert shard_rows(shards, "train") == [12, 12, 12, 12]
    assert os.path.isfile(os.path.join(shards, "arl_hf_preprocessing.json"))
    card = Path(shards, "README.md").read_text()
    assert "data/train-*-of-*.parquet" in card
    import datasets  # plain datasets reads the folder too, through the card's configs

    plain = datasets.load_dataset(shards, split="validation", streaming=True)
    assert len(list(plain)) == 16


def test_frames_stay_undecoded_until_the_transform(shards, monkeypatch):
    import datasets

    from arl_hf.data.transforms import MultimodalTransform

    raw = stream_split(shards, "train", transform=False)
    assert raw.features["visual"] == datasets.List(datasets.Image(decode=False))
    first = next(iter(raw))["visual"][0]
    assert isinstance(first, dict) and first["bytes"][:2] == b"\xff\xd8"  # JPEG bytes, not a PIL image
    seen = []
    call = MultimodalTransform.__call__

    def spy(self, batch):
        seen.extend(type(clip[0]) for clip in batch["visual"])
        return call(self, batch)

    monkeypatch.setattr(MultimodalTransform, "__call__", spy)
    ds = stream_split(shards, "train", image_size=16)
    ex = next(iter(ds))
    assert seen and all(t is dict for t in seen)
    assert tuple(ex["visual"].shape) == (1, 3, 16, 16) and tuple(ex["audio"].shape) == (1, 64, 64)
    assert sorted(ex) == ["audio", "labels", "visual"]


def test_split_by_node_partitions_the_shards(shards):
    ids = [[e["id"] for e in stream_split(shards, "train", transform=False, rank=r, world_size=2)] for r in (0, 1)]
    assert len(ids[0]) == len(ids[1]) == 24
    assert not set(ids[0]) & set(ids[1])
    assert sorted(ids[0] + ids[1]) == sorted(f"train_{i}" for i in range(48))
    assert steps_per_epoch(shards, per_device_batch_size=5, world_size=2) == 5  # ceil(24 / 5)
    assert steps_per_epoch(shards, per_device_batch_size=5, world_size=2, drop_last=True) == 4


def test_uneven_shards_are_refused_or_truncated(tmp_path):
    folder = str(tmp_path / "uneven")
    export_shards(make_frames_dataset(sizes=(("train", 10), ("validation", 4), ("test", 4))), folder,
                  num_shards={"train": 4, "validation": 1, "test": 1})
    assert shard_rows(folder, "train") == [3, 3, 2, 2]
    with pytest.raises(ValueError, match=r"^uneven: the train shards hold different numbers of rows"):
        stream_split(folder, "train", rank=0, world_size=2)
    with pytest.raises(ValueError, match=r"4 shards cannot be split evenly over 3 processes"):
        stream_split(folder, "train", rank=0, world_size=3)
    counts = [len(list(stream_split(folder, "train", transform=False, rank=r, world_size=2, uneven="truncate")))
              for r in (0, 1)]
    assert counts == [4, 4]  # the smallest share a rank can get (2 + 2), on both


def test_streaming_needs_max_steps(shards, tmp_path):
    sys.path.insert(0, str(REPO / "tests" / "strategies"))
    from strategy_testutils import cfg, mlp_model

    from arl_hf import ARLTrainer

    with pytest.raises(ValueError, match="max_steps has to be specified"):
        ARLTrainer(model=mlp_model(), args=cfg(tmp_path, max_steps=-1), train_dataset=stream_split(shards, "train"))


def test_accelerate_shards_a_node_split_stream_again():
    """Why ARLTrainer prepares a node-split stream itself: accelerate (dispatch_batches=False) would
    shard it a second time."""
    import datasets
    import torch
    from accelerate.data_loader import prepare_data_loader
    from datasets.distributed import split_dataset_by_node

    full = datasets.Dataset.from_dict({"idx": list(range(40))}).to_iterable_dataset(num_shards=4)
    seen = []
    for r in (0, 1):
        node = split_dataset_by_node(full, rank=r, world_size=2)
        dl = torch.utils.data.DataLoader(node.with_format("torch"), batch_size=4)
        seen += [int(x) for b in prepare_data_loader(dl, num_processes=2, process_index=r, dispatch_batches=False)
                 for x in b["idx"]]
    assert len(seen) == 20  # half of the data never seen


@pytest.fixture(scope="module")
def two_ranks(shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("stream_run")
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", MASTER_ADDR="127.0.0.1",
               HF_DATASETS_DISABLE_PROGRESS_BARS="1",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("ACCELERATE_MIXED_PRECISION", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(29500 + (os.getpid() + 750) % 1000), str(HERE / "streaming_worker.py"), shards,
           str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_two_ranks_see_every_sample_exactly_once_per_epoch(two_ranks):
    r0, r1 = two_ranks
    assert r0["world_size"] == 2 and r0["max_steps"] == 12 and r0["global_step"] == r1["global_step"] == 12
    assert r0["examples_per_rank"] == r1["examples_per_rank"] == 24
    per_epoch = 6  # 24 examples per rank / batch 4
    orders = []
    for epoch in range(2):
        ids = {r["rank"]: [i for s in r["seen"][epoch * per_epoch:(epoch + 1) * per_epoch] for i in s["idx"]]
               for r in two_ranks}
        both = ids[0] + ids[1]
        assert len(both) == 48 and sorted(both) == list(range(48)), epoch  # exactly once, no duplicates
        assert not set(ids[0]) & set(ids[1])
        orders.append(ids[0])
    assert orders[0] != orders[1]  # the shuffle buffer is re-seeded every epoch
    assert all(len(s["idx"]) == 4 for r in two_ranks for s in r["seen"])
    assert len(r0["losses"]) == 12


def test_default_dispatch_batches_is_refused(two_ranks):
    for r in two_ranks:
        msg = r["dispatch_error"]
        assert msg is not None and msg.startswith("accelerator_config.dispatch_batches: expected False")
