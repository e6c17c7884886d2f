"""MultimodalConfig / MultimodalModel: contract, frames, unimodal logits, init, save/load, bad input."""

import pytest
import timm
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel

import arl_hf
from arl_hf import MultimodalConfig, MultimodalModel, load_backbone_weights

TINY = {"encoder": "timm:resnet10t", "in_chans": 1}


def mlp_config(**kw):
    return MultimodalConfig(
        modalities={
            "audio": {"encoder": "mlp", "input_dim": 6, "hidden_dims": [8, 5]},
            "visual": {"encoder": "mlp", "input_dim": 4, "hidden_dims": [7]},
        },
        num_labels=3,
        **kw,
    )


def cnn_config(**kw):
    return MultimodalConfig(
        modalities={"audio": dict(TINY), "visual": {"encoder": "timm:resnet10t", "in_chans": 3}}, num_labels=4, **kw
    )


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match=r"modalities\['audio'\]\['encoder'\].*unknown encoder 'convnet'"):
        MultimodalConfig(modalities={"audio": {"encoder": "convnet"}}, num_labels=3)
    with pytest.raises(ValueError, match=r"modalities\['audio'\]\['channels'\]: expected a non-empty list"):
        MultimodalConfig(modalities={"audio": {"encoder": "cnn", "channels": []}}, num_labels=3)
    with pytest.raises(ValueError, match=r"modalities\['audio'\]\['width'\]: unknown option for encoder 'cnn'"):
        MultimodalConfig(modalities={"audio": {"encoder": "cnn", "width": 3}}, num_labels=3)
    with pytest.raises(ValueError, match="timm has no model named 'nonexistent_net'"):
        MultimodalConfig(modalities={"a": {"encoder": "timm:nonexistent_net"}}, num_labels=3)
    with pytest.raises(ValueError, match="fusion: unknown fusion 'bogus'"):
        mlp_config(fusion="bogus")
    with pytest.raises(ValueError, match=r"\['input_dim'\]"):
        MultimodalConfig(modalities={"a": {"encoder": "mlp", "hidden_dims": [3]}}, num_labels=3)
    with pytest.raises(ValueError, match="init"):
        mlp_config(init="xavier")


def test_forward_outputs_and_unimodal_logits_are_zeroed_fusion_path():
    torch.manual_seed(0)
    model = MultimodalModel(mlp_config()).eval()
    a, v = torch.randn(5, 6), torch.randn(5, 4)
    y = torch.tensor([0, 1, 2, 0, 1])
    out = model(audio=a, visual=v, labels=y)
    assert out.logits.shape == (5, 3) and out.unimodal_logits is None
    assert out.features["audio"].shape == (5, 5) and out.features["visual"].shape == (5, 7)
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, y))
    out = model(audio=a, visual=v, return_unimodal_logits=True)
    za, zv = out.features["audio"], out.features["visual"]
    fc = model.fusion.fc
    # independent: the shared head on [z_a, 0] and [0, z_v]
    torch.testing.assert_close(out.unimodal_logits["audio"], fc(torch.cat([za, torch.zeros_like(zv)], -1)))
    torch.testing.assert_close(out.unimodal_logits["visual"], fc(torch.cat([torch.zeros_like(za), zv], -1)))
    # no extra parameters: only encoders and one Linear head
    n_head = sum(p.numel() for p in model.fusion.parameters())
    assert n_head == (5 + 7) * 3 + 3


def test_frames_are_folded_and_averaged_over_time():
    torch.manual_seed(0)
    model = MultimodalModel(cnn_config()).eval()
    frames = torch.randn(2, 3, 3, 32, 32)
    audio = torch.randn(2, 1, 40, 32)
    out = model(audio=audio, visual=frames)
    per_frame = torch.stack([model.encoders["visual"](frames[:, t]) for t in range(3)], 1)
    torch.testing.assert_close(out.features["visual"], per_frame.mean(1))
    # one frame given as (B, C, H, W) equals (B, 1, C, H, W)
    one = model(audio=audio, visual=frames[:, 0]).logits
    torch.testing.assert_close(one, model(audio=audio, visual=frames[:, :1]).logits)


def test_post_init_keeps_timm_initialisation():
    torch.manual_seed(123)
    ref = timm.create_model("resnet10t", pretrained=False, num_classes=0, in_chans=1)
    torch.manual_seed(123)
    model = MultimodalModel(cnn_config())
    got = model.encoders["audio"].backbone.state_dict()
    for k, v in ref.state_dict().items():
        assert torch.equal(got[k], v), k


def test_authors_init():
    torch.manual_seed(0)
    model = MultimodalModel(cnn_config(init="authors"))
    bb = model.encoders["visual"].backbone
    bns = [m for m in bb.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in bns)
    conv = bb.conv1[0] if isinstance(bb.conv1, torch.nn.Sequential) else bb.conv1
    fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
    expected_std = (2.0 / fan_out) ** 0.5  # kaiming normal, fan_out, relu
    assert abs(float(conv.weight.std()) / expected_std - 1) < 0.15
    fc = model.fusion.fc
    xavier_std = (2.0 / (fc.in_features + fc.out_features)) ** 0.5
    assert torch.all(fc.bias == 0)
    assert abs(float(fc.weight.std()) / xavier_std - 1) < 0.3


def test_save_load_round_trip_bit_exact(tmp_path):
    torch.manual_seed(0)
    model = MultimodalModel(cnn_config(preprocessing={"audio": "scipy", "frames": 1}))
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "config.json").is_file()
    for loaded in (MultimodalModel.from_pretrained(tmp_path), AutoModel.from_pretrained(tmp_path)):
        assert type(loaded) is MultimodalModel
        sd, ld = model.state_dict(), loaded.state_dict()
        assert sd.keys() == ld.keys()
        assert all(torch.equal(sd[k], ld[k]) for k in sd)
    cfg = AutoConfig.from_pretrained(tmp_path)
    assert cfg.modalities == model.config.modalities and cfg.preprocessing == {"audio": "scipy", "frames": 1}
    x = dict(audio=torch.randn(2, 1, 32, 32), visual=torch.randn(2, 3, 32, 32))
    model.eval(), loaded.eval()
    # weights are bit-identical (above); outputs may differ in the last ulp because the
    # loaded tensors sit at other memory alignments, which changes the CPU kernels' blocking
    torch.testing.assert_close(model(**x).logits, loaded(**x).logits, rtol=1e-6, atol=1e-7)


def test_load_backbone_weights_from_local_file(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    src = timm.create_model("resnet10t", pretrained=False, num_classes=10, in_chans=3)
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    model = MultimodalModel(cnn_config())
    load_backbone_weights(model, "audio", str(path))  # 3 -> 1 channel adapted by summing
    got = model.encoders["audio"].backbone.state_dict()
    w = src.state_dict()["conv1.0.weight"]
    torch.testing.assert_close(got["conv1.0.weight"], w.sum(1, keepdim=True))
    assert torch.equal(got["layer4.0.conv2.weight"], src.state_dict()["layer4.0.conv2.weight"])
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_backbone_weights(model, "visual", str(tmp_path / "missing.safetensors"))


def test_bad_inputs_name_the_field():
    model = MultimodalModel(cnn_config())
    a, v = torch.randn(2, 1, 32, 32), torch.randn(2, 3, 32, 32)
    with pytest.raises(ValueError, match="visual: missing modality"):
        model(audio=a)
    with pytest.raises(ValueError, match="audio: expected 1 channels"):
        model(audio=torch.randn(2, 3, 32, 32), visual=v)
    with pytest.raises(ValueError, match=r"visual: expected \(B, C, H, W\)"):
        model(audio=a, visual=torch.randn(2, 32, 32))
    with pytest.raises(ValueError, match="empty"):
        model(audio=a[:0], visual=v[:0])
    with pytest.raises(ValueError, match="visual: batch size 3"):
        model(audio=a, visual=torch.randn(3, 3, 32, 32))
    with pytest.raises(ValueError, match="labels: expected shape"):
        model(audio=a, visual=v, labels=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="text: not a modality"):
        model(audio=a, visual=v, text=a)
    mlp = MultimodalModel(mlp_config())
    with pytest.raises(ValueError, match=r"audio: expected shape \(B, 6\)"):
        mlp(audio=torch.randn(2, 5), visual=torch.randn(2, 4))
    with pytest.raises(ValueError, match="floating-point"):
        mlp(audio=torch.ones(2, 6, dtype=torch.long), visual=torch.randn(2, 4))


def test_registered_with_auto_classes():
    cfg = AutoConfig.for_model("arl_hf_multimodal", modalities=mlp_config().modalities, num_labels=3)
    assert isinstance(cfg, MultimodalConfig)
    assert isinstance(AutoModel.from_config(cfg), MultimodalModel)
    assert arl_hf.MultimodalModel is MultimodalModel
