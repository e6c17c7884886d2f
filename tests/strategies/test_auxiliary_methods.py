"""PMR, G-Blending, MMPareto, MLA and D&R: their defining computations by hand on tiny
tensors, and what each does to the gradients of a tiny model."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from strategy_testutils import MODS, batch_of, cfg, make_rows, mlp_model

from arl_hf import ARLTrainer
from arl_hf.strategies import StepContext, build_strategy
from arl_hf.strategies.dr import purity, relearn_strength, soft_reinit_
from arl_hf.strategies.gblending import blending_weights
from arl_hf.strategies.mla import entropy_weights, owm_update
from arl_hf.strategies.mmpareto import mmpareto_gradient, pareto_coefficients
from arl_hf.strategies.pmr import blend_prototypes, class_means, prototype_logits

TRAIN = StepContext(epoch=0.0, global_step=0, training=True)


def make(name, model, tmp_path, **kw):
    s = build_strategy(name, cfg(tmp_path, strategy=name, **kw), MODS)
    s.setup(None, model)
    return s


# ----------------------------------------------------------------------------- PMR
def test_pmr_prototypes_and_logits_by_hand():
    z = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0]])
    y = torch.tensor([0, 0, 1])
    sums, counts = class_means(z, y, 3)
    new = blend_prototypes(None, sums, counts, 0.2)
    assert torch.allclose(new[:2], torch.tensor([[1.0, 0.0], [0.0, 4.0]]))
    old = torch.tensor([[3.0, 0.0], [0.0, 0.0], [9.0, 9.0]])
    blended = blend_prototypes(old, sums, counts, 0.2)
    # (1 - m) * new + m * old with m = 0.2 weighting the old prototypes: 0.8 * [1, 0] + 0.2 * [3, 0]
    assert torch.allclose(blended[0], torch.tensor([1.4, 0.0]))
    assert torch.allclose(blended[1], torch.tensor([0.0, 3.2]))
    assert torch.allclose(blended[2], old[2])  # class 2 absent from the subset: kept
    logits = prototype_logits(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0], [4.0, 4.0]]))
    assert torch.allclose(logits, torch.tensor([[0.0, -5.0]]), atol=1e-5)


def test_pmr_adds_prototype_loss_for_the_weaker_modality_only(tmp_path):
    model, batch = mlp_model(), batch_of(make_rows(12))
    s = make("pmr", model, tmp_path, pmr_alpha=0.7)
    with torch.no_grad():
        out = model(audio=batch["audio"], visual=batch["visual"])
    protos = {}
    for m in MODS:  # prototypes = class means of this batch's features
        sums, counts = class_means(out.features[m], batch["labels"], 3)
        protos[m] = sums / counts.clamp_min(1)[:, None]
    s.prototypes = protos
    res = s.compute_loss(model, batch, TRAIN)
    y = batch["labels"]
    pl = {m: -torch.cdist(out.features[m], protos[m]) for m in MODS}
    score = {m: pl[m].softmax(-1)[torch.arange(12), y].sum().item() for m in MODS}
    weak = min(score, key=score.get)
    expected = F.cross_entropy(out.logits, y) + 0.7 * F.cross_entropy(pl[weak], y)
    assert res.loss.item() == pytest.approx(expected.item(), abs=1e-5)
    assert res.logs[f"weak_{weak}"].item() == 1.0
    other = [m for m in MODS if m != weak][0]
    assert res.logs[f"weak_{other}"].item() == 0.0
    assert res.logs[f"rho_{weak}"].item() == pytest.approx(score[weak] / score[other], rel=1e-5)


def test_pmr_epoch_prototypes_are_training_class_means(tmp_path):
    rows = make_rows(24)
    model = mlp_model()
    t = ARLTrainer(model=model, args=cfg(tmp_path, strategy="pmr", pmr_proto_fraction=1.0, pmr_momentum=0.2),
                   train_dataset=rows)
    s = t.strategy
    s.on_epoch_begin(t, model, StepContext(epoch=0.0))
    b = batch_of(rows)
    with torch.no_grad():
        z = model(audio=b["audio"], visual=b["visual"]).features
    for m in MODS:
        sums, counts = class_means(z[m], b["labels"], 3)
        assert torch.allclose(s.prototypes[m], sums / counts[:, None], atol=1e-5)
    first = {m: p.clone() for m, p in s.prototypes.items()}
    s.on_epoch_begin(t, model, StepContext(epoch=0.0))  # same epoch again (a resume): no update
    with torch.no_grad():
        for p in model.encoders["audio"].parameters():
            p.mul_(2.0)
    s.on_epoch_begin(t, model, StepContext(epoch=1.0))
    with torch.no_grad():
        z2 = model(audio=b["audio"], visual=b["visual"]).features["audio"]
    sums, counts = class_means(z2, b["labels"], 3)
    # pmr_momentum = 0.2 weights the old prototypes
    assert torch.allclose(s.prototypes["audio"], 0.2 * first["audio"] + 0.8 * sums / counts[:, None], atol=1e-5)


# ----------------------------------------------------------------------------- G-Blending
def test_gblending_weights_by_hand():
    prev_t, prev_v = torch.tensor([1.0, 1.0, 1.0]), torch.tensor([1.2, 1.1, 1.3])
    cur_t, cur_v = torch.tensor([0.5, 0.9, 0.2]), torch.tensor([0.8, 1.0, 1.4])
    w = blending_weights(prev_t, prev_v, cur_t, cur_v)
    g = [0.4, 0.1, 0.0]  # validation gains (the third head got worse: weight 0)
    o = [(0.8 - 0.5) - 0.2, (1.0 - 0.9) - 0.1, (1.4 - 0.2) - 0.3]
    raw = [g[i] / (o[i] ** 2 + 1e-8) for i in range(3)]
    assert torch.allclose(w, torch.tensor(raw) / sum(raw), atol=1e-6)
    assert w[2] == 0
    prev_w = torch.tensor([0.2, 0.3, 0.5])
    assert torch.equal(blending_weights(prev_t, prev_v, cur_t, prev_v + 1, prev_w), prev_w)  # no gain: kept


def test_gblending_measures_heads_on_the_validation_split(tmp_path):
    rows, val = make_rows(24), make_rows(10, seed=5)
    model = mlp_model()
    t = ARLTrainer(model=model, args=cfg(tmp_path, strategy="gblending", weight_decay=0.01), train_dataset=rows,
                   eval_dataset=val)
    s = t.strategy
    heads = dict(model.strategy_state.heads.named_parameters())
    assert sorted(heads) == ["audio.bias", "audio.weight", "visual.bias", "visual.weight"]  # two Linear(8, 3) heads
    groups = t.create_optimizer().param_groups
    decayed = {id(p) for g in groups if g["weight_decay"] == 0.01 for p in g["params"]}
    exempt = {id(p) for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    # the heads are in the model's optimizer, under the Trainer's rule: weights decay, biases do not
    assert {id(heads[f"{m}.weight"]) for m in MODS} <= decayed and {id(heads[f"{m}.bias"]) for m in MODS} <= exempt
    measure = s.measure(t, model, 0)
    b = batch_of(val)
    with torch.no_grad():
        out = model(audio=b["audio"], visual=b["visual"])
        expected = [F.cross_entropy(out.logits, b["labels"])] + [
            F.cross_entropy(s.heads[m](out.features[m]), b["labels"]) for m in MODS]
    assert torch.allclose(measure["val"], torch.stack(expected), atol=1e-5)
    # loss = sum_k w_k L_k with the current weights
    s.weights = torch.tensor([0.5, 0.3, 0.2])
    res = s.compute_loss(model, b, TRAIN)
    want = (torch.tensor([0.5, 0.3, 0.2]) * torch.stack(expected)).sum().item()
    assert res.loss.item() == pytest.approx(want, abs=1e-5)


def test_gblending_without_validation_split_fails_naming_it(tmp_path):
    t = ARLTrainer(model=mlp_model(), args=cfg(tmp_path, strategy="gblending"), train_dataset=make_rows(8))
    with pytest.raises(ValueError, match="gblending: this strategy needs a validation split"):
        t.strategy.on_epoch_begin(t, t.model, StepContext(epoch=0.0))


# ----------------------------------------------------------------------------- MMPareto
def test_mmpareto_min_norm_weights_and_gradient_by_hand():
    g1, g2 = torch.tensor([1.0, 0.0]).double(), torch.tensor([-1.0, 1.0]).double()  # conflicting (cos < 0)
    c_mm, c_u, w0 = pareto_coefficients(g1 @ g1, g2 @ g2, g1 @ g2, gamma=1.5)
    assert w0.item() == pytest.approx(0.6)  # ((g2 - g1).g2) / ||g1 - g2||^2 = 3/5
    g_hat = 2 * (0.6 * g1 + 0.4 * g2)  # (0.4, 0.8)
    scale = max(1.0, (g1 + g2).norm().item() / g_hat.norm().item())
    expected = 1.5 * g_hat * scale
    got = mmpareto_gradient([g1[:1], g1[1:]], [g2[:1], g2[1:]], 1.5)
    assert torch.allclose(torch.cat(got), expected)
    assert torch.allclose(c_mm * g1 + c_u * g2, expected)
    # agreeing gradients: equal weights, g_hat = g1 + g2
    a, b = torch.tensor([1.0, 0.0]).double(), torch.tensor([1.0, 1.0]).double()
    c_mm, c_u, w0 = pareto_coefficients(a @ a, b @ b, a @ b, gamma=1.5)
    assert w0.item() == 0.5 and c_mm.item() == pytest.approx(1.5) and c_u.item() == pytest.approx(1.5)


def test_mmpareto_encoder_gradients_are_the_pareto_combination(tmp_path):
    model, batch = mlp_model(), batch_of(make_rows(12))
    s = make("mmpareto", model, tmp_path)
    ref_model, heads = copy.deepcopy(model), copy.deepcopy(s.heads)
    res = s.compute_loss(model, batch, TRAIN)
    res.loss.backward()
    # independent reference: autograd of the fused and unimodal losses per encoder
    out = ref_model(audio=batch["audio"], visual=batch["visual"])
    y = batch["labels"]
    fused = F.cross_entropy(out.logits, y)
    assert res.loss.item() == pytest.approx(
        fused.item() + sum(F.cross_entropy(heads[m](out.features[m]), y).item() for m in MODS), abs=1e-5)
    conflicted = False
    for m in MODS:
        params = list(ref_model.encoders[m].parameters())
        uni = F.cross_entropy(heads[m](out.features[m]), y)
        g_mm = torch.autograd.grad(fused, params, retain_graph=True)
        g_u = torch.autograd.grad(uni, params, retain_graph=True)
        expected = mmpareto_gradient(list(g_mm), list(g_u), 1.5)
        for p, e in zip(model.encoders[m].parameters(), expected):
            assert torch.allclose(p.grad, e, atol=1e-6)
        conflicted |= res.logs[f"cos_{m}"].item() <= 0
        # unimodal heads get their plain gradient
        hg = torch.autograd.grad(uni, list(heads[m].parameters()), retain_graph=True)
        for p, e in zip(s.heads[m].parameters(), hg):
            assert torch.allclose(p.grad, e, atol=1e-6)
    fused_head = torch.autograd.grad(fused, list(ref_model.fusion.parameters()))
    for p, e in zip(model.fusion.parameters(), fused_head):
        assert torch.allclose(p.grad, e, atol=1e-6)


# ----------------------------------------------------------------------------- MLA
def test_mla_projector_and_fusion_weights_by_hand():
    p = owm_update(torch.eye(2), torch.tensor([1.0, 0.0]), alpha=0.1)
    assert torch.allclose(p, torch.tensor([[1 - 1 / 1.1, 0.0], [0.0, 1.0]]), atol=1e-6)
    p2 = owm_update(p, torch.tensor([1.0, 1.0]), alpha=0.1)
    r = torch.tensor([[1.0], [1.0]])
    pr = p @ r
    assert torch.allclose(p2, p - pr @ pr.T / (0.1 + (r.T @ pr).item()), atol=1e-6)
    la = torch.tensor([[10.0, 0.0]])  # confident: low entropy
    lv = torch.tensor([[0.0, 0.0]])  # uniform: entropy log 2
    w = entropy_weights([la, lv])
    ha = -(la.softmax(-1) * la.log_softmax(-1)).sum().item()
    e = torch.tensor([math.exp(math.log(2) - ha), 1.0])
    assert torch.allclose(w[:, 0], e / e.sum(), atol=1e-6)


def test_mla_projects_the_second_modality_head_gradient(tmp_path):
    model, batch = mlp_model(), batch_of(make_rows(12))
    s = make("mla", model, tmp_path)
    head = copy.deepcopy(s.head)
    res = s.compute_loss(model, batch, TRAIN)
    res.loss.backward()
    with torch.no_grad():
        out = mlp_model()(audio=batch["audio"], visual=batch["visual"])
    y = batch["labels"]
    alpha = 0.1 ** 1.0  # first batch of the epoch
    P = torch.eye(8)
    expected = torch.zeros_like(head.weight)
    for m in MODS:
        z = out.features[m]
        loss = F.cross_entropy(head(z), y)
        (gw,) = torch.autograd.grad(loss, [head.weight])
        expected += gw @ P
        r = z.mean(0)
        P = P - (P @ r)[:, None] @ (P @ r)[None, :] / (alpha + r @ P @ r)
    assert torch.allclose(s.head.weight.grad, expected, atol=1e-5)
    assert torch.allclose(s.projector, P, atol=1e-5)
    assert model.fusion.fc.weight.grad is None  # the model's own head is not trained by MLA
    fused, per = s.predict(model, batch)
    assert torch.allclose(per["audio"], s.head(model(audio=batch["audio"], visual=batch["visual"]).features["audio"]))
    w = entropy_weights([per["audio"], per["visual"]])
    assert torch.allclose(fused, w[0][:, None] * per["audio"] + w[1][:, None] * per["visual"], atol=1e-6)


def test_mla_rejects_encoders_of_different_sizes(tmp_path):
    from arl_hf import MultimodalConfig, MultimodalModel

    model = MultimodalModel(MultimodalConfig(modalities={
        "audio": {"encoder": "mlp", "input_dim": 6, "hidden_dims": [8]},
        "visual": {"encoder": "mlp", "input_dim": 4, "hidden_dims": [5]}}, num_labels=3))
    with pytest.raises(ValueError, match="mla: the shared head needs every encoder"):
        make("mla", model, tmp_path)


# ----------------------------------------------------------------------------- D&R
def test_dr_purity_strength_and_soft_reinit_by_hand():
    assign = np.array([0, 0, 0, 1, 1, 2])
    labels = np.array([1, 1, 2, 0, 0, 2])
    assert purity(assign, labels) == pytest.approx((2 + 2 + 1) / 6)
    assert relearn_strength(0.9, 0.6, 3.0) == pytest.approx(math.tanh(0.9))
    p = torch.nn.Parameter(torch.tensor([1.0, 3.0]))
    soft_reinit_([p], [torch.tensor([0.0, 1.0])], 0.25)
    assert torch.allclose(p.data, torch.tensor([0.75, 2.5]))


def test_dr_reinitialises_each_encoder_towards_its_initial_weights(tmp_path):
    rows, val = make_rows(24), make_rows(12, seed=5)
    model = mlp_model()
    t = ARLTrainer(model=model, args=cfg(tmp_path, strategy="dr", dr_interval_epochs=2), train_dataset=rows,
                   eval_dataset=val)
    s = t.strategy
    init = {m: [p.detach().clone() for p in model.encoders[m].parameters()] for m in MODS}
    with torch.no_grad():  # pretend training moved the encoders
        for p in model.encoders.parameters():
            p.add_(0.5)
    before = {m: [p.detach().clone() for p in model.encoders[m].parameters()] for m in MODS}
    s.on_epoch_begin(t, model, StepContext(epoch=1.0))  # not a diagnosis epoch
    assert s.times == 0
    s.on_epoch_begin(t, model, StepContext(epoch=2.0))
    assert s.times == 1
    rec = s.history[-1]
    assert max(rec[f"w_{m}"] for m in MODS) > 0.01  # a real re-initialisation happened
    for m in MODS:
        assert 0.0 <= rec[f"purity_train_{m}"] <= 1.0
        w = rec[f"w_{m}"]
        assert w == pytest.approx(math.tanh(3.0 * abs(rec[f"purity_train_{m}"] - rec[f"purity_val_{m}"])), abs=1e-6)
        for p, p0, p1 in zip(model.encoders[m].parameters(), init[m], before[m]):
            assert torch.allclose(p.data, w * p0 + (1 - w) * p1, atol=1e-6)
    s.on_epoch_begin(t, model, StepContext(epoch=2.0))  # same epoch again (a resume): nothing
    assert s.times == 1


# ----------------------------------------------------------------------------- float64 models
@pytest.mark.parametrize("name", ["mmpareto", "gblending", "mla"])
def test_strategy_heads_follow_a_float64_model(tmp_path, name):
    rows = [{k: (v.double() if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in r.items()}
            for r in make_rows(24)]
    model = mlp_model().double()
    t = ARLTrainer(model=model, args=cfg(tmp_path, strategy=name, num_train_epochs=1), train_dataset=rows,
                   eval_dataset=rows)
    t.train()
    heads = t.strategy.head if name == "mla" else t.strategy.heads
    assert all(p.dtype == torch.float64 for p in heads.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    metrics = t.evaluate()
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
