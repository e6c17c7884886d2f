"""The strategy registry is the single source of the built-in strategies: ARLConfig's options, the
table labels, the documented flag prefixes and the default methods of ``compare`` derive from it;
a new strategy module in the package is picked up with nothing else to edit."""

import dataclasses
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from strategy_testutils import MODS, batch_of, cfg, make_rows, mlp_model

import arl_hf
from arl_hf import ARLConfig, ARLTrainer
from arl_hf.protocol import compare, table
from arl_hf.strategies import (
    BUILTIN_OPTIONS,
    INFRASTRUCTURE_MODULES,
    STRATEGIES,
    ModulationOptions,
    StepContext,
    Strategy,
    build_strategy,
    builtin_options,
    builtin_strategies,
    register_strategy,
    strategy_labels,
    strategy_prefixes,
)
from arl_hf.strategies.arl import ARLOptions
from arl_hf.strategies.options import StrategyOptions

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_builtin_list_is_every_strategy_module_of_the_package():
    package = os.path.join(REPO, "arl_hf", "strategies")
    modules = sorted(f[:-3] for f in os.listdir(package) if f.endswith(".py") and not f.startswith("_"))
    strategy_modules = [m for m in modules if m not in INFRASTRUCTURE_MODULES]
    owners = sorted({STRATEGIES[n].__module__.rsplit(".", 1)[1] for n in builtin_strategies()} - {"base"})
    assert owners == strategy_modules
    assert builtin_strategies()[:2] == ["none", "arl"]
    assert set(builtin_strategies()) == {"none", "arl", "agm", "dr", "fixed", "gblending", "mla", "mmpareto",
                                         "ogm_ge", "pmr"}


def test_labels_prefixes_compare_defaults_and_config_derive_from_the_registry():
    assert compare.ALL_STRATEGIES == builtin_strategies()
    assert all(table.label_of(n) == strategy_labels()[n] for n in builtin_strategies())
    assert table.label_of("ogm_ge") == "OGM-GE" and table.label_of("none") == "Concatenation"
    assert table.label_of("dr") == "D&R" and table.label_of("not-registered") == "not-registered"
    sys.path.insert(0, os.path.join(REPO, "docs"))
    try:
        import generate_options
    finally:
        sys.path.pop(0)
    assert generate_options.STRATEGY_PREFIXES == strategy_prefixes()
    assert strategy_prefixes()["ogm_"] == "ogm_ge" and len(strategy_prefixes()) == 9
    assert BUILTIN_OPTIONS == builtin_options() and BUILTIN_OPTIONS[0] is ModulationOptions
    fields = {f.name for f in dataclasses.fields(ARLConfig)}
    for name in builtin_strategies():
        options = STRATEGIES[name].options_class
        if options is not None:
            assert issubclass(ARLConfig, options)
            assert {f.name for f in dataclasses.fields(options)} <= fields
            assert all(f.name.startswith(STRATEGIES[name].option_prefix) for f in dataclasses.fields(options))


def test_a_strategy_registered_outside_the_package_is_not_built_in():
    @dataclasses.dataclass
    class OutsideOptions(StrategyOptions):
        outside_beta: float = 1.0

    @register_strategy("outside_test", options=OutsideOptions, label="Outside", prefix="outside_")
    class Outside(Strategy):
        pass

    try:
        assert Outside.builtin is False and Outside.label == "Outside"
        assert "outside_test" not in builtin_strategies() and OutsideOptions not in builtin_options()
        assert table.label_of("outside_test") == "Outside"
    finally:
        del STRATEGIES["outside_test"]


@pytest.mark.parametrize("kwargs, field", [
    (dict(label=""), "label"),
    (dict(prefix="bad"), "prefix"),
    (dict(options=ARLOptions, prefix="ogm_"), "arl_temperature"),
])
def test_register_strategy_refuses_bad_label_prefix_and_unprefixed_options(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}: "):
        register_strategy("never_registered", **kwargs)
    assert "never_registered" not in STRATEGIES


TOY_STRATEGY = textwrap.dedent('''
    """Toy: fused loss times toy_beta (a strategy module added to the package)."""
    from dataclasses import dataclass, field

    import torch.nn.functional as F

    from .base import Strategy, StrategyOutput, register_strategy
    from .options import StrategyOptions, need


    @dataclass
    class ToyOptions(StrategyOptions):
        """Options of the toy strategy."""

        toy_beta: float = field(default=1.0, metadata={"help": "Toy: weight of the fused loss (> 0)."})

        def check(self) -> None:
            need(self.toy_beta > 0, self, "toy_beta", "a number > 0")


    @register_strategy("toy", options=ToyOptions, label="Toy", prefix="toy_")
    class ToyStrategy(Strategy):
        def compute_loss(self, model, inputs, context):
            out = self.forward(model, inputs)
            loss = self.options.toy_beta * F.cross_entropy(out.logits.float(), inputs["labels"])
            return StrategyOutput(loss=loss, outputs=out, logs={"loss_fused": loss.detach()})
''')

TOY_CHECK = textwrap.dedent('''
    import dataclasses, sys
    import arl_hf
    assert arl_hf.__file__.startswith(sys.argv[1]), arl_hf.__file__
    from arl_hf import ARLConfig
    from arl_hf.protocol import compare, table
    from arl_hf.scripts.train import make_parser
    from arl_hf.strategies import build_strategy, strategy_prefixes
    assert "toy" in compare.ALL_STRATEGIES, compare.ALL_STRATEGIES
    assert table.label_of("toy") == "Toy"
    assert strategy_prefixes()["toy_"] == "toy"
    assert "toy_beta" in {f.name for f in dataclasses.fields(ARLConfig)}
    args = ARLConfig(output_dir=sys.argv[2], strategy="toy", toy_beta=2.5, report_to="none", use_cpu=True)
    assert build_strategy("toy", args, ["a", "b"]).options.toy_beta == 2.5
    try:
        ARLConfig(output_dir=sys.argv[2], toy_beta=-1.0, report_to="none", use_cpu=True)
    except ValueError as e:
        assert str(e).startswith("toy_beta: expected a number > 0"), e
    else:
        raise AssertionError("toy_beta=-1 accepted")
    parsed = make_parser().parse_args_into_dataclasses(
        ["--strategy", "toy", "--toy_beta", "3", "--output_dir", sys.argv[2], "--report_to", "none"])
    config = next(p for p in parsed if isinstance(p, ARLConfig))
    assert config.toy_beta == 3.0 and config.strategy == "toy"
    print("toy ok")
''')


def test_adding_a_builtin_strategy_is_its_file_alone(tmp_path):
    """A copy of the package with one more strategy module: flag, option check, table label, doc
    prefix and the compare default all follow, with no other file edited."""
    root = tmp_path / "src"
    shutil.copytree(os.path.join(REPO, "arl_hf"), root / "arl_hf", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "arl_hf" / "strategies" / "toy.py").write_text(TOY_STRATEGY)
    env = {**os.environ, "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", TOY_CHECK, str(root), str(tmp_path / "out")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "toy ok" in proc.stdout


# ---- options are checked once, where they are constructed -----------------------------------
def test_options_are_checked_once_and_never_per_step(tmp_path, monkeypatch):
    calls = []
    original = ARLOptions.check

    def counting(self):
        calls.append(type(self).__name__)
        return original(self)

    monkeypatch.setattr(ARLOptions, "check", counting)
    args = cfg(tmp_path, strategy="arl", arl_temperature=3.0)
    assert len(calls) == 1  # ARLConfig's construction
    strategy = build_strategy("arl", args, MODS)
    assert strategy.options.arl_temperature == 3.0 and type(strategy.options) is ARLOptions
    assert len(calls) == 1  # the strategy copies the checked values

    import arl_hf.strategies.arl as arl_module

    def per_step_check(*a, **k):
        raise AssertionError("coefficients_from_statistics (with its argument checks) called per step")

    monkeypatch.setattr(arl_module, "coefficients_from_statistics", per_step_check)
    model = mlp_model()
    strategy.setup(None, model)
    out = strategy.compute_loss(model, batch_of(make_rows(8)), StepContext(training=True))
    assert torch.isfinite(out.loss) and out.logs["a_audio"] + out.logs["a_visual"] == pytest.approx(1.0)
    assert len(calls) == 1


def test_options_from_another_source_are_checked_at_construction():
    class Plain:
        arl_temperature = -2.0

    with pytest.raises(ValueError, match="^arl_temperature: expected a finite number > 0"):
        build_strategy("arl", Plain(), MODS)


def test_a_value_written_into_a_built_config_is_checked_where_the_strategy_reads_it(tmp_path, monkeypatch):
    args = cfg(tmp_path)
    assert args.options_checked()
    args.arl_temperature = float("nan")  # as a hyper-parameter search trial writes its values
    assert not args.options_checked()
    with pytest.raises(ValueError, match="^arl_temperature: expected a finite number > 0"):
        build_strategy("arl", args, MODS)
    args.arl_temperature = 2.0
    calls = []
    original = ARLOptions.check
    monkeypatch.setattr(ARLOptions, "check", lambda self: calls.append(1) or original(self))
    assert build_strategy("arl", args, MODS).options.arl_temperature == 2.0
    assert calls == [1]  # checked once, as the strategy read it
    args.ogm_start_epoch, args.ogm_end_epoch = 60, 80  # one at a time: only the final pair is checked
    assert build_strategy("ogm_ge", args, MODS).options.ogm_end_epoch == 80


def test_strategies_keep_options_and_seed_not_the_arguments(tmp_path):
    args = cfg(tmp_path, strategy="gblending", seed=7, gradient_modulation="parameters")
    for name in builtin_strategies():
        s = build_strategy(name, args, MODS)
        assert not hasattr(s, "args")
        assert s.seed == 7 and s.modulation.gradient_modulation == "parameters"
    arl = build_strategy("arl", args, MODS)
    arl.setup(None, mlp_model())
    assert arl.modulator.mode == "parameters"


def test_a_strategy_attribute_named_training_step_is_not_called(tmp_path):
    from arl_hf.strategies import NoStrategy

    class Probe(NoStrategy):
        def training_step(self, *a, **k):  # a method of the strategy, no hook of the trainer
            raise AssertionError("the trainer handed the whole trainer to the strategy")

    rows = make_rows(16)
    before = [p.detach().clone() for p in mlp_model().parameters()]
    t = ARLTrainer(model=mlp_model(), args=cfg(tmp_path), strategy=Probe(cfg(tmp_path), MODS), train_dataset=rows)
    t.train()
    after = list(t.model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before))


def test_strategy_loggers_are_in_the_transformers_tree():
    import arl_hf.fsdp
    import arl_hf.strategies.base

    assert arl_hf.strategies.base.logger.name == "transformers.arl_hf.strategies.base"
    assert arl_hf.fsdp.logger.name == "transformers.arl_hf.fsdp"


def test_no_library_module_makes_a_logger_outside_the_tree():
    import ast

    root = os.path.dirname(arl_hf.__file__)
    offenders = []
    for folder, _, files in os.walk(root):
        for f in files:
            path = os.path.join(folder, f)
            rel = os.path.relpath(path, root)
            if not f.endswith(".py") or rel == "log.py":
                continue
            for node in ast.walk(ast.parse(open(path).read())):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr in ("get_logger", "getLogger")
                        and not (isinstance(node.func.value, ast.Name) and node.func.value.id == "log")):
                    offenders.append(f"{rel}:{node.lineno}")
    assert offenders == []
