"""Suppression measures: the linear probe on frozen encoder features and its data access."""

import numpy as np
import pytest
import torch

from arl_hf import MultimodalConfig, MultimodalModel
from arl_hf.suppression import encoder_features, probe_accuracies, probe_accuracy


def test_probe_accuracy_separable_vs_uninformative_features():
    rng = np.random.default_rng(0)
    y = np.arange(300) % 3
    informative = rng.normal(size=(300, 4)) + 4.0 * np.eye(3, 4)[y]
    assert probe_accuracy(informative[:200], y[:200], informative[200:], y[200:]) == 1.0
    noise = rng.normal(size=(300, 4))
    acc = probe_accuracy(noise[:200], y[:200], noise[200:], y[200:])
    assert acc < 0.5  # chance is 1/3
    with pytest.raises(ValueError, match="probe_accuracy"):
        probe_accuracy(noise[:10], y[:9], noise[:5], y[:5])


def test_encoder_features_are_the_encoder_outputs_and_probe_every_split():
    torch.manual_seed(0)
    cfg = MultimodalConfig(modalities={"audio": {"encoder": "mlp", "input_dim": 3, "hidden_dims": [5]},
                                       "visual": {"encoder": "mlp", "input_dim": 2, "hidden_dims": [4]}}, num_labels=2)
    model = MultimodalModel(cfg)
    rows = [{"audio": torch.randn(3), "visual": torch.randn(2), "labels": i % 2} for i in range(10)]

    def collate(batch):
        return {k: torch.stack([torch.as_tensor(r[k]) for r in batch]) for k in ("audio", "visual", "labels")}

    feats, labels = encoder_features(model, rows, collate, ["audio", "visual"], batch_size=4)
    with torch.no_grad():
        want = model.encoders["audio"](torch.stack([r["audio"] for r in rows])).numpy()
    assert feats["audio"].shape == (10, 5) and feats["visual"].shape == (10, 4)
    np.testing.assert_allclose(feats["audio"], want, atol=1e-6)
    assert labels.tolist() == [i % 2 for i in range(10)]
    assert model.training  # restored
    out = probe_accuracies(model, rows, {"validation": rows[:6], "test": rows[6:]}, collate, ["audio", "visual"])
    assert set(out) == {"validation", "test"} and set(out["test"]) == {"audio", "visual"}
    assert all(0.0 <= v <= 1.0 for split in out.values() for v in split.values())
