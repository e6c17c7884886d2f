"""Predictions shaped as for any transformers classifier: ``compute_metrics`` and ``predict()`` get the
fused logits ``(N, C)``; the per-modality logits and metrics stay reachable; ``loss_fused`` is logged
in training for every strategy and ``eval_loss`` is the fused cross-entropy."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent.parent / "strategies"))

from strategy_testutils import MODS, cfg, make_rows, mlp_model  # noqa: E402

from arl_hf import ARLTrainer  # noqa: E402
from arl_hf.metrics import classification_metrics, make_compute_metrics, multimodal_metrics  # noqa: E402
from arl_hf.strategies import STRATEGIES, StrategyOutput, builtin_strategies  # noqa: E402
from arl_hf.strategies.base import Strategy  # noqa: E402

ROWS, VAL = make_rows(24), make_rows(20, seed=7)
LABELS = np.array([int(r["labels"]) for r in VAL])
PERIODIC = dict(gblending_interval_epochs=1, dr_interval_epochs=1, pmr_interval_epochs=1)


def _model_logits(model, rows):
    """Fused and per-modality logits of the model itself, in eval mode."""
    model.eval()
    with torch.no_grad():
        out = model(audio=torch.stack([r["audio"] for r in rows]), visual=torch.stack([r["visual"] for r in rows]),
                    return_unimodal_logits=True)
    return out.logits.numpy(), {m: out.unimodal_logits[m].numpy() for m in MODS}


def test_compute_metrics_gets_fused_logits_like_any_transformers_classifier(tmp_path):
    seen = {}

    def standard(p):  # the usual transformers recipe
        seen["shape"] = p.predictions.shape
        return {"acc": float((p.predictions.argmax(-1) == p.label_ids).mean())}

    trainer = ARLTrainer(model=mlp_model(), args=cfg(tmp_path, strategy="none"), eval_dataset=VAL,
                         compute_metrics=standard)
    metrics = trainer.evaluate()
    fused, per = _model_logits(trainer.model, VAL)
    assert seen["shape"] == (20, 3)
    assert metrics["eval_acc"] == pytest.approx(float((fused.argmax(-1) == LABELS).mean()))
    # the trainer adds the per-modality metrics itself, beside the user's
    for m in MODS:
        expect = classification_metrics(per[m], LABELS)
        assert metrics[f"eval_accuracy_{m}"] == pytest.approx(expect["accuracy"])
        assert metrics[f"eval_macro_f1_{m}"] == pytest.approx(expect["macro_f1"])
    assert "eval_accuracy" not in metrics  # the fused metrics are the user's own


def test_default_metrics_equal_the_stacked_metrics_of_before(tmp_path):
    trainer = ARLTrainer(model=mlp_model(), args=cfg(tmp_path, strategy="none"), eval_dataset=VAL)
    metrics = trainer.evaluate()
    fused, per = _model_logits(trainer.model, VAL)
    stacked = np.stack([fused] + [per[m] for m in MODS], axis=1)
    before = multimodal_metrics(stacked, LABELS, MODS)
    got = {k[len("eval_"):]: v for k, v in metrics.items() if k[len("eval_"):] in before}
    assert list(got) == list(before) and got == before  # same names, same order, same values
    assert metrics["eval_loss"] == pytest.approx(float(F.cross_entropy(torch.tensor(fused), torch.tensor(LABELS))),
                                                 rel=1e-5)


def test_predict_returns_fused_logits_and_per_modality_on_request(tmp_path):
    trainer = ARLTrainer(model=mlp_model(), args=cfg(tmp_path, strategy="none"), eval_dataset=VAL)
    fused, per = _model_logits(trainer.model, VAL)
    out = trainer.predict(VAL)
    assert out.predictions.shape == (20, 3)
    np.testing.assert_allclose(out.predictions, fused, rtol=1e-5, atol=1e-6)
    assert list(trainer.last_modality_logits) == list(MODS)
    for m in MODS:
        np.testing.assert_allclose(trainer.last_modality_logits[m], per[m], rtol=1e-5, atol=1e-6)
    both = trainer.predict(VAL, return_modality_logits=True)
    assert isinstance(both.predictions, tuple) and both.predictions[1].shape == (20, 2, 3)
    np.testing.assert_allclose(both.predictions[0], fused, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(both.predictions[1][:, 1], per["visual"], rtol=1e-5, atol=1e-6)
    expect = classification_metrics(per["visual"], LABELS)["accuracy"]
    assert both.metrics["test_accuracy_visual"] == pytest.approx(expect)
    # make_compute_metrics reads the stacked form of those outputs, and fused logits alone
    stacked = np.concatenate([both.predictions[0][:, None], both.predictions[1]], axis=1)
    from transformers import EvalPrediction

    full = make_compute_metrics(MODS)(EvalPrediction(predictions=stacked, label_ids=LABELS))
    assert full["accuracy_visual"] == both.metrics["test_accuracy_visual"]
    assert make_compute_metrics(MODS)(EvalPrediction(predictions=fused, label_ids=LABELS)) == \
        classification_metrics(fused, LABELS)


def test_batches_kept_apart_give_fused_logits_per_batch(tmp_path):
    seen = {}

    def metric(p):
        seen["shapes"] = [a.shape for a in p.predictions]
        return {"n": float(sum(len(a) for a in p.predictions))}

    trainer = ARLTrainer(model=mlp_model(), args=cfg(tmp_path, strategy="none", eval_do_concat_batches=False),
                         eval_dataset=VAL, compute_metrics=metric)
    metrics = trainer.evaluate()
    _, per = _model_logits(trainer.model, VAL)
    assert seen["shapes"] == [(16, 3), (4, 3)] and metrics["eval_n"] == 20.0
    assert metrics["eval_accuracy_visual"] == pytest.approx(classification_metrics(per["visual"], LABELS)["accuracy"])
    np.testing.assert_allclose(trainer.last_modality_logits["audio"], per["audio"], rtol=1e-5, atol=1e-6)


def test_preprocess_logits_for_metrics_sees_fused_logits(tmp_path):
    shapes = []

    def to_classes(logits, labels):
        shapes.append(tuple(logits.shape))
        return logits.argmax(-1)

    def metric(p):
        return {"acc": float((p.predictions == p.label_ids).mean())}

    trainer = ARLTrainer(model=mlp_model(), args=cfg(tmp_path, strategy="none"), eval_dataset=VAL,
                         compute_metrics=metric, preprocess_logits_for_metrics=to_classes)
    metrics = trainer.evaluate()
    fused, per = _model_logits(trainer.model, VAL)
    assert shapes == [(16, 3), (4, 3)]
    assert metrics["eval_acc"] == pytest.approx(float((fused.argmax(-1) == LABELS).mean()))
    assert metrics["eval_accuracy_audio"] == pytest.approx(classification_metrics(per["audio"], LABELS)["accuracy"])


def _train(tmp_path, name, **kw):
    trainer = ARLTrainer(model=mlp_model(), args=cfg(tmp_path, strategy=name, max_steps=-1, num_train_epochs=2,
                                                     **PERIODIC, **kw),
                         train_dataset=ROWS, eval_dataset=VAL)
    trainer.train()
    return trainer


@pytest.mark.parametrize("name", builtin_strategies())
def test_every_strategy_logs_loss_fused_and_eval_loss_is_the_fused_cross_entropy(name, tmp_path, one_torch_thread):
    trainer = _train(tmp_path, name)
    steps = [e for e in trainer.state.log_history if "loss" in e and "eval_loss" not in e and "train_loss" not in e]
    assert len(steps) == 6 and all("loss_fused" in e and np.isfinite(e["loss_fused"]) for e in steps)
    out = trainer.predict(VAL)
    fused_ce = float(F.cross_entropy(torch.tensor(out.predictions), torch.tensor(LABELS)))
    assert out.metrics["test_loss"] == pytest.approx(fused_ce, rel=1e-5)
    if name == "none":  # the optimised objective is the fused cross-entropy itself
        assert all(e["loss"] == pytest.approx(e["loss_fused"], rel=1e-5) for e in steps)


def test_arl_logs_the_objective_as_loss_and_the_fused_cross_entropy_beside_it(tmp_path, one_torch_thread):
    trainer = _train(tmp_path, "arl")
    steps = [e for e in trainer.state.log_history if "loss_fused" in e]
    # Eq. 22: fused + gamma * unimodal terms, larger than the fused term alone
    assert all(e["loss"] > e["loss_fused"] + 0.5 for e in steps)


def test_mla_loss_fused_is_the_cross_entropy_of_its_fused_prediction(tmp_path):
    trainer = ARLTrainer(model=mlp_model(), args=cfg(tmp_path, strategy="mla", max_steps=1,
                                                     per_device_train_batch_size=24), train_dataset=ROWS)
    strategy = trainer.strategy  # the logged value is of the model before its one step: kept here
    with torch.no_grad():
        state = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    trainer.model.load_state_dict(state)
    with torch.no_grad():
        logits, per = strategy.predict(trainer.model.eval(), {m: torch.stack([r[m] for r in ROWS]) for m in MODS})
    labels = torch.stack([r["labels"] for r in ROWS])
    logged = [e for e in trainer.state.log_history if "loss_fused" in e][0]["loss_fused"]
    assert logged == pytest.approx(float(F.cross_entropy(logits, labels)), rel=1e-4)


def test_loss_fused_under_gradient_accumulation_is_the_window_mean(tmp_path, one_torch_thread):
    # strategy "none": the optimised loss is the fused cross-entropy, so both must agree per step
    trainer = ARLTrainer(model=mlp_model(), args=cfg(tmp_path, strategy="none", max_steps=3,
                                                     per_device_train_batch_size=4, gradient_accumulation_steps=2),
                         train_dataset=ROWS)
    trainer.train()
    steps = [e for e in trainer.state.log_history if "loss_fused" in e]
    assert len(steps) == 3
    assert all(e["loss"] == pytest.approx(e["loss_fused"], rel=1e-5) for e in steps)


class _Silent(Strategy):
    """A strategy whose logs hold no loss_fused (the trainer adds it)."""

    name = "silent_test"

    def compute_loss(self, model, inputs, context):
        out = self.forward(model, inputs, unimodal=False)
        return StrategyOutput(loss=2.0 * F.cross_entropy(out.logits.float(), inputs["labels"]), outputs=out)


def test_trainer_logs_loss_fused_for_a_strategy_that_does_not(tmp_path):
    args = cfg(tmp_path, strategy="none", max_steps=2)
    trainer = ARLTrainer(model=mlp_model(), args=args, strategy=_Silent(args, MODS), train_dataset=ROWS)
    trainer.train()
    steps = [e for e in trainer.state.log_history if "loss" in e and "train_loss" not in e]
    assert len(steps) == 2 and all(e["loss"] == pytest.approx(2.0 * e["loss_fused"], rel=1e-5) for e in steps)
    assert "silent_test" not in STRATEGIES.names()
