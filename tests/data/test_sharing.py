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


def test_push_prepared_uploads_the_export_and_load_prepared_reads_it_back(cremad_extracted, tmp_path, monkeypatch):
    """No network: HfApi and snapshot_download are replaced by a folder standing in for the Hub."""
    import shutil

    import huggingface_hub

    from arl_hf.data import push_prepared

    hub = tmp_path / "hub"
    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("token", token))

        def create_repo(self, repo_id, repo_type=None, private=False, exist_ok=False):
            calls.append(("create", repo_id, repo_type, private, exist_ok))

        def upload_folder(self, folder_path, repo_id, repo_type=None, commit_message=None):
            calls.append(("upload", repo_id, repo_type, commit_message))
            shutil.copytree(folder_path, hub / repo_id)  # what the Hub would then serve

    def fake_snapshot(repo_id, repo_type=None, revision=None):
        calls.append(("download", repo_id, repo_type, revision))
        return str(hub / repo_id)

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    built = load("cremad", cremad_extracted, cache_dir=str(tmp_path / "c"), preprocessing="ogm", image_size=16)
    assert push_prepared(built, "me/cremad-ogm", private=True, token="t0k") == "me/cremad-ogm"
    assert calls[:3] == [("token", "t0k"), ("create", "me/cremad-ogm", "dataset", True, True),
                         ("upload", "me/cremad-ogm", "dataset", "Upload dataset prepared with arl_hf.data")]
    uploaded = sorted(os.listdir(hub / "me" / "cremad-ogm"))
    assert uploaded == ["README.md", "arl_hf_preprocessing.json", "data"]

    reloaded = load_prepared("me/cremad-ogm", revision="v1", cache_dir=str(tmp_path / "c2"), image_size=16)
    assert calls[-1] == ("download", "me/cremad-ogm", "dataset", "v1")
    assert preprocessing_info(reloaded) == preprocessing_info(built)
    np.testing.assert_array_equal(reloaded["test"].with_format("numpy")[:]["audio"],
                                  built["test"].with_format("numpy")[:]["audio"])
