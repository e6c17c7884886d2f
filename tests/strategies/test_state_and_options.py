"""Strategy tensors saved and reloaded with the model, the strategy recorded as the one that trained,
options declared per strategy, the registry, and a strategy added as one file (``--strategy_module``)."""

import dataclasses
import json
import os
import textwrap

import pytest
import torch
from strategy_testutils import MODS, cfg, make_rows, mlp_model
from transformers import AutoModel

from arl_hf import ARLConfig, ARLTrainer, MultimodalModel
from arl_hf.registry import Registry, RegistryOverwriteWarning
from arl_hf.strategies import BUILTIN_OPTIONS, STRATEGIES, TrainerView, build_strategy
from arl_hf.strategies.mla import MLA
from arl_hf.strategies.ogm_ge import OGMGEOptions

ROWS, VAL = make_rows(24), make_rows(12, seed=7)
STATEFUL = ["agm", "pmr", "gblending", "mmpareto", "mla", "dr"]
PERIODIC = dict(gblending_interval_epochs=1, dr_interval_epochs=1, pmr_interval_epochs=1)


# ---------------------------------------------------------------- state in the model, through save and load
@pytest.mark.parametrize("name", STATEFUL)
def test_from_pretrained_rebuilds_the_strategy_state(name, tmp_path):
    model = mlp_model()
    t = ARLTrainer(model=model, args=cfg(tmp_path, strategy=name, max_steps=-1, num_train_epochs=2, **PERIODIC),
                   train_dataset=ROWS, eval_dataset=VAL)
    t.train()
    t.save_model(str(tmp_path / "saved"))
    with open(tmp_path / "saved" / "config.json") as f:
        config = json.load(f)
    assert config["training_strategy"] == name and config["strategy_state"]["strategy"] == name
    assert not [f for f in os.listdir(tmp_path / "saved") if f.endswith((".pt", ".pth", ".bin")) and "strategy" in f]
    expected = t.strategy.state_dict()
    assert expected  # the strategy has tensors of its own
    for loaded in (MultimodalModel.from_pretrained(str(tmp_path / "saved")),
                   AutoModel.from_pretrained(str(tmp_path / "saved"))):
        got = {k[len("strategy_state."):]: v for k, v in loaded.state_dict().items() if k.startswith("strategy_state.")}
        assert got.keys() == expected.keys()
        for k in expected:
            assert got[k].dtype == expected[k].dtype and torch.equal(got[k], expected[k]), k
        # a trainer on the loaded model takes the loaded state over instead of a fresh one
        again = ARLTrainer(model=loaded, args=cfg(tmp_path / "again", strategy=name), eval_dataset=VAL)
        for k, v in again.strategy.state_dict().items():
            assert torch.equal(v, expected[k]), k


def test_an_mla_instance_under_another_args_strategy_is_recorded_and_evaluated_as_mla(tmp_path):
    args = cfg(tmp_path, strategy="arl", max_steps=6)
    model = mlp_model()
    t = ARLTrainer(model=model, args=args, strategy=MLA(args, MODS), train_dataset=ROWS, eval_dataset=VAL)
    t.train()
    trained = t.evaluate()
    t.save_model(str(tmp_path / "saved"))
    with open(tmp_path / "saved" / "config.json") as f:
        assert json.load(f)["training_strategy"] == "mla"  # the strategy that trained, not args.strategy
    loaded = AutoModel.from_pretrained(str(tmp_path / "saved"))
    assert loaded.config.training_strategy == "mla"
    # evaluated as recorded: through MLA's saved head, exactly as at the end of training
    ev = ARLTrainer(model=loaded, args=cfg(tmp_path / "ev", strategy=loaded.config.training_strategy), eval_dataset=VAL)
    assert torch.equal(ev.strategy.head.weight, t.strategy.head.weight.detach())
    got = ev.evaluate()
    for k in ("eval_loss", "eval_accuracy", "eval_accuracy_audio", "eval_accuracy_visual"):
        assert got[k] == pytest.approx(trained[k], abs=1e-6), k
    # the model's own fusion head, untrained by MLA, gives another loss
    fused = ARLTrainer(model=AutoModel.from_pretrained(str(tmp_path / "saved")),
                       args=cfg(tmp_path / "fused", strategy="none"), eval_dataset=VAL).evaluate()
    assert abs(fused["eval_loss"] - trained["eval_loss"]) > 1e-3


def test_evaluate_checkpoint_refuses_an_mla_checkpoint_without_its_head(tmp_path):
    from arl_hf.scripts.evaluate import _prediction_strategy

    model = mlp_model()
    ARLTrainer(model=model, args=cfg(tmp_path, strategy="mla"))
    model.config.training_strategy = "mla"  # as ARLTrainer.save_model records it
    assert _prediction_strategy(model, str(tmp_path)) == "mla"
    del model.strategy_state
    with pytest.raises(FileNotFoundError, match="trained with strategy 'mla'.*expected its head in the checkpoint"):
        _prediction_strategy(model, str(tmp_path))


def test_another_strategy_replaces_the_state_of_the_previous_one(tmp_path):
    model = mlp_model()
    ARLTrainer(model=model, args=cfg(tmp_path, strategy="gblending"), eval_dataset=VAL)
    assert model.strategy_state.strategy == "gblending"
    ARLTrainer(model=model, args=cfg(tmp_path, strategy="arl"))
    assert "strategy_state" not in dict(model.named_children()) and model.config.strategy_state is None
    assert not any(n.startswith("strategy_state.") for n, _ in model.named_parameters())


def test_strategy_buffers_are_left_out_of_ddp_buffer_broadcast(tmp_path):
    model = mlp_model()
    ARLTrainer(model=model, args=cfg(tmp_path, strategy="mla"))
    assert sorted(model._ddp_params_and_buffers_to_ignore) == [
        "strategy_state.batch_in_epoch", "strategy_state.epoch", "strategy_state.projector"]


# ---------------------------------------------------------------- options
def test_each_builtin_option_keeps_its_flag_default_and_help_in_arlconfig():
    arl = {f.name: f for f in dataclasses.fields(ARLConfig)}
    names = []
    for options in BUILTIN_OPTIONS:
        for f in dataclasses.fields(options):
            assert f.name in arl and arl[f.name].default == f.default and arl[f.name].metadata == f.metadata
            assert f.metadata["help"]
            names.append(f.name)
    assert {"ogm_alpha", "agm_alpha", "pmr_momentum", "gblending_interval_epochs", "mmpareto_gamma", "mla_alpha",
            "dr_lambda", "fixed_multipliers", "arl_temperature", "gradient_modulation"} <= set(names)
    assert len(names) == len(set(names))


def test_a_strategy_gets_its_own_options_object(tmp_path):
    args = ARLConfig(strategy="ogm_ge", ogm_alpha=0.3, output_dir=str(tmp_path), report_to="none")
    s = build_strategy("ogm_ge", args, MODS)
    assert isinstance(s.options, OGMGEOptions) and s.options.ogm_alpha == 0.3 and s.options.ogm_end_epoch == 50
    assert STRATEGIES["ogm_ge"].options_class is OGMGEOptions


@pytest.mark.parametrize("field, value, message", [
    ("ogm_alpha", -1.0, "ogm_alpha: expected a finite number >= 0, got -1.0"),
    ("pmr_momentum", 2.0, r"pmr_momentum: expected a number in \[0, 1\], got 2.0"),
    ("dr_max_times", -1, "dr_max_times: expected an int >= 0, got -1"),
    ("mla_alpha", 0.0, "mla_alpha: expected a finite number > 0, got 0.0"),
    ("arl_temperature", 0.0, "arl_temperature: expected a finite number > 0, got 0.0"),
])
def test_option_errors_name_the_field(field, value, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        ARLConfig(output_dir=str(tmp_path), report_to="none", **{field: value})
    owner = next(o for o in BUILTIN_OPTIONS if field in {f.name for f in dataclasses.fields(o)})
    with pytest.raises(ValueError, match=message):
        owner(**{field: value})


def test_the_trainer_is_a_trainer_view(tmp_path):
    t = ARLTrainer(model=mlp_model(), args=cfg(tmp_path, per_device_train_batch_size=5), train_dataset=ROWS)
    assert isinstance(t, TrainerView)
    assert (t.train_batch_size, t.world_size, t.process_index, t.loss_scale()) == (5, 1, 0, 1.0)
    assert t.num_train_batches() == 5 and t.is_sync_step()
    batches = list(t.eval_batches(VAL))
    assert sum(len(b["labels"]) for b in batches) == len(VAL)


# ---------------------------------------------------------------- registry
def test_registry_warns_on_overwrite_naming_kind_and_name():
    table = Registry("widget", attribute="widget_name")

    @table.register("a")
    class A:
        pass

    assert table["a"] is A and A.widget_name == "a"
    with pytest.warns(RegistryOverwriteWarning, match="widget 'a' is registered again"):
        @table.register("a")
        class B:
            pass
    assert table["a"] is B
    with pytest.raises(ValueError, match="kind: unknown widget 'c'; expected one of"):
        table.get_or_raise("c", "kind")


def test_every_name_table_is_a_registry():
    from arl_hf.modeling.encoders import ENCODERS
    from arl_hf.modeling.fusion import FUSIONS

    for table, kind, name in ((STRATEGIES, "strategy", "arl"), (FUSIONS, "fusion", "concat"),
                              (ENCODERS, "encoder", "mlp")):
        assert isinstance(table, Registry) and table.kind == kind and name in table
        original = table[name]
        with pytest.warns(RegistryOverwriteWarning, match=f"{kind} '{name}' is registered again"):
            table[name] = type("Shadow", (), {})
        dict.__setitem__(table, name, original)
    assert "mmtm" in FUSIONS and "cross_attention" in FUSIONS  # intermediate fusions, registered without a cycle


# ---------------------------------------------------------------- a strategy as one file
USER_STRATEGY = '''
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from arl_hf.strategies import Strategy, StrategyOptions, StrategyOutput, register_strategy


@dataclass
class ScaledFusedOptions(StrategyOptions):
    scaled_fused_beta: float = field(default=1.0, metadata={"help": "Weight of the fused loss (> 0)."})

    def check(self):
        if not self.scaled_fused_beta > 0:
            raise ValueError(f"scaled_fused_beta: expected a number > 0, got {self.scaled_fused_beta!r}")


@register_strategy("scaled_fused", options=ScaledFusedOptions)
class ScaledFused(Strategy):
    def compute_loss(self, model, inputs, context):
        out = self.forward(model, inputs)
        loss = self.options.scaled_fused_beta * F.cross_entropy(out.logits.float(), inputs["labels"])
        beta = torch.tensor(self.options.scaled_fused_beta, device=loss.device)
        return StrategyOutput(loss=loss, outputs=out, logs={"beta": beta})
'''


def test_a_strategy_added_as_one_file_gets_its_flags_and_trains(tmp_path):
    from arl_hf.scripts.train import make_parser as build_parser
    from arl_hf.scripts.train import parse_args

    path = tmp_path / "scaled_fused.py"
    path.write_text(textwrap.dedent(USER_STRATEGY))
    argv = ["--strategy_module", str(path), "--strategy", "scaled_fused", "--scaled_fused_beta", "0.25",
            "--output_dir", str(tmp_path / "out"), "--max_steps", "2", "--report_to", "none", "--use_cpu", "true",
            "--per_device_train_batch_size", "8", "--logging_steps", "1", "--save_strategy", "no",
            "--eval_strategy", "no", "--optim", "sgd", "--learning_rate", "0.1"]
    training_args, *_ = parse_args(argv)
    assert "--scaled_fused_beta" in build_parser().format_help()
    # every strategy registered from outside the package contributes its options (here, possibly,
    # those of strategies other tests registered): the selected one's value arrived
    assert training_args.strategy == "scaled_fused" and training_args.strategy_options["scaled_fused_beta"] == 0.25
    model, before = mlp_model(), mlp_model()
    t = ARLTrainer(model=model, args=training_args, train_dataset=ROWS)
    assert t.strategy.options.scaled_fused_beta == 0.25
    t.train()
    logged = [h for h in t.state.log_history if "beta" in h]
    assert len(logged) == 2 and all(h["beta"] == 0.25 and torch.isfinite(torch.tensor(h["loss"])) for h in logged)
    assert not torch.allclose(model.encoders["audio"].net[0].weight, before.encoders["audio"].net[0].weight)
    with pytest.raises(ValueError, match="scaled_fused_beta: expected a number > 0, got -1.0"):
        ARLTrainer(model=mlp_model(), args=parse_args(argv[:5] + ["-1"] + argv[6:])[0])
