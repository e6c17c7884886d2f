"""Every fusion (late and intermediate): shapes, unimodal logits = the fusion path with the
other modalities zeroed (recomputed here step by step), ARL's gradient rule, save/load."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from arl_hf import MultimodalModel
from arl_hf.modeling import FUSIONS
from arl_hf.strategies import ARLStrategy, StepContext


def _late_reference(head, feats):
    """The late fusions' definitions, written out."""
    name = head.fusion_name
    if name == "concat":
        return F.linear(torch.cat([feats[m] for m in head.modalities], -1), head.fc.weight, head.fc.bias)
    if name == "sum":
        return sum(F.linear(feats[m], head.heads[m].weight, head.heads[m].bias) for m in head.modalities)
    if name == "film":
        gamma, beta = F.linear(feats[head.condition], head.film.weight, head.film.bias).chunk(2, -1)
        return F.linear(gamma * feats[head.target] + beta, head.fc_out.weight, head.fc_out.bias)
    if name == "gated":
        gate = torch.sigmoid(F.linear(feats[head.gate], head.fc_gate.weight, head.fc_gate.bias))
        other = F.linear(feats[head.other], head.fc_other.weight, head.fc_other.bias)
        return F.linear(gate * other, head.fc_out.weight, head.fc_out.bias)
    raise AssertionError(name)


def reference_logits(model: MultimodalModel, inputs, keep=None):
    """Logits of the fusion path, every modality but ``keep`` zeroed at every input of the
    fusion (blocks and head); ``keep=None``: nothing zeroed. Runs all encoders in full."""
    fusion, enc, mods = model.fusion, model.encoders, model.modalities

    def zero(d):
        return {m: v if keep is None or m == keep else torch.zeros_like(v) for m, v in d.items()}

    if not fusion.intermediate:
        return _late_reference(fusion, zero({m: enc[m](inputs[m]) for m in mods}))
    h = {m: enc[m].forward_stem(inputs[m]) for m in mods}
    done = {m: -1 for m in mods}
    for p, point in enumerate(fusion.points):
        for m in mods:
            for s in range(done[m] + 1, point[m] + 1):
                h[m] = enc[m].forward_stage(s, h[m])
        done = point
        h = fusion.blocks[p](zero(h))
    for m in mods:
        for s in range(done[m] + 1, enc[m].num_stages):
            h[m] = enc[m].forward_stage(s, h[m])
    return _late_reference(fusion.head, zero({m: enc[m].forward_pool(h[m]) for m in mods}))


def test_every_registered_fusion_is_covered(all_cases):
    assert {c[1] for c in all_cases.values()} == set(FUSIONS)


def test_shapes_and_fused_path(case_name, build_case, case_inputs):
    model = build_case(case_name).eval()
    x = case_inputs(case_name)
    with torch.no_grad():
        out = model(**x, labels=torch.arange(6) % 3, return_unimodal_logits=True)
        ref = reference_logits(model, x)
    assert out.logits.shape == (6, 3)
    assert set(out.unimodal_logits) == set(model.modalities)
    assert all(v.shape == (6, 3) for v in out.unimodal_logits.values())
    assert ({m: tuple(v.shape) for m, v in out.features.items()}
            == {m: (6, model.encoders[m].out_dim) for m in model.modalities})
    assert out.loss.shape == () and torch.isfinite(out.loss)
    torch.testing.assert_close(out.logits, ref, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        plain = model(**x)
    assert plain.unimodal_logits is None
    torch.testing.assert_close(plain.logits, out.logits, rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_unimodal_logits_equal_zeroed_fusion_path(case_name, mode, build_case, case_inputs):
    model = build_case(case_name)
    model.train(mode == "train")
    x = case_inputs(case_name)
    reference_model = copy.deepcopy(model)  # BatchNorm running stats must not matter
    with torch.no_grad():
        uni = model(**x, return_unimodal_logits=True).unimodal_logits
        for m in model.modalities:
            expected = reference_logits(reference_model, x, keep=m)
            torch.testing.assert_close(uni[m], expected, rtol=1e-5, atol=1e-5)
        # the heads really differ per modality (the test could not pass with a shared output)
        ms = model.modalities
        assert (uni[ms[0]] - uni[ms[1]]).abs().max() > 1e-4


def test_arl_gradient_rule(case_name, build_case, case_inputs, arl_args):
    """ARL: encoder-m gradients == (1 + a_m) x the unmodulated gradients of the same loss;
    fusion (blocks and head) gradients unchanged."""
    model = build_case(case_name).train()
    strategy = ARLStrategy(arl_args, model.modalities)
    strategy.setup(None, model)
    expected_mode = "parameters" if model.fusion.intermediate else "output"
    assert strategy.modulator.mode == expected_mode
    inputs = dict(case_inputs(case_name), labels=torch.tensor([0, 1, 2, 0, 1, 2]))
    ctx = StepContext(epoch=1.0, global_step=1, training=True)

    def grads(modulate: bool):
        model.zero_grad(set_to_none=True)
        res = strategy.compute_loss(model, inputs, ctx)
        if not modulate:
            strategy.modulator.set_scales(None)
        res.loss.backward()
        strategy.after_backward(model, ctx)
        return res, {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}

    res1, g1 = grads(True)
    res0, g0 = grads(False)
    torch.testing.assert_close(res1.loss, res0.loss, rtol=0, atol=0)
    scales = {m: float(res1.logs[f"grad_scale_{m}"]) for m in model.modalities}
    coeffs = {m: float(res1.logs[f"a_{m}"]) for m in model.modalities}
    assert sum(coeffs.values()) == pytest.approx(1.0, abs=1e-6)
    for m in model.modalities:
        assert scales[m] == pytest.approx(1.0 + coeffs[m], abs=1e-6)
    assert max(scales.values()) - min(scales.values()) > 1e-4, scales  # a rule that can fail
    assert set(g1) == set(g0)
    checked = {"encoder": 0, "fusion": 0}
    for name, g in g1.items():
        owner = name.split(".")[1] if name.startswith("encoders.") else None
        expected = g0[name] * scales[owner] if owner else g0[name]
        # relative error of the whole tensor: float32 rounding (cancellation in BatchNorm
        # biases reaches 1e-7 absolute) stays far below the 1e-4 bound, a wrong scale does not
        err = float((g - expected).norm() / expected.norm().clamp_min(1e-30))
        assert err < 1e-4 or float(g.abs().max()) == float(expected.abs().max()) == 0.0, (name, err)
        if g0[name].abs().max() > 0:
            checked["encoder" if owner else "fusion"] += 1
    assert checked["encoder"] > 0 and checked["fusion"] > 0
    if model.fusion.intermediate:  # the blocks themselves receive gradients and are not scaled
        assert any(n.startswith("fusion.blocks.") and g0[n].abs().max() > 0 for n in g0)


def test_save_load_round_trip(case_name, build_case, case_inputs, tmp_path):
    model = build_case(case_name)
    with torch.no_grad():  # move BatchNorm running stats away from their initial values
        model.train()(**case_inputs(case_name, seed=5))
    model.eval()
    model.save_pretrained(tmp_path)
    loaded = MultimodalModel.from_pretrained(tmp_path).eval()
    assert loaded.config.fusion == model.config.fusion and loaded.config.fusion_kwargs == model.config.fusion_kwargs
    sd, sd2 = model.state_dict(), loaded.state_dict()
    assert sd.keys() == sd2.keys()
    for k in sd:
        assert torch.equal(sd[k], sd2[k]), k
    x = case_inputs(case_name)
    with torch.no_grad():
        a, b = model(**x, return_unimodal_logits=True), loaded(**x, return_unimodal_logits=True)
    # same weights bit for bit (above); vectorised kernels may still round differently on
    # tensors that safetensors maps at other memory alignments (seen: 1 ulp)
    torch.testing.assert_close(a.logits, b.logits, rtol=1e-6, atol=1e-7)
    for m in model.modalities:
        torch.testing.assert_close(a.unimodal_logits[m], b.unimodal_logits[m], rtol=1e-6, atol=1e-7)
