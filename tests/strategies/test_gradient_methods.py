"""fixed, OGM-GE and AGM: hand-computed coefficients on tiny tensors and the encoder
gradients each produces against plain autograd of the fused loss."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from strategy_testutils import MODS, batch_of, cfg, grads_of, make_rows, mlp_model
from torch import nn

from arl_hf.strategies import StepContext, build_strategy
from arl_hf.strategies.agm import agm_coefficients, shapley_contributions
from arl_hf.strategies.ogm_ge import ogm_coefficients, ogm_scores

TRAIN = StepContext(epoch=0.0, global_step=0, training=True)


def plain_grads(model, batch):
    """Encoder and fusion gradients of the plain fused cross-entropy."""
    m = copy.deepcopy(model)
    out = m(audio=batch["audio"], visual=batch["visual"])
    F.cross_entropy(out.logits, batch["labels"]).backward()
    return {k: grads_of(m.encoders[k]) for k in MODS}, grads_of(m.fusion)


def strategy_grads(name, model, batch, tmp_path, context=TRAIN, **kw):
    s = build_strategy(name, cfg(tmp_path, strategy=name, **kw), MODS)
    s.setup(None, model)
    res = s.compute_loss(model, batch, context)
    res.loss.backward()
    s.after_backward(model, context)
    return s, res


def unimodal_by_hand(model, batch):
    """W_m z_m + b from the concat head's weight slices (the harness's unimodal logits)."""
    with torch.no_grad():
        za = model.encoders["audio"](batch["audio"])
        zv = model.encoders["visual"](batch["visual"])
        w, b = model.fusion.fc.weight, model.fusion.fc.bias
        return za @ w[:, :8].T + b, zv @ w[:, 8:].T + b


# ----------------------------------------------------------------------------- fixed
def test_fixed_multipliers_scale_each_encoder_and_leave_the_head(tmp_path):
    model, batch = mlp_model(), batch_of(make_rows(8))
    enc_ref, head_ref = plain_grads(model, batch)
    strategy_grads("fixed", model, batch, tmp_path, fixed_multipliers=[5.0, 0.5])
    for k, mult in zip(MODS, (5.0, 0.5)):
        for g, r in zip(grads_of(model.encoders[k]), enc_ref[k]):
            assert torch.allclose(g, mult * r, atol=1e-6)
    for g, r in zip(grads_of(model.fusion), head_ref):
        assert torch.allclose(g, r, atol=1e-7)


def test_fixed_multipliers_by_name_and_bad_length(tmp_path):
    s = build_strategy("fixed", cfg(tmp_path, strategy="fixed", fixed_multipliers={"audio": 5.0}), MODS)
    assert s.multipliers.tolist() == [5.0, 1.0]
    with pytest.raises(ValueError, match="fixed_multipliers: expected 2 values"):
        build_strategy("fixed", cfg(tmp_path, strategy="fixed", fixed_multipliers=[1.0, 2.0, 3.0]), MODS)
    with pytest.raises(ValueError, match="fixed_multipliers"):
        cfg(tmp_path, strategy="fixed", fixed_multipliers=[-1.0, 1.0])


# ----------------------------------------------------------------------------- OGM-GE
def test_ogm_coefficient_by_hand():
    ua = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    uv = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    y = torch.tensor([0, 1])
    s_a = math.exp(2) / (math.exp(2) + 1) + math.e / (1 + math.e)
    s_v = 0.5 + 1 / (1 + math.e)
    assert torch.allclose(ogm_scores([ua, uv], y), torch.tensor([s_a, s_v]), atol=1e-6)
    k = ogm_coefficients([ua, uv], y, alpha=0.8)
    assert k[0].item() == pytest.approx(1 - math.tanh(0.8 * s_a / s_v), abs=1e-6)  # dominant: suppressed
    assert k[1].item() == 1.0  # the other keeps k = 1
    # swapping the roles swaps the modulated modality
    k2 = ogm_coefficients([uv, ua], y, alpha=0.8)
    assert k2[0].item() == 1.0 and k2[1].item() == pytest.approx(k[0].item(), abs=1e-6)


def test_ogm_modulates_only_the_dominant_encoder(tmp_path):
    model, batch = mlp_model(), batch_of(make_rows(8))
    ua, uv = unimodal_by_hand(model, batch)
    k = ogm_coefficients([ua, uv], batch["labels"], alpha=0.8)
    assert (k < 1).sum() == 1  # exactly one dominant modality here
    enc_ref, head_ref = plain_grads(model, batch)
    strategy_grads("ogm_ge", model, batch, tmp_path, ogm_noise=False)
    for i, m in enumerate(MODS):
        for g, r in zip(grads_of(model.encoders[m]), enc_ref[m]):
            assert torch.allclose(g, k[i] * r, atol=1e-6)
    for g, r in zip(grads_of(model.fusion), head_ref):
        assert torch.allclose(g, r, atol=1e-7)


def test_ogm_outside_its_epoch_window_is_plain_training(tmp_path):
    model, batch = mlp_model(), batch_of(make_rows(8))
    enc_ref, _ = plain_grads(model, batch)
    ctx = StepContext(epoch=3.5, global_step=7, training=True)
    strategy_grads("ogm_ge", model, batch, tmp_path, context=ctx, ogm_start_epoch=0, ogm_end_epoch=2)
    for m in MODS:  # neither k nor noise after the window
        for g, r in zip(grads_of(model.encoders[m]), enc_ref[m]):
            assert torch.allclose(g, r, atol=1e-7)


def test_ogm_ge_noise_is_rank_synchronised_and_scaled_by_the_gradient_std(tmp_path):
    batch = batch_of(make_rows(8))
    runs = []
    for step in (5, 5, 6):
        model = mlp_model()
        ctx = StepContext(epoch=0.0, global_step=step, training=True)
        strategy_grads("ogm_ge", model, batch, tmp_path, context=ctx)
        runs.append(torch.cat([p.grad.reshape(-1) for p in model.encoders.parameters()]))
    assert torch.equal(runs[0], runs[1])  # same seed and step: identical noise on every rank
    assert not torch.allclose(runs[0], runs[2])  # a new draw each step
    # noise = grad(with noise) - k * grad(plain); its std matches the unmodulated gradient's std
    model = mlp_model()
    enc_ref, _ = plain_grads(model, batch)
    s, _ = strategy_grads("ogm_ge", model, batch, tmp_path, ogm_noise=True)
    ua, uv = unimodal_by_hand(mlp_model(), batch)
    k = ogm_coefficients([ua, uv], batch["labels"], alpha=0.8)
    w = model.encoders["visual"].net[0].weight  # 8x4 = 32 entries
    ref = enc_ref["visual"][0]
    noise = w.grad - k[1] * ref
    assert noise.abs().max() > 0
    assert 0.4 < (noise.std() / ref.std()).item() < 2.0


class ConvModel(nn.Module):
    """A contract model whose encoders hold a conv kernel and a linear layer."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.config = type("C", (), {"num_labels": 3})()
        self.encoders = nn.ModuleDict(
            {m: nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 4)) for m in MODS}
        )
        self.fc = nn.Linear(8, 3)

    def forward(self, return_unimodal_logits=False, **x):
        from arl_hf.modeling.model import MultimodalOutput

        z = {m: self.encoders[m](x[m]) for m in MODS}
        logits = self.fc(torch.cat([z["audio"], z["visual"]], -1))
        uni = None
        if return_unimodal_logits:
            w, b = self.fc.weight, self.fc.bias
            uni = {"audio": z["audio"] @ w[:, :4].T + b, "visual": z["visual"] @ w[:, 4:].T + b}
        return MultimodalOutput(logits=logits, features=z, unimodal_logits=uni)


def test_ogm_conv_only_option_touches_only_conv_kernels(tmp_path):
    g = torch.Generator().manual_seed(0)
    batch = {"audio": torch.randn(6, 1, 5, 5, generator=g), "visual": torch.randn(6, 1, 5, 5, generator=g),
             "labels": torch.tensor([0, 1, 2, 0, 1, 2])}
    ref = ConvModel()
    out = ref(**{m: batch[m] for m in MODS}, return_unimodal_logits=True)
    F.cross_entropy(out.logits, batch["labels"]).backward()
    k = ogm_coefficients([out.unimodal_logits[m] for m in MODS], batch["labels"], 0.8)
    model = ConvModel()
    strategy_grads("ogm_ge", model, batch, tmp_path, ogm_noise=False, ogm_conv_only=True)
    for i, m in enumerate(MODS):
        conv_w, conv_b = model.encoders[m][0].weight, model.encoders[m][0].bias
        assert torch.allclose(conv_w.grad, k[i] * ref.encoders[m][0].weight.grad, atol=1e-6)  # 4-D: scaled
        assert torch.allclose(conv_b.grad, ref.encoders[m][0].bias.grad, atol=1e-6)  # bias: untouched
        assert torch.allclose(model.encoders[m][3].weight.grad, ref.encoders[m][3].weight.grad, atol=1e-6)
    assert k.min() < 1
    with pytest.raises(ValueError, match="ogm_conv_only"):
        s = build_strategy("ogm_ge", cfg(tmp_path, strategy="ogm_ge", ogm_conv_only=True), MODS)
        s.setup(None, mlp_model())


# ----------------------------------------------------------------------------- AGM
def test_agm_shapley_contributions_by_hand():
    f = torch.tensor([[3.0, 1.0]])
    ua = torch.tensor([[2.0, 0.0]])
    uv = torch.tensor([[0.5, 0.5]])
    ma, mv = shapley_contributions(f, [ua, uv])
    assert torch.allclose(ma, 0.5 * (f - uv + ua))  # AGM: (f(a,v) - f(0,v) + f(a,0)) / 2
    assert torch.allclose(mv, 0.5 * (f - ua + uv))
    assert torch.allclose(ma + mv, f)
    # three modalities: the contributions still add up to the fused output
    parts = shapley_contributions(f, [ua, uv, torch.tensor([[1.0, -1.0]])])
    assert torch.allclose(sum(parts), f)


def test_agm_coefficients_by_hand():
    s = torch.tensor([0.5, 1.5], dtype=torch.float64)  # audio has the lower loss: dominant
    s_bar = torch.tensor([0.8, 1.0], dtype=torch.float64)
    c = agm_coefficients(s, s_bar, alpha=1.5)
    ratio_a, target_a = math.exp(1.5 - 0.5), math.exp(1.0 - 0.8)
    ratio_v, target_v = math.exp(0.5 - 1.5), math.exp(0.8 - 1.0)
    assert c[0].item() == pytest.approx(math.exp(1.5 * (target_a - ratio_a)), rel=1e-9)
    assert c[1].item() == pytest.approx(math.exp(1.5 * (target_v - ratio_v)), rel=1e-9)
    assert c[0] < 1 < c[1]
    big = agm_coefficients(torch.tensor([5.0, 0.0]).double(), torch.tensor([0.0, 5.0]).double(), 1.0)
    assert big[0].item() == pytest.approx(math.exp(10.0))  # min(target - ratio, 10)


def test_agm_scales_each_encoder_gradient_by_its_coefficient(tmp_path):
    model, batch = mlp_model(), batch_of(make_rows(8))
    enc_ref, _ = plain_grads(model, batch)
    s, res = strategy_grads("agm", model, batch, tmp_path)
    ua, uv = unimodal_by_hand(mlp_model(), batch)
    with torch.no_grad():
        out = mlp_model()(audio=batch["audio"], visual=batch["visual"])
    ma, mv = shapley_contributions(out.logits, [ua, uv])
    sa, sv = F.cross_entropy(ma, batch["labels"]).item(), F.cross_entropy(mv, batch["labels"]).item()
    # first iteration: the running mean of the previous scores is 0, so target = exp(0) = 1
    # and the step is already modulated: coeff_a = exp(1.5 * (1 - exp(s_v - s_a)))
    ca, cv = math.exp(1.5 * (1.0 - math.exp(sv - sa))), math.exp(1.5 * (1.0 - math.exp(sa - sv)))
    assert res.logs["coeff_audio"].item() == pytest.approx(ca, rel=1e-5)
    assert res.logs["coeff_visual"].item() == pytest.approx(cv, rel=1e-5)
    assert abs(ca - 1.0) > 1e-3 or abs(cv - 1.0) > 1e-3
    for i, m in enumerate(MODS):
        for g, r in zip(grads_of(model.encoders[m]), enc_ref[m]):
            assert torch.allclose(g, (ca, cv)[i] * r, atol=1e-6)
    # second step: the running mean is the first step's scores only (the current one excluded)
    model2 = copy.deepcopy(model)
    model2.zero_grad()
    batch2 = batch_of(make_rows(8, seed=3))
    res2 = s.compute_loss(model2, batch2, TRAIN)
    res2.loss.backward()
    sa2, sv2 = res2.logs["score_audio"].item(), res2.logs["score_visual"].item()
    want_a = math.exp(1.5 * min(math.exp(sv - sa) - math.exp(sv2 - sa2), 10.0))
    want_v = math.exp(1.5 * min(math.exp(sa - sv) - math.exp(sa2 - sv2), 10.0))
    c2 = torch.tensor([res2.logs["coeff_audio"].item(), res2.logs["coeff_visual"].item()])
    assert c2[0].item() == pytest.approx(want_a, rel=1e-5)
    assert c2[1].item() == pytest.approx(want_v, rel=1e-5)
    ref2, _ = plain_grads(model2, batch2)
    for i, m in enumerate(MODS):
        for g, r in zip(grads_of(model2.encoders[m]), ref2[m]):
            assert torch.allclose(g, c2[i] * r, atol=1e-6)
    assert s.iterations == 2
    state = s.state_dict()
    assert torch.allclose(state["score_sum"], torch.tensor([sa + sa2, sv + sv2]).double(), atol=1e-5)
