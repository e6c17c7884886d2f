"""Numerics of the training step: non-finite options refused, a run that turns NaN stops naming the
step and the tensor, no metrics of non-finite logits, the input bound, and gradient accumulation
with a short last window equal to the unaccumulated batch."""

import dataclasses
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from strategy_testutils import mlp_model
from transformers import TrainerCallback

from arl_hf import ARLConfig, ARLTrainer
from arl_hf.metrics import classification_metrics, multimodal_metrics
from arl_hf.numerics import FLOAT32_MAX, StepGuard, check_finite_fields
from arl_hf.strategies.options import StrategyOptions
from arl_hf.validation import MAX_INPUT_MAGNITUDE, validate_batch

MODS = ("audio", "visual")
NAN, INF = float("nan"), float("inf")


def make_rows(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    a = torch.randn(n, 6, generator=g) + y[:, None] * 0.8
    v = torch.randn(n, 4, generator=g) * 2 + y[:, None] * 0.3
    return [{"audio": a[i], "visual": v[i], "labels": y[i]} for i in range(n)]


def cfg(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), per_device_train_batch_size=4, per_device_eval_batch_size=8, optim="sgd",
                learning_rate=0.1, lr_scheduler_type="constant", max_steps=4, train_sampling_strategy="sequential",
                report_to="none", use_cpu=True, save_strategy="no", logging_steps=1, weight_decay=0.0,
                disable_tqdm=True, seed=0)
    base.update(kw)
    return ARLConfig(**base)


def float_fields():
    """Every ARLConfig field whose default is a float (TrainingArguments' and every strategy's)."""
    defaults = ARLConfig(output_dir="unused_dir")
    return [f.name for f in dataclasses.fields(ARLConfig) if isinstance(getattr(defaults, f.name), float)]


# ------------------------------------------------------------------ A1: options
@pytest.mark.parametrize("name", float_fields())
@pytest.mark.parametrize("value", [NAN, INF, -INF, 1e39])
def test_every_float_option_refuses_non_finite_values(name, value):
    # the generic check, or the field's own where it has one (run first: its message says more)
    with pytest.raises(ValueError, match=rf"^{name}: expected .*, got {re.escape(repr(value))}$"):
        ARLConfig(output_dir="unused_dir", **{name: value})


def test_float_options_list_and_the_examples_of_the_issue():
    names = float_fields()
    for expected in ("learning_rate", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm",
                     "arl_gamma", "arl_temperature", "ogm_alpha", "lr_decay_factor"):
        assert expected in names
    # a float given to a field whose default is an int (warm-up steps or ratio) is checked too
    with pytest.raises(ValueError, match="warmup_steps: expected a finite number"):
        ARLConfig(output_dir="unused_dir", warmup_steps=NAN)
    with pytest.raises(ValueError, match=r"fixed_multipliers: expected .*finite.*, got \[1.0, nan\]"):
        ARLConfig(output_dir="unused_dir", strategy="fixed", fixed_multipliers=[1.0, NAN])
    with pytest.raises(ValueError, match=r"strategy_options\['mine_beta'\]: expected a finite number"):
        ARLConfig(output_dir="unused_dir", strategy_options={"mine_beta": INF})
    with pytest.raises(ValueError, match=r"lr_scheduler_kwargs\['min_lr'\]"):
        ARLConfig(output_dir="unused_dir", lr_scheduler_kwargs={"min_lr": NAN})
    ARLConfig(output_dir="unused_dir", learning_rate=FLOAT32_MAX, arl_gamma=1e38)  # finite in float32: accepted


def test_options_of_a_strategy_registered_outside_the_package_are_checked():
    @dataclasses.dataclass
    class MineOptions(StrategyOptions):
        mine_beta: float = 1.0
        mine_weights: tuple = (1.0, 2.0)

    assert MineOptions(mine_beta=0.5).mine_beta == 0.5
    with pytest.raises(ValueError, match="mine_beta: expected a finite number"):
        MineOptions(mine_beta=NAN)
    with pytest.raises(ValueError, match=r"mine_weights\[0\]: expected a finite number"):
        MineOptions(mine_weights=(INF, 1.0))
    check_finite_fields(MineOptions())


# ------------------------------------------------------------------ A2: the step guard
def _params_finite(model):
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


@pytest.mark.parametrize("validate_inputs", [True, False])
def test_diverging_training_stops_at_the_step_whose_loss_is_not_finite(validate_inputs, tmp_path):
    # a finite learning rate of 1e30: step 1 is finite, its update makes step 2's loss infinite
    model = mlp_model()
    trainer = ARLTrainer(model=model, args=cfg(tmp_path, learning_rate=1e30, logging_steps=2,
                                               validate_inputs=validate_inputs), train_dataset=make_rows(16))
    with pytest.raises(ValueError, match=r"^training step 2: the loss is NaN or infinite"):
        trainer.train()
    assert trainer.state.global_step <= 3


def test_overflowing_loss_weight_stops_at_step_one_naming_the_gradient_norm(tmp_path):
    # arl_gamma=1e38 is finite in float32; its product with the unimodal losses overflows the gradients
    trainer = ARLTrainer(model=mlp_model(), args=cfg(tmp_path, arl_gamma=1e38), train_dataset=make_rows(16))
    with pytest.raises(ValueError, match=r"^training step 1: the (loss|gradient norm) is NaN or infinite"):
        trainer.train()


class _PoisonGradient(TrainerCallback):
    """A NaN gradient for one parameter at one step (the loss stays finite)."""

    def __init__(self, param, step):
        self.step = step
        self.trainer = None
        param.register_hook(self.hook)

    def hook(self, grad):
        if self.trainer.state.global_step + 1 == self.step:
            return grad * NAN
        return grad


@pytest.mark.parametrize("validate_inputs,logging_steps", [(True, 4), (False, 3), (False, 4)])
def test_non_finite_gradient_names_the_step_and_the_parameter(validate_inputs, logging_steps, tmp_path):
    model = mlp_model()
    name, param = [(n, p) for n, p in model.named_parameters() if n.startswith("fusion")][0]
    assert name != next(iter(dict(model.named_parameters())))  # not the first parameter of the model
    poison = _PoisonGradient(param, step=3)
    args = cfg(tmp_path, strategy="none", max_steps=5, logging_steps=logging_steps, validate_inputs=validate_inputs)
    trainer = ARLTrainer(model=model, args=args, train_dataset=make_rows(20))
    poison.trainer = trainer
    if validate_inputs or logging_steps == 3:  # read right after step 3: the parameter it made NaN
        match = (r"^training step 3: the gradient norm is NaN or infinite; "
                 rf"the first parameter it made non-finite: {name};")
    else:  # read at the logging step 4, after step 4 spread the NaN
        match = r"^training step 3: the gradient norm is NaN or infinite; the first non-finite parameter at step 4: "
    with pytest.raises(ValueError, match=match):
        trainer.train()


def test_opt_out_trains_on_as_before(tmp_path):
    model = mlp_model()
    trainer = ARLTrainer(model=model, args=cfg(tmp_path, learning_rate=1e30, check_finite=False),
                         train_dataset=make_rows(16))
    trainer.train()
    assert trainer.state.global_step == 4 and not _params_finite(model)


class _PoisonParameterAtEnd(TrainerCallback):
    def __init__(self, param, step):
        self.param, self.step = param, step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            with torch.no_grad():
                self.param[0, 0] = NAN


def test_parameters_are_checked_at_the_end_of_training_at_saves_and_evaluations(tmp_path):
    model = mlp_model()
    name, param = next((n, p) for n, p in model.named_parameters() if p.dim() == 2)
    rows, val = make_rows(16), make_rows(8, seed=3)
    # corrupted after the last step's update: no later step sees it, the end-of-training check does
    trainer = ARLTrainer(model=model, args=cfg(tmp_path / "end", strategy="none", max_steps=4), train_dataset=rows,
                         callbacks=[_PoisonParameterAtEnd(param, 4)])
    with pytest.raises(ValueError, match=rf"^end of training at step 4: parameter {name} holds NaN"):
        trainer.train()
    with pytest.raises(ValueError, match=rf"^save at step 4: parameter {name} holds NaN"):
        trainer.save_model(str(tmp_path / "saved"))
    assert not (tmp_path / "saved" / "model.safetensors").exists()
    trainer.eval_dataset = val
    with pytest.raises(ValueError, match=rf"^evaluation at step 4: parameter {name} holds NaN"):
        trainer.evaluate()
    # a periodic save during training is refused the same way, before anything is written
    model2 = mlp_model()
    name2, param2 = next((n, p) for n, p in model2.named_parameters() if p.dim() == 2)
    t2 = ARLTrainer(model=model2, args=cfg(tmp_path / "ckpt", strategy="none", max_steps=4, save_strategy="steps",
                                           save_steps=2), train_dataset=rows,
                    callbacks=[_PoisonParameterAtEnd(param2, 2)])
    with pytest.raises(ValueError, match=rf"^save at step 2: parameter {name2} holds NaN"):
        t2.train()
    assert not (tmp_path / "ckpt" / "checkpoint-2" / "model.safetensors").exists()


def _count_host_reads(monkeypatch):
    counter = {"n": 0}
    for attr in ("cpu", "item", "tolist", "__bool__", "__float__", "__int__"):
        orig = getattr(torch.Tensor, attr)

        def wrapped(self, *a, _orig=orig, **k):
            counter["n"] += 1
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, attr, wrapped)
    return counter


@pytest.mark.parametrize("validate_inputs", [True, False])
def test_the_step_guard_adds_no_host_read_per_step(validate_inputs, tmp_path, monkeypatch):
    """Host reads (tensor to Python) of a training: with the guard on, the extra ones are the
    fixed end-of-training checks, not one per step."""
    counter = _count_host_reads(monkeypatch)
    reads = {}
    for check in (True, False):
        for steps in (3, 6):
            trainer = ARLTrainer(model=mlp_model(), args=cfg(tmp_path / f"{check}{steps}", max_steps=steps,
                                                             logging_steps=100, check_finite=check,
                                                             validate_inputs=validate_inputs),
                                 train_dataset=make_rows(24))
            counter["n"] = 0
            trainer.train()
            reads[check, steps] = counter["n"]
    extra_3, extra_6 = reads[True, 3] - reads[False, 3], reads[True, 6] - reads[False, 6]
    assert extra_3 == extra_6 and 0 < extra_3 <= 8, reads


def test_step_guard_records_the_first_non_finite_step_on_the_device():
    g = StepGuard()
    assert g.pending() is None and g.read() is None
    g.record("loss", torch.tensor(1.0), 1)
    g.record("gradient norm", torch.tensor(2.0), 1)
    assert g.read() is None
    g.record("gradient norm", torch.tensor(INF), 4)
    g.record("loss", torch.tensor(NAN), 5)
    g.record("gradient norm", torch.tensor(NAN), 6)
    assert g.pending().dtype == torch.int64
    assert g.read() == ("gradient norm", 4)
    g.record("loss", torch.tensor(NAN), 4)
    assert g.read() == ("loss", 4)  # the loss first on a tie
    g.reset()
    assert g.read() is None


# ------------------------------------------------------------------ A3: metrics of non-finite logits
def test_metrics_refuse_non_finite_logits():
    logits = np.zeros((4, 3))
    logits[2, 1] = np.nan
    with pytest.raises(ValueError, match="logits: 1 of 4 examples have NaN or infinite logits"):
        classification_metrics(logits, np.zeros(4, dtype=int))
    stacked = np.zeros((4, 3, 3))
    stacked[0, 2, 0] = np.inf
    with pytest.raises(ValueError, match=r"predictions \('visual' head\): 1 of 4 examples"):
        multimodal_metrics(stacked, np.zeros(4, dtype=int), MODS)
    assert multimodal_metrics(np.zeros((4, 3, 3)), np.zeros(4, dtype=int), MODS)["accuracy"] == 1.0


@pytest.mark.parametrize("custom", [False, True])
def test_evaluation_refuses_metrics_of_non_finite_logits(custom, tmp_path):
    # finite weights whose logits overflow: the fused head's weights at 1e38
    model = mlp_model()
    with torch.no_grad():
        for p in model.fusion.parameters():
            if p.dim() == 2:
                p.fill_(1e38)
    metrics = (lambda p: {"n": float(len(p.label_ids))}) if custom else None
    trainer = ARLTrainer(model=model, args=cfg(tmp_path, strategy="none"), eval_dataset=make_rows(8),
                         compute_metrics=metrics)
    with pytest.raises(ValueError, match="fused head.*NaN or infinite logits"):
        trainer.evaluate()


# ------------------------------------------------------------------ A4: the input bound
def _batch(audio):
    return {"audio": audio, "visual": torch.zeros(2, 4), "labels": torch.tensor([0, 1])}


def test_input_check_refuses_values_whose_square_overflows_float32():
    assert MAX_INPUT_MAGNITUDE ** 2 < FLOAT32_MAX / 100
    validate_batch(_batch(torch.full((2, 6), MAX_INPUT_MAGNITUDE)), MODS, 3)
    validate_batch(_batch(torch.full((2, 6), -MAX_INPUT_MAGNITUDE)), MODS, 3)
    for bad in (3e38, -2e18, 1e30):
        x = torch.zeros(2, 6)
        x[1, 3] = bad
        with pytest.raises(ValueError,
                           match=r"^audio: input values reach .* in absolute value; expected \|x\| <= 1e\+18"):
            validate_batch(_batch(x), MODS, 3)
    # non-finite values keep their message, also in float16 (where the bound itself is infinite)
    for x in (torch.full((2, 6), NAN), torch.full((2, 6), INF, dtype=torch.float16)):
        with pytest.raises(ValueError, match="audio: input contains NaN or infinite values"):
            validate_batch(_batch(x), MODS, 3)
    # the values read with the check are handed back
    assert validate_batch(_batch(torch.zeros(2, 6)), MODS, 3, pending=torch.tensor([7, 2 ** 62])) == [7, 2 ** 62]


def test_training_on_inputs_of_3e38_is_refused_before_any_step(tmp_path):
    rows = make_rows(16)
    rows[5]["audio"] = torch.full((6,), 3e38)
    model = mlp_model()
    trainer = ARLTrainer(model=model, args=cfg(tmp_path), train_dataset=rows)
    with pytest.raises(ValueError, match="audio: input values reach 3e\\+38"):
        trainer.train()
    assert trainer.state.global_step == 1 and _params_finite(model)  # the batch of row 5 never ran


# ------------------------------------------------------------------ B: gradient accumulation, short last window
def _final_params(tmp_path, rows, strategy, batch, accumulation, **kw):
    model = mlp_model()
    args = cfg(tmp_path, strategy=strategy, per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation,
               max_steps=-1, num_train_epochs=2, **kw)
    ARLTrainer(model=model, args=args, train_dataset=rows).train()
    return {n: p.detach().clone() for n, p in model.named_parameters()}


GA_STRATEGIES = {
    "none": {},
    "fixed": {"fixed_multipliers": [2.0, 0.5]},
    "arl": {"arl_asymmetric": False},
}


@pytest.mark.parametrize("strategy", sorted(GA_STRATEGIES))
@pytest.mark.parametrize("remainder", [1, 2, 3, 5])
def test_accumulation_with_a_short_last_window_equals_the_whole_batch(strategy, remainder, tmp_path):
    """Batch 2 x 3 accumulation steps against batch 6: the last window holds 1, 2, 3 or 5 examples
    (1, 1, 2 or 3 micro-batches)."""
    rows = make_rows(12 + remainder)
    kw = GA_STRATEGIES[strategy]
    accumulated = _final_params(tmp_path / "ga", rows, strategy, 2, 3, **kw)
    whole = _final_params(tmp_path / "whole", rows, strategy, 6, 1, **kw)
    for name, p in whole.items():
        torch.testing.assert_close(accumulated[name], p, rtol=1e-6, atol=1e-7, msg=name)


def test_window_loss_is_the_examples_share_and_a_full_window_divides_as_before(tmp_path):
    trainer = ARLTrainer(model=mlp_model(), args=cfg(tmp_path, strategy="none"), train_dataset=make_rows(8))
    loss = torch.tensor(1.2345678, dtype=torch.float32)
    for steps in (1, 2, 3):
        trainer.current_gradient_accumulation_steps = steps
        assert torch.equal(trainer._window_loss(loss, 4, 4 * steps), loss / steps)  # bit for bit as Trainer
    trainer.current_gradient_accumulation_steps = 2
    torch.testing.assert_close(trainer._window_loss(loss, 4, 6), loss * 4 / 6)
    torch.testing.assert_close(trainer._window_loss(loss, 2, 6), loss * 2 / 6)
    assert trainer._get_num_items_in_batch([{"labels": torch.zeros(4)}, {"label": torch.zeros(2)}], "cpu") == 6


def test_one_step_without_accumulation_is_bit_identical_to_a_plain_loop(tmp_path):
    """The loss of a full batch without accumulation is the strategy's mean, unchanged: the step
    equals plain PyTorch (fused cross-entropy, torch.optim.SGD) bit for bit."""
    rows = make_rows(8)
    model, ref = mlp_model(), mlp_model()
    args = cfg(tmp_path, strategy="none", per_device_train_batch_size=8, max_steps=1)
    trainer = ARLTrainer(model=model, args=args, train_dataset=rows)
    trainer.train()
    batch = {k: torch.stack([r[k] for r in rows]) for k in ("audio", "visual", "labels")}
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    loss = F.cross_entropy(ref(audio=batch["audio"], visual=batch["visual"]).logits.float(), batch["labels"])
    loss.backward()
    opt.step()
    for (name, a), b in zip(model.named_parameters(), ref.parameters()):
        assert torch.equal(a, b), name
    assert trainer.state.log_history[0]["loss"] == float(loss.detach())
