"""Fusion-specific behaviour: two-modality fusions, the degenerate gate head of ``gated``,
fusion points, the cost of the intermediate unimodal pass and BatchNorm statistics."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from arl_hf import MultimodalConfig, MultimodalModel
from arl_hf.strategies import arl_statistics

MLP = {"encoder": "mlp", "input_dim": 4, "hidden_dims": [8, 8]}


def _model(fusion, n=2, **kwargs):
    mods = {name: dict(MLP) for name in ["audio", "visual", "text"][:n]}
    return MultimodalModel(MultimodalConfig(modalities=mods, num_labels=3, fusion=fusion, fusion_kwargs=kwargs))


@pytest.mark.parametrize("fusion", ["film", "gated"])
def test_two_modality_fusions_reject_three(fusion):
    with pytest.raises(ValueError, match=rf"fusion: '{fusion}' is defined for exactly two modalities, got 3"):
        _model(fusion, n=3)


@pytest.mark.parametrize(
    "fusion, kwargs, message",
    [
        ("gated", {"gate": "text"}, r"fusion_kwargs\['gate'\]: 'text' is not a modality"),
        ("film", {"condition": "x"}, r"fusion_kwargs\['condition'\]"),
        ("sum", {"bias": False}, r"fusion_kwargs: unknown option\(s\) \['bias'\] for fusion 'sum'"),
        ("mmtm", {"ratio": 2}, r"fusion_kwargs\['ratio'\]: unknown option for fusion 'mmtm'"),
        ("mmtm", {"stages": [5]}, r"fusion_kwargs\['stages'\]: stage 5 out of range for 'audio'"),
        ("mmtm", {"stages": [1, 0]},
         r"fusion_kwargs\['stages'\]: fusion points of 'audio' must be strictly increasing"),
        ("mmtm", {"head": "mmtm"}, r"fusion_kwargs\['head'\]: expected a late fusion"),
        ("cross_attention", {"dim": 6, "num_heads": 4}, r"fusion_kwargs\['num_heads'\]"),
    ],
)
def test_bad_fusion_options_name_the_field(fusion, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _model(fusion, **kwargs)


def test_sum_and_concat_work_for_three_modalities():
    for fusion in ("sum", "concat", "mmtm", "cross_attention"):
        out = _model(fusion, n=3)(audio=torch.randn(2, 4), visual=torch.randn(2, 4), text=torch.randn(2, 4),
                                  return_unimodal_logits=True)
        assert out.logits.shape == (2, 3) and len(out.unimodal_logits) == 3


def test_gated_gate_head_degenerates_when_the_other_bias_is_zero():
    """The gate modality alone gives fc_out(sigmoid(.) * b_other): with b_other = 0 (e.g.
    init='authors' zeroes biases) its logits are fc_out.bias for every sample, so ARL sees
    a constant prediction (entropy of softmax(fc_out.bias), dependency = its class prior)."""
    torch.manual_seed(0)
    model = MultimodalModel(
        MultimodalConfig(modalities={"audio": dict(MLP), "visual": dict(MLP)}, num_labels=3, fusion="gated",
                         init="authors")
    ).eval()
    head = model.fusion
    assert head.gate == "audio" and torch.count_nonzero(head.fc_other.bias) == 0
    with torch.no_grad():
        head.fc_out.bias.copy_(torch.tensor([0.3, -0.2, 0.1]))
        out = model(audio=torch.randn(16, 4), visual=torch.randn(16, 4), return_unimodal_logits=True)
    gate_logits = out.unimodal_logits["audio"]
    torch.testing.assert_close(gate_logits, head.fc_out.bias.expand(16, 3))
    assert gate_logits.std(dim=0).max() == 0 and out.unimodal_logits["visual"].std(dim=0).max() > 1e-3
    labels = torch.arange(16) % 3
    stats = arl_statistics(out.unimodal_logits, labels, "paper")
    entropy, dependency = stats.means()
    p = F.softmax(head.fc_out.bias.detach(), -1)
    assert entropy[0] == pytest.approx(float(-(p * p.log()).sum()), rel=1e-5)
    assert dependency[0] == pytest.approx(float(p[labels].mean()), rel=1e-5)
    # once b_other is non-zero the gate head carries information about the gate modality
    with torch.no_grad():
        head.fc_other.bias.normal_()
        again = model(audio=torch.randn(16, 4), visual=torch.randn(16, 4), return_unimodal_logits=True)
    assert again.unimodal_logits["audio"].std(dim=0).max() > 1e-3


def test_film_target_head_degenerates_when_gamma_bias_is_zero():
    model = MultimodalModel(
        MultimodalConfig(modalities={"audio": dict(MLP), "visual": dict(MLP)}, num_labels=3, fusion="film",
                         init="authors")
    ).eval()
    with torch.no_grad():
        out = model(audio=torch.randn(8, 4), visual=torch.randn(8, 4), return_unimodal_logits=True)
    # condition = audio (first); the target (visual) alone gives fc_out(0 * z + 0)
    assert model.fusion.condition == "audio"
    torch.testing.assert_close(out.unimodal_logits["visual"], model.fusion.fc_out.bias.expand(8, 3))
    assert out.unimodal_logits["audio"].std(dim=0).max() > 1e-4


def test_intermediate_fusion_points():
    res = {"encoder": "timm:test_resnet", "in_chans": 1}
    mods = {"audio": res, "visual": dict(MLP)}
    mmtm = MultimodalModel(MultimodalConfig(modalities=mods, num_labels=2, fusion="mmtm"))
    # default: last three stages, clipped to the shorter encoder (the MLP has 2 stages)
    assert mmtm.fusion.points == [{"audio": 2, "visual": 0}, {"audio": 3, "visual": 1}]
    ca = MultimodalModel(MultimodalConfig(modalities=mods, num_labels=2, fusion="cross_attention"))
    assert ca.fusion.points == [{"audio": 3, "visual": 1}]
    per = MultimodalModel(
        MultimodalConfig(modalities=mods, num_labels=2, fusion="mmtm",
                         fusion_kwargs={"stages": {"audio": [1, 3], "visual": [0, -1]}})
    )
    assert per.fusion.points == [{"audio": 1, "visual": 0}, {"audio": 3, "visual": 1}]
    assert [b.channels for b in per.fusion.blocks] == [{"audio": 48, "visual": 8}, {"audio": 96, "visual": 8}]
    assert mmtm.arl_gradient_modulation == "parameters" and _model("concat").arl_gradient_modulation is None


def test_intermediate_fusion_rejects_unstaged_backbones_and_frames():
    vit = {"encoder": "timm:test_vit", "img_size": 32, "in_chans": 3}
    with pytest.raises(ValueError,
                       match=r"modalities\['visual'\]\['encoder'\]: fusion 'mmtm' runs the encoders stage by stage"):
        MultimodalModel(MultimodalConfig(modalities={"audio": dict(MLP), "visual": vit}, num_labels=2, fusion="mmtm"))
    model = MultimodalModel(
        MultimodalConfig(modalities={"audio": dict(MLP), "visual": {"encoder": "timm:test_resnet"}}, num_labels=2,
                         fusion="mmtm")
    )
    with pytest.raises(ValueError, match=r"visual: intermediate fusion 'mmtm' takes one frame per sample"):
        model(audio=torch.randn(2, 4), visual=torch.randn(2, 3, 3, 32, 32))


def test_unimodal_pass_runs_each_encoder_once_from_the_first_fusion_point():
    """The zeroed pass reuses the stream states at the first fusion point, never runs a
    zeroed modality's encoder, and runs each encoder's later stages once on B samples."""
    res = {"encoder": "timm:test_resnet", "in_chans": 1}
    mods = {"audio": res, "visual": {"encoder": "mlp", "input_dim": 4, "hidden_dims": [8, 8, 8]}}
    config = MultimodalConfig(modalities=mods, num_labels=2, fusion="mmtm", fusion_kwargs={"stages": [1, 2]})
    model = MultimodalModel(config).train()
    calls = []
    for m, enc in model.encoders.items():
        original_stage, original_stem = enc.forward_stage, enc.forward_stem
        enc.forward_stage = lambda i, h, m=m, f=original_stage: calls.append((m, i, h.shape[0])) or f(i, h)
        enc.forward_stem = lambda x, m=m, f=original_stem: calls.append((m, "stem", x.shape[0])) or f(x)
    x = {"audio": torch.randn(4, 1, 32, 32), "visual": torch.randn(4, 4)}
    model(**x)
    fused = sorted(calls, key=str)
    calls.clear()
    model(**x, return_unimodal_logits=True)
    extra = sorted(calls[len(fused) :], key=str)
    assert sorted(calls[: len(fused)], key=str) == fused
    # first fusion point after stage 1: only stages 2.. are re-run, each once, on B = 4 rows
    assert extra == sorted([("audio", 2, 4), ("audio", 3, 4), ("visual", 2, 4)], key=str)


def test_unimodal_pass_leaves_batchnorm_running_stats_alone():
    res = {"encoder": "timm:test_resnet", "in_chans": 1}
    mods = {"audio": res, "visual": dict(MLP)}
    torch.manual_seed(0)
    a = MultimodalModel(MultimodalConfig(modalities=mods, num_labels=2, fusion="cross_attention")).train()
    b = MultimodalModel(a.config).train()
    b.load_state_dict(a.state_dict())
    x = {"audio": torch.randn(4, 1, 32, 32), "visual": torch.randn(4, 4)}
    before = {k: v.clone() for k, v in a.state_dict().items() if "running" in k}
    a(**x)
    b(**x, return_unimodal_logits=True).unimodal_logits["audio"].sum().backward()
    sa, sb = a.state_dict(), b.state_dict()
    changed = [k for k in before if not torch.equal(before[k], sa[k])]
    assert changed  # the fused pass does update them
    for k in before:
        assert torch.equal(sa[k], sb[k]), k
