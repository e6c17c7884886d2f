"""The script layer: one ``make_parser()`` + ``main()`` per job behind the CLI, argv parsed in
one pass (config file, preset and strategy modules first), values given as values, the run
record typed, and one card configuration and one README.md write per save."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
from cli_helpers import tiny_flags

from arl_hf import cli
from arl_hf.building import RunRecord
from arl_hf.scripts import compare, evaluate, train

STRATEGY_MODULE = '''
from dataclasses import dataclass, field

import torch.nn.functional as F

from arl_hf.strategies import Strategy, StrategyOptions, StrategyOutput, register_strategy


@dataclass
class NAMEOptions(StrategyOptions):
    NAME_beta: float = field(default=0.5, metadata={"help": "Weight of the fused loss."})


@register_strategy("NAME", options=NAMEOptions)
class NAMEStrategy(Strategy):
    def compute_loss(self, model, inputs, context):
        out = self.forward(model, inputs)
        return StrategyOutput(loss=self.options.NAME_beta * F.cross_entropy(out.logits, inputs["labels"]),
                              outputs=out)
'''


@pytest.mark.parametrize("command, module", [("train", train), ("evaluate", evaluate), ("compare", compare)])
def test_the_cli_runs_each_job_through_its_script(command, module, monkeypatch):
    calls = []
    monkeypatch.setattr(module, "main", lambda argv, prog=None: calls.append((list(argv), prog)) or 0)
    assert cli.main([command, "--seed", "3"]) == 0
    assert calls == [(["--seed", "3"], f"arl-hf {command}")]
    assert callable(module.make_parser) and module.make_parser() is not None


def test_a_strategy_module_named_in_a_config_file_adds_its_options(tmp_path):
    module = tmp_path / "layer_test_strategy.py"
    module.write_text(STRATEGY_MODULE.replace("NAME", "layer_test"))
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"strategy_module": [str(module)], "strategy": "layer_test",
                                  "layer_test_beta": 0.25}))
    training_args, *_ = train.parse_args([str(config), "--output_dir", str(tmp_path / "out")])
    assert training_args.strategy == "layer_test"
    assert training_args.strategy_options["layer_test_beta"] == 0.25


def test_help_lists_the_options_of_a_strategy_module_and_the_resolved_defaults(tmp_path):
    module = tmp_path / "help_test_strategy.py"
    module.write_text(STRATEGY_MODULE.replace("NAME", "help_test"))
    text = train.help_parser(["--strategy_module", str(module), "--strategy", "help_test", "--help"]).format_help()
    assert "--help_test_beta" in text
    assert os.path.join("outputs", "avdigits_main-help_test") in text  # the default output folder


def test_precedence_is_preset_then_config_file_then_flags_then_values(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("learning_rate: 0.02\nnum_train_epochs: 3\n")
    argv = ["--preset", "avdigits_main", "--config", str(config), "--num_train_epochs", "4",
            "--output_dir", str(tmp_path / "o")]
    training_args, _, data_args, run_args = train.parse_args(argv)
    assert (training_args.learning_rate, training_args.num_train_epochs) == (0.02, 4)
    assert run_args.preset == "avdigits_main" and data_args.dataset == "avdigits"
    lr = 0.1 + 1e-16 * 7  # a value given as a value keeps every bit (no str round trip)
    training_args, *_ = train.parse_args(argv, overrides={"learning_rate": lr, "fixed_multipliers": [lr, 1.0]})
    assert training_args.learning_rate == lr and training_args.fixed_multipliers == [lr, 1.0]
    assert training_args.num_train_epochs == 4


def test_the_default_output_dir_names_the_preset_or_dataset_and_the_strategy():
    assert train.parse_args(["--strategy", "none"])[0].output_dir == os.path.join("outputs", "avdigits_main-none")
    assert train.parse_args(["--preset", "none"])[0].output_dir == os.path.join("outputs", "run-arl")


def test_the_run_record_is_typed_and_round_trips():
    record = RunRecord(dataset="avdigits", num_frames=2, data={"dataset": "avdigits"}, preset="p")
    assert record.to_dict() == {"dataset": "avdigits", "num_frames": 2, "data": {"dataset": "avdigits"},
                                "preset": "p"}
    assert RunRecord.from_dict(record.to_dict()) == record
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['frames'\]"):
        RunRecord.from_dict({"dataset": "x", "frames": 2})


def test_one_card_configuration_and_one_readme_write_per_run(tiny_dataset_dir, tmp_path, monkeypatch):
    from arl_hf import cards, trainer_card

    configured, written = [], []
    configure = trainer_card.ModelCardMixin.configure_model_card
    write = cards.write_model_card
    monkeypatch.setattr(trainer_card.ModelCardMixin, "configure_model_card",
                        lambda self, *a, **k: configured.append(k) or configure(self, *a, **k))
    monkeypatch.setattr(trainer_card, "write_model_card", lambda summary, out: written.append(summary) or
                        write(summary, out))
    out = str(tmp_path / "run")
    argv = tiny_flags(tiny_dataset_dir, out, "--preset", "avdigits", "--plots", "true")
    metrics = train.train_and_evaluate(*train.parse_args(argv), argv=argv)
    assert len(configured) == 1 and len(written) == 1
    summary = written[0]
    # the card is written after the plots, with the strategy's own options and the evaluated splits
    assert [p for p, _ in summary.plots] == ["plots/arl_dynamics.png", "plots/accuracy.png"]
    assert all(os.path.isfile(os.path.join(out, p)) for p, _ in summary.plots)
    assert summary.hyperparameters["arl_gamma"] == train.parse_args(argv)[0].arl_gamma
    assert set(summary.metrics) == {"validation", "test"}
    assert summary.metrics["test"]["accuracy"] == metrics["test"]["accuracy"]
    text = open(os.path.join(out, "README.md"), encoding="utf-8").read()
    assert "plots/accuracy.png" in text and "arl_gamma" in text


def test_the_card_takes_its_hub_task_from_the_modalities_it_is_given():
    from arl_hf.cards import RunSummary, eval_results

    def summary(**kw):
        return RunSummary(model_name="m", dataset="d", dataset_id="me/d", modalities={"a": {}, "b": {}},
                          metrics={"test": {"accuracy": 0.5}}, **kw)

    assert {r.task_type for r in eval_results(summary(input_modalities=["video", "audio"]))} == \
        {"video-classification"}
    assert {r.task_type for r in eval_results(summary())} == {"tabular-classification"}


def test_strategy_options_of_the_card_are_those_of_the_strategy_that_trains():
    from arl_hf.trainer_card import training_hyperparameters

    args = train.parse_args(["--strategy", "ogm_ge", "--ogm_alpha", "0.3"])[0]
    from arl_hf.strategies.ogm_ge import OGMGEOptions

    options = dataclasses.asdict(OGMGEOptions.from_args(args))
    table = training_hyperparameters(args, strategy_options=options)
    assert table["ogm_alpha"] == 0.3 and "arl_gamma" not in table


def test_a_contract_model_without_input_modalities_gets_them_from_its_modality_names():
    from arl_hf.trainer_card import _input_modalities

    class Contract:
        pass

    class WithThem:
        input_modalities = ["text"]

    assert _input_modalities(Contract(), {"visual": {}, "Audio": {}, "flow": {}, "eeg": {}}) == \
        ["video", "audio", "time"]
    assert _input_modalities(WithThem(), {"visual": {}}) == ["text"]
