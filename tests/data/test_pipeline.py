"""Plain datasets, per-split transforms in the collator: dataset operations work, batches unchanged."""

from __future__ import annotations

import json
import os

import datasets
import numpy as np
import pytest
import torch
from pipeline_reference import frames_dsd, h_batch

from arl_hf.data import MultimodalCollator, attach_transforms, load

REFERENCE = json.load(open(os.path.join(os.path.dirname(__file__), "pipeline_reference.json")))


@pytest.fixture(scope="module")
def avd(tmp_path_factory):
    return load("avdigits", cache_dir=str(tmp_path_factory.mktemp("avd_pipeline")), num_samples=100)


def _plain(dsd):
    return datasets.DatasetDict({k: v.with_format("numpy") for k, v in dsd.items()})


def _epochs(dsd, collators, seed, workers=0):
    """What a run draws: a 2-example batch (the model's shapes), two shuffled training epochs, eval."""
    out = {"sample": h_batch(collators["train"]([dsd["train"][i] for i in range(2)]))}
    g = torch.Generator()
    g.manual_seed(seed)
    dl = torch.utils.data.DataLoader(dsd["train"], batch_size=4, shuffle=True, generator=g,
                                     collate_fn=collators["train"], num_workers=workers)
    out["train"] = [h_batch(b) for _ in range(2) for b in dl]
    for s in ("validation", "test"):
        out[s] = [h_batch(b) for b in torch.utils.data.DataLoader(dsd[s], batch_size=4, collate_fn=collators[s])]
    return out


def _per_split(dsd, seed, image_size=None, workers=0):
    collators = {s: MultimodalCollator.from_dataset(dsd[s], train=(s == "train"), seed=seed, image_size=image_size)
                 for s in dsd}
    return _epochs(dsd, collators, seed, workers)


@pytest.mark.parametrize("seed", [0, 7])
def test_per_split_collators_give_the_reference_batches(avd, seed):
    assert avd["train"].format["type"] == "numpy" and not avd["train"].format["format_kwargs"]
    assert _per_split(avd, seed) == REFERENCE[f"avdigits_seed{seed}"]


def test_frames_flow_and_sequences_give_the_reference_batches_also_in_a_worker():
    assert _per_split(_plain(frames_dsd()), 0, image_size=12) == REFERENCE["frames_seed0"]
    assert _per_split(_plain(frames_dsd()), 3, image_size=12, workers=1) == REFERENCE["frames_seed3_w1"]


def test_one_collator_for_a_whole_dataset_dict_binds_the_transforms_and_matches(avd, tmp_path):
    dsd = datasets.DatasetDict(dict(avd))
    dsd.transform_options = dict(avd.transform_options, seed=7)  # what load(seed=7) records
    collator = MultimodalCollator.from_dataset(dsd)  # the shared-collator path: splits bound in place
    assert collator.transform is None and dsd["train"].format["type"] == "custom"
    assert _epochs(dsd, {s: collator for s in dsd}, 7) == REFERENCE["avdigits_seed7"]
    bound = attach_transforms(_plain(frames_dsd()), seed=0, image_size=12)
    shared = MultimodalCollator.from_dataset(bound)
    assert _epochs(bound, {s: shared for s in bound}, 0) == REFERENCE["frames_seed0"]


def test_bound_splits_pass_other_columns_and_absent_modalities_through(avd):
    bound = attach_transforms(avd, seed=0)["train"]
    assert list(bound["labels"][:3]) == list(avd["train"]["labels"][:3])
    assert bound["id"][0] == "avdigits_0001" or bound["id"][0].startswith("avdigits_")
    only_audio = bound.select_columns(["audio", "labels"])[0]
    assert set(only_audio) == {"audio", "labels"} and tuple(only_audio["audio"].shape) == (1, 64, 64)


def test_column_queries_and_column_operations(avd):
    train = avd["train"]
    labels = train["labels"]
    assert len(labels) == 70 and isinstance(labels[0], np.integer) and set(np.asarray(labels[:])) <= set(range(10))
    audio_only = train.select_columns(["audio", "labels"])
    assert audio_only.column_names == ["audio", "labels"]
    batch = MultimodalCollator.from_dataset(audio_only).for_modality("audio")([audio_only[i] for i in range(3)])
    assert set(batch) == {"audio", "labels"} and tuple(batch["audio"].shape) == (3, 1, 64, 64)
    assert "voice" not in train.remove_columns(["voice", "rate", "pitch"]).column_names
    renamed = train.rename_column("voice", "speaker")
    assert renamed[0]["speaker"] == train[0]["voice"]


def test_filter_and_map_with_input_columns(avd):
    train = avd["train"]
    zeros = train.filter(lambda y: y == 0, input_columns="labels")
    assert len(zeros) == int(np.sum(np.asarray(train["labels"][:]) == 0)) > 0
    doubled = train.map(lambda y: {"twice": y * 2}, input_columns="labels")
    assert np.array_equal(np.asarray(doubled["twice"][:]), 2 * np.asarray(train["labels"][:]))


def test_map_does_not_write_augmented_tensors_over_the_stored_arrays(avd):
    train = avd["train"]
    stored = np.asarray(train["audio"][:])
    mapped = train.map(lambda ex: ex)  # a function returning its input: the stored values come back
    np.testing.assert_array_equal(np.asarray(mapped["audio"][:]), stored)
    assert mapped.features["audio"] == train.features["audio"]


def test_save_to_disk_round_trip_trains_identically(avd, tmp_path):
    avd.save_to_disk(str(tmp_path / "saved"))
    back = datasets.load_from_disk(str(tmp_path / "saved"))
    assert back["train"].format["type"] == "numpy" and back["train"].info.description == avd["train"].info.description
    assert _per_split(back, 0) == REFERENCE["avdigits_seed0"]


def test_to_iterable_dataset_collates_like_the_dataset(avd):
    val = avd["validation"]
    collator = MultimodalCollator.from_dataset(val, train=False)
    it = val.to_iterable_dataset()
    a = next(iter(torch.utils.data.DataLoader(it, batch_size=4, collate_fn=collator)))
    b = collator([val[i] for i in range(4)])
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_concatenated_splits_keep_the_augmentation(avd):
    both = datasets.concatenate_datasets([avd["train"], avd["validation"]])
    assert len(both) == 85 and both.format["type"] == "numpy"
    aug = MultimodalCollator.from_dataset(both, train=True, seed=3)
    ref = MultimodalCollator.from_dataset(avd["train"], seed=3)
    a, b = aug([both[i] for i in range(4)]), ref([avd["train"][i] for i in range(4)])
    assert all(torch.equal(a[k], b[k]) for k in b)
    # the image kind is not augmented, but the eval collator must not be what the train one is
    assert repr(aug.transform).startswith("MultimodalTransform(train=True")
    assert MultimodalCollator.from_dataset(both, train=False).transform.train is False


def test_collator_needs_to_know_the_split_when_the_dataset_does_not_say():
    ds = _plain(frames_dsd())["train"]
    assert ds.split is None
    with pytest.raises(ValueError, match="train: this dataset does not say which split"):
        MultimodalCollator.from_dataset(ds)


def test_deterministic_collator_switches_the_augmentation_off():
    dsd = _plain(frames_dsd())
    train = MultimodalCollator.from_dataset(dsd["train"], train=True, image_size=12)
    frozen = train.deterministic()
    evaluation = MultimodalCollator.from_dataset(dsd["train"], train=False, image_size=12)
    rows = [dsd["train"][i] for i in range(3)]
    a, b, c = frozen(rows), evaluation(rows), train(rows)
    assert torch.equal(a["visual"], b["visual"]) and not torch.equal(a["visual"], c["visual"])
    assert train.transform.train is True  # the original keeps its augmentation


def test_frames_from_plain_numpy_splits_are_decoded_like_the_jpeg_bytes():
    from arl_hf.data.transforms import decode_pixels

    raw = frames_dsd()["train"].with_format(None).cast_column(
        "visual", datasets.List(datasets.Image(decode=False)))[0]["visual"][1]
    num = _plain(frames_dsd())["train"][0]["visual"][1]
    assert isinstance(num, np.ndarray) and num.dtype == np.uint8 and num.shape == (30, 40, 3)
    assert torch.equal(decode_pixels(raw), decode_pixels(num))
    gray = decode_pixels(num, mode="L")  # a 3-channel array to one channel goes through PIL's convert
    assert tuple(gray.shape) == (1, 30, 40)
