"""``arl-hf train --dataset <save_to_disk folder>`` on a user's plain dataset (an ``Image()`` column, an
``Array2D`` spectrogram, a ``ClassLabel`` named ``label``, no validation split): no hand-written
transform, each modality's kind and encoder in the normal output, encoder overrides, labels, the
validation hold-out, evaluation from the saved record, nothing absolute published."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest

from arl_hf.scripts.evaluate import main as evaluate_main
from arl_hf.scripts.train import main as train_main

NAMES = ["cat", "dog", "owl"]


def _png(level: int) -> bytes:
    from PIL import Image

    pixels = np.zeros((32, 32, 3), np.uint8)
    pixels[..., level % 3] = 200
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _dataset(n: int = 36, strings: bool = False):
    import datasets

    rng = np.random.default_rng(0)
    y = np.arange(n) % 3
    features = datasets.Features({
        "photo": datasets.Image(),
        "spectrogram": datasets.Array2D((40, 50), "float32"),
        "category": datasets.Value("string") if strings else datasets.ClassLabel(names=NAMES),
    })
    label = "category" if strings else "label"
    if not strings:
        features[label] = features.pop("category")
    split = datasets.Dataset.from_dict({
        "photo": [{"bytes": _png(int(c)), "path": None} for c in y],
        "spectrogram": (rng.normal(size=(n, 40, 50)) + y[:, None, None]).astype("float32"),
        label: [NAMES[c] for c in y] if strings else y.tolist(),
    }, features=features)
    return datasets.DatasetDict({"train": split, "test": split.select(range(9))})


@pytest.fixture(scope="module")
def plain_dir(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("plain") / "my_photos")
    _dataset().save_to_disk(path)
    return path


def _flags(dataset: str, out: str, *extra: str):
    return ["--dataset", dataset, "--output_dir", out, "--validation_split_percentage", "25", "--encoder", "cnn",
            "--num_train_epochs", "1", "--per_device_train_batch_size", "9", "--use_cpu", "--disable_tqdm", "true",
            "--dataloader_num_workers", "0", "--report_to", "none", *extra]


def test_train_on_a_plain_image_dataset_with_a_classlabel_named_label(plain_dir, tmp_path, capfd):
    out = str(tmp_path / "run")
    assert train_main(_flags(plain_dir, out)) == 0
    printed = capfd.readouterr().out
    shown = printed.splitlines()  # the normal output, not a log record
    assert "modality photo: column 'photo' Image -> image (3, 32, 32), encoder cnn (--modality_encoders " \
           "photo=<encoder> to change)" in shown
    assert "modality spectrogram: column 'spectrogram' Array2D -> image (1, 40, 50), encoder cnn " \
           "(--modality_encoders spectrogram=<encoder> to change)" in shown
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["modalities"]["spectrogram"] == {"encoder": "cnn", "in_chans": 1}  # a 2-D map, not a sequence
    assert [config["id2label"][str(i)] for i in range(3)] == NAMES
    data = config["preprocessing"]["data"]
    assert data["format"] == "arl_hf.raw/1" and data["label"]["source"] == {"column": "label", "type": "ClassLabel"}
    assert config["preprocessing"]["validation_split_percentage"] == 25
    results = open(os.path.join(out, "results.json")).read()
    assert '"validation"' in results and '"test"' in results
    for name in ("README.md", "results.json"):  # nothing published holds the absolute local path
        assert os.path.dirname(plain_dir) not in open(os.path.join(out, name)).read()
    # evaluation rebuilds the same data (label column, hold-out) from the saved config alone
    assert evaluate_main(["--model_name_or_path", out, "--split", "validation"]) == 0
    assert "on the validation split" in capfd.readouterr().out


def test_encoder_overrides_and_impossible_choices(plain_dir, tmp_path, capfd):
    out = str(tmp_path / "timm")
    flags = _flags(plain_dir, out, "--modality_encoders", "spectrogram=timm:test_resnet", "--max_steps", "1")
    assert train_main(flags) == 0
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["modalities"]["spectrogram"] == {"encoder": "timm:test_resnet", "in_chans": 1}
    capfd.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        train_main(_flags(plain_dir, str(tmp_path / "bad"), "--modality_encoders", "photo=mlp"))
    assert exit_info.value.code == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert ("error: photo: encoder 'mlp' takes vector (D,) float inputs; the batch holds image (C, H, W) float "
            "inputs of shape (B, 3, 32, 32); choose an encoder for image inputs with --modality_encoders "
            "photo=<encoder> (one of timm:<model name>, cnn") in err[-1]


def test_string_labels_with_label_column_and_a_missing_validation_split(tmp_path, capfd):
    path = str(tmp_path / "strings")
    _dataset(strings=True).save_to_disk(path)
    out = str(tmp_path / "run")
    assert train_main(_flags(path, out, "--label_column", "category", "--max_steps", "1")) == 0
    config = json.load(open(os.path.join(out, "config.json")))
    assert [config["id2label"][str(i)] for i in range(3)] == sorted(NAMES)
    assert config["preprocessing"]["data"]["label"]["source"] == {"column": "category", "type": "string"}
    capfd.readouterr()
    flags = [f for f in _flags(path, str(tmp_path / "novalid")) if f not in ("--validation_split_percentage", "25")]
    with pytest.raises(SystemExit):
        train_main(flags + ["--label_column", "category"])
    assert "--validation_split_percentage N" in capfd.readouterr().err
    with pytest.raises(SystemExit):
        train_main(_flags(path, str(tmp_path / "nolabel")))
    assert "no label column: expected 'labels' or 'label', or name it with --label_column" in capfd.readouterr().err


def test_evaluating_on_another_dataset_maps_its_class_names_to_the_model_s(tmp_path):
    import datasets

    path = str(tmp_path / "strings")
    _dataset(strings=True).save_to_disk(path)
    out = str(tmp_path / "run")
    assert train_main(_flags(path, out, "--label_column", "category", "--max_steps", "2")) == 0  # cat, dog, owl
    rows = _dataset()["test"].filter(lambda r: r["label"] != 0)  # dog and owl only, ClassLabel of NAMES
    words = [NAMES[i] for i in rows["label"]]
    other = {
        "same_ids": rows,
        "strings": rows.remove_columns("label").add_column("label", words),  # sorted would give dog 0, owl 1
        "reordered": rows.remove_columns("label").add_column(  # another ClassLabel order
            "label", [["owl", "dog", "cat"].index(w) for w in words],
            feature=datasets.ClassLabel(names=["owl", "dog", "cat"])),
    }
    metrics = {}
    for name, split in other.items():
        folder = str(tmp_path / f"other_{name}")
        datasets.DatasetDict({"test": split}).save_to_disk(folder)
        target = str(tmp_path / f"{name}.json")
        assert evaluate_main(["--model_name_or_path", out, "--dataset", folder, "--split", "test", "--use_cpu",
                              "--output_json", target]) == 0
        metrics[name] = json.load(open(target))["metrics"]
    assert metrics["strings"] == metrics["same_ids"] and metrics["reordered"] == metrics["same_ids"]
    unknown = rows.remove_columns("label").add_column("label", ["yak"] * len(rows))
    datasets.DatasetDict({"test": unknown}).save_to_disk(str(tmp_path / "unknown"))
    with pytest.raises(SystemExit):
        evaluate_main(["--model_name_or_path", out, "--dataset", str(tmp_path / "unknown"), "--split", "test",
                       "--use_cpu"])
