"""DDP's ``find_unused_parameters``: on only for the strategies whose loss leaves a model parameter
without a gradient (checked here by running each strategy's step and looking at the gradients)."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent.parent / "strategies"))

from strategy_testutils import batch_of, cfg, make_rows, mlp_model

from arl_hf import ARLTrainer
from arl_hf.strategies import STRATEGIES


def _find_unused(trainer):
    handler = trainer.accelerator.ddp_handler
    return None if handler is None else handler.find_unused_parameters


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_find_unused_parameters_only_where_the_step_leaves_parameters_without_gradient(name, tmp_path):
    rows = make_rows(16, seed=3)
    extra = {"gblending_interval_epochs": 1, "pmr_interval_epochs": 1}
    trainer = ARLTrainer(model=mlp_model(seed=0), args=cfg(tmp_path, strategy=name, **extra),
                         train_dataset=rows, eval_dataset=make_rows(8, seed=4))
    model = trainer.model
    model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train otherwise
    trainer.strategy.on_epoch_begin(trainer, model, trainer._context(training=True))
    trainer.training_step(model, batch_of(rows[:8]))
    unused = sorted(n for n, p in model.named_parameters() if p.requires_grad and p.grad is None)
    flag = STRATEGIES[name].ddp_find_unused_parameters
    assert flag == bool(unused), (name, unused)
    assert _find_unused(trainer) is flag
    if name == "mla":
        assert unused == ["fusion.fc.bias", "fusion.fc.weight"]  # MLA predicts through its own head


def test_explicit_ddp_find_unused_parameters_wins(tmp_path):
    on = ARLTrainer(model=mlp_model(), args=cfg(tmp_path, ddp_find_unused_parameters=True))
    assert _find_unused(on) is True
    off = ARLTrainer(model=mlp_model(), args=cfg(tmp_path, strategy="mla", ddp_find_unused_parameters=False))
    assert _find_unused(off) is False


def test_strategy_instance_decides(tmp_path):
    from arl_hf.strategies.mla import MLA

    args = cfg(tmp_path)
    trainer = ARLTrainer(model=mlp_model(), args=args, strategy=MLA(args, ["audio", "visual"]))
    assert _find_unused(trainer) is True
    assert torch.is_tensor(next(iter(trainer.strategy.head.parameters())))
