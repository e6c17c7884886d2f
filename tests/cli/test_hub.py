"""Round trips through a stand-in Hub (local folders in the HF cache layout, HF_HUB_OFFLINE=1):
a prepared dataset pushed and trained on by repo id, a pushed MLA model whose card metadata
loads with ModelCard.load and whose Hub id evaluates like a local checkpoint (strategy state
fetched with hf_hub_download), the card's usage snippet run in a fresh process, and the
arguments of trainer.push_to_hub(...) forwarded to the card."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
from cli_helpers import PREPARED_RECORD, PYTHON, make_prepared_dataset, make_tiny_dataset, script_env, tiny_flags

from arl_hf import ARLTrainer
from arl_hf.arguments import DataArguments
from arl_hf.building import load_data
from arl_hf.data import export_prepared, preprocessing_info, push_prepared
from arl_hf.scripts.evaluate import main as evaluate_main
from arl_hf.scripts.train import parse_args, train_and_evaluate


def test_dataset_and_mla_model_round_trip_through_the_hub(stand_in_hub, tmp_path, monkeypatch, capsys):
    from huggingface_hub import ModelCard

    built = make_prepared_dataset()
    push_prepared(built, "me/tiny-av")
    data_sha = stand_in_hub.head("me/tiny-av", "dataset")

    captured = {}
    init = ARLTrainer.__init__

    def keep(self, *args, **kwargs):
        init(self, *args, **kwargs)
        captured.setdefault("trainer", self)  # the run's (evaluate_main builds another)

    monkeypatch.setattr(ARLTrainer, "__init__", keep)
    out = str(tmp_path / "mla")
    argv = tiny_flags("me/tiny-av", out, "--strategy", "mla", "--push_to_hub", "--hub_model_id", "me/tiny-mla",
                      "--hub_strategy", "end")
    metrics = train_and_evaluate(*parse_args(argv), argv=argv)

    # the record stores the repo id and the commit it resolved to
    with open(os.path.join(out, "config.json")) as f:
        record = json.load(f)["preprocessing"]
    assert record["dataset"] == "me/tiny-av" and record["dataset_revision"] == data_sha
    assert record["data"] == PREPARED_RECORD
    files = stand_in_hub.files("me/tiny-mla")
    assert {"README.md", "config.json", "model.safetensors", "results.json"} <= set(files)
    assert not any(f.endswith((".pt", ".pth")) for f in files)  # MLA's head is in model.safetensors
    assert not any(f.startswith("checkpoint-") for f in files)

    # the card's metadata, read back from the Hub (hf_hub_download, offline)
    card = ModelCard.load("me/tiny-mla")
    data = card.data
    assert data.library_name == "arl-hf" and data.license == "mit" and data.datasets == ["me/tiny-av"]
    results = data.eval_results
    assert len(results) == 2 * 3 * 2  # splits x heads x (accuracy, macro-F1)
    # no Hub task id for multimodal classification: the nearest (audio spectrogram + image), with a note
    assert {r.task_type for r in results} == {"audio-classification"}
    assert "nearest Hub task id" in card.text
    assert {r.dataset_type for r in results} == {"me/tiny-av"}
    assert {r.dataset_revision for r in results} == {data_sha} and {r.dataset_config for r in results} == {"tiny"}
    values = {(r.dataset_split, r.metric_name): r.metric_value for r in results}
    assert values[("test", "Accuracy (fused, test)")] == pytest.approx(metrics["test"]["accuracy"], abs=1e-6)
    assert values[("validation", "Macro-F1 (visual, validation)")] == pytest.approx(
        metrics["validation"]["macro_f1_visual"], abs=1e-6)
    assert "arl-hf evaluate --model_name_or_path me/tiny-mla --dataset me/tiny-av" in card.text

    # the Hub id evaluates like the local run, from another directory, dataset and MLA head from the Hub
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    out_json = tmp_path / "hub_eval.json"
    assert evaluate_main(["--model_name_or_path", "me/tiny-mla", "--split", "test", "--use_cpu",
                          "--output_json", str(out_json)]) == 0
    got = json.loads(out_json.read_text())
    assert got["dataset"] == "me/tiny-av"
    for key in ("accuracy", "macro_f1", "accuracy_audio", "accuracy_visual"):
        assert got["metrics"][key] == pytest.approx(metrics["test"][key]), key

    # the card's usage snippet is true in a fresh process
    snippet = re.search(r"```python\n(.*?)```", card.text, re.S).group(1)
    assert snippet.startswith("import arl_hf") and 'AutoModel.from_pretrained("me/tiny-mla")' in snippet
    env = dict(script_env(), HF_HUB_CACHE=stand_in_hub.root)
    done = subprocess.run([PYTHON, "-c", snippet + "\nprint('loaded', type(model).__name__, model.num_parameters())"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "loaded MultimodalModel" in done.stdout

    # push_to_hub forwards license, tags, finetuned_from, language and dataset tags to the card
    captured["trainer"].push_to_hub(license="apache-2.0", tags=["my-tag"], finetuned_from="someone/base-model",
                                    language="en", dataset_tags=["me/other-data", "not a hub id"])
    data = ModelCard.load("me/tiny-mla").data
    assert data.license == "apache-2.0" and data.base_model == "someone/base-model" and data.language == "en"
    assert "my-tag" in data.tags and "arl-hf" in data.tags
    assert data.datasets == ["me/tiny-av", "me/other-data"]

    # a Hub checkpoint without its strategy state is refused
    from huggingface_hub import hf_hub_download

    with open(hf_hub_download("me/tiny-mla", "config.json")) as f:
        config = json.load(f)
    config.pop("strategy_state")
    stand_in_hub.commit("me/tiny-mla", None, {"config.json": json.dumps(config).encode()},
                        message="drop the strategy state")
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        evaluate_main(["--model_name_or_path", "me/tiny-mla", "--split", "test", "--use_cpu"])
    assert e.value.code == 2
    assert "trained with strategy 'mla'" in capsys.readouterr().err


def test_export_folder_and_data_files_as_dataset(tmp_path, monkeypatch):
    """--dataset takes a folder written by export_prepared and any folder datasets.load_dataset reads;
    the record keeps the absolute path."""
    folder = export_prepared(make_prepared_dataset(), str(tmp_path / "export"))
    monkeypatch.chdir(tmp_path)
    ds, collator, record = load_data(DataArguments(dataset="export"))
    assert record.dataset == str(tmp_path / "export") == os.path.abspath(folder)
    assert record.data == PREPARED_RECORD and preprocessing_info(ds)["dataset"] == "tinyav"
    batch = collator([ds["train"][0], ds["train"][1]])
    assert tuple(batch["audio"].shape) == (2, 1, 16, 16) and tuple(batch["visual"].shape) == (2, 3, 16, 16)

    files = tmp_path / "files"
    files.mkdir()
    for split, split_ds in make_tiny_dataset().items():
        split_ds.to_parquet(str(files / f"{split}.parquet"))
    ds, collator, record = load_data(DataArguments(dataset=str(files)))
    assert sorted(ds) == ["test", "train", "validation"] and record.dataset == str(files)
    assert tuple(collator([ds["test"][0]])["visual"].shape) == (1, 3, 16, 16)

    with pytest.raises(FileNotFoundError, match="'me/missing' is not a local folder, and the Hub dataset repo"):
        load_data(DataArguments(dataset="me/missing"))
    with pytest.raises(ValueError, match="unknown dataset 'nosuchset'.*Hub dataset repo id"):
        load_data(DataArguments(dataset="nosuchset"))


def test_local_run_evaluates_from_another_directory(trained_run, tmp_path, monkeypatch):
    """The recorded dataset is the folder's absolute path, not its name."""
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    out_json = tmp_path / "m.json"
    assert evaluate_main(["--model_name_or_path", trained_run["output_dir"], "--split", "test", "--use_cpu",
                          "--output_json", str(out_json)]) == 0
    got = json.loads(out_json.read_text())["metrics"]
    assert got["accuracy"] == pytest.approx(trained_run["metrics"]["test"]["accuracy"])


def test_arl_trainer_push_to_hub_card_says_how_to_load(stand_in_hub, tmp_path):
    """Library use (ARLTrainer, no run script): Trainer's card draft, with library_name arl-hf and the
    install line, and the model loads from the Hub id with import arl_hf."""
    import torch
    from huggingface_hub import ModelCard
    from transformers import AutoModel

    from arl_hf import ARLConfig, ARLTrainer, MultimodalConfig, MultimodalModel
    from arl_hf.cards import card_install_command as install_command

    torch.manual_seed(0)
    model = MultimodalModel(MultimodalConfig(modalities={
        "audio": {"encoder": "mlp", "input_dim": 4, "hidden_dims": [8]},
        "visual": {"encoder": "mlp", "input_dim": 3, "hidden_dims": [8]}}, num_labels=2))
    rows = [{"audio": torch.randn(4), "visual": torch.randn(3), "labels": i % 2} for i in range(8)]
    args = ARLConfig(output_dir=str(tmp_path / "lib"), max_steps=1, per_device_train_batch_size=8, use_cpu=True,
                     report_to="none", save_strategy="no", disable_tqdm=True, dataloader_num_workers=0,
                     push_to_hub=True, hub_model_id="me/lib-model")
    trainer = ARLTrainer(model=model, args=args, train_dataset=rows)
    trainer.train()
    trainer.push_to_hub(license="apache-2.0", tags=["lib-tag"])
    card = ModelCard.load("me/lib-model")
    assert card.data.library_name == "arl-hf" and card.data.license == "apache-2.0"
    assert "lib-tag" in card.data.tags and "arl-hf" in card.data.tags
    assert install_command() in card.text and "import arl_hf" in card.text
    loaded = AutoModel.from_pretrained("me/lib-model")
    assert isinstance(loaded, MultimodalModel)
    for (n, a), b in zip(model.named_parameters(), loaded.parameters()):
        assert torch.equal(a.detach().cpu(), b.detach()), n
