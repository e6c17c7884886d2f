"""The structure of a training batch is checked once per step (by the model's ``forward``, which
knows its encoders' shapes), its values once (by the trainer, before the step)."""

import copy

import pytest
import torch
from test_trainer import cfg, make_rows, mlp_model

import arl_hf.modeling.model as model_module
import arl_hf.validation as validation
from arl_hf import ARLTrainer


def _count_structure_checks(monkeypatch):
    calls = []
    original = validation.check_inputs

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(validation, "check_inputs", counting)
    monkeypatch.setattr(model_module, "check_inputs", counting)
    return calls


@pytest.mark.parametrize("validate_inputs", [True, False])
def test_batch_structure_is_checked_once_per_step(tmp_path, monkeypatch, validate_inputs):
    calls = _count_structure_checks(monkeypatch)
    trainer = ARLTrainer(model=mlp_model(), args=cfg(tmp_path, max_steps=3, validate_inputs=validate_inputs),
                         train_dataset=make_rows(24))
    calls.clear()
    trainer.train()
    assert trainer.state.global_step == 3
    assert len(calls) == 3


@pytest.mark.parametrize("corrupt,match", [
    (lambda r: r.__setitem__("visual", torch.ones(4, dtype=torch.long)), "visual: expected a floating-point tensor"),
    (lambda r: r.__setitem__("audio", torch.ones(5)), "audio"),
    (lambda r: r.pop("visual"), "visual: missing modality input"),
])
@pytest.mark.parametrize("validate_inputs", [True, False])
def test_a_malformed_batch_is_a_clear_error_before_any_step(tmp_path, corrupt, match, validate_inputs):
    rows = make_rows(8)
    for r in rows:
        corrupt(r)
    model = mlp_model()
    before = copy.deepcopy(model.state_dict())
    trainer = ARLTrainer(model=model, args=cfg(tmp_path, validate_inputs=validate_inputs), train_dataset=rows)
    with pytest.raises(ValueError, match=match):
        trainer.train()
    assert trainer.state.global_step == 0
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_values_are_still_checked_with_the_structure_left_to_the_model(tmp_path):
    rows = make_rows(8)
    rows[5]["audio"] = torch.full((6,), float("nan"))
    trainer = ARLTrainer(model=mlp_model(), args=cfg(tmp_path), train_dataset=rows)
    with pytest.raises(ValueError, match="audio: input contains NaN"):
        trainer.train()
    assert trainer.state.global_step == 0
