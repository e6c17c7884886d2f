"""Transform (frame choice, augmentation, seeding) and collator (shapes, padding, errors)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from arl_hf.data import MultimodalCollator, MultimodalTransform


def _clip(n=6, size=(20, 14)):
    return [Image.new("RGB", size, (30 * i, 30 * i, 30 * i)) for i in range(n)]


def _batch(n=3):
    return {"visual": [_clip() for _ in range(n)], "audio": [np.full((4, 5), i, np.float32) for i in range(n)],
            "labels": list(range(n)), "id": [f"c{i}" for i in range(n)]}


KINDS = {"visual": {"kind": "frames"}, "audio": {"kind": "spectrogram"}}


def test_eval_is_deterministic_segment_centres_and_normalised():
    t = MultimodalTransform(KINDS, train=False, num_frames=3, image_size=8)
    out = t(_batch())
    assert set(out) == {"visual", "audio", "labels"}
    v = out["visual"][0]
    assert tuple(v.shape) == (3, 3, 8, 8) and tuple(out["audio"][1].shape) == (1, 4, 5)
    # frames 1, 3, 5 of 6 (segment centres); grey 30*i normalised with ImageNet mean/std (red channel)
    expected = [((30 * i) / 255 - 0.485) / 0.229 for i in (1, 3, 5)]
    assert np.allclose(v[:, 0].mean(dim=(1, 2)).numpy(), expected, atol=1e-4)
    assert torch.equal(t(_batch())["visual"][2], out["visual"][2])


def test_train_is_seeded_random_and_reproducible():
    a = MultimodalTransform(KINDS, train=True, num_frames=3, image_size=8, seed=7)
    b = MultimodalTransform(KINDS, train=True, num_frames=3, image_size=8, seed=7)
    outs_a = [a(_batch())["visual"] for _ in range(3)]
    outs_b = [b(_batch())["visual"] for _ in range(3)]
    for xa, xb in zip(outs_a, outs_b):
        assert all(torch.equal(p, q) for p, q in zip(xa, xb))
    flat = torch.stack([x for out in outs_a for x in out])
    assert len({round(float(x.sum()), 3) for x in flat}) > 3  # crops / frames differ across draws
    c = MultimodalTransform(KINDS, train=True, num_frames=3, image_size=8, seed=8)
    assert not all(torch.equal(p, q) for p, q in zip(c(_batch())["visual"], outs_a[0]))


def test_transform_errors_name_the_field():
    with pytest.raises(ValueError, match="num_frames"):
        MultimodalTransform(KINDS, train=False, num_frames=0)
    with pytest.raises(ValueError, match=r"modalities\['x'\]\['kind'\]"):
        MultimodalTransform({"x": {"kind": "hologram"}}, train=False)
    with pytest.raises(ValueError, match="modality column 'visual' missing"):
        MultimodalTransform(KINDS, train=False)({"audio": [np.zeros((2, 2))], "labels": [0]})
    with pytest.raises(ValueError, match="visual: clip has no frames"):
        MultimodalTransform(KINDS, train=False)({"visual": [[]], "audio": [np.zeros((2, 2))], "labels": [0]})


def test_collator_shapes_padding_and_filtering():
    col = MultimodalCollator({"audio": {"kind": "spectrogram"}, "text": {"kind": "sequence"}})
    feats = [{"audio": np.ones((4, 5), np.float32), "text": np.ones((3, 2)), "labels": 1, "id": "a", "score": 0.5},
             {"audio": torch.zeros(1, 4, 5), "text": torch.ones(5, 2), "labels": 0, "id": "b", "score": 0.1}]
    out = col(feats)
    assert set(out) == {"audio", "text", "labels"}
    assert tuple(out["audio"].shape) == (2, 1, 4, 5) and out["audio"].dtype == torch.float32
    assert tuple(out["text"].shape) == (2, 5, 2) and float(out["text"][0, 3:].abs().sum()) == 0.0
    assert out["labels"].dtype == torch.long and out["labels"].tolist() == [1, 0]
    inferred = MultimodalCollator()(
        [{"visual": torch.zeros(2, 3, 4, 4), "labels": 2, "id": "x"},
         {"visual": torch.ones(2, 3, 4, 4), "labels": 1, "id": "y"}])
    assert set(inferred) == {"visual", "labels"} and tuple(inferred["visual"].shape) == (2, 2, 3, 4, 4)


def test_collator_errors():
    col = MultimodalCollator(["visual"])
    with pytest.raises(ValueError, match=r"visual: examples have different shapes"):
        col([{"visual": torch.zeros(3, 4, 4), "labels": 0}, {"visual": torch.zeros(3, 5, 5), "labels": 0}])
    with pytest.raises(ValueError, match=r"features\[1\]: modality 'visual' missing"):
        col([{"visual": torch.zeros(3), "labels": 0}, {"labels": 1}])
    with pytest.raises(ValueError, match=r"features\[0\]: label column 'labels' missing"):
        col([{"visual": torch.zeros(3)}])


def test_collator_in_a_worker_stacks_into_shared_memory():
    col = MultimodalCollator(["audio"])

    def collate(feats):
        out = col(feats)
        out["shared"] = torch.tensor(out["audio"].is_shared())
        return out

    data = [{"audio": torch.full((2, 3), float(i)), "labels": i} for i in range(4)]
    batch = next(iter(torch.utils.data.DataLoader(data, batch_size=4, num_workers=1, collate_fn=collate)))
    assert bool(batch["shared"]) and batch["audio"][:, 0, 0].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert batch["labels"].tolist() == [0, 1, 2, 3]
    assert not col(data)["audio"].is_shared()  # in the main process: a plain stack
