"""The small convolutional encoder ("cnn"): shapes, frame averaging, the stage protocol, errors."""

import pytest
import torch

from arl_hf.modeling import build_encoder
from arl_hf.modeling.encoders import supports_stages


def test_cnn_shapes_frames_and_stages():
    torch.manual_seed(0)
    enc = build_encoder("audio", {"encoder": "cnn", "in_chans": 2, "channels": [4, 6]}).eval()
    assert enc.out_dim == 6 and enc.stage_dims == [4, 6] and supports_stages(enc) is None
    x = torch.randn(3, 2, 16, 12)
    z = enc(x)
    assert z.shape == (3, 6)
    h = enc.forward_stem(x)
    for i in range(enc.num_stages):
        h = enc.forward_stage(i, h)
    assert h.shape == (3, 6, 4, 3)  # two stride-2 blocks: 16x12 -> 4x3
    assert torch.allclose(enc.forward_pool(h), z)
    frames = torch.randn(2, 3, 2, 16, 12)  # (B, T, C, H, W): per-frame features averaged over T
    want = torch.stack([enc(frames[:, t]) for t in range(3)], 1).mean(1)
    assert torch.allclose(enc(frames), want, atol=1e-6)
    # 3x3 convs 144 + 4608 + 18432, BN 32 + 64 + 128
    assert sum(p.numel() for p in build_encoder("a", {"encoder": "cnn", "in_chans": 1}).parameters()) == 23_408


def test_cnn_input_errors_name_the_field():
    enc = build_encoder("audio", {"encoder": "cnn", "in_chans": 1})
    with pytest.raises(ValueError, match=r"batch\['audio'\]: expected \(B, 1, H, W\)"):
        enc.check_input(torch.randn(2, 3, 8, 8), "batch['audio']")
    with pytest.raises(ValueError, match=r"\['in_chans'\]: expected a positive int"):
        build_encoder("audio", {"encoder": "cnn", "in_chans": 0})
