"""ARLConfig's run options implemented by ARLTrainer: the per-epoch learning-rate decay
(lr_decay_epochs / lr_decay_factor, MultiStepLR as in the authors' code) and weight decay on
every parameter (decay_all_parameters)."""

from __future__ import annotations

import pytest
import torch
from transformers import TrainerCallback

from arl_hf import ARLConfig, ARLTrainer, MultimodalConfig, MultimodalModel


def _tiny_model():
    torch.manual_seed(0)
    return MultimodalModel(MultimodalConfig(modalities={
        "a": {"encoder": "mlp", "input_dim": 4, "hidden_dims": [8]},
        "b": {"encoder": "mlp", "input_dim": 4, "hidden_dims": [8]}}, num_labels=3))


def _rows(n):
    g = torch.Generator().manual_seed(0)
    return [{"a": torch.randn(4, generator=g), "b": torch.randn(4, generator=g), "labels": i % 3} for i in range(n)]


def _args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), use_cpu=True, report_to="none", save_strategy="no", disable_tqdm=True,
                dataloader_num_workers=0, strategy="none")
    return ARLConfig(**{**base, **kw})


class _LearningRates(TrainerCallback):
    """The learning rate each optimizer step used (read before the scheduler steps)."""

    def __init__(self):
        self.rates = []

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        self.rates.append(optimizer.param_groups[0]["lr"])


def test_lr_decay_epochs_multiplies_the_rate_at_each_epoch(tmp_path):
    # 8 examples, batches of 4: 2 optimizer steps per epoch, 3 epochs; x0.1 from epoch 2 (0-based) on
    args = _args(tmp_path, lr_decay_epochs=[2], lr_decay_factor=0.1, learning_rate=0.1, num_train_epochs=3,
                 per_device_train_batch_size=4, lr_scheduler_type="cosine")
    rates = _LearningRates()
    trainer = ARLTrainer(model=_tiny_model(), args=args, train_dataset=_rows(8), callbacks=[rates])
    assert trainer.steps_per_epoch() == 2
    trainer.train()
    assert trainer.state.global_step == 6
    assert rates.rates == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.01, 0.01], rel=1e-12)
    assert isinstance(trainer.lr_scheduler, torch.optim.lr_scheduler.LambdaLR)


def test_two_milestones_and_gradient_accumulation(tmp_path):
    # 10 examples, batches of 2 -> 5 batches, 2 per step -> 3 steps per epoch (Trainer's count)
    args = _args(tmp_path, lr_decay_epochs=[2, 1], lr_decay_factor=0.5, learning_rate=0.2, num_train_epochs=3,
                 per_device_train_batch_size=2, gradient_accumulation_steps=2)
    rates = _LearningRates()
    trainer = ARLTrainer(model=_tiny_model(), args=args, train_dataset=_rows(10), callbacks=[rates])
    assert trainer.steps_per_epoch() == 3
    trainer.train()
    assert trainer.state.global_step == 9
    assert rates.rates == pytest.approx([0.2] * 3 + [0.1] * 3 + [0.05] * 3, rel=1e-12)


def test_without_lr_decay_epochs_the_trainer_schedule_applies(tmp_path):
    args = _args(tmp_path, learning_rate=0.1, max_steps=4, per_device_train_batch_size=4, lr_scheduler_type="linear")
    rates = _LearningRates()
    trainer = ARLTrainer(model=_tiny_model(), args=args, train_dataset=_rows(8), callbacks=[rates])
    trainer.train()
    assert rates.rates == pytest.approx([0.1, 0.075, 0.05, 0.025])


@pytest.mark.parametrize("decay_all", [True, False])
def test_decay_all_parameters_puts_biases_in_the_decay_group(tmp_path, decay_all):
    model = _tiny_model()
    trainer = ARLTrainer(model=model, args=_args(tmp_path, weight_decay=0.01, decay_all_parameters=decay_all))
    optimizer = trainer.create_optimizer()
    group_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    names = dict(model.named_parameters())
    biases = [n for n in names if n.endswith("bias")]
    weights = [n for n in names if n.endswith("weight")]
    assert biases and weights
    assert {group_of[id(names[n])] for n in biases} == {0.01 if decay_all else 0.0}
    assert {group_of[id(names[n])] for n in weights} == {0.01}
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(names)


@pytest.mark.parametrize("kwargs,needle", [
    ({"lr_decay_epochs": [0]}, "lr_decay_epochs: expected epochs"),
    ({"lr_decay_epochs": [2, 1.5]}, "lr_decay_epochs: expected epochs"),
    ({"lr_decay_factor": 0.0}, "lr_decay_factor: expected a finite number > 0"),
    ({"lr_decay_factor": float("nan")}, "lr_decay_factor: expected a finite number > 0"),
])
def test_invalid_lr_decay_options_name_the_field(tmp_path, kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        _args(tmp_path, **kwargs)


def test_flags_and_presets_reach_arl_config():
    from arl_hf.scripts.train import parse_args

    args, *_ = parse_args(["--preset", "cremad_official"])
    assert isinstance(args, ARLConfig)
    assert (args.lr_decay_epochs, args.lr_decay_factor, args.decay_all_parameters) == ([70], 0.1, True)
    args, *_ = parse_args(["--preset", "none", "--dataset", "x", "--lr_decay_epochs", "3", "5",
                           "--lr_decay_factor", "0.5", "--decay_all_parameters", "true"])
    assert (args.lr_decay_epochs, args.lr_decay_factor, args.decay_all_parameters) == ([3, 5], 0.5, True)
