"""What a run publishes can be shared: a valid install line, no local absolute path, the card
beside the weights wherever they are saved, and a model type that names the package."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from cli_helpers import make_tiny_dataset, script_env, tiny_flags

from arl_hf import ARLConfig, ARLTrainer, MultimodalConfig, MultimodalModel
from arl_hf.cards import card_install_command, shareable_command, shareable_value


def _git_repo(path, remote=None):
    path.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    for args in (["init", "-q"], ["commit", "-q", "--allow-empty", "-m", "x"]):
        subprocess.run(["git", "-C", str(path), *args], check=True, env=env)
    if remote:
        subprocess.run(["git", "-C", str(path), "remote", "add", "origin", remote], check=True)
    commit = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], check=True, capture_output=True,
                            text=True).stdout.strip()
    return str(path), commit


@pytest.mark.parametrize("remote", ["https://github.com/owner/arl-hf.git", "git@github.com:owner/arl-hf.git",
                                    "ssh://git@github.com/owner/arl-hf.git",
                                    "https://user:secret@github.com/owner/arl-hf.git"])
def test_install_line_of_a_url_remote_is_a_pinned_https_requirement(tmp_path, remote):
    from packaging.requirements import Requirement

    checkout, commit = _git_repo(tmp_path / "src", remote)
    line = card_install_command(checkout)
    assert line == f'pip install "arl-hf @ git+https://github.com/owner/arl-hf.git@{commit}"'
    req = Requirement(line.split('"')[1])
    assert req.name == "arl-hf" and req.url.startswith("git+https://") and "secret" not in line


@pytest.mark.parametrize("remote", [None, "/some/local/clone", "file:///some/local/clone", "../clone"])
def test_install_line_without_a_url_remote_is_name_and_version(tmp_path, remote):
    from packaging.requirements import Requirement

    from arl_hf import __version__

    checkout, _ = _git_repo(tmp_path / "src", remote)
    line = card_install_command(checkout)
    command = line.splitlines()[-1]
    assert command == f'pip install "arl-hf=={__version__}"'
    assert str(Requirement(command.split('"')[1]).specifier) == f"=={__version__}"
    assert "source repository" in line and str(tmp_path) not in line and "/some/local" not in line
    assert "git+/" not in line


def test_shareable_values_and_commands(tmp_path):
    folder = str(tmp_path / "vectors")
    assert shareable_value(folder) == "vectors"
    assert shareable_value(folder, note=True) == "vectors (local folder)"
    assert shareable_value("owner/name") == "owner/name" and shareable_value("cremad") == "cremad"
    cmd = shareable_command(f"arl-hf train --dataset {folder} --output_dir={tmp_path}/out --seed 3")
    assert str(tmp_path) not in cmd
    assert cmd.splitlines()[-1] == "arl-hf train --dataset vectors --output_dir=out --seed 3"
    assert "vectors" in cmd.splitlines()[0] and cmd.startswith("#")


def test_shareable_tree_scrubs_nested_absolute_paths(tmp_path):
    from arl_hf.cards import shareable_tree

    tree = {"a": [str(tmp_path / "toy"), {"b": str(tmp_path / "out" / "logs")}], "c": "owner/name", "d": 3}
    assert shareable_tree(tree) == {"a": ["toy", {"b": "logs"}], "c": "owner/name", "d": 3}


def test_run_on_a_local_folder_publishes_no_absolute_path(tmp_path):
    from arl_hf.scripts.train import main

    data = tmp_path / "vectors"
    make_tiny_dataset().save_to_disk(str(data))
    out = tmp_path / "run"
    assert main(tiny_flags(str(data), str(out), "--num_train_epochs", "1", "--plots", "false",
                           "--load_best_model_at_end", "true", "--eval_strategy", "epoch",
                           "--save_strategy", "epoch")) == 0
    card = (out / "README.md").read_text()
    results_text = (out / "results.json").read_text()
    for text in (card, results_text):
        assert str(tmp_path) not in text
    results = json.loads(results_text)
    assert results["dataset"] == "vectors (local folder)"
    assert results["best_model_checkpoint"] == "checkpoint-3"
    assert "vectors (local folder)" in card
    assert "--dataset vectors" in card and "arl-hf train " in card
    assert 'AutoModel.from_pretrained("run")' in card


def _tiny_model():
    torch.manual_seed(0)
    return MultimodalModel(MultimodalConfig(modalities={
        "audio": {"encoder": "mlp", "input_dim": 4, "hidden_dims": [8]},
        "visual": {"encoder": "mlp", "input_dim": 3, "hidden_dims": [8]}}, num_labels=2))


def _trainer(tmp_path, **kwargs):
    rows = [{"audio": torch.randn(4), "visual": torch.randn(3), "labels": i % 2} for i in range(8)]
    options = {"save_strategy": "no", "use_cpu": True, "disable_tqdm": True, **kwargs}
    args = ARLConfig(output_dir=str(tmp_path / "x"), max_steps=1, per_device_train_batch_size=8,
                     report_to="none", dataloader_num_workers=0, **options)
    return ARLTrainer(model=_tiny_model(), args=args, train_dataset=rows, eval_dataset=rows)


def test_save_model_elsewhere_writes_the_card_beside_the_weights(tmp_path):
    from huggingface_hub import ModelCard

    trainer = _trainer(tmp_path)
    trainer.train()
    target = tmp_path / "x" / "final"
    trainer.save_model(str(target))
    assert (target / "model.safetensors").is_file()
    card = ModelCard.load(str(target / "README.md"))
    assert card.data.library_name == "arl-hf" and "import arl_hf" in card.text
    assert str(tmp_path) not in str(card)
    other = tmp_path / "elsewhere"
    trainer.save_model(str(other))
    assert ModelCard.load(str(other / "README.md")).data.library_name == "arl-hf"


def test_checkpoints_get_no_card(tmp_path):
    trainer = _trainer(tmp_path, save_strategy="steps", save_steps=1)
    trainer.train()
    ckpt = tmp_path / "x" / "checkpoint-1"
    assert (ckpt / "model.safetensors").is_file() and not (ckpt / "README.md").exists()


def test_new_saves_write_the_package_model_type_and_legacy_checkpoints_load(tmp_path):
    from transformers import AutoConfig, AutoModel

    model = _tiny_model()
    model.save_pretrained(str(tmp_path / "new"))
    config = json.loads((tmp_path / "new" / "config.json").read_text())
    assert config["model_type"] == "arl_hf_multimodal"
    config["model_type"] = "arl_multimodal"  # a checkpoint saved before the rename
    (tmp_path / "new" / "config.json").write_text(json.dumps(config))
    loaded_config = AutoConfig.from_pretrained(str(tmp_path / "new"))
    assert type(loaded_config) is MultimodalConfig and loaded_config.model_type == "arl_hf_multimodal"
    for loaded in (AutoModel.from_pretrained(str(tmp_path / "new")),
                   MultimodalModel.from_pretrained(str(tmp_path / "new"))):
        assert type(loaded) is MultimodalModel
        for (name, a), b in zip(model.named_parameters(), loaded.parameters()):
            assert torch.equal(a.detach(), b.detach()), name
    loaded.save_pretrained(str(tmp_path / "resaved"))
    assert json.loads((tmp_path / "resaved" / "config.json").read_text())["model_type"] == "arl_hf_multimodal"


def test_loading_without_import_arl_hf_names_the_package(tmp_path):
    _tiny_model().save_pretrained(str(tmp_path / "m"))
    code = ("import sys\nfrom transformers import AutoConfig\n"
            f"try:\n    AutoConfig.from_pretrained({str(tmp_path / 'm')!r})\n"
            "except ValueError as e:\n    print(e)\n"
            "assert 'arl_hf' not in sys.modules\n")
    env = script_env()
    env["PYTHONPATH"] = ""  # transformers alone
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=str(tmp_path),
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "arl_hf_multimodal" in done.stdout


# ---------------------------------------------------------------------------------- noise
def test_no_pinned_memory_warning_on_cpu(tmp_path):
    import warnings

    import torch

    if torch.cuda.is_available():
        pytest.skip("pinned memory is wanted with CUDA")
    trainer = _trainer(tmp_path, use_cpu=False)  # no use_cpu (which turns pinning off): CPU as the only device
    assert trainer.args.device.type == "cpu"
    assert trainer.args.dataloader_pin_memory  # TrainingArguments' default, kept for CUDA
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loader = trainer.get_train_dataloader()
        batch = next(iter(loader))
        next(iter(trainer.get_eval_dataloader(trainer.train_dataset)))
    assert batch["audio"].shape == (8, 4)
    assert not [w for w in caught if "pin_memory" in str(w.message)], [str(w.message) for w in caught]
    assert trainer.args.dataloader_pin_memory  # the arguments are left as given


@pytest.mark.parametrize("disable_tqdm", [True, False])
def test_disable_tqdm_silences_the_saving_bars(tmp_path, capfd, disable_tqdm):
    from transformers.utils import logging as hf_logging

    trainer = _trainer(tmp_path, disable_tqdm=disable_tqdm, save_strategy="steps", save_steps=1)
    capfd.readouterr()
    trainer.train()
    trainer.save_model()
    err = capfd.readouterr().err
    assert ("Writing model shards" in err) is not disable_tqdm, err
    assert (tmp_path / "x" / "model.safetensors").is_file()
    assert hf_logging.is_progress_bar_enabled()  # restored after


def test_final_evaluation_under_another_prefix_gives_no_early_stopping_warning(tmp_path):
    from transformers.utils import logging as hf_logging

    from arl_hf.trainer import _EarlyStopping

    trainer = _trainer(tmp_path, eval_strategy="steps", eval_steps=1, save_strategy="steps", save_steps=1,
                       load_best_model_at_end=True, metric_for_best_model="accuracy", early_stopping_patience=2)
    stopper = next(c for c in trainer.callback_handler.callbacks if isinstance(c, _EarlyStopping))
    seen = []
    logger = hf_logging.get_logger("transformers.trainer_callback")
    original = logger.warning
    logger.warning = lambda msg, *a, **k: seen.append(str(msg))
    try:
        control = trainer.control
        stopper.on_evaluate(trainer.args, trainer.state, control, {"validation_accuracy": 0.5, "validation_loss": 1.0})
        assert seen == []
        stopper.on_evaluate(trainer.args, trainer.state, control, {"eval_loss": 1.0})  # misconfigured: still said
        assert len(seen) == 1 and "eval_accuracy" in seen[0]
    finally:
        logger.warning = original
