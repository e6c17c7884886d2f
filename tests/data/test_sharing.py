"""Sharing a prepared dataset: Parquet export, reload from the folder, identical features and preset."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from arl_hf.data import (
    MultimodalCollator,
    export_prepared,
    load,
    load_prepared,
    modality_spec,
    preprocessing_info,
)


def test_export_and_reload_carry_preset_and_features(cremad_extracted, tmp_path):
    built = load("cremad", cremad_extracted, cache_dir=str(tmp_path / "c"), preprocessing="ogm", image_size=16)
    folder = export_prepared(built, str(tmp_path / "export"))
    assert sorted(os.listdir(os.path.join(folder, "data"))) == ["test.parquet", "train.parquet", "validation.parquet"]
    card = open(os.path.join(folder, "README.md")).read()
    assert "arl_hf_preprocessing:" in card and "name: ogm" in card and "hop_length: 353" in card
    with open(os.path.join(folder, "arl_hf_preprocessing.json")) as fh:
        assert json.load(fh)["audio_preset"]["n_fft"] == 512

    reloaded = load_prepared(folder, cache_dir=str(tmp_path / "c2"), image_size=16)
    assert preprocessing_info(reloaded) == preprocessing_info(built)
    assert preprocessing_info(reloaded)["audio_preset"]["name"] == "ogm"
    for split in ("train", "validation", "test"):
        assert reloaded[split].features == built[split].features
        a = built[split].with_format("numpy")[:]
        b = reloaded[split].with_format("numpy")[:]
        assert list(a["id"]) == list(b["id"])
        np.testing.assert_array_equal(a["audio"], b["audio"])
    assert reloaded["train"].info.config_name == "ogm-v1.0.0"
    assert modality_spec(reloaded) == modality_spec(built)
    col = MultimodalCollator.from_dataset(reloaded)
    x = col([reloaded["test"][0], reloaded["test"][1]])
    y = MultimodalCollator.from_dataset(built)([built["test"][0], built["test"][1]])
    assert all(np.array_equal(x[k].numpy(), y[k].numpy()) for k in ("audio", "visual", "labels"))


def test_plain_load_dataset_reads_the_export(cremad_extracted, tmp_path):
    import datasets

    built = load("cremad", cremad_extracted, cache_dir=str(tmp_path / "c"), transform=False)
    folder = export_prepared(built, str(tmp_path / "export"))
    plain = datasets.load_dataset(folder, cache_dir=str(tmp_path / "c3"))
    assert set(plain) == {"train", "validation", "test"}
    assert plain["train"].features == built["train"].features


def test_load_prepared_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_prepared(str(tmp_path / "missing" / "dir"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no arl_hf preprocessing record"):
        load_prepared(str(tmp_path / "empty"))


def test_push_prepared_goes_through_push_to_hub_and_a_card_with_the_record(cremad_extracted, tmp_path,
                                                                          stand_in_hub):
    """No network: the stand-in Hub takes the uploads of DatasetDict.push_to_hub and DatasetCard.push_to_hub,
    and load_prepared reads the repo back through snapshot_download under HF_HUB_OFFLINE=1."""
    from huggingface_hub import DatasetCard

    from arl_hf.data import push_prepared

    built = load("cremad", cremad_extracted, cache_dir=str(tmp_path / "c"), preprocessing="ogm", image_size=16)
    assert push_prepared(built, "me/cremad-ogm", private=True, token="t0k") == "me/cremad-ogm"
    assert stand_in_hub.files("me/cremad-ogm", "dataset") == [
        ".gitattributes", "README.md", "data/test-00000-of-00001.parquet", "data/train-00000-of-00001.parquet",
        "data/validation-00000-of-00001.parquet"]
    assert stand_in_hub.private["me/cremad-ogm"] is True
    commits = [e for e in stand_in_hub.log if e["call"] == "create_commit"]
    assert len(commits) == 2
    assert "data/train-00000-of-00001.parquet" in commits[0]["files"]  # datasets' own push
    assert commits[1]["files"] == ["README.md"] and "preprocessing record" in commits[1]["message"]

    # the card on the Hub (read back with hf_hub_download, offline) carries the record and datasets' metadata
    card = DatasetCard.load("me/cremad-ogm")
    meta = card.data.to_dict()
    assert meta["arl_hf_preprocessing"] == json.loads(json.dumps(preprocessing_info(built)))
    assert meta["arl_hf_preprocessing"]["audio_preset"]["hop_length"] == 353
    assert meta["arl_hf_build"] == {"config_name": "ogm-v1.0.0", "version": str(built["train"].info.version)}
    assert {c["split"] for c in meta["configs"][0]["data_files"]} == {"train", "validation", "test"}
    assert meta["dataset_info"]["features"] and {"arl-hf", "cremad"} <= set(meta["tags"])
    assert 'load_prepared("me/cremad-ogm")' in card.text and "--dataset me/cremad-ogm" in card.text

    reloaded = load_prepared("me/cremad-ogm", cache_dir=str(tmp_path / "c2"), image_size=16)
    assert preprocessing_info(reloaded) == preprocessing_info(built)
    assert reloaded["train"].info.config_name == "ogm-v1.0.0"
    for split in ("train", "validation", "test"):
        assert reloaded[split].features == built[split].features
        np.testing.assert_array_equal(reloaded[split].with_format("numpy")[:]["audio"],
                                      built[split].with_format("numpy")[:]["audio"])
    # a second push updates the data and keeps the record in the card
    push_prepared(built, "me/cremad-ogm")
    assert DatasetCard.load("me/cremad-ogm").data.to_dict()["arl_hf_preprocessing"]["dataset"] == "cremad"


def test_push_prepared_errors(tmp_path):
    import datasets

    from arl_hf.data import push_prepared

    plain = datasets.DatasetDict({s: datasets.Dataset.from_dict({"x": [1]}) for s in ("train", "validation", "test")})
    with pytest.raises(ValueError, match="arl_hf preprocessing record"):
        push_prepared(plain, "me/x")
    with pytest.raises(FileNotFoundError, match="not a Hub repo id"):
        load_prepared("no/such/folder")
    with pytest.raises(FileNotFoundError, match="not reachable nor in the local cache"):
        load_prepared("me/never-pushed")
