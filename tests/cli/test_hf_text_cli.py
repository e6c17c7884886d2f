"""Text end to end from the CLI: a save_to_disk DatasetDict with a string column, an Image() column and a
ClassLabel trains under ARL with an hf text encoder (tiny BERT, its tokenizer applied by the data path)
and an image encoder; the saved folder alone (source checkpoints deleted) reloads in a fresh process and
predicts identically through ``MultimodalCollator.from_pretrained``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from tiny_hf_checkpoints import tiny_bert, tiny_vit

CLASSES = ["cat", "dog", "bird"]
#: words of each class's captions (the tiny vocabulary), and each class's image colour
WORDS = {0: ["cat", "sat", "mat"], 1: ["dog", "ran", "fast"], 2: ["bird", "sang", "blue"]}
COLOURS = {0: (200, 40, 40), 1: (40, 200, 40), 2: (40, 40, 200)}


def _split(n: int, seed: int):
    import datasets
    from PIL import Image

    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 3).tolist()
    rng.shuffle(labels)
    captions, images = [], []
    for y in labels:
        words = list(rng.choice(WORDS[y], size=int(rng.integers(1, 6)))) + ["the", "a"][: int(rng.integers(0, 3))]
        rng.shuffle(words)
        captions.append(" ".join(words))
        pixels = np.clip(np.array(COLOURS[y]) + rng.normal(0, 60, (32, 32, 3)), 0, 255).astype(np.uint8)
        images.append(Image.fromarray(pixels))
    features = datasets.Features({"caption": datasets.Value("string"), "image": datasets.Image(),
                                  "label": datasets.ClassLabel(names=CLASSES)})
    return datasets.Dataset.from_dict({"caption": captions, "image": images, "label": labels}, features=features)


@pytest.fixture(scope="module")
def text_image_run(tmp_path_factory):
    """One short ARL run from the command-line flags; the source checkpoints live in ``src``."""
    import datasets

    from arl_hf.scripts.train import parse_args, train_and_evaluate

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("hftext")
    data = str(root / "captions")
    splits = {"train": _split(48, 0), "validation": _split(12, 1), "test": _split(12, 2)}
    datasets.DatasetDict(splits).save_to_disk(data)
    bert, vit = tiny_bert(str(root / "src" / "bert")), tiny_vit(str(root / "src" / "vit"))
    out = str(root / "run")
    argv = ["--dataset", data, "--output_dir", out, "--modality_encoders", f"caption=hf:{bert},image=hf:{vit}",
            "--num_train_epochs", "2", "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "12",
            "--learning_rate", "0.01", "--logging_steps", "1", "--use_cpu", "--dataloader_num_workers", "0",
            "--disable_tqdm", "true", "--report_to", "none", "--seed", "0"]
    metrics = train_and_evaluate(*parse_args(argv), argv=argv)
    return {"root": root, "data": data, "out": out, "bert": bert, "vit": vit, "metrics": metrics}


def test_the_tokenizer_is_applied_recorded_and_saved(text_image_run):
    out = text_image_run["out"]
    with open(os.path.join(out, "config.json")) as fh:
        config = json.load(fh)
    assert config["modalities"]["caption"]["encoder"] == f"hf:{text_image_run['bert']}"
    mods = config["preprocessing"]["data"]["modalities"]
    assert mods["caption"]["kind"] == "text" and mods["caption"]["processor"]["class"] == "BertTokenizer"
    assert mods["caption"]["processor"]["max_length"] == 16  # the tiny BERT's position embeddings
    assert mods["image"]["processor"]["class"] == "ViTImageProcessor"
    for m in ("caption", "image"):
        assert os.path.isdir(os.path.join(out, "processors", m)), m
    history = json.load(open(os.path.join(out, "trainer_state.json")))["log_history"]
    coefficients = [(e["a_caption"], e["a_image"]) for e in history if "a_caption" in e]
    assert coefficients and all(a > 0 and b > 0 and np.isfinite(a + b) for a, b in coefficients)
    assert set(text_image_run["metrics"]["test"]) >= {"accuracy", "accuracy_caption", "accuracy_image"}


_PREDICT = r"""
import json, sys, torch, datasets
import arl_hf
from transformers import AutoModel
from arl_hf.data import MultimodalCollator

out, data, target = sys.argv[1:4]
torch.set_num_threads(1)
model = AutoModel.from_pretrained(out).eval()
collator = MultimodalCollator.from_pretrained(out)
rows = list(datasets.load_from_disk(data)["test"])
examples = [{"caption": r["caption"], "image": r["image"]} for r in rows]  # raw values, no labels
batch = collator(examples)
with torch.no_grad():
    logits = model(**batch).logits
torch.save({"logits": logits, "input_ids": batch["caption"]["input_ids"]}, target)
"""


def test_the_saved_folder_alone_predicts_identically_in_a_fresh_process(text_image_run, tmp_path):
    import datasets
    from transformers import AutoModel

    from arl_hf.building import load_data
    from arl_hf.scripts.train import parse_args

    out, data = text_image_run["out"], text_image_run["data"]
    # the training data path (the collator the run used, its raw transform bound to the splits)
    encoders = f"caption=hf:{text_image_run['bert']},image=hf:{text_image_run['vit']}"
    _, model_args, data_args, _ = parse_args(["--dataset", data, "--output_dir", str(tmp_path),
                                              "--modality_encoders", encoders])
    ds, collator, _ = load_data(data_args, model_args=model_args)
    batch = next(iter(torch.utils.data.DataLoader(ds["test"], batch_size=12, collate_fn=collator)))
    model = AutoModel.from_pretrained(out).eval()
    with torch.no_grad():
        expected = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    shutil.rmtree(text_image_run["root"] / "src")  # the source checkpoints are gone
    target = str(tmp_path / "pred.pt")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
               __file__))))] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    proc = subprocess.run([sys.executable, "-c", _PREDICT, out, data, target], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = torch.load(target)
    assert torch.equal(got["input_ids"], batch["caption"]["input_ids"])
    assert torch.allclose(got["logits"], expected, atol=1e-6), (got["logits"] - expected).abs().max()
    assert len(datasets.load_from_disk(data)["test"]) == expected.shape[0]


def test_evaluating_the_saved_folder_applies_its_saved_processors(text_image_run, tmp_path):
    from arl_hf.processor_store import clear_loaded
    from arl_hf.scripts.evaluate import main as evaluate_main

    shutil.rmtree(text_image_run["root"] / "src", ignore_errors=True)  # the sources are gone
    clear_loaded()
    target = tmp_path / "m.json"
    assert evaluate_main(["--model_name_or_path", text_image_run["out"], "--dataset", text_image_run["data"],
                          "--split", "test", "--use_cpu", "--output_json", str(target)]) == 0
    got = json.loads(target.read_text())["metrics"]
    for key in ("accuracy", "accuracy_caption", "accuracy_image"):
        assert got[key] == pytest.approx(text_image_run["metrics"]["test"][key]), key


def test_the_pipeline_takes_a_caption_and_an_image_from_the_saved_folder_alone(text_image_run):
    import datasets
    from transformers import AutoModel, pipeline

    from arl_hf.data import MultimodalCollator
    from arl_hf.processor_store import clear_loaded

    out = text_image_run["out"]
    shutil.rmtree(text_image_run["root"] / "src", ignore_errors=True)  # the sources are gone
    clear_loaded()
    rows = list(datasets.load_from_disk(text_image_run["data"])["test"])[:4]
    examples = [{"caption": r["caption"], "image": r["image"]} for r in rows]
    model = AutoModel.from_pretrained(out).eval()
    with torch.no_grad():
        logits = model(**MultimodalCollator.from_pretrained(out)(examples)).logits
    expected = torch.softmax(logits, -1)
    classify = pipeline("multimodal-classification", model=out)
    got = classify(examples, top_k=3)
    assert len(got) == 4
    for i, top in enumerate(got):
        assert [d["label"] for d in top] == [CLASSES[j] for j in expected[i].argsort(descending=True).tolist()]
        assert [d["score"] for d in top] == pytest.approx(expected[i].sort(descending=True).values.tolist(), abs=1e-6)


def test_the_example_script_reads_the_text_column_with_the_hf_tokenizer(text_image_run, tmp_path):
    from cli_helpers import PYTHON, REPO, script_env

    bert, vit = tiny_bert(str(tmp_path / "bert")), tiny_vit(str(tmp_path / "vit"))
    out = str(tmp_path / "run")
    done = subprocess.run(
        [PYTHON, os.path.join(REPO, "examples", "run_arl.py"), "--dataset", text_image_run["data"], "--output_dir", out,
         "--modality_encoders", f"caption=hf:{bert},image=hf:{vit}", "--max_steps", "1",
         "--per_device_train_batch_size", "16", "--use_cpu", "--dataloader_num_workers", "0", "--disable_tqdm", "true",
         "--report_to", "none"], env=script_env(), capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "modality caption: column 'caption'" in done.stdout  # the per-modality lines, as arl-hf train prints
    with open(os.path.join(out, "config.json")) as fh:
        mods = json.load(fh)["preprocessing"]["data"]["modalities"]
    assert mods["caption"]["processor"]["class"] == "BertTokenizer"
