"""The ``multimodal-classification`` pipeline registered by ``import arl_hf``: a saved model's top-k
labels (softmax of its fused logits), per-modality predictions on request, a list of examples, and
clear errors for inputs it cannot take."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent.parent / "strategies"))

from strategy_testutils import MODS, cfg, make_rows, mlp_model  # noqa: E402
from transformers import pipeline  # noqa: E402

from arl_hf import ARLTrainer  # noqa: E402

NAMES = ["cat", "dog", "bird"]
ROWS = make_rows(6, seed=3)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> str:
    model = mlp_model()
    model.config.id2label = dict(enumerate(NAMES))
    model.config.label2id = {n: i for i, n in enumerate(NAMES)}
    path = str(tmp_path_factory.mktemp("model") / "tiny")
    model.save_pretrained(path)
    return path


def _logits(model, rows):
    with torch.no_grad():
        out = model.eval()(**{m: torch.stack([r[m] for r in rows]) for m in MODS}, return_unimodal_logits=True)
    return out.logits, out.unimodal_logits


def _example(row):
    return {"audio": row["audio"].numpy(), "visual": row["visual"].tolist()}  # an array and a list of numbers


def test_registered_by_import_and_scores_are_the_softmax_of_the_fused_logits(saved):
    from transformers.pipelines import PIPELINE_REGISTRY

    assert "multimodal-classification" in PIPELINE_REGISTRY.get_supported_tasks()
    classify = pipeline("multimodal-classification", model=saved)
    fused, _ = _logits(classify.model, ROWS[:1])
    probs = torch.softmax(fused[0], -1)
    got = classify(_example(ROWS[0]))
    assert [g["label"] for g in got] == [NAMES[i] for i in probs.argsort(descending=True).tolist()]
    assert sum(g["score"] for g in got) == pytest.approx(1.0, abs=1e-6)
    for g in got:
        assert g["score"] == pytest.approx(float(probs[NAMES.index(g["label"])]), abs=1e-6)
    top1 = classify(_example(ROWS[0]), top_k=1)
    assert top1 == got[:1]
    assert len(classify(_example(ROWS[0]), top_k=50)) == 3  # at most the number of labels


def test_a_list_of_examples_and_per_modality_predictions(saved):
    classify = pipeline("multimodal-classification", model=saved)
    fused, per = _logits(classify.model, ROWS)
    many = classify([_example(r) for r in ROWS], top_k=1)
    assert len(many) == len(ROWS)
    assert [m[0]["label"] for m in many] == [NAMES[i] for i in fused.argmax(-1).tolist()]
    assert classify({**_example(ROWS[0]), "labels": 2, "id": "x"}) == classify(_example(ROWS[0]))  # a dataset row
    assert [m[0]["score"] for m in many] == pytest.approx(torch.softmax(fused, -1).max(-1).values.tolist(), abs=1e-6)
    both = classify(_example(ROWS[2]), return_modalities=True, top_k=3)
    assert both["predictions"] == classify(_example(ROWS[2]), top_k=3)
    for m in MODS:
        probs = torch.softmax(per[m][2], -1)
        got = {g["label"]: g["score"] for g in both["modalities"][m]}
        assert got == pytest.approx({NAMES[i]: float(probs[i]) for i in range(3)}, abs=1e-6)


def test_a_model_trained_with_mla_predicts_through_its_head(tmp_path):
    args = cfg(tmp_path, strategy="mla", max_steps=2)
    trainer = ARLTrainer(model=mlp_model(), args=args, train_dataset=make_rows(24))
    trainer.train()
    trainer.save_model(str(tmp_path / "mla"))
    expected = trainer.predict(ROWS).predictions  # MLA's fusion of its head's outputs
    classify = pipeline("multimodal-classification", model=str(tmp_path / "mla"))
    got = classify([_example(r) for r in ROWS], top_k=3)
    for row, probs in zip(got, torch.softmax(torch.tensor(expected), -1)):
        assert {g["label"]: g["score"] for g in row} == pytest.approx(
            {f"LABEL_{i}": float(probs[i]) for i in range(3)}, abs=1e-5)


def test_inputs_it_cannot_take_are_clear_errors(saved):
    from PIL import Image

    classify = pipeline("multimodal-classification", model=saved)
    good = _example(ROWS[0])
    with pytest.raises(ValueError, match=r"inputs: expected the modalities \['audio', 'visual'\].*missing"):
        classify({"audio": good["audio"]})
    with pytest.raises(ValueError, match=r"got keys \['audio', 'vision'\] \(missing \['visual'\]\)"):
        classify({"audio": good["audio"], "vision": good["visual"]})
    with pytest.raises(ValueError, match="visual: expected the model's input for one example .* got Image"):
        classify({**good, "visual": Image.new("RGB", (4, 4))})
    with pytest.raises(ValueError, match="audio: expected floating-point values .* got dtype uint8"):
        classify({**good, "audio": np.zeros(6, dtype=np.uint8)})
    with pytest.raises(ValueError, match="top_k: expected a positive integer, got 0"):
        classify(good, top_k=0)
    with pytest.raises(ValueError, match="topk: not an argument"):
        classify(good, topk=2)
    with pytest.raises(ValueError, match="inputs: expected a dict"):
        classify("a string")


def test_a_model_of_an_arl_hf_dataset_takes_its_rows_as_stored(tmp_path):
    from arl_hf import MultimodalConfig, MultimodalModel
    from arl_hf.data import MultimodalCollator, load
    from arl_hf.data.record import PreprocessingRecord

    ds = load("avdigits", config="main")
    test = ds["test"].select(range(3))
    record = PreprocessingRecord.from_dataset(ds["test"])
    torch.manual_seed(0)
    model = MultimodalModel(MultimodalConfig(
        modalities={"audio": {"encoder": "cnn", "in_chans": 1}, "visual": {"encoder": "cnn", "in_chans": 1}},
        num_labels=10, preprocessing={"dataset": "avdigits", "data": record.to_dict()}))
    model.save_pretrained(str(tmp_path / "m"))
    batch = MultimodalCollator.from_dataset(test, train=False)([test[i] for i in range(3)])
    with torch.no_grad():
        probs = torch.softmax(model.eval()(audio=batch["audio"], visual=batch["visual"]).logits, -1)
    classify = pipeline("multimodal-classification", model=str(tmp_path / "m"))
    assert test[0]["audio"].shape == (64, 64)  # stored without its channel axis: the record's collator adds it
    for row, p in zip(classify([test[i] for i in range(3)], top_k=10), probs):
        assert {g["label"]: g["score"] for g in row} == pytest.approx(
            {f"LABEL_{i}": float(p[i]) for i in range(10)}, abs=1e-5)


def _png(rgb) -> bytes:
    import io

    from PIL import Image

    pixels = np.zeros((16, 16, 3), np.uint8)
    pixels[...] = np.asarray(rgb, np.uint8)
    pixels[:8, :8] = 255 - pixels[:8, :8]
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _wav(freq: float, rate: int = 16000) -> bytes:
    import io

    import soundfile as sf

    t = np.arange(rate // 4) / rate
    buf = io.BytesIO()
    sf.write(buf, (0.5 * np.sin(2 * np.pi * freq * t)).astype("float32"), rate, format="WAV")
    return buf.getvalue()


def test_a_model_of_a_plain_dataset_takes_raw_values(tmp_path):
    """A plain DatasetDict (Image, Array2D, undecoded Audio, ClassLabel 'label'): the pipeline converts a
    PIL image, an array and a (waveform, sampling rate) pair with the model's recorded raw preprocessing."""
    import io

    import datasets
    import soundfile as sf
    from PIL import Image

    from arl_hf import MultimodalConfig, MultimodalModel
    from arl_hf.data import MultimodalCollator

    rng = np.random.default_rng(0)
    y = np.arange(6) % 3
    features = datasets.Features({"picture": datasets.Image(), "spec": datasets.Array2D((8, 10), "float32"),
                                  "snd": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")},
                                  "label": datasets.ClassLabel(names=NAMES)})
    split = datasets.Dataset.from_dict({
        "picture": [{"bytes": _png((60 + 80 * c, 40, 200 - 80 * c)), "path": None} for c in y],
        "spec": (rng.normal(size=(6, 8, 10)) + y[:, None, None]).astype("float32"),
        "snd": [{"bytes": _wav(300 + 200 * c), "path": None} for c in y],
        "label": y.tolist()}, features=features).cast_column("snd", datasets.Audio(decode=False))
    ds = datasets.DatasetDict({"train": split})
    collator = MultimodalCollator.from_dataset(ds, audio_preset="avdigits")
    torch.manual_seed(0)
    model = MultimodalModel(MultimodalConfig(
        modalities={"picture": {"encoder": "cnn", "in_chans": 3, "channels": [4]},
                    "spec": {"encoder": "cnn", "in_chans": 1, "channels": [4]},
                    "snd": {"encoder": "cnn", "in_chans": 1, "channels": [4]}},
        num_labels=3, id2label=dict(enumerate(NAMES)), preprocessing={"data": collator.record}))
    model.save_pretrained(str(tmp_path / "m"))
    batch = collator(ds["train"].__getitems__([0, 1]))
    with torch.no_grad():
        probs = torch.softmax(model.eval()(**{m: batch[m] for m in ("picture", "spec", "snd")}).logits, -1)

    classify = pipeline("multimodal-classification", model=str(tmp_path / "m"))
    raw = split.with_format(None)
    examples = []
    for i in (0, 1):
        row = raw[i]
        waveform, rate = sf.read(io.BytesIO(row["snd"]["bytes"]), dtype="float32")
        examples.append({"picture": row["picture"], "spec": np.asarray(row["spec"]), "snd": (waveform, rate)})
    assert isinstance(examples[0]["picture"], Image.Image)
    for got, p in zip(classify(examples, top_k=3), probs):
        assert {g["label"]: g["score"] for g in got} == pytest.approx(
            {n: float(p[i]) for i, n in enumerate(NAMES)}, abs=1e-5)
    # the waveform as {"array", "sampling_rate"}, at another rate: resampled to the preset's
    waveform, rate = examples[0]["snd"]
    import librosa

    at_8k = {"array": librosa.resample(waveform, orig_sr=rate, target_sr=8000), "sampling_rate": 8000}
    resampled = classify({**examples[0], "snd": at_8k}, top_k=1)
    assert resampled[0]["label"] in NAMES and 0 < resampled[0]["score"] <= 1
    with pytest.raises(ValueError, match="snd: expected an audio record"):
        classify({**examples[0], "snd": "not audio"})
