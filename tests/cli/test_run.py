"""End to end on tiny data: selection on validation, test once, checkpoint, card, plots, evaluation, Hub folder."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from cli_helpers import LABELS, TINY_ENCODER, tiny_flags

import arl_hf
from arl_hf.cards import template_path
from arl_hf.cli import plot_main
from arl_hf.evaluation import format_results
from arl_hf.plots import arl_series
from arl_hf.scripts.evaluate import main as evaluate_main
from arl_hf.scripts.train import parse_args, train_and_evaluate
from arl_hf.trainer import ARL_PAPER

MODALITIES = ["audio", "visual"]


def _state(out):
    with open(os.path.join(out, "trainer_state.json")) as f:
        return json.load(f)


def test_outputs_written(trained_run):
    out = trained_run["output_dir"]
    for name in ("model.safetensors", "config.json", "README.md", "results.json", "trainer_state.json",
                 "plots/arl_dynamics.png", "plots/accuracy.png"):
        assert os.path.isfile(os.path.join(out, name)), name
    with open(os.path.join(out, "config.json")) as f:
        config = json.load(f)
    assert config["model_type"] == "arl_hf_multimodal"
    assert list(config["modalities"]) == MODALITIES
    assert config["modalities"]["audio"]["in_chans"] == 1 and config["modalities"]["visual"]["in_chans"] == 3
    # the record stores the real path (not the folder's name), so evaluation works from anywhere
    assert config["preprocessing"]["dataset"] == os.path.abspath(trained_run["argv"][1])
    assert config["preprocessing"]["preset"] == "avdigits"
    assert [config["id2label"][str(i)] for i in range(3)] == LABELS


def test_selection_on_validation_and_test_once(trained_run):
    out, metrics = trained_run["output_dir"], trained_run["metrics"]
    state = _state(out)
    evals = [e for e in state["log_history"] if "eval_accuracy" in e]
    assert len(evals) == 2  # one validation pass per epoch
    # the reported validation accuracy is the one of the selected (best) checkpoint
    assert metrics["validation"]["accuracy"] == pytest.approx(max(e["eval_accuracy"] for e in evals))
    assert metrics["validation"]["accuracy"] == pytest.approx(state["best_metric"])
    # the test split was evaluated exactly once, after training
    test_logs = [e for e in state["log_history"] if any(k.startswith("test_") for k in e)]
    assert len(test_logs) == 1
    assert set(metrics) == {"validation", "test"}
    for split in metrics:
        for key in ("accuracy", "macro_f1", "accuracy_audio", "macro_f1_audio", "accuracy_visual",
                    "macro_f1_visual"):
            assert 0.0 <= metrics[split][key] <= 1.0
    # the tiny task is learnable: far above chance (1/3) after two epochs
    assert metrics["validation"]["accuracy"] > 0.5
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    assert results["metrics"]["test"]["accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    assert results["selection_split"] == "validation"
    assert os.path.basename(results["best_model_checkpoint"]).startswith("checkpoint-")
    table = format_results(metrics)
    assert "[validation split]" in table and "[test split]" in table and "visual: acc" in table


def test_checkpoint_loads_with_automodel_and_reproduces_test_metrics(trained_run, tiny_dataset_dir):
    import datasets
    from sklearn.metrics import f1_score
    from transformers import AutoModel

    model = AutoModel.from_pretrained(trained_run["output_dir"])
    assert isinstance(model, arl_hf.MultimodalModel)
    model.eval()
    test = datasets.load_from_disk(tiny_dataset_dir)["test"].with_format("torch")[:]
    with torch.no_grad():
        out = model(audio=test["audio"], visual=test["visual"], return_unimodal_logits=True)
    labels = test["labels"].numpy()
    m = trained_run["metrics"]["test"]
    assert (out.logits.argmax(-1).numpy() == labels).mean() == pytest.approx(m["accuracy"])
    assert f1_score(labels, out.logits.argmax(-1).numpy(), average="macro") == pytest.approx(m["macro_f1"])
    for mod in MODALITIES:
        pred = out.unimodal_logits[mod].argmax(-1).numpy()
        assert (pred == labels).mean() == pytest.approx(m[f"accuracy_{mod}"])


def test_model_card_metadata_and_text(trained_run):
    from huggingface_hub import ModelCard

    from arl_hf.cards import card_install_command as install_command
    from arl_hf.env import framework_versions

    out, metrics = trained_run["output_dir"], trained_run["metrics"]
    assert template_path() is not None
    assert os.path.realpath(template_path()).endswith(os.path.join("model_cards", "template.md"))
    card = ModelCard.load(os.path.join(out, "README.md"))
    # a local dataset has no Hub id: no model-index with a made-up dataset_type, no `datasets:` entry
    assert not card.data.eval_results and "model-index:" not in str(card) and not card.data.datasets
    assert "no `model-index`" in card.text
    assert card.data.library_name == "arl-hf" and card.data.license == "mit"
    assert "arl" in card.data.tags
    text = card.text
    assert ARL_PAPER["citation"].splitlines()[0] in text and "Improving Multimodal Learning" in text
    assert "![" in text and "(plots/arl_dynamics.png)" in text and "(plots/accuracy.png)" in text
    assert "`avdigits`" in text  # the preset
    # hyper-parameters: the strategy's options (asdict), T from the flag, the rest from the preset
    assert "| `arl_temperature` | 2 |" in text and "| `arl_gamma` | 4 |" in text
    assert "| `optimizer` | sgd (momentum=0.9) |" in text and "| `mixed_precision` | no |" in text
    assert "AutoModel.from_pretrained" in text and "import arl_hf" in text
    # the install line that works (arl-hf is not on the package index), from its one place
    assert install_command() in text and "pip install arl-hf\n" not in text
    # the reproduce / evaluate commands name the console script a wheel installs
    assert "arl-hf train " in text and "--arl_temperature 2" in text and "examples/run_arl.py" not in text
    # local folders by their base names (no absolute path of this machine in a card)
    local_data = os.path.basename(os.path.abspath(trained_run['argv'][1]))
    assert f"arl-hf evaluate --model_name_or_path {os.path.basename(out)} --dataset {local_data}" in text
    for name, version in framework_versions().items():
        assert f"- {name} {version}" in text
    assert f"{100 * metrics['test']['accuracy']:.2f}" in text


def _decode(path):
    import matplotlib.image as mpimg

    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 400
    return img


def test_plots_decode_and_are_not_blank(trained_run):
    out = trained_run["output_dir"]
    for name in ("arl_dynamics.png", "accuracy.png"):
        img = _decode(os.path.join(out, "plots", name))
        assert float(img[..., :3].std()) > 0.01
        # curves are drawn in colour (matplotlib's C0 blue / C1 orange), not only black axes
        rgb = img[..., :3]
        assert ((rgb[..., 2] - rgb[..., 0]) > 0.3).sum() > 100


def test_fig3_series_are_the_logged_shares(trained_run):
    history = _state(trained_run["output_dir"])["log_history"]
    s = arl_series(history, MODALITIES)
    logged = [e for e in history if "a_audio" in e]
    assert len(s["epoch"]) == len(logged) == 6  # 48 examples / batch 16 x 2 epochs, logged every step
    e = logged[-1]
    assert s["dependency_ratio"][-1] == pytest.approx(e["dependency_share_audio"] / e["dependency_share_visual"])
    assert s["inverse_variance_ratio"][-1] == pytest.approx(
        e["inverse_variance_share_audio"] / e["inverse_variance_share_visual"])
    assert np.allclose(s["a_audio"] + s["a_visual"], 1.0, atol=1e-4)


def test_plot_command_redraws_from_run_dir(trained_run, tmp_path, capsys):
    assert plot_main([trained_run["output_dir"], "--plots_dir", str(tmp_path)]) == 0
    assert sorted(os.listdir(tmp_path)) == ["accuracy.png", "arl_dynamics.png"]
    _decode(str(tmp_path / "arl_dynamics.png"))
    with pytest.raises(SystemExit) as e:
        plot_main([str(tmp_path / "nope")])
    assert e.value.code == 2


def test_evaluate_script_matches_training_report(trained_run, tiny_dataset_dir, tmp_path, capsys):
    out_json = tmp_path / "m.json"
    assert evaluate_main(["--model_name_or_path", trained_run["output_dir"], "--dataset", tiny_dataset_dir,
                          "--split", "test", "--use_cpu", "--output_json", str(out_json)]) == 0
    printed = capsys.readouterr().out
    assert "[test split]" in printed and "audio: acc" in printed
    got = json.loads(out_json.read_text())["metrics"]
    want = trained_run["metrics"]["test"]
    for key in ("accuracy", "macro_f1", "accuracy_audio", "macro_f1_visual"):
        assert got[key] == pytest.approx(want[key])
    # a missing checkpoint is a user error
    with pytest.raises(SystemExit) as e:
        evaluate_main(["--model_name_or_path", str(tmp_path / "missing"), "--dataset", tiny_dataset_dir])
    assert e.value.code == 2
    assert "does not exist" in capsys.readouterr().err


def test_mla_run_is_evaluated_through_its_saved_head(tiny_dataset_dir, tmp_path, capsys):
    """MLA predicts through its own shared head: the saved run keeps it (``strategy_state.*`` in
    model.safetensors, the strategy in config.json) and evaluate reproduces the run's test metrics with it."""
    out = str(tmp_path / "mla")
    argv = tiny_flags(tiny_dataset_dir, out, "--strategy", "mla")
    metrics = train_and_evaluate(*parse_args(argv), argv=argv)
    with open(os.path.join(out, "config.json")) as f:
        config = json.load(f)
    assert config["training_strategy"] == "mla" and config["strategy_state"]["strategy"] == "mla"
    from safetensors.torch import load_file

    saved = set(load_file(os.path.join(out, "model.safetensors")))
    assert {"strategy_state.head.weight", "strategy_state.projector"} <= saved
    out_json = tmp_path / "m.json"
    assert evaluate_main(["--model_name_or_path", out, "--dataset", tiny_dataset_dir, "--split", "test",
                          "--use_cpu", "--output_json", str(out_json)]) == 0
    got = json.loads(out_json.read_text())["metrics"]
    for key in ("accuracy", "macro_f1", "accuracy_audio", "accuracy_visual"):
        assert got[key] == pytest.approx(metrics["test"][key]), key
    # the model's own fusion head (untrained by MLA) would not reproduce them
    from transformers import AutoModel

    from arl_hf.scripts.evaluate import _prediction_strategy

    assert _prediction_strategy(AutoModel.from_pretrained(out), out) == "mla"
    config.pop("strategy_state")  # a checkpoint that lost the record of MLA's head
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f)
    with pytest.raises(FileNotFoundError, match="trained with strategy 'mla'.*expected its head in the checkpoint"):
        _prediction_strategy(AutoModel.from_pretrained(out), out)


def test_resume_continues_from_the_last_checkpoint(trained_run, tiny_dataset_dir, tmp_path):
    out = str(tmp_path / "resumed")
    shutil.copytree(trained_run["output_dir"], out)
    argv = tiny_flags(tiny_dataset_dir, out, "--preset", "avdigits", "--arl_temperature", "2",
                      "--num_train_epochs", "3", "--resume")
    metrics = train_and_evaluate(*parse_args(argv), argv=argv)
    state = _state(out)
    assert state["global_step"] == 9 and state["epoch"] == pytest.approx(3.0)
    evals = [e for e in state["log_history"] if "eval_accuracy" in e]
    assert [round(e["epoch"]) for e in evals] == [1, 2, 3]  # history carried over from the first run
    assert metrics["validation"]["accuracy"] == pytest.approx(max(e["eval_accuracy"] for e in evals))


class _FakeHub:
    """Stands in for ``huggingface_hub.HfApi``: records what the Trainer would push."""

    def __init__(self):
        self.created, self.uploads = [], []

    def create_repo(self, repo_id, token=None, private=None, exist_ok=False, **kw):
        from types import SimpleNamespace

        self.created.append(repo_id)
        return SimpleNamespace(repo_id=repo_id)

    def upload_folder(self, repo_id, folder_path, ignore_patterns=(), run_as_future=False, **kw):
        import fnmatch

        files = []
        for root, _, names in os.walk(folder_path):
            for n in names:
                rel = os.path.relpath(os.path.join(root, n), folder_path)
                if not any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(rel.split(os.sep)[0], p)
                           for p in ignore_patterns):
                    files.append(rel)
        # snapshot the card as it is at push time
        card = open(os.path.join(folder_path, "README.md")).read() if "README.md" in files else None
        self.uploads.append({"repo_id": repo_id, "files": sorted(files), "card": card, "folder": folder_path})
        if run_as_future:
            from concurrent.futures import Future

            fut = Future()
            fut.set_result(None)
            return fut
        return None


def test_baseline_through_the_same_pipeline_and_push_to_hub_folder(tiny_dataset_dir, tmp_path, monkeypatch):
    """--strategy none runs the identical pipeline; --push_to_hub pushes checkpoint + card via Trainer."""
    from huggingface_hub import ModelCard

    fake = _FakeHub()
    monkeypatch.setattr("transformers.trainer.hf_api", lambda: fake)
    out = str(tmp_path / "baseline")
    argv = tiny_flags(tiny_dataset_dir, out, "--strategy", "none", "--push_to_hub",
                      "--hub_model_id", "someone/tiny-baseline", "--hub_strategy", "end")
    metrics = train_and_evaluate(*parse_args(argv), argv=argv)
    assert set(metrics) == {"validation", "test"} and "accuracy_visual" in metrics["test"]
    assert fake.created == ["someone/tiny-baseline"]
    final = fake.uploads[-1]
    assert final["repo_id"] == "someone/tiny-baseline" and os.path.samefile(final["folder"], out)
    for name in ("README.md", "config.json", "model.safetensors", "plots/accuracy.png", "results.json"):
        assert name in final["files"], name
    assert not any(f.startswith("checkpoint-") for f in final["files"])
    # no ARL statistics with the baseline: no Fig. 3 plot, but accuracy curves
    assert "plots/arl_dynamics.png" not in final["files"]
    # the pushed card is ours (not the generic Trainer draft) and carries the eval results
    card = ModelCard(final["card"])
    assert card.data.library_name == "arl-hf"
    assert not card.data.eval_results  # local data: no model-index (see test_hub.py for a Hub dataset)
    assert "strategy-none" in card.data.tags
    assert "someone/tiny-baseline" in card.text and "with the `none` strategy" in card.text


def test_saved_arl_dataset_keeps_its_transforms_and_record(tmp_path):
    """A dataset prepared by arl_hf.data and saved to disk loads with its transform and collator."""
    import datasets

    from arl_hf.arguments import DataArguments, ModelArguments
    from arl_hf.building import load_data, modality_specs, sample_batch

    record = {"format": "arl_hf.data/1", "dataset": "fakeav", "label_names": LABELS,
              "audio_preset": {"name": "avdigits", "version": "1.0.0", "output_shape": [16, 16]},
              "modalities": {"audio": {"kind": "spectrogram", "shape": [16, 16]},
                             "visual": {"kind": "image", "shape": [3, 16, 16]}}}
    features = datasets.Features({"audio": datasets.Array2D((16, 16), "float32"),
                                  "visual": datasets.Array3D((3, 16, 16), "float32"),
                                  "labels": datasets.ClassLabel(names=LABELS)})
    rng = np.random.default_rng(0)
    split = lambda n: datasets.Dataset.from_dict(  # noqa: E731
        {"audio": rng.normal(size=(n, 16, 16)).astype("float32"),
         "visual": rng.normal(size=(n, 3, 16, 16)).astype("float32"), "labels": np.arange(n) % 3},
        features=features, info=datasets.DatasetInfo(description=json.dumps(record), features=features))
    datasets.DatasetDict({"train": split(6), "validation": split(3), "test": split(3)}).save_to_disk(
        str(tmp_path / "saved"))
    ds, collator, rec = load_data(DataArguments(dataset=str(tmp_path / "saved")))
    assert rec.dataset == str(tmp_path / "saved") and rec.data["dataset"] == "fakeav"
    assert rec.data["format"] == "arl_hf.data/1"
    batch = sample_batch(ds["train"], collator, 4)
    assert tuple(batch["audio"].shape) == (4, 1, 16, 16)  # the spectrogram transform added the channel
    assert tuple(batch["visual"].shape) == (4, 3, 16, 16) and sorted(batch) == ["audio", "labels", "visual"]
    specs = modality_specs(batch, ModelArguments(encoder=TINY_ENCODER))
    assert specs == {"audio": {"encoder": TINY_ENCODER, "in_chans": 1},
                     "visual": {"encoder": TINY_ENCODER, "in_chans": 3}}
    # the card's preprocessing line and eval-result config come from that record
    from arl_hf.cards import RunSummary, eval_results, preprocessing_text

    text = preprocessing_text({"dataset": "fakeav", "data": record, "num_frames": 1})
    assert text == ("audio preset `avdigits` v1.0.0 (16x16); audio: spectrogram 16x16; visual: image 3x16x16; "
                    "num_frames=1")
    results = eval_results(RunSummary(model_name="m", dataset="fakeav", modalities=specs, dataset_id="me/fakeav",
                                      metrics={"test": {"accuracy": 0.5}}, preprocessing={"data": record}))
    assert len(results) == 1 and results[0].dataset_config == "avdigits" and results[0].dataset_split == "test"
    assert results[0].dataset_type == "me/fakeav"
    assert eval_results(RunSummary(model_name="m", dataset="fakeav", modalities=specs,
                                   metrics={"test": {"accuracy": 0.5}})) == []


def test_fig3_with_three_modalities_plots_shares(tmp_path):
    from arl_hf.plots import plot_arl_dynamics

    mods = ["audio", "visual", "text"]
    history = []
    for step in range(1, 9):
        d = np.array([0.5, 0.3, 0.2]) + 0.01 * step * np.array([-1, 0.5, 0.5])
        k = np.array([0.2, 0.3, 0.5])
        a = np.exp(k / d) / np.exp(k / d).sum()
        entry = {"epoch": step / 4}
        for i, m in enumerate(mods):
            entry.update({f"dependency_share_{m}": d[i], f"inverse_variance_share_{m}": k[i], f"a_{m}": a[i]})
        history.append(entry)
    history.append({"epoch": 2.0, "eval_accuracy": 0.5})  # other entries are ignored
    s = arl_series(history, mods)
    assert "dependency_ratio" not in s and len(s["epoch"]) == 8
    assert s["dependency_share_text"][-1] == pytest.approx(0.2 + 0.04)
    path = plot_arl_dynamics(history, mods, str(tmp_path / "fig3.png"))
    img = _decode(path)
    assert float(img[..., :3].std()) > 0.01
    assert plot_arl_dynamics([{"epoch": 1.0, "loss": 1.0}], mods, str(tmp_path / "none.png")) is None
    assert not (tmp_path / "none.png").exists()


def test_plot_command_keeps_the_training_modality_order(tmp_path, monkeypatch):
    """config.json is written with sorted keys; the plots follow modality_order (rgb before flow)."""
    import arl_hf.plots as plots

    run = tmp_path / "ucf"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"modalities": {"flow": {}, "rgb": {}},
                                                 "modality_order": ["rgb", "flow"]}))
    (run / "trainer_state.json").write_text(json.dumps({"log_history": [{"epoch": 1.0, "eval_accuracy": 0.5}]}))
    seen = []

    def fake(history, modalities, directory, title=None):
        seen.append(list(modalities))
        return [str(tmp_path / "x.png")]

    monkeypatch.setattr(plots, "make_run_plots", fake)
    assert plot_main([str(run), "--plots_dir", str(tmp_path / "p")]) == 0
    assert seen == [["rgb", "flow"]]


def test_build_model_takes_the_datasets_encoder_suggestion():
    """Without --encoder, an image-like modality gets the encoder its record suggests; an
    explicit --encoder wins, and a modality without a suggestion gets timm:resnet18."""
    import torch

    from arl_hf.arguments import ModelArguments
    from arl_hf.building import build_model

    batch = {"audio": torch.zeros(2, 1, 16, 16), "visual": torch.zeros(2, 3, 16, 16), "labels": torch.zeros(2).long()}
    record = {"dataset": "x", "data": {"format": "arl_hf.data/1", "dataset": "x", "modalities": {
        "audio": {"kind": "spectrogram", "encoder": "cnn", "in_chans": 1},
        "visual": {"kind": "image", "in_chans": 3}}}}
    model = build_model(batch, 3, ModelArguments(), record)
    assert model.config.modalities["audio"]["encoder"] == "cnn"
    assert model.config.modalities["visual"]["encoder"] == "timm:resnet18"
    model = build_model(batch, 3, ModelArguments(encoder="cnn"), record)
    assert model.config.modalities["visual"]["encoder"] == "cnn"
