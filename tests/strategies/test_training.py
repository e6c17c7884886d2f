"""Every strategy in a short ARLTrainer run (periodic behaviour forced to trigger), resume of
the stateful ones to the same parameters and state, gradient accumulation, and ARL's
Table 5 ablation switches."""

import os

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from strategy_testutils import MODS, assert_params_close, batch_of, cfg, grads_of, make_rows, mlp_model

from arl_hf import ARLTrainer
from arl_hf.strategies import StepContext, build_strategy
from arl_hf.strategies.arl import arl_coefficients

ROWS, VAL = make_rows(24), make_rows(12, seed=7)
PERIODIC = dict(gblending_interval_epochs=1, dr_interval_epochs=1, pmr_interval_epochs=1, ogm_end_epoch=1)
ALL = ["none", "arl", "fixed", "ogm_ge", "agm", "pmr", "gblending", "mmpareto", "mla", "dr"]


def run(tmp_path, name, model=None, resume=None, **kw):
    args = dict(strategy=name, max_steps=-1, num_train_epochs=3, eval_strategy="epoch", **PERIODIC)
    args.update(kw)
    model = model if model is not None else mlp_model()
    t = ARLTrainer(model=model, args=cfg(tmp_path, **args), train_dataset=ROWS, eval_dataset=VAL)
    t.train(resume_from_checkpoint=resume)
    return t, model


STATEFUL = ["agm", "pmr", "gblending", "mmpareto", "mla", "dr"]


@pytest.mark.parametrize("name", ALL)
def test_short_training_run(name, tmp_path):
    before = mlp_model()
    t, model = run(tmp_path, name, fixed_multipliers=[2.0, 1.0])
    assert t.state.global_step == 9
    evals = [h for h in t.state.log_history if "eval_accuracy" in h]
    assert len(evals) == 3
    for k in ("eval_accuracy", "eval_macro_f1", "eval_accuracy_audio", "eval_macro_f1_visual"):
        assert 0.0 <= evals[-1][k] <= 1.0
    losses = [h["loss"] for h in t.state.log_history if "loss" in h]
    assert all(torch.isfinite(torch.tensor(losses)))
    moved = [not torch.allclose(a, b) for a, b in zip(model.encoders.parameters(), before.encoders.parameters())]
    assert all(moved)  # every encoder tensor was trained
    s = t.strategy
    state = getattr(model, "strategy_state", None)
    assert (state is not None) == (name in STATEFUL)  # the strategy's tensors are part of the model
    if state is not None:
        assert state is s.state_module and model.config.strategy_state["strategy"] == name
        assert all(p.grad is None for p in state.parameters())  # zero_grad clears the heads with the model
    if name in ("gblending", "mmpareto", "mla"):
        fresh = build_strategy(name, t.args, MODS)
        fresh.setup(None, mlp_model())
        moved = [not torch.allclose(a, b.to(a.device)) for a, b in
                 zip(state.parameters(), fresh.state_module.parameters())]
        assert moved and all(moved)  # the heads were trained by the Trainer's optimizer
    if name == "gblending":
        assert s.last_epoch == 2 and not torch.allclose(s.weights, torch.full((3,), 1 / 3))
        assert abs(s.weights.sum().item() - 1) < 1e-6
    if name == "dr":
        assert s.times == 2 and len(s.history) == 2
    if name == "pmr":
        assert s.last_epoch == 2 and set(s.prototypes) == set(MODS)
        assert any("weak_audio" in h for h in t.state.log_history)
    if name == "mla":
        assert not torch.allclose(s.projector, torch.eye(8))
    if name == "ogm_ge":
        ks = [h["k_audio"] for h in t.state.log_history if "k_audio" in h]
        assert min(ks) < 1.0 and ks[-1] == 1.0  # modulated in epochs 0-1, not in epoch 2


def _state_equal(a, b):
    if isinstance(a, torch.Tensor):
        return torch.allclose(a.float(), b.float(), atol=1e-6)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_state_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_state_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return abs(a - b) < 1e-6
    return a == b


@pytest.mark.parametrize("name", STATEFUL)
def test_resume_reaches_the_uninterrupted_run(name, tmp_path):
    common = dict(train_sampling_strategy="random", per_device_train_batch_size=6, eval_strategy="no")
    full_t, full = run(tmp_path / "full", name, **common)
    run(tmp_path / "part", name, save_strategy="steps", save_steps=6, **common)
    ckpt = tmp_path / "part" / "checkpoint-6"  # mid-epoch 1 (4 steps per epoch)
    assert not any(f.endswith((".pt", ".pth")) for f in os.listdir(ckpt) if f.startswith("strategy"))
    saved = load_file(str(ckpt / "model.safetensors"))
    assert sorted(k for k in saved if k.startswith("strategy_state.")) == sorted(
        "strategy_state." + k for k in full_t.strategy.state_dict())  # every strategy tensor, in the weights
    t, resumed = run(tmp_path / "part", name, model=mlp_model(seed=99), resume=str(ckpt), **common)
    assert t.state.global_step == 12
    assert_params_close(resumed, full, atol=1e-5)
    assert _state_equal(t.strategy.state_dict(), full_t.strategy.state_dict())


def test_fixed_multipliers_are_exact_under_gradient_accumulation(tmp_path):
    one = mlp_model()
    ARLTrainer(model=one, args=cfg(tmp_path / "a", strategy="fixed", fixed_multipliers=[3.0, 0.5], max_steps=2),
               train_dataset=ROWS[:16]).train()
    acc = mlp_model()
    ARLTrainer(model=acc, args=cfg(tmp_path / "b", strategy="fixed", fixed_multipliers=[3.0, 0.5], max_steps=2,
                                   per_device_train_batch_size=4, gradient_accumulation_steps=2),
               train_dataset=ROWS[:16]).train()
    assert_params_close(acc, one, atol=1e-6)


def test_heads_restored_with_the_best_checkpoint(tmp_path):
    t, model = run(tmp_path, "mla", save_strategy="epoch", load_best_model_at_end=True,
                   metric_for_best_model="eval_loss", greater_is_better=False)
    best = t.state.best_model_checkpoint
    final = os.path.join(t.args.output_dir, "checkpoint-9")
    saved = load_file(os.path.join(best, "model.safetensors"))
    last = load_file(os.path.join(final, "model.safetensors"))
    assert best != final and not torch.equal(saved["strategy_state.head.weight"], last["strategy_state.head.weight"])
    assert torch.equal(t.strategy.head.weight.cpu(), saved["strategy_state.head.weight"])
    assert torch.equal(t.strategy.projector.cpu(), saved["strategy_state.projector"])  # state too, not only heads


# ----------------------------------------------------------------------------- ARL ablations (Table 5)
def _arl_grads(tmp_path, **switches):
    model, batch = mlp_model(), batch_of(make_rows(8))
    s = build_strategy("arl", cfg(tmp_path, strategy="arl", **switches), MODS)
    s.setup(None, model)
    res = s.compute_loss(model, batch, StepContext(training=True))
    res.loss.backward()
    return model, res


def _reference(tmp_path, unimodal_loss=True):
    """Unmodulated gradients of CE(fused) [+ gamma * sum CE(unimodal)] and the coefficients."""
    model, batch = mlp_model(), batch_of(make_rows(8))
    out = model(audio=batch["audio"], visual=batch["visual"], return_unimodal_logits=True)
    y = batch["labels"]
    loss = F.cross_entropy(out.logits, y)
    if unimodal_loss:
        loss = loss + 4.0 * sum(F.cross_entropy(out.unimodal_logits[m], y) for m in MODS)
    a = arl_coefficients([out.unimodal_logits[m] for m in MODS], y, 4.0, "paper")
    loss.backward()
    return {m: grads_of(model.encoders[m]) for m in MODS}, grads_of(model.fusion), a, loss.item()


@pytest.mark.parametrize("residual", [True, False])
def test_arl_residual_switch_is_g_plus_ga_versus_ga(residual, tmp_path):
    enc, head, a, _ = _reference(tmp_path)
    model, _ = _arl_grads(tmp_path, arl_residual=residual)
    for i, m in enumerate(MODS):
        scale = (1 + a[i]) if residual else a[i]
        for g, r in zip(grads_of(model.encoders[m]), enc[m]):
            assert torch.allclose(g, scale * r, atol=1e-6)
    for g, r in zip(grads_of(model.fusion), head):
        assert torch.allclose(g, r, atol=1e-6)


def test_arl_unimodal_loss_switch_drops_the_gamma_term(tmp_path):
    enc, head, a, loss = _reference(tmp_path, unimodal_loss=False)
    model, res = _arl_grads(tmp_path, arl_unimodal_loss=False)
    assert res.loss.item() == pytest.approx(loss, abs=1e-6)
    for i, m in enumerate(MODS):
        for g, r in zip(grads_of(model.encoders[m]), enc[m]):
            assert torch.allclose(g, (1 + a[i]) * r, atol=1e-6)
    for g, r in zip(grads_of(model.fusion), head):
        assert torch.allclose(g, r, atol=1e-6)
    _, with_gamma = _arl_grads(tmp_path)
    assert with_gamma.loss.item() > res.loss.item() + 1.0  # gamma * sum CE_m is really gone


def test_arl_asymmetric_switch_removes_the_coefficients(tmp_path):
    enc, _, a, _ = _reference(tmp_path)
    assert abs(a[0] - a[1]) > 1e-3  # the coefficients would have mattered
    model, res = _arl_grads(tmp_path, arl_asymmetric=False)
    for m in MODS:
        for g, r in zip(grads_of(model.encoders[m]), enc[m]):
            assert torch.allclose(g, r, atol=1e-6)


def test_the_documented_one_file_strategy_trains(tmp_path):
    """The 'add your own strategy' example of docs/strategies.md, executed as written."""
    import re

    text = open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "strategies.md")).read()
    code = re.search(r"```python\n(# my_strategy.py.*?)```", text, re.S).group(1)
    exec(compile(code, "my_strategy.py", "exec"), {})
    model = mlp_model()
    ref = mlp_model()
    t = ARLTrainer(model=model, args=cfg(tmp_path, strategy="louder_visual"), train_dataset=ROWS[:8])
    t.train()
    assert any("loss_audio" in h for h in t.state.log_history)
    assert not torch.allclose(model.encoders["visual"].net[0].weight, ref.encoders["visual"].net[0].weight)
