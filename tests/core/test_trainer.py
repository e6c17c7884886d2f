"""ARLTrainer against plain PyTorch loops written here: one step, gradient accumulation,
gradient scaling rule, bf16, resume, logging, column handling and bad input."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_arl_math import ref_official, ref_paper

from arl_hf import ARLConfig, ARLTrainer, MultimodalConfig, MultimodalModel
from arl_hf.strategies import StepContext, build_strategy

MODS = ("audio", "visual")


def mlp_model(seed=0):
    torch.manual_seed(seed)
    cfg = MultimodalConfig(
        modalities={
            "audio": {"encoder": "mlp", "input_dim": 6, "hidden_dims": [8]},
            "visual": {"encoder": "mlp", "input_dim": 4, "hidden_dims": [8]},
        },
        num_labels=3,
    )
    return MultimodalModel(cfg)


def make_rows(n=16, seed=0, extra=False):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    a = torch.randn(n, 6, generator=g) + y[:, None] * 0.8
    v = torch.randn(n, 4, generator=g) * 2 + y[:, None] * 0.3
    rows = []
    for i in range(n):
        r = {"audio": a[i], "visual": v[i], "labels": y[i]}
        if extra:
            r["clip_id"] = i
        rows.append(r)
    return rows


def batch_of(rows):
    return {k: torch.stack([r[k] for r in rows]) for k in ("audio", "visual", "labels")}


def cfg(tmp_path, **kw):
    base = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        optim="sgd",
        learning_rate=0.1,
        lr_scheduler_type="constant",
        max_steps=1,
        train_sampling_strategy="sequential",
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        logging_steps=1,
        weight_decay=0.0,
        disable_tqdm=True,
        seed=0,
    )
    base.update(kw)
    return ARLConfig(**base)


def ref_coeffs(out, y, T, variant):
    logits = [out.unimodal_logits[m].detach().double().numpy() for m in MODS]
    if variant == "paper":
        return torch.tensor(ref_paper(logits, y.numpy(), T))
    return torch.tensor(ref_official(logits, T))


def reference_step(model, micro_batches, lr, gamma, T, variant="paper"):
    """Plain PyTorch: Eq. 22 loss, encoder grads x (1 + a_m), SGD, accumulation over micro-batches."""
    params = dict(model.named_parameters())
    grads = {k: torch.zeros_like(p) for k, p in params.items()}
    coeffs = []
    for b in micro_batches:
        out = model(audio=b["audio"], visual=b["visual"], return_unimodal_logits=True)
        y = b["labels"]
        loss = F.cross_entropy(out.logits, y) + gamma * sum(F.cross_entropy(out.unimodal_logits[m], y) for m in MODS)
        a = ref_coeffs(out, y, T, variant)
        coeffs.append(a)
        g = torch.autograd.grad(loss / len(micro_batches), list(params.values()))
        for (k, _), gi in zip(params.items(), g):
            scale = 1.0
            for i, m in enumerate(MODS):
                if k.startswith(f"encoders.{m}."):
                    scale = 1.0 + float(a[i])
            grads[k] += gi * scale
    with torch.no_grad():
        for k, p in params.items():
            p -= lr * grads[k]
    return coeffs


def recorded_scales(trainer):
    seen = []
    orig = trainer.strategy.set_gradient_scales

    def rec(s):
        seen.append(s.clone())
        orig(s)

    trainer.strategy.set_gradient_scales = rec
    return seen


def assert_params_close(m1, m2, atol=1e-6):
    s1, s2 = m1.state_dict(), m2.state_dict()
    for k in s1:
        torch.testing.assert_close(s1[k], s2[k], atol=atol, rtol=1e-5, msg=k)


# ------------------------------------------------------------------ gradient scaling rule
@pytest.mark.parametrize("variant", ["paper", "official"])
def test_encoder_gradients_scaled_by_one_plus_a_head_unchanged(variant, tmp_path):
    model = mlp_model()
    args = cfg(tmp_path, arl_variant=variant, arl_temperature=4.0, arl_gamma=2.0)
    strat = build_strategy("arl", args, MODS)
    strat.setup(None, model)
    batch = batch_of(make_rows(8))
    res = strat.compute_loss(model, batch, StepContext(training=True))
    res.loss.backward()
    mod = {k: p.grad.clone() for k, p in model.named_parameters()}
    a = torch.stack([res.logs[f"a_{m}"] for m in MODS]).float()
    np.testing.assert_allclose(a.numpy(), ref_coeffs(res.outputs, batch["labels"], 4.0, variant).numpy(), atol=1e-6)
    # the same total loss without modulation
    model.zero_grad()
    strat.modulator.remove()
    out = model(audio=batch["audio"], visual=batch["visual"], return_unimodal_logits=True)
    y = batch["labels"]
    loss = F.cross_entropy(out.logits, y) + 2.0 * sum(F.cross_entropy(out.unimodal_logits[m], y) for m in MODS)
    torch.testing.assert_close(loss, res.loss)
    loss.backward()
    for k, p in model.named_parameters():
        if k.startswith("encoders.audio."):
            torch.testing.assert_close(mod[k], p.grad * (1 + a[0]))
        elif k.startswith("encoders.visual."):
            torch.testing.assert_close(mod[k], p.grad * (1 + a[1]))
        else:
            torch.testing.assert_close(mod[k], p.grad)
    assert not torch.allclose(a[0], a[1])


# ------------------------------------------------------------------ one step vs a plain loop
@pytest.mark.parametrize("variant", ["paper", "official"])
def test_one_step_matches_plain_pytorch_loop(variant, tmp_path):
    rows = make_rows(8)
    model, ref = mlp_model(), mlp_model()
    args = cfg(tmp_path, arl_variant=variant, arl_gamma=4.0, arl_temperature=8.0)
    trainer = ARLTrainer(model=model, args=args, train_dataset=rows)
    seen = recorded_scales(trainer)
    trainer.train()
    coeffs = reference_step(ref, [batch_of(rows)], lr=0.1, gamma=4.0, T=8.0, variant=variant)
    assert len(seen) == 1
    torch.testing.assert_close(seen[0].double(), 1 + coeffs[0], atol=1e-6, rtol=0)
    assert_params_close(model, ref)
    # and the step really moved the parameters
    assert not torch.allclose(model.fusion.fc.weight, mlp_model().fusion.fc.weight)


def test_gradient_accumulation_matches_plain_loop_per_micro_batch(tmp_path):
    rows = make_rows(8)
    model, ref = mlp_model(), mlp_model()
    args = cfg(tmp_path, per_device_train_batch_size=4, gradient_accumulation_steps=2)
    trainer = ARLTrainer(model=model, args=args, train_dataset=rows)
    seen = recorded_scales(trainer)
    trainer.train()
    coeffs = reference_step(ref, [batch_of(rows[:4]), batch_of(rows[4:])], lr=0.1, gamma=4.0, T=4.0)
    # coefficients are computed per micro-batch
    assert len(seen) == 2
    for s, c in zip(seen, coeffs):
        torch.testing.assert_close(s.double(), 1 + c, atol=1e-6, rtol=0)
    assert not torch.allclose(coeffs[0], coeffs[1])
    assert_params_close(model, ref)
    # the logged loss is the mean over the accumulated micro-batches, not double-scaled
    logged = trainer.state.log_history[0]["loss"]
    with torch.no_grad():
        m0 = mlp_model()
        losses = []
        for b in (batch_of(rows[:4]), batch_of(rows[4:])):
            out = m0(audio=b["audio"], visual=b["visual"], return_unimodal_logits=True)
            unimodal = sum(F.cross_entropy(out.unimodal_logits[m], b["labels"]) for m in MODS)
            losses.append(F.cross_entropy(out.logits, b["labels"]) + 4 * unimodal)
    assert math.isclose(logged, float(sum(losses) / 2), rel_tol=1e-4)


def test_none_strategy_matches_plain_fused_loss_step(tmp_path):
    rows = make_rows(8)
    model, ref = mlp_model(), mlp_model()
    ARLTrainer(model=model, args=cfg(tmp_path, strategy="none"), train_dataset=rows).train()
    b = batch_of(rows)
    loss = F.cross_entropy(ref(audio=b["audio"], visual=b["visual"]).logits, b["labels"])
    grads = torch.autograd.grad(loss, list(ref.parameters()))
    with torch.no_grad():
        for p, g in zip(ref.parameters(), grads):
            p -= 0.1 * g
    assert_params_close(model, ref)


# ------------------------------------------------------------------ warm-up, ablations, defaults
def test_warmup_epochs_use_gamma_one_and_no_modulation(tmp_path):
    rows = make_rows(8)
    args = cfg(tmp_path, max_steps=-1, num_train_epochs=2, arl_warmup_epochs=1)
    trainer = ARLTrainer(model=mlp_model(), args=args, train_dataset=rows)
    seen = recorded_scales(trainer)
    trainer.train()
    assert len(seen) == 2
    torch.testing.assert_close(seen[0], torch.ones(2, dtype=seen[0].dtype))
    assert torch.all(seen[1] > 1) and torch.all(seen[1] < 2)
    # during warm-up the loss is CE + 1 * sum(unimodal CE)
    h = [e for e in trainer.state.log_history if "loss_fused" in e]
    first = h[0]
    assert math.isclose(first["loss"], first["loss_fused"] + first["loss_audio"] + first["loss_visual"], rel_tol=1e-4)
    second = h[1]
    assert math.isclose(second["loss"], second["loss_fused"] + 4 * (second["loss_audio"] + second["loss_visual"]),
                        rel_tol=1e-4)


def test_defaults_do_not_clip_and_validate():
    args = ARLConfig(output_dir="unused_dir")
    assert args.max_grad_norm == 0.0 and args.strategy == "arl" and args.arl_variant == "paper"
    with pytest.raises(ValueError, match="arl_temperature"):
        ARLConfig(output_dir="unused_dir", arl_temperature=0.0)
    with pytest.raises(ValueError, match="strategy: unknown strategy 'bogus'"):
        ARLConfig(output_dir="unused_dir", strategy="bogus")
    with pytest.raises(ValueError, match="arl_gamma"):
        ARLConfig(output_dir="unused_dir", arl_gamma=-1.0)


# ------------------------------------------------------------------ logging
def test_logged_coefficients_are_window_averages(tmp_path):
    rows = make_rows(16)
    args = cfg(tmp_path, per_device_train_batch_size=4, max_steps=4, logging_steps=2)
    trainer = ARLTrainer(model=mlp_model(), args=args, train_dataset=rows)
    seen = recorded_scales(trainer)
    trainer.train()
    logs = [e for e in trainer.state.log_history if "a_audio" in e]
    assert len(logs) == 2
    for i, e in enumerate(logs):
        window = torch.stack(seen[2 * i : 2 * i + 2]) - 1
        assert math.isclose(e["a_audio"], float(window[:, 0].mean()), rel_tol=1e-5)
        assert math.isclose(e["a_visual"], float(window[:, 1].mean()), rel_tol=1e-5)
        assert math.isclose(e["dependency_share_audio"] + e["dependency_share_visual"], 1.0, rel_tol=1e-6)
        assert math.isclose(e["inverse_variance_share_audio"] + e["inverse_variance_share_visual"], 1.0, rel_tol=1e-6)
        assert {"loss_audio", "loss_visual", "loss_fused"} <= set(e)


# ------------------------------------------------------------------ bf16
def test_bf16_autocast_tracks_fp32(tmp_path):
    rows = make_rows(32)
    hist = {}
    for bf16 in (False, True):
        args = cfg(tmp_path / str(bf16), per_device_train_batch_size=8, max_steps=4, bf16=bf16)
        trainer = ARLTrainer(model=mlp_model(), args=args, train_dataset=rows)
        trainer.train()
        hist[bf16] = [e for e in trainer.state.log_history if "a_audio" in e]
    assert len(hist[True]) == 4
    for e32, e16 in zip(hist[False], hist[True]):
        # stated tolerance: 3% relative on the loss, 0.02 absolute on each coefficient
        assert math.isclose(e16["loss"], e32["loss"], rel_tol=0.03)
        assert abs(e16["a_audio"] - e32["a_audio"]) < 0.02
        assert abs(e16["a_visual"] - e32["a_visual"]) < 0.02


# ------------------------------------------------------------------ resume
def test_resume_continues_to_same_parameters(tmp_path):
    rows = make_rows(16)
    common = dict(per_device_train_batch_size=4, max_steps=6, train_sampling_strategy="random", learning_rate=0.05)
    full = mlp_model()
    ARLTrainer(model=full, args=cfg(tmp_path / "full", **common), train_dataset=rows).train()
    first = mlp_model()
    ARLTrainer(model=first, args=cfg(tmp_path / "part", save_strategy="steps", save_steps=3, **common),
               train_dataset=rows).train()
    resumed = mlp_model(seed=99)  # different init: everything must come from the checkpoint
    t = ARLTrainer(model=resumed, args=cfg(tmp_path / "part", **common), train_dataset=rows)
    t.train(resume_from_checkpoint=str(tmp_path / "part" / "checkpoint-3"))
    assert t.state.global_step == 6
    assert_params_close(resumed, full, atol=1e-6)


# ------------------------------------------------------------------ columns and datasets
def test_extra_keys_dropped_and_arrow_dataset_keeps_modalities(tmp_path):
    from datasets import Dataset

    rows = make_rows(8, extra=True)
    ARLTrainer(model=mlp_model(), args=cfg(tmp_path / "a"), train_dataset=rows).train()
    ds = Dataset.from_dict(
        {
            "audio": [r["audio"].tolist() for r in rows],
            "visual": [r["visual"].tolist() for r in rows],
            "labels": [int(r["labels"]) for r in rows],
            "path": [f"clip_{i}.wav" for i in range(8)],
        }
    ).with_format("torch")
    model, ref = mlp_model(), mlp_model()
    ARLTrainer(model=model, args=cfg(tmp_path / "b"), train_dataset=ds).train()
    reference_step(ref, [batch_of(rows)], lr=0.1, gamma=4.0, T=4.0)
    assert_params_close(model, ref, atol=1e-5)


def test_evaluation_reports_fused_and_unimodal_metrics(tmp_path):
    rows = make_rows(24)
    model = mlp_model()
    trainer = ARLTrainer(model=model, args=cfg(tmp_path), train_dataset=rows, eval_dataset=rows)
    metrics = trainer.evaluate()
    b = batch_of(rows)
    with torch.no_grad():
        out = model.eval()(audio=b["audio"], visual=b["visual"], return_unimodal_logits=True)
    y = b["labels"]
    assert math.isclose(metrics["eval_accuracy"], float((out.logits.argmax(-1) == y).double().mean()), rel_tol=1e-9)
    for m in MODS:
        acc = float((out.unimodal_logits[m].argmax(-1) == y).double().mean())
        assert math.isclose(metrics[f"eval_accuracy_{m}"], acc, rel_tol=1e-9)
        assert 0 <= metrics[f"eval_macro_f1_{m}"] <= 1
    assert math.isclose(metrics["eval_loss"], float(F.cross_entropy(out.logits, y)), rel_tol=1e-5)


# ------------------------------------------------------------------ bad input: before any step
@pytest.mark.parametrize(
    "corrupt,match",
    [
        (lambda r: r[3].__setitem__("audio", torch.full((6,), float("nan"))), "audio: input contains NaN"),
        (lambda r: r[2].__setitem__("labels", torch.tensor(7)), r"labels: expected class indices in \[0, 3\)"),
        (lambda r: r[0].__setitem__("visual", torch.full((4,), float("inf"))),
         "visual: input contains NaN or infinite"),
    ],
)
def test_bad_batches_raise_before_any_step(corrupt, match, tmp_path):
    rows = make_rows(8)
    corrupt(rows)
    model = mlp_model()
    before = copy.deepcopy(model.state_dict())
    trainer = ARLTrainer(model=model, args=cfg(tmp_path), train_dataset=rows)
    with pytest.raises(ValueError, match=match):
        trainer.train()
    assert trainer.state.global_step == 0
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_missing_modality_and_non_contract_model(tmp_path):
    rows = [{"audio": r["audio"], "labels": r["labels"]} for r in make_rows(8)]
    with pytest.raises(ValueError, match="visual: missing modality"):
        ARLTrainer(model=mlp_model(), args=cfg(tmp_path), train_dataset=rows).train()
    with pytest.raises(ValueError, match="encoders"):
        ARLTrainer(model=torch.nn.Linear(3, 3), args=cfg(tmp_path))
