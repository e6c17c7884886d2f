"""Any dataset in: a user's plain ``DatasetDict`` (not built by arl_hf.data) becomes model inputs with no
hand-written transform (:mod:`arl_hf.data.features`, :mod:`arl_hf.data.raw`,
``MultimodalCollator.from_dataset``), and ``ARLTrainer`` trains on it.

The data: a plain ``DatasetDict`` built the ordinary way (``Dataset.from_dict`` + ``Features``), with every
feature type a user brings: an RGB ``Image()``, an ``Array2D`` spectrogram, a fixed-length vector, a
variable-length sequence, undecoded ``Audio`` (cast from ``{bytes, path}`` structs), a string id
and a ``ClassLabel`` named ``label``. The label is readable from every modality."""

from __future__ import annotations

import io
from typing import Dict, Sequence

import numpy as np
import pytest
import torch

from arl_hf.data import MultimodalCollator
from arl_hf.data.features import infer_record
from arl_hf.data.labels import hold_out_validation, normalise_labels
from arl_hf.data.raw import raw_preprocessor

NAMES = ["cat", "dog", "owl"]


def png(rgb: Sequence[int], size=(32, 32), mode: str = "RGB") -> bytes:
    from PIL import Image

    h, w = size
    pixels = np.zeros((h, w, 3), np.uint8)
    pixels[...] = np.asarray(rgb, np.uint8)
    pixels[: h // 2, : w // 2] = 255 - pixels[: h // 2, : w // 2]
    buf = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buf, format="PNG")
    return buf.getvalue()


def wav(freq: float, seconds: float = 0.5, rate: int = 16000) -> bytes:
    import soundfile as sf

    t = np.arange(int(seconds * rate)) / rate
    buf = io.BytesIO()
    sf.write(buf, (0.5 * np.sin(2 * np.pi * freq * t)).astype("float32"), rate, format="WAV")
    return buf.getvalue()


def make_split(n: int, seed: int, audio: bool = True, label_names: bool = True):
    import datasets

    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    rng.shuffle(y)
    columns: Dict[str, object] = {
        "id": [f"ex{seed}-{i}" for i in range(n)],
        "img": [{"bytes": png((60 + 80 * int(c), 40, 200 - 80 * int(c))), "path": None} for c in y],
        "spectrogram": (rng.normal(size=(n, 40, 50)) + y[:, None, None]).astype("float32"),
        "vec": (rng.normal(size=(n, 8)) + y[:, None]).astype("float32").tolist(),
        "seq": [(rng.normal(size=(1 + i % 3, 5)) + c).tolist() for i, c in enumerate(y)],
        "label": [NAMES[c] for c in y] if not label_names else y.tolist(),
    }
    features = {
        "id": datasets.Value("string"),
        "img": datasets.Image(),
        "spectrogram": datasets.Array2D((40, 50), "float32"),
        "vec": datasets.List(datasets.Value("float32"), length=8),
        "seq": datasets.List(datasets.List(datasets.Value("float32"))),
        "label": datasets.ClassLabel(names=NAMES) if label_names else datasets.Value("string"),
    }
    if audio:
        columns["snd"] = [{"bytes": wav(300 + 200 * int(c)), "path": None} for c in y]
        features["snd"] = {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}
    ds = datasets.Dataset.from_dict(columns, features=datasets.Features(features))
    return ds.cast_column("snd", datasets.Audio(decode=False)) if audio else ds


def make_user_dataset(sizes=(("train", 12), ("validation", 6)), **kwargs):
    import datasets

    return datasets.DatasetDict({split: make_split(n, i, **kwargs) for i, (split, n) in enumerate(sizes)})


@pytest.fixture(scope="module")
def user_dataset():
    return make_user_dataset()


def _expected_pixels(data: bytes) -> torch.Tensor:
    from PIL import Image

    return torch.from_numpy(np.array(Image.open(io.BytesIO(data)).convert("RGB"))).permute(2, 0, 1).float() / 255


def test_each_feature_type_gives_its_kind_shape_and_default_input(user_dataset):
    record = infer_record(user_dataset, audio_preset="avdigits")
    kinds = {m: (s["kind"], s["shape"]) for m, s in record["modalities"].items()}
    assert kinds == {"img": ("image", [3, 32, 32]), "spectrogram": ("image", [1, 40, 50]), "vec": ("vector", [8]),
                     "seq": ("sequence", ["L", 5]), "snd": ("spectrogram", [1, 64, 64])}
    assert record["modalities"]["img"]["normalisation"] == {"divide": 255.0}
    assert record["label"] == {"column": "label", "type": "ClassLabel", "names": NAMES}
    assert record["ignored"] == {"id": "a string column named like an identifier"}
    assert record["audio_preset"]["name"] == "avdigits"


def test_the_collator_of_a_plain_dataset_gives_float_batches_with_the_stored_values(user_dataset):
    from arl_hf.data.audio import compute_features, get_audio_preset

    ds = make_user_dataset()
    plain = ds["train"].with_format(None)
    collator = MultimodalCollator.from_dataset(ds, audio_preset="avdigits")
    batch = collator(ds["train"].__getitems__([0, 1, 2, 3]))
    assert sorted(batch) == ["img", "labels", "seq", "snd", "spectrogram", "vec"]
    assert all(batch[k].dtype == torch.float32 for k in batch if k != "labels")
    raw = ds["train"].with_format(None).cast_column("img", __import__("datasets").Image(decode=False))
    for i in range(4):
        assert torch.equal(batch["img"][i], _expected_pixels(raw[i]["img"]["bytes"]))
        assert torch.equal(batch["spectrogram"][i, 0], torch.tensor(plain[i]["spectrogram"], dtype=torch.float32))
        assert torch.equal(batch["vec"][i], torch.tensor(plain[i]["vec"], dtype=torch.float32))
        seq = torch.tensor(plain[i]["seq"], dtype=torch.float32)
        assert torch.equal(batch["seq"][i, : len(seq)], seq) and not batch["seq"][i, len(seq):].any()
        wave = _decode_wav(plain[i]["snd"]["bytes"])
        expected = compute_features(wave, get_audio_preset("avdigits"))
        assert torch.allclose(batch["snd"][i, 0], torch.from_numpy(expected), atol=1e-6)
    assert batch["seq"].shape == (4, 3, 5) and batch["snd"].shape == (4, 1, 64, 64)
    assert batch["labels"].tolist() == plain["label"][:4]


def _decode_wav(data: bytes) -> np.ndarray:
    import soundfile as sf

    y, _ = sf.read(io.BytesIO(data), dtype="float32")
    return y


def test_a_single_split_and_the_bound_dict_give_the_same_batches(user_dataset):
    ds = make_user_dataset()
    whole = MultimodalCollator.from_dataset(ds, audio_preset="avdigits")
    one = MultimodalCollator.from_dataset(make_user_dataset()["train"], audio_preset="avdigits")
    a = whole(ds["train"].__getitems__([3, 1, 5]))
    b = one([make_user_dataset()["train"][i] for i in (3, 1, 5)])
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert one.record == whole.record
    # called again on the bound dict: the same record, nothing bound twice
    again = MultimodalCollator.from_dataset(ds)
    assert again.record == whole.record
    assert torch.equal(again(ds["train"].__getitems__([3]))["img"], a["img"][:1])


def test_a_saved_record_rebuilds_the_same_preprocessing_for_example_dicts(user_dataset):
    from PIL import Image

    ds = make_user_dataset()
    collator = MultimodalCollator.from_dataset(ds, audio_preset="avdigits")
    batch = collator(ds["train"].__getitems__([0, 1]))
    preprocess = raw_preprocessor({"dataset": "mine", "data": collator.record})  # config.preprocessing
    plain = make_user_dataset()["train"].with_format(None)
    examples = []
    for i in (0, 1):
        row = plain[i]
        examples.append({"img": row["img"], "spectrogram": np.asarray(row["spectrogram"]), "vec": row["vec"],
                         "seq": row["seq"], "snd": (_decode_wav(row["snd"]["bytes"]), 16000)})
    assert isinstance(examples[0]["img"], Image.Image)
    out = preprocess(examples)
    assert "labels" not in out and sorted(out) == ["img", "seq", "snd", "spectrogram", "vec"]
    for k in out:
        assert torch.allclose(out[k], batch[k], atol=1e-6), k
    # an image of another size is resized to the recorded one
    big = Image.open(io.BytesIO(png((10, 20, 30), size=(64, 48))))
    resized = preprocess([{**examples[0], "img": big}])["img"]
    assert resized.shape == (1, 3, 32, 32) and 0 <= resized.min() and resized.max() <= 1
    with pytest.raises(ValueError, match=r"preprocessing: expected a raw preprocessing record"):
        raw_preprocessor({"dataset": "x"})


def test_labels_columns_and_names(user_dataset):
    ds = make_user_dataset(label_names=False, audio=False)  # string labels
    record = infer_record(ds)
    assert record["label"] == {"column": "label", "type": "string", "names": sorted(NAMES)}
    batch = MultimodalCollator.from_dataset(ds)(ds["train"].__getitems__([0, 1, 2]))
    strings = ds["train"].with_format(None)["label"][:3]
    assert batch["labels"].tolist() == [sorted(NAMES).index(s) for s in strings]
    fixed = normalise_labels(make_user_dataset(label_names=False, audio=False))
    assert fixed["train"].features["labels"].names == sorted(NAMES) and "label" not in fixed["train"].column_names
    assert fixed["validation"]["labels"] == [sorted(NAMES).index(s) for s in
                                             make_user_dataset(label_names=False, audio=False)["validation"]["label"]]
    with pytest.raises(ValueError, match=r"^label_column: 'target' is not a column of the dataset"):
        infer_record(ds, label_column="target")
    with pytest.raises(ValueError, match=r"^dataset: no label column: expected 'labels' or 'label', or name it "
                                         r"with --label_column"):
        infer_record(ds["train"].remove_columns("label"))
    with pytest.raises(ValueError, match=r"^vec: expected class labels"):
        infer_record(ds, label_column="vec")
    assert infer_record(ds, label_column="id", modality_columns="vec")["label"]["type"] == "string"


def test_modality_columns_choose_and_rename_and_dotted_names_are_renamed(user_dataset):
    ds = make_user_dataset(audio=False)
    record = infer_record(ds, modality_columns="picture=img,spec=spectrogram")
    assert {m: s["column"] for m, s in record["modalities"].items()} == {"picture": "img", "spec": "spectrogram"}
    batch = MultimodalCollator.from_dataset(ds, modality_columns="picture=img,spec=spectrogram")(
        ds["train"].__getitems__([0, 1]))
    assert sorted(batch) == ["labels", "picture", "spec"] and batch["spec"].shape == (2, 1, 40, 50)
    with pytest.raises(ValueError, match=r"^modality_columns: 'nope' is not a column of the dataset"):
        infer_record(ds, modality_columns="x=nope")
    with pytest.raises(ValueError, match=r"^x: a string column needs an hf: encoder"):
        infer_record(ds, modality_columns="x=id")  # a string column is text
    scores = type(ds)({k: v.add_column("score", [1.0] * len(v)) for k, v in ds.items()})
    with pytest.raises(ValueError, match=r"^modality_columns: column 'score' cannot be a modality \(one float64 "):
        infer_record(scores, modality_columns="x=score")
    with pytest.raises(ValueError, match=r"^modality_columns: 'a.b' cannot be a modality name"):
        infer_record(ds, modality_columns="a.b=img")
    dotted = make_user_dataset(audio=False)
    dotted = type(dotted)({k: v.rename_column("vec", "feat.vec") for k, v in dotted.items()})
    record = infer_record(dotted)
    assert record["renamed"] == {"feat.vec": "feat_vec"} and record["modalities"]["feat_vec"]["column"] == "feat.vec"


def test_text_columns_need_a_processor_and_unusable_columns_are_ignored(user_dataset):
    ds = make_user_dataset(audio=False)
    texts = type(ds)({k: v.add_column("caption", ["a photo"] * len(v)).add_column("score", [1.0] * len(v))
                      for k, v in ds.items()})
    with pytest.raises(ValueError, match=r"^caption: a string column needs an hf: encoder with a tokenizer "
                                         r"\(--modality_encoders caption=hf:<checkpoint>\)"):
        infer_record(texts)
    record = infer_record(texts, processors={"caption": "some/tokenizer"})
    assert record["modalities"]["caption"] == {"column": "caption", "feature": "Value(string)", "kind": "text",
                                               "processor": "some/tokenizer"}
    assert "score" in record["ignored"]
    try:
        import arl_hf.data.processors  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match=r"^caption: a string column needs an hf: encoder"):
            raw_preprocessor(record)([{"caption": "x", "img": ds["train"][0]["img"], "spectrogram": np.zeros((40, 50)),
                                       "vec": [0.0] * 8, "seq": [[0.0] * 5]}])


def _mp4(frames: int = 6, size: int = 24) -> bytes:
    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for k in range(frames):
            img = np.full((size, size, 3), 40 * k, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def test_video_columns_are_decoded_with_pyav_and_refused_in_one_line_without_it(monkeypatch):
    import sys

    import datasets

    clip = _mp4()
    features = datasets.Features({"clip": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")},
                                  "labels": datasets.ClassLabel(names=["a", "b"])})
    split = datasets.Dataset.from_dict({"clip": [{"bytes": clip, "path": None}] * 2, "labels": [0, 1]},
                                       features=features).cast_column("clip", datasets.Video(decode=False))
    ds = datasets.DatasetDict({"train": split, "validation": split})
    collator = MultimodalCollator.from_dataset(ds, num_frames=3, image_size=16)
    assert collator.record["modalities"]["clip"]["shape"] == [3, 3, 16, 16]
    batch = collator(ds["train"].__getitems__([0, 1]))
    frames = batch["clip"]
    assert frames.shape == (2, 3, 3, 16, 16) and frames.dtype == torch.float32
    means = frames[0].mean(dim=(1, 2, 3))
    assert means[0] < means[1] < means[2]  # first, middle and last frame (brighter and brighter)
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(ValueError, match=r"^clip: decoding a Video column needs PyAV: pip install 'arl-hf\[video\]'"):
        collator(ds["train"].__getitems__([0]))


def test_a_validation_split_is_held_out_of_train_seeded_and_stratified():
    ds = normalise_labels(make_user_dataset(sizes=(("train", 30), ("test", 6)), audio=False))
    one, two = hold_out_validation(ds, 20), hold_out_validation(ds, 20)
    assert sorted(one) == ["test", "train", "validation"]
    assert len(one["validation"]) == 6 and len(one["train"]) == 24
    assert one["validation"]["id"] == two["validation"]["id"]  # seeded
    assert not set(one["validation"]["id"]) & set(one["train"]["id"])
    assert sorted(one["validation"]["labels"]) == [0, 0, 1, 1, 2, 2]  # stratified
    assert hold_out_validation(one, 50) is one  # a validation split exists: nothing held out
    with pytest.raises(ValueError, match=r"^validation_split_percentage: expected a whole percentage in 1..99"):
        hold_out_validation(ds, 100)


def test_arl_trainer_trains_on_the_raw_dataset_with_the_collator(tmp_path, one_torch_thread):
    from arl_hf import ARLConfig, ARLTrainer, MultimodalConfig, MultimodalModel

    ds = make_user_dataset(audio=False)
    collator = MultimodalCollator.from_dataset(ds)
    names = collator.record["label"]["names"]
    config = MultimodalConfig(
        modalities={"img": {"encoder": "cnn", "in_chans": 3, "channels": [4]},
                    "spectrogram": {"encoder": "cnn", "in_chans": 1, "channels": [4]},
                    "vec": {"encoder": "mlp", "input_dim": 8, "hidden_dims": [8]},
                    "seq": {"encoder": "lstm", "input_dim": 5}},
        num_labels=len(names), id2label=dict(enumerate(names)), preprocessing={"data": collator.record})
    model = MultimodalModel(config)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    args = ARLConfig(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=4, use_cpu=True,
                     report_to="none", save_strategy="no", disable_tqdm=True, dataloader_num_workers=0,
                     learning_rate=0.05)
    trainer = ARLTrainer(model=model, args=args, train_dataset=ds["train"], eval_dataset=ds["validation"],
                         data_collator=collator)
    trainer.train()
    metrics = trainer.evaluate()
    assert trainer.state.global_step == 3 and np.isfinite(metrics["eval_loss"])
    assert 0 <= metrics["eval_accuracy"] <= 1 and "eval_accuracy_img" in metrics
    changed = [k for k, v in model.state_dict().items() if v.dtype.is_floating_point and not torch.equal(v, before[k])]
    assert any(k.startswith("encoders.img") for k in changed) and any(k.startswith("encoders.seq") for k in changed)


def test_arrays_stored_without_features_keep_their_shapes_and_ragged_lists_are_left_out():
    import datasets

    rng = np.random.default_rng(0)
    vec, img = rng.normal(size=(6, 8)).astype("float32"), rng.normal(size=(6, 3, 8, 8)).astype("float32")
    split = datasets.Dataset.from_dict({"v": vec, "img": img, "ragged": [[1.0] * (1 + i % 2) for i in range(6)],
                                        "labels": [0, 1, 2] * 2})  # features inferred: variable-length lists
    ds = datasets.DatasetDict({"train": split, "validation": split})
    collator = MultimodalCollator.from_dataset(ds)
    assert {m: (s["kind"], s["shape"]) for m, s in collator.record["modalities"].items()} == {
        "v": ("vector", [8]), "img": ("image", [3, 8, 8])}
    assert collator.record["ignored"]["ragged"].startswith("a list of numbers of varying length [1, 2]")
    batch = collator(ds["train"].__getitems__([0, 1, 2]))
    assert torch.equal(batch["v"], torch.from_numpy(vec[:3])) and torch.equal(batch["img"], torch.from_numpy(img[:3]))
    with pytest.raises(ValueError, match=r"^modality_columns: column 'ragged' cannot be a modality \(a list of numbers "
                                         r"of varying length"):
        infer_record(ds, modality_columns="ragged")
    with pytest.raises(ValueError, match=r"^dataset: expected a map-style datasets Dataset or DatasetDict with known "
                                         r"features, got IterableDataset"):
        MultimodalCollator.from_dataset(split.to_iterable_dataset())
    bad = raw_preprocessor(collator.record)
    with pytest.raises(ValueError, match=r"^img\[0\]: expected examples of shape \(3, 8, 8\), got \(3, 8, 7\)"):
        bad([{"v": vec[0], "img": img[0][..., :7]}])


def test_channels_last_uint8_images_become_channels_first_floats():
    import datasets

    img = np.random.default_rng(0).integers(0, 256, size=(6, 16, 12, 3), dtype=np.uint8)
    features = datasets.Features({"hwc": datasets.Array3D((16, 12, 3), "uint8"), "labels": datasets.Value("int64"),
                                  "lst": datasets.List(datasets.List(datasets.List(datasets.Value("uint8"))))})
    split = datasets.Dataset.from_dict({"hwc": img, "lst": img.tolist(), "labels": [0, 1, 2] * 2}, features=features)
    ds = datasets.DatasetDict({"train": split, "validation": split})
    collator = MultimodalCollator.from_dataset(ds)
    for name in ("hwc", "lst"):
        spec = collator.record["modalities"][name]
        assert (spec["shape"], spec["stored_shape"], spec["layout"]) == ([3, 16, 12], [16, 12, 3], "channels_last")
        assert spec["normalisation"] == {"divide": 255.0}
    batch = collator(ds["train"].__getitems__([0, 1]))
    expected = torch.from_numpy(img[:2]).permute(0, 3, 1, 2).float() / 255
    assert torch.equal(batch["hwc"], expected) and torch.equal(batch["lst"], expected)
    single = MultimodalCollator.from_dataset(split)([split[i] for i in range(2)])
    assert all(torch.equal(single[k], batch[k]) for k in batch)


def test_audio_columns_that_decode_are_read_undecoded_and_a_single_split_says_how():
    import datasets

    ds = make_user_dataset(sizes=(("train", 4), ("validation", 2)))
    ds = datasets.DatasetDict({k: v.cast_column("snd", datasets.Audio()) for k, v in ds.items()})  # decode=True
    batch = MultimodalCollator.from_dataset(ds, audio_preset="avdigits")(ds["train"].__getitems__([0, 1]))
    assert batch["snd"].shape == (2, 1, 64, 64) and torch.isfinite(batch["snd"]).all()
    split = make_user_dataset(sizes=(("train", 4),))["train"].cast_column("snd", datasets.Audio())
    with pytest.raises(ValueError, match=r"^snd: a single split decodes Audio columns with torchcodec; cast it first "
                                         r"\(ds = ds.cast_column\('snd', Audio\(decode=False\)\)\)"):
        MultimodalCollator.from_dataset(split, audio_preset="avdigits")


def test_every_impossible_encoder_choice_is_one_error_naming_the_flag():
    from arl_hf.arguments import ModelArguments
    from arl_hf.building import modality_specs

    ds = make_user_dataset(audio=False)
    collator = MultimodalCollator.from_dataset(ds)
    batch = collator(ds["train"].__getitems__([0, 1]))
    kinds = {m: s["kind"] for m, s in collator.record["modalities"].items()}
    specs = modality_specs(batch, ModelArguments(modality_encoders="spectrogram=timm:resnet18"), kinds=kinds)
    assert specs["spectrogram"] == {"encoder": "timm:resnet18", "in_chans": 1}  # a 2-D map for a 2-D encoder
    assert specs["seq"]["encoder"] == "transformer" and specs["vec"]["encoder"] == "mlp"
    for choice, kind in (("vec=cnn", "vector"), ("seq=mlp", "sequence"), ("img=lstm", "image"),
                         ("spectrogram=resnet18", "image"), ("img=timm:no_such_model", "image")):
        name = choice.split("=")[0]
        with pytest.raises(ValueError, match=rf"; choose an encoder for {kind} inputs with --modality_encoders "
                                             rf"{name}=<encoder> \(one of "):
            modality_specs(batch, ModelArguments(modality_encoders=choice), kinds=kinds)
