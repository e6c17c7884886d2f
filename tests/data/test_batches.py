"""Whole-batch reads: splits bound with bind_row_transform give what with_transform gives."""

from __future__ import annotations

import pickle

import datasets
import numpy as np
import pytest
import torch

from arl_hf.data import MultimodalCollator, load
from arl_hf.data.batches import ROW_COLUMN, ArrayColumnReader, bind_row_transform, fixed_shape_arrays
from arl_hf.data.catalog import is_transformed, make_transform


@pytest.fixture(scope="module")
def avd(tmp_path_factory):
    return load("avdigits", cache_dir=str(tmp_path_factory.mktemp("avd_batches")), num_samples=60)


def test_bound_split_gives_the_with_transform_values(avd):
    train = avd["train"]
    fast = bind_row_transform(train, make_transform(train, train=True, seed=3, strict=False))
    slow = train.with_format(None).with_transform(make_transform(train, train=True, seed=3, strict=False))
    rows = [5, 0, 17, 3]
    a, b = fast.__getitems__(rows), slow.__getitems__(rows)
    assert len(a) == 4 and set(a[0]) == set(b[0]) == set(train.column_names)
    for x, y in zip(a, b):
        assert x["id"] == y["id"] and int(x["labels"]) == int(y["labels"])
        assert tuple(x["audio"].shape) == (1, 64, 64) and torch.equal(x["audio"], y["audio"])
        assert torch.equal(x["visual"], y["visual"])
    assert is_transformed(fast) and fast["id"][:2] == list(train["id"][:2])
    assert fast[2]["id"] == train[2]["id"]


def test_shared_collator_batches_equal_the_per_split_ones(avd):
    dsd = datasets.DatasetDict(dict(avd))
    dsd.transform_options = dict(avd.transform_options)
    shared = MultimodalCollator.from_dataset(dsd)
    assert ROW_COLUMN in dsd["train"].column_names and ROW_COLUMN not in avd["train"].column_names
    rows = [1, 4, 8, 2, 0]
    for split in ("train", "validation"):
        own = MultimodalCollator.from_dataset(avd[split])
        a = shared(dsd[split].__getitems__(rows))
        b = own(avd[split].__getitems__(rows))
        assert set(a) == set(b) == {"audio", "visual", "labels"}
        assert a["audio"].shape == (5, 1, 64, 64) and a["audio"].dtype == torch.float32
        assert all(torch.equal(a[k], b[k]) for k in b)
        ref = np.stack([np.asarray(avd[split][i]["audio"], dtype=np.float32) for i in rows])
        np.testing.assert_array_equal(a["audio"][:, 0].numpy(), ref)


def test_the_reader_survives_pickling_and_checks_rows(avd):
    table = avd["train"].with_format(None).add_column(ROW_COLUMN, np.arange(len(avd["train"]))).data
    reader = ArrayColumnReader(table, {"audio": (64, 64)})
    got = pickle.loads(pickle.dumps(reader)).rows([3, 1])["audio"]
    np.testing.assert_array_equal(got[0], np.asarray(avd["train"][3]["audio"]))
    np.testing.assert_array_equal(got[1], np.asarray(avd["train"][1]["audio"]))
    with pytest.raises(ValueError, match=r"rows: expected positions in \[0, 42\)"):
        reader.rows([42])


def test_fixed_shape_arrays_views_and_nulls():
    feat = datasets.Array2D(shape=(2, 3), dtype="float32")
    ds = datasets.Dataset.from_dict({"x": [np.arange(6, dtype=np.float32).reshape(2, 3) + i for i in range(4)]},
                                    features=datasets.Features({"x": feat}))
    arr = fixed_shape_arrays(ds.data.table.column("x"), (2, 3))
    assert arr.shape == (4, 2, 3) and arr[2, 1, 0] == 5.0 and arr.dtype == np.float32
    with_null = datasets.Dataset.from_dict({"x": [None, np.zeros((2, 3), np.float32)]},
                                           features=datasets.Features({"x": feat}))
    assert fixed_shape_arrays(with_null.data.table.column("x"), (2, 3)) is None
