"""Encoders: stage-wise execution, NCHW/NHWC pooling, sequence encoders, and pretrained
timm weights loaded offline (full-size Swin-Base, a local HF cache, clear errors)."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import save_file

from arl_hf import MultimodalConfig, MultimodalModel
from arl_hf.modeling import build_encoder, load_backbone_weights, load_pretrained_backbones
from arl_hf.modeling.pretrained import resolve_pretrained_file

TINY_SWIN = {
    "encoder": "timm:swin_tiny_patch4_window7_224",
    "img_size": 32,
    "window_size": 2,
    "embed_dim": 8,
    "depths": [1, 1],
    "num_heads": [1, 1],
    "drop_path_rate": 0.0,
}

STAGED = {
    "resnet": ({"encoder": "timm:test_resnet", "in_chans": 1}, (1, 32, 32)),
    "convnext": ({"encoder": "timm:test_convnext", "in_chans": 2}, (2, 32, 32)),
    "swin": (TINY_SWIN, (3, 32, 32)),
    "mlp": ({"encoder": "mlp", "input_dim": 6, "hidden_dims": [8, 4]}, (6,)),
    "transformer": ({"encoder": "transformer", "input_dim": 6, "d_model": 8, "num_heads": 2, "dropout": 0.0}, (5, 6)),
    "lstm": ({"encoder": "lstm", "input_dim": 6, "hidden_dim": 4, "num_layers": 2, "bidirectional": True}, (5, 6)),
}


@pytest.mark.parametrize("kind", sorted(STAGED))
def test_stagewise_execution_equals_forward(kind):
    spec, shape = STAGED[kind]
    torch.manual_seed(0)
    enc = build_encoder("x", dict(spec)).eval()
    x = torch.randn(3, *shape)
    with torch.no_grad():
        h = enc.forward_stem(x)
        for i in range(enc.num_stages):
            h = enc.forward_stage(i, h)
            assert h.shape[enc.channel_axis] == enc.stage_dims[i], (i, tuple(h.shape))
        pooled = enc.forward_pool(h)
        direct = enc(x)
    assert direct.shape == (3, enc.out_dim)
    torch.testing.assert_close(pooled, direct, rtol=1e-6, atol=1e-6)


def test_swin_features_are_pooled_over_nhwc_spatial_axes():
    torch.manual_seed(0)
    enc = build_encoder("visual", dict(TINY_SWIN)).eval()
    assert enc.output_fmt == "NHWC" and enc.channel_axis == -1
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        fmap = enc.backbone.forward_features(x)
        assert fmap.shape == (2, 4, 4, 16)  # NHWC, two stages of a 32 px input
        torch.testing.assert_close(enc(x), fmap.mean(dim=(1, 2)), rtol=1e-6, atol=1e-6)
        # a backbone that returns its map unpooled is averaged here, by its format
        unpooled = build_encoder("visual", dict(TINY_SWIN, global_pool=""))
        unpooled.load_state_dict(enc.state_dict())
        torch.testing.assert_close(unpooled.eval()(x), enc(x), rtol=1e-6, atol=1e-6)
        cnn = build_encoder("audio", {"encoder": "timm:test_resnet", "in_chans": 1}).eval()
        cnn_unpooled = build_encoder("audio", {"encoder": "timm:test_resnet", "in_chans": 1, "global_pool": ""}).eval()
        cnn_unpooled.load_state_dict(cnn.state_dict())
        a = torch.randn(2, 1, 32, 32)
        torch.testing.assert_close(cnn_unpooled(a), cnn(a), rtol=1e-6, atol=1e-6)
        assert cnn(a).shape == (2, cnn.out_dim)


@pytest.mark.parametrize(
    "spec, field",
    [
        ({"encoder": "transformer"}, "['input_dim']"),
        ({"encoder": "transformer", "input_dim": 4, "d_model": 10, "num_heads": 4}, "['num_heads']"),
        ({"encoder": "transformer", "input_dim": 4, "dropout": 1.5}, "['dropout']"),
        ({"encoder": "transformer", "input_dim": 4, "hidden_dims": [3]}, "['hidden_dims']"),
        ({"encoder": "lstm", "input_dim": 4, "hidden_dim": 0}, "['hidden_dim']"),
        ({"encoder": "lstm", "input_dim": 4, "bidirectional": "yes"}, "['bidirectional']"),
        ({"encoder": "timm:test_resnet", "pretrained": 3}, "['pretrained']"),
    ],
)
def test_bad_encoder_specs_name_the_field(spec, field):
    with pytest.raises(ValueError, match=r"modalities\['text'\]" + field.replace("[", r"\[").replace("]", r"\]")):
        MultimodalConfig(modalities={"text": spec, "audio": {"encoder": "mlp", "input_dim": 2, "hidden_dims": [2]}},
                         num_labels=2)


def test_sequence_encoder_input_checks():
    cfg = MultimodalConfig(
        modalities={
            "text": {"encoder": "transformer", "input_dim": 4, "d_model": 8, "num_heads": 2, "max_len": 6},
            "audio": {"encoder": "lstm", "input_dim": 3},
        },
        num_labels=2,
    )
    model = MultimodalModel(cfg)
    ok = {"text": torch.randn(2, 6, 4), "audio": torch.randn(2, 9, 3)}
    assert model(**ok).logits.shape == (2, 2)
    with pytest.raises(ValueError, match=r"text: expected a feature sequence \(B, L, 4\)"):
        model(text=torch.randn(2, 4), audio=ok["audio"])
    with pytest.raises(ValueError, match="audio: expected a feature sequence"):
        model(text=ok["text"], audio=torch.randn(2, 9, 5))
    with pytest.raises(ValueError, match="text: sequence length 7 exceeds max_len=6"):
        model(text=torch.randn(2, 7, 4), audio=ok["audio"])


# ---- pretrained weights, offline ---------------------------------------------------------------------


def test_swin_base_in22k_full_size_weights_load_offline_with_gated_fusion(tmp_path):
    """Table 4's setting: Swin-Base ImageNet-22k (1-channel spectrogram input) + gated fusion.
    The weights file is written here from a random Swin-Base with the 21841-class head."""
    name = "swin_base_patch4_window7_224.ms_in22k"
    cfg = MultimodalConfig(
        modalities={
            "audio": {"encoder": f"timm:{name}", "in_chans": 1},
            "visual": {"encoder": "mlp", "input_dim": 8, "hidden_dims": [16]},
        },
        num_labels=6,
        fusion="gated",
    )
    torch.manual_seed(0)
    model = MultimodalModel(cfg).eval()
    backbone = model.encoders["audio"].backbone
    # a checkpoint in timm's layout: 3-channel stem, classifier, no computed index/mask buffers
    gen = torch.Generator().manual_seed(1)
    state = {}
    for k, v in backbone.state_dict().items():
        if k in model.encoders["audio"].computed_buffers:
            continue
        state[k] = (v.float() * -1.5 + 0.01).contiguous() if v.is_floating_point() else v.contiguous()
    stem = "patch_embed.proj.weight"
    state[stem] = torch.randn(backbone.patch_embed.proj.out_channels, 3, 4, 4, generator=gen)
    state["head.fc.weight"] = torch.zeros(21841, 1024)
    state["head.fc.bias"] = torch.zeros(21841)
    path = tmp_path / "swin_base_in22k.safetensors"
    save_file(state, str(path))
    assert path.stat().st_size > 300e6  # a full-size file (~88M backbone parameters + 22M head)

    load_backbone_weights(model, "audio", str(path))
    loaded = backbone.state_dict()
    # 3 -> 1 channel
    torch.testing.assert_close(loaded[stem], state[stem].sum(dim=1, keepdim=True), rtol=1e-6, atol=1e-6)
    for key in ("layers.2.blocks.9.mlp.fc1.weight", "layers.3.blocks.1.attn.qkv.bias", "norm.weight"):
        assert torch.equal(loaded[key], state[key]), key
    assert not any(k.startswith("head.fc") for k in loaded)
    x = torch.randn(1, 1, 224, 224)
    with torch.no_grad():
        out = model(audio=x, visual=torch.randn(1, 8), return_unimodal_logits=True)
        fmap = backbone.forward_features(x)
    assert fmap.shape == (1, 7, 7, 1024)  # NHWC
    torch.testing.assert_close(out.features["audio"], fmap.mean(dim=(1, 2)), rtol=1e-5, atol=1e-5)
    assert out.logits.shape == (1, 6) and set(out.unimodal_logits) == {"audio", "visual"}


def _fake_hf_cache(root, repo: str, state: dict) -> None:
    folder = root / ("models--" + repo.replace("/", "--"))
    revision = "0123456789abcdef0123456789abcdef01234567"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(revision)
    snap = folder / "snapshots" / revision
    snap.mkdir(parents=True)
    save_file(state, str(snap / "model.safetensors"))


def _resnet_model(pretrained=False):
    audio = {"encoder": "timm:test_resnet.r160_in1k", "in_chans": 1}
    if pretrained is not False:
        audio["pretrained"] = pretrained
    torch.manual_seed(0)
    return MultimodalModel(
        MultimodalConfig(modalities={"audio": audio, "visual": {"encoder": "mlp", "input_dim": 4, "hidden_dims": [4]}},
                         num_labels=2)
    )


def _timm_layout_state(model) -> dict:
    """A 3-channel, 1000-class checkpoint derived from the model's own (random) weights."""
    sd = {k: v.clone() + 0.5 if v.is_floating_point() else v.clone()
          for k, v in model.encoders["audio"].backbone.state_dict().items()}
    sd["conv1.0.weight"] = torch.randn(sd["conv1.0.weight"].shape[0], 3, 3, 3)
    sd["fc.weight"], sd["fc.bias"] = torch.zeros(1000, 96), torch.zeros(1000)
    return sd


def test_weights_from_local_hf_cache(tmp_path):
    model = _resnet_model(pretrained=True)
    state = _timm_layout_state(model)
    _fake_hf_cache(tmp_path, "timm/test_resnet.r160_in1k", state)
    load_pretrained_backbones(model, cache_dir=str(tmp_path))
    loaded = model.encoders["audio"].backbone.state_dict()
    assert torch.equal(loaded["layer3.0.conv2.weight"], state["layer3.0.conv2.weight"])
    torch.testing.assert_close(loaded["conv1.0.weight"], state["conv1.0.weight"].sum(1, keepdim=True))


def test_weights_from_a_spec_path(tmp_path):
    model = _resnet_model()
    state = _timm_layout_state(model)
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    model = _resnet_model(pretrained=str(path))
    load_pretrained_backbones(model)
    loaded = model.encoders["audio"].backbone.state_dict()
    assert torch.equal(loaded["layer4.0.bn1.running_var"], state["layer4.0.bn1.running_var"])


def test_missing_or_wrong_weights_give_clear_errors(tmp_path):
    model = _resnet_model()
    with pytest.raises(FileNotFoundError, match=r"audio: pretrained weights file '.*nope.safetensors' does not exist"):
        load_backbone_weights(model, "audio", str(tmp_path / "nope.safetensors"))
    with pytest.raises(FileNotFoundError, match=r"no local weights for 'test_resnet.r160_in1k' \(offline\)"
                                                r".*hf download timm/test_resnet.r160_in1k"):
        load_backbone_weights(model, "audio", cache_dir=str(tmp_path / "empty_cache"))
    with pytest.raises(FileNotFoundError, match="swin_base_patch4_window7_224.ms_in22k"):
        resolve_pretrained_file("swin_base_patch4_window7_224.ms_in22k", cache_dir=str(tmp_path / "empty_cache"))
    with pytest.raises(ValueError, match=r"visual: encoder MLPEncoder has no timm backbone"):
        load_backbone_weights(model, "visual")
    # weights of another architecture: timm's loader fails, reported against the file
    other = {k: v for k, v in _timm_layout_state(model).items() if not k.startswith("layer4")}
    bad = tmp_path / "other.safetensors"
    save_file(other, str(bad))
    with pytest.raises(ValueError, match=r"pretrained: weights file '.*other.safetensors' does not fit "
                                         r"'test_resnet.r160_in1k'.*missing \['layer4"):
        load_backbone_weights(copy.deepcopy(model), "audio", str(bad))
