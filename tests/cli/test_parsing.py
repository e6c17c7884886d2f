"""Option parsing: presets, precedence (preset < config file < flags), --help, bad input."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess

import pytest
import torch
from cli_helpers import PYTHON, REPO, script_env

from arl_hf import ARLConfig
from arl_hf.arguments import DataArguments, ModelArguments, RunArguments
from arl_hf.cli import main
from arl_hf.outputs import prepare_output_dir
from arl_hf.presets import PRESETS, get_preset, preset_names
from arl_hf.scripts.train import main as train_main
from arl_hf.scripts.train import parse_args


def test_no_arguments_is_the_avdigits_default():
    args, model_args, data_args, run_args = parse_args([])
    assert run_args.preset == "avdigits_main"
    assert data_args.dataset == "avdigits" and data_args.dataset_config == "main"
    assert model_args.encoder == "cnn"
    assert args.strategy == "arl"
    assert str(args.lr_scheduler_type.value) == "cosine" and args.warmup_steps == 40
    # model selection on validation, one evaluation + checkpoint per epoch
    assert args.load_best_model_at_end is True
    assert args.metric_for_best_model == "accuracy"
    assert args.greater_is_better is True
    assert str(args.eval_strategy.value) == "epoch" and str(args.save_strategy.value) == "epoch"
    assert args.num_train_epochs == PRESETS["avdigits_main"]["num_train_epochs"]
    assert args.learning_rate == PRESETS["avdigits_main"]["learning_rate"]
    assert args.output_dir == os.path.join("outputs", "avdigits_main-arl")


@pytest.mark.parametrize("name,temperature,frames,duration", [
    ("cremad", 8.0, 1, 3.0), ("ave", 4.0, 3, 10.0), ("kinetics_sounds", 4.0, 3, 10.0),
    ("mosi", 4.0, None, None), ("ucf101", 4.0, 3, None),
])
def test_paper_presets(name, temperature, frames, duration):
    args, model_args, data_args, run_args = parse_args(["--preset", name])
    assert data_args.dataset == name
    assert model_args.encoder == "timm:resnet18" and model_args.init == "authors" and model_args.fusion == "concat"
    assert str(args.optim.value) == "sgd" and args.optim_args == "momentum=0.9"
    assert args.learning_rate == 1e-3 and args.weight_decay == 1e-4
    assert args.per_device_train_batch_size == 64 and args.num_train_epochs == 100
    assert args.arl_gamma == 4.0 and args.arl_temperature == temperature
    assert args.arl_variant == "paper" and args.arl_warmup_epochs == 0 and args.max_grad_norm == 0.0
    assert args.lr_decay_epochs is None
    assert data_args.num_frames == frames and data_args.audio_duration == duration
    if name == "cremad":
        assert data_args.preprocessing == "scipy"  # 257x299 at 3 s


@pytest.mark.parametrize("name,temperature,gamma", [
    ("cremad_official", 8.0, 4.0), ("ave_official", 4.0, 5.0), ("kinetics_sounds_official", 4.0, 3.0),
])
def test_official_presets(name, temperature, gamma):
    args, _, data_args, run_args = parse_args(["--preset", name])
    assert args.arl_variant == "official"
    assert args.arl_temperature == temperature and args.arl_gamma == gamma
    assert args.arl_warmup_epochs == 6
    assert args.max_grad_norm == 40.0
    assert args.lr_decay_epochs == [70] and args.lr_decay_factor == 0.1
    assert args.seed == 0
    assert data_args.dataset == name[: -len("_official")]


def test_flags_override_a_preset_one_by_one():
    args, model_args, data_args, run_args = parse_args([
        "--preset", "cremad_official",
        "--arl_temperature", "2.5",
        "--init", "timm",             # equal to the dataclass default: must still beat the preset
        "--max_grad_norm", "0",       # idem
        "--no_arl_all_reduce",
        "--lr_decay_epochs", "30", "60",
        "--num_frames", "2",
    ])
    assert args.arl_temperature == 2.5
    assert model_args.init == "timm"
    assert args.max_grad_norm == 0.0
    assert args.arl_all_reduce is False
    assert args.lr_decay_epochs == [30, 60]
    assert data_args.num_frames == 2
    # untouched options keep the preset's values
    assert args.arl_gamma == 4.0 and args.arl_warmup_epochs == 6 and args.arl_variant == "official"
    assert args.output_dir == os.path.join("outputs", "cremad_official-arl")


def test_other_dataset_without_preset_uses_plain_defaults():
    args, model_args, data_args, run_args = parse_args(["--dataset", "cremad", "--data_dir", "/x"])
    assert run_args.preset is None
    assert args.learning_rate == ARLConfig.__dataclass_fields__["learning_rate"].default
    assert model_args.init == "timm"


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_config_file_between_preset_and_flags(tmp_path, suffix):
    values = {"preset": "ave", "arl_temperature": 3.0, "learning_rate": 0.02, "strategy": "none"}
    path = tmp_path / f"run{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(values))
    else:
        import yaml

        path.write_text(yaml.safe_dump(values))
    args, _, data_args, run_args = parse_args(["--config", str(path), "--learning_rate", "0.5"])
    assert run_args.preset == "ave" and data_args.dataset == "ave"
    assert args.arl_temperature == 3.0          # file beats preset (4.0)
    assert args.learning_rate == 0.5            # flag beats file
    assert args.strategy == "none"
    assert args.per_device_train_batch_size == 64  # preset value kept
    # a lone positional config path works too, as in the transformers examples
    args2, *_ = parse_args([str(path)])
    assert args2.learning_rate == 0.02


def test_config_file_with_typo_is_rejected(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("learning_rat: 0.1\npreset: cremad\n")
    with pytest.raises(ValueError, match=r"learning_rat.*did you mean 'learning_rate'"):
        parse_args(["--config", str(path)])


def test_unknown_preset_is_a_clear_value_error():
    with pytest.raises(ValueError, match=r"unknown preset 'cremadd'.*did you mean 'cremad'"):
        get_preset("cremadd")
    with pytest.raises(ValueError, match="preset"):
        parse_args(["--preset", "nosuch"])


def test_help_documents_every_option_and_lists_presets(capsys):
    assert train_main(["--help"], prog="run_arl.py") == 0
    text = capsys.readouterr().out
    for dtype in (ARLConfig, ModelArguments, DataArguments, RunArguments):
        for f in dataclasses.fields(dtype):
            if f.init:
                assert f"--{f.name}" in text, f.name
    for name in preset_names():
        assert name in text
    # our own options carry their help text
    text = " ".join(text.split())
    assert "Continue the run in output_dir from its last checkpoint" in text
    assert "ARL temperature T" in text


def test_unknown_option_exits_2_with_a_suggestion(capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(["--arl_temprature", "3"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --arl_temprature" in err and "--arl_temperature" in err


@pytest.mark.parametrize("argv,needle", [
    (["--preset", "nosuch"], "unknown preset 'nosuch'"),
    (["--dataset", "cremadd"], "dataset: unknown dataset 'cremadd' (did you mean 'cremad'?)"),
    (["--strategy", "nosuch"], "unknown strategy 'nosuch'"),
])
def test_user_errors_exit_2_without_traceback(tmp_path, capsys, argv, needle):
    with pytest.raises(SystemExit) as e:
        train_main(argv + ["--output_dir", str(tmp_path / "o")], prog="run_arl.py")
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and "error:" in err and "Traceback" not in err


def test_output_dir_holding_a_run_is_refused_unless_asked(tmp_path, capsys):
    from safetensors.torch import save_file

    out = tmp_path / "run"
    (out / "checkpoint-3").mkdir(parents=True)
    (out / "checkpoint-3" / "trainer_state.json").write_text("{}")  # a complete checkpoint
    save_file({"w": torch.zeros(2)}, str(out / "checkpoint-3" / "model.safetensors"))
    (out / "model.safetensors").write_bytes(b"x")
    (out / "notes.txt").write_text("mine")
    # the marker a run leaves: what it wrote (and what it found there)
    (out / "_arl_hf_run.json").write_text('{"format": "arl_hf.run/1", "outputs": ["model.safetensors"], '
                                          '"kept": ["notes.txt"]}')
    with pytest.raises(SystemExit) as e:
        train_main(["--output_dir", str(out)], prog="run_arl.py")
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--overwrite_output_dir" in err and "--resume" in err
    # --resume picks the last checkpoint; --overwrite_output_dir clears the run's files only
    args, _, _, run_args = parse_args(["--output_dir", str(out), "--resume"])
    assert prepare_output_dir(args, run_args) == str(out / "checkpoint-3")
    args, _, _, run_args = parse_args(["--output_dir", str(out), "--overwrite_output_dir"])
    assert prepare_output_dir(args, run_args) is None
    assert sorted(os.listdir(out)) == ["_arl_hf_run.json", "notes.txt"]
    # nothing to resume from, and the two flags together, are errors too
    with pytest.raises(FileNotFoundError, match="no checkpoint-"):
        prepare_output_dir(*[parse_args(["--output_dir", str(out), "--resume"])[i] for i in (0, 3)])
    with pytest.raises(ValueError, match="cannot be combined"):
        prepare_output_dir(*[parse_args(["--output_dir", str(out), "--resume", "--overwrite_output_dir"])[i]
                             for i in (0, 3)])


def test_console_entry_point_dispatch(capsys):
    assert main([]) == 2
    assert main(["trian"]) == 2
    assert "did you mean 'train'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["train", "--preset", "nosuch"])
    assert e.value.code == 2


def test_script_user_error_in_a_fresh_process(tmp_path):
    """The real script: exit status 2, one error line, no traceback."""
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"num_train_epoch": 3}))
    proc = subprocess.run(
        [PYTHON, os.path.join(REPO, "examples", "run_arl.py"), str(cfg), "--output_dir", str(tmp_path / "o")],
        capture_output=True, text=True, env=script_env(), timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "num_train_epoch" in proc.stderr and "did you mean 'num_train_epochs'" in proc.stderr


@pytest.mark.parametrize("decay_all", [True, False])
def test_decay_all_parameters_puts_biases_under_weight_decay(tmp_path, decay_all):
    from arl_hf import ARLTrainer, MultimodalConfig, MultimodalModel

    argv = ["--preset", "cremad", "--output_dir", str(tmp_path), "--use_cpu", "--eval_strategy", "no",
            "--save_strategy", "no", "--load_best_model_at_end", "false"]
    if not decay_all:
        argv += ["--decay_all_parameters", "false"]
    args, _, _, run_args = parse_args(argv)
    assert args.decay_all_parameters is decay_all
    model = MultimodalModel(MultimodalConfig(
        modalities={"a": {"encoder": "mlp", "input_dim": 4, "hidden_dims": [8]},
                    "b": {"encoder": "mlp", "input_dim": 4, "hidden_dims": [8]}}, num_labels=3))
    trainer = ARLTrainer(model=model, args=args)
    opt = trainer.create_optimizer()
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] == 1e-4 for p in g["params"]}
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    assert biases and all((id(p) in decayed) is decay_all for p in biases)
    assert all(id(p) in decayed for n, p in model.named_parameters() if n.endswith("weight"))
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.9


def test_compare_subcommand_is_a_thin_hook_onto_examples_compare(capsys):
    with pytest.raises(SystemExit) as e:
        main(["compare", "--strategies", "nosuch"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "arl-hf compare: error:" in err and "nosuch" in err and "Traceback" not in err


def _sections(text):
    """``--help`` section title -> its text."""
    import re

    parts = re.split(r"\n(?=[a-z]+ options \()", text)
    return {p.split(" options (", 1)[0]: p for p in parts[1:]}


def test_help_is_grouped_run_first_with_preset_resolved_defaults(capsys):
    assert train_main(["--help"], prog="arl-hf train") == 0
    text = capsys.readouterr().out
    titles = [line.split(" options (")[0] for line in text.splitlines() if " options (" in line and
              not line.startswith(" ")]
    assert titles == ["run", "data", "model", "strategy", "training"]
    assert text.splitlines()[0].startswith("usage: arl-hf train [CONFIG.json|CONFIG.yaml] [--preset NAME]")
    sections = _sections(text)
    for flag in ("--preset", "--config", "--resume", "--output_dir", "--push_to_hub", "--license"):
        assert f"\n  {flag} " in sections["run"], flag
    assert "--dataset_revision" in sections["data"] and "--encoder" in sections["model"]
    for flag in ("--arl_temperature", "--mla_alpha", "--gradient_modulation"):
        assert flag in sections["strategy"], flag
    for flag in ("--learning_rate", "--activation_checkpointing", "--gradient_checkpointing"):
        assert flag in sections["training"] and flag not in sections["strategy"], flag
    # defaults: the avdigits preset (the no-argument default) resolved, and marked
    flat = " ".join(sections["training"].split())
    assert "--learning_rate LEARNING_RATE" in flat and "(default: 0.05, from preset avdigits_main)" in flat
    assert "(default: authors, from preset avdigits_main)" in " ".join(sections["model"].split())


def test_help_of_another_preset_shows_its_values(capsys):
    assert train_main(["--preset", "cremad", "--arl_gamma", "3", "--help"], prog="arl-hf train") == 0
    sections = _sections(capsys.readouterr().out)
    strategy = " ".join(sections["strategy"].split())
    assert "(default: 8.0, from preset cremad)" in strategy  # arl_temperature of the cremad preset
    assert "ARL weight gamma of the unimodal losses in Eq. 22 (>= 0). (default: 3.0) " in strategy  # the flag wins
    assert "(default: 0.001, from preset cremad)" in " ".join(sections["training"].split())
    with pytest.raises(SystemExit) as e:
        train_main(["--preset", "nosuch", "--help"], prog="arl-hf train")
    assert e.value.code == 2


def test_old_flag_names_still_parse():
    args, model_args, data_args, run_args = parse_args(
        ["--preset", "none", "--dataset", "somewhere", "--encoder", "mlp", "--strategy", "none", "--resume", "false",
         "--gradient_checkpointing", "true", "--no_plots", "--output_dir", "o"])
    assert args.activation_checkpointing is True and args.strategy == "none" and model_args.encoder == "mlp"
    assert data_args.dataset == "somewhere" and run_args.plots is False


def test_version_and_env_commands(capsys):
    import huggingface_hub
    import transformers

    import arl_hf

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"arl-hf {arl_hf.__version__}"
    assert main(["env", "--json"]) == 0
    env = json.loads(capsys.readouterr().out)
    assert env["arl-hf"] == arl_hf.__version__ and env["frameworks"]["transformers"] == transformers.__version__
    assert env["devices"]["cuda_available"] is torch.cuda.is_available() and env["devices"]["cpu_count"] >= 1
    assert env["cache_dirs"]["HF_HUB_CACHE"] == huggingface_hub.constants.HF_HUB_CACHE
    assert env["optional"]["optuna"]["extra"] == "tune" and env["environment"]["HF_HUB_OFFLINE"] == "1"
    assert env["install"].startswith("pip install ") and env["install"] != "pip install arl-hf"
    assert main(["env"]) == 0
    text = capsys.readouterr().out
    assert f"- transformers: {transformers.__version__}" in text and "- HF_HUB_CACHE: " in text
    assert "devices: CUDA" in text
