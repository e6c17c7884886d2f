"""Processors of hf checkpoints: loaded, applied to raw values, recorded, saved with the model and
rebuilt from the saved model folder alone (source checkpoint deleted) with identical tensors."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from tiny_hf_checkpoints import ast_extractor, tiny_bert, tiny_roberta, tiny_vit, wav2vec2_extractor

from arl_hf.data.processors import (
    apply_processor,
    load_processor,
    load_processors,
    processor_spec,
    recorded_processors,
    save_processors,
)
from arl_hf.data.record import PreprocessingRecord
from arl_hf.processor_store import clear_loaded

TEXTS = ["the cat sat", "a big red dog ran fast on the mat", "bird"]


def _images(n=3, seed=0):
    from PIL import Image

    rng = np.random.RandomState(seed)
    return [Image.fromarray(rng.randint(0, 256, (40 + i, 50, 3), dtype=np.uint8)) for i in range(n)]


def _record(specs):
    return {"format": "arl_hf.data/1", "dataset": "raw",
            "modalities": {m: {"kind": "image" if p["kind"] == "image" else "sequence", "processor": p}
                           for m, p in specs.items()}}


def test_tokenizer_pads_to_the_batch_and_truncates_to_the_model_positions(tmp_path):
    bert = tiny_bert(str(tmp_path / "bert"), max_positions=8)
    tok = load_processor(f"hf:{bert}", "text")
    spec = processor_spec(f"hf:{bert}", "text", "text")
    assert spec["max_length"] == 8  # the tokenizer has no limit of its own: the model's 8 positions
    out = apply_processor(spec, "text", TEXTS)
    assert sorted(out) == ["attention_mask", "input_ids", "token_type_ids"]
    assert out["input_ids"].dtype == torch.long and out["input_ids"].shape == (3, 8)
    # [CLS] the cat sat [SEP] + padding; the long text is cut at 8 tokens ending in [SEP]
    assert out["input_ids"][0].tolist() == [2, 5, 6, 8, 3, 0, 0, 0]
    assert out["attention_mask"].sum(1).tolist() == [5, 8, 3]
    assert out["input_ids"][1, -1].item() == 3
    short = apply_processor(tok, "text", ["bird", "cat"])
    assert short["input_ids"].shape == (2, 3)  # padded to the longest of this batch only


def test_roberta_texts_are_cut_to_the_positions_after_its_padding_offset(tmp_path):
    from arl_hf import MultimodalConfig, MultimodalModel

    roberta = tiny_roberta(str(tmp_path / "roberta"), max_positions=18)
    spec = processor_spec(roberta, "text", "text")
    assert spec["max_length"] == 16  # 18 positions, ids from padding index 1 + 1
    out = apply_processor(spec, "text", ["a very long text that goes on and on", "short"])
    assert out["input_ids"].shape == (2, 16) and out["input_ids"][1, -1].item() == 1  # <pad>
    model = MultimodalModel(MultimodalConfig(modalities={"text": {"encoder": f"hf:{roberta}"},
                                                         "v": {"encoder": "mlp", "input_dim": 2, "hidden_dims": [4]}},
                                             num_labels=2))
    assert torch.isfinite(model(text=out, v=torch.zeros(2, 2)).logits).all()  # 18 would overflow the positions


def test_image_processor_resizes_normalises_and_takes_arrays_and_grey(tmp_path):
    vit = tiny_vit(str(tmp_path / "vit"))
    proc = load_processor(vit, "image")
    images = _images()
    out = apply_processor(proc, "image", images)["pixel_values"]
    assert out.shape == (3, 3, 32, 32) and out.dtype == torch.float32
    solid = np.full((40, 50, 3), 51, dtype=np.uint8)
    solid_out = apply_processor(proc, "image", [solid])["pixel_values"]
    assert torch.allclose(solid_out, torch.full((1, 3, 32, 32), -0.6), atol=1e-6)  # ViT: (51/255 - 0.5) / 0.5
    arrays = [np.asarray(im).copy() for im in images]
    assert torch.equal(apply_processor(proc, "image", arrays)["pixel_values"], out)
    chw = [a.transpose(2, 0, 1) for a in arrays]
    assert torch.equal(apply_processor(proc, "image", chw)["pixel_values"], out)
    grey = np.full((20, 20), 255, dtype=np.uint8)  # one channel: converted to the 3 the processor normalises
    assert apply_processor(proc, "image", [grey])["pixel_values"].shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match=r"values\[0\]: expected a uint8 image array .* got dtype float32"):
        apply_processor(proc, "image", [arrays[0].astype(np.float32) / 255])


def test_feature_extractors_resample_pad_and_mix_down(tmp_path):
    w2v = load_processor(wav2vec2_extractor(str(tmp_path / "w2v")), "audio")
    rng = np.random.RandomState(0)
    a, b = rng.randn(1600).astype(np.float32), rng.randn(800).astype(np.float32)
    out = apply_processor(w2v, "audio", [{"array": a, "sampling_rate": 16000}, (b, 16000)])
    assert out["input_values"].shape == (2, 1600) and out["attention_mask"].sum(1).tolist() == [1600, 800]
    assert abs(float(out["input_values"][0].mean())) < 1e-5 and abs(float(out["input_values"][0].std()) - 1) < 1e-2
    at8k = apply_processor(w2v, "audio", [a[::2]], sampling_rate=8000)["input_values"]
    assert at8k.shape == (1, 1600)  # resampled to the extractor's 16 kHz
    stereo = apply_processor(w2v, "audio", [np.stack([a, a])], sampling_rate=16000)["input_values"]
    assert torch.allclose(stereo, out["input_values"][:1], atol=1e-6)
    with pytest.raises(ValueError, match=r"values\[0\]: a waveform without a sampling rate"):
        apply_processor(w2v, "audio", [a])
    ast = load_processor(ast_extractor(str(tmp_path / "ast")), "audio")
    feats = apply_processor(ast, "audio", [(a, 16000), (b, 16000)])["input_values"]
    assert feats.shape == (2, 64, 16) and torch.isfinite(feats).all()


def test_wrong_kinds_and_checkpoints_are_named(tmp_path):
    bert = tiny_bert(str(tmp_path / "bert"))
    tok = load_processor(bert, "text")
    with pytest.raises(ValueError, match=r"a BertTokenizer cannot process image values"):
        apply_processor(tok, "image", _images(1))
    with pytest.raises(ValueError, match=r"values\[1\]: expected a string \(text\), got int"):
        apply_processor(tok, "text", ["cat", 3])
    with pytest.raises(ValueError, match=r"no image processor .* found \[.*'vocab.txt'\]"):
        load_processor(bert, "image")
    with pytest.raises(FileNotFoundError, match=r"the folder '\./no/such/bert' does not exist"):
        load_processor("hf:./no/such/bert", "text")
    with pytest.raises(ValueError, match=r"kind: expected one of .* got 'video'"):
        load_processor(bert, "video")
    from transformers import BertTokenizer  # a tokenizer without a padding token (GPT-2 style)

    nopad = str(tmp_path / "nopad")
    BertTokenizer(vocab=os.path.join(bert, "vocab.txt"), pad_token=None).save_pretrained(nopad)
    assert load_processor(nopad, "text").pad_token is None
    with pytest.raises(ValueError, match=r"caption: the tokenizer of .*nopad' \(BertTokenizer\) has no padding token"):
        processor_spec(nopad, "text", "caption")


def test_record_carries_the_processor_and_rejects_a_malformed_entry(tmp_path):
    bert = tiny_bert(str(tmp_path / "bert"))
    spec = processor_spec(bert, "text", "caption")
    record = PreprocessingRecord.from_dict(_record({"caption": spec}))
    assert record.processors() == {"caption": spec}
    assert spec["files"] == "processors/caption" and spec["class"] == "BertTokenizer"
    assert PreprocessingRecord.from_json(record.to_json()).to_dict() == record.to_dict()
    bad = _record({"caption": spec})
    bad["modalities"]["caption"]["processor"] = {"kind": "smell"}
    with pytest.raises(ValueError, match=r"modalities\['caption'\]\['processor'\]: expected a processor entry"):
        PreprocessingRecord.from_dict(bad)


def _model_with_processors(tmp_path, specs):
    from arl_hf import MultimodalConfig, MultimodalModel

    config = MultimodalConfig(modalities={m: {"encoder": "mlp", "input_dim": 4, "hidden_dims": [8]} for m in specs},
                              num_labels=2, preprocessing={"dataset": "raw", "data": _record(specs)})
    return MultimodalModel(config)


def test_saved_model_folder_alone_rebuilds_identical_tensors(tmp_path):
    bert = tiny_bert(str(tmp_path / "src" / "bert"))
    vit = tiny_vit(str(tmp_path / "src" / "vit"))
    w2v = wav2vec2_extractor(str(tmp_path / "src" / "w2v"))
    specs = {"text": processor_spec(bert, "text", "text"), "image": processor_spec(vit, "image", "image"),
             "audio": processor_spec(w2v, "audio", "audio")}
    rng = np.random.RandomState(1)
    raw = {"text": TEXTS, "image": _images(), "audio": [(rng.randn(n).astype(np.float32), 16000) for n in (900, 400)]}
    before = {m: apply_processor(specs[m], m, raw[m]) for m in specs}
    model = _model_with_processors(tmp_path, specs)
    out = str(tmp_path / "saved")
    model.save_pretrained(out)  # writes the processors beside the weights
    assert sorted(os.listdir(os.path.join(out, "processors"))) == ["audio", "image", "text"]
    assert os.path.isfile(os.path.join(out, "processors", "text", "tokenizer_config.json"))
    assert recorded_processors(json.load(open(os.path.join(out, "config.json")))) == specs
    shutil.rmtree(tmp_path / "src")  # the source checkpoints are gone
    clear_loaded()  # as in a fresh process
    rebuilt = load_processors(out)
    for m in specs:
        after = apply_processor(rebuilt[m], m, raw[m], max_length=specs[m].get("max_length"))
        assert sorted(after) == sorted(before[m])
        for key in before[m]:
            assert torch.equal(after[key], before[m][key]), (m, key)
    # a model loaded from the folder saves them again from its own folder
    from transformers import AutoModel

    again = str(tmp_path / "again")
    AutoModel.from_pretrained(out).save_pretrained(again)
    assert load_processors(again)["text"].get_vocab() == rebuilt["text"].get_vocab()


def test_a_replaced_processor_is_refused_not_silently_used(tmp_path):
    bert = tiny_bert(str(tmp_path / "bert"))
    specs = {"text": processor_spec(bert, "text", "text")}
    out = str(tmp_path / "saved")
    save_processors(_model_with_processors(tmp_path, specs), out)
    with open(os.path.join(out, "processors", "text", "vocab.txt"), "a", encoding="utf-8") as fh:
        fh.write("zebra\n")
    os.remove(os.path.join(out, "processors", "text", "tokenizer.json"))
    clear_loaded()
    with open(os.path.join(out, "config.json"), "w") as fh:
        json.dump({"preprocessing": {"data": _record(specs)}}, fh)
    with pytest.raises(ValueError, match=r"differs from the one the model was trained with"):
        load_processors(out)
    shutil.rmtree(os.path.join(out, "processors"))
    assert load_processors(out)["text"].get_vocab() == load_processor(bert, "text").get_vocab()  # the same source
    shutil.rmtree(bert)
    clear_loaded()
    with pytest.raises(FileNotFoundError, match=r"has no folder 'processors/text' and its source"):
        load_processors(out)


def test_collator_from_pretrained_without_a_raw_record_and_bad_folders(tmp_path):
    from arl_hf import MultimodalConfig, MultimodalModel
    from arl_hf.data import MultimodalCollator

    model = MultimodalModel(MultimodalConfig(modalities={"a": {"encoder": "mlp", "input_dim": 3, "hidden_dims": [4]},
                                                         "b": {"encoder": "mlp", "input_dim": 2, "hidden_dims": [4]}},
                                             num_labels=2))
    collator = MultimodalCollator.from_pretrained(model)
    batch = collator([{"a": [1.0, 2.0, 3.0], "b": [0.5, 0.5]}, {"a": [0.0, 0.0, 1.0], "b": [1.0, 0.0]}])
    assert sorted(batch) == ["a", "b"] and batch["a"].shape == (2, 3)  # examples to predict on: no labels
    with_labels = collator([{"a": [1.0, 2.0, 3.0], "b": [0.5, 0.5], "labels": 1}])
    assert with_labels["labels"].tolist() == [1]
    model.save_pretrained(str(tmp_path / "saved"))
    assert MultimodalCollator.from_pretrained(str(tmp_path / "saved")).modalities == ["a", "b"]
    with pytest.raises(FileNotFoundError, match=r"has no config.json; expected a folder written by save_pretrained"):
        MultimodalCollator.from_pretrained(str(tmp_path))
    with pytest.raises(ValueError, match=r"model_or_folder: expected a model, a saved model folder or a Hub id"):
        MultimodalCollator.from_pretrained(3)


def test_collator_from_pretrained_of_a_prepared_dataset_applies_its_evaluation_transform(tmp_path):
    from arl_hf import MultimodalConfig, MultimodalModel
    from arl_hf.data import MultimodalCollator

    record = {"format": "arl_hf.data/1", "dataset": "prepared",
              "modalities": {"seq": {"kind": "sequence", "shape": [None, 4]}, "img": {"kind": "image"}}}
    model = MultimodalModel(MultimodalConfig(
        modalities={"seq": {"encoder": "mlp", "input_dim": 4, "hidden_dims": [4]},
                    "img": {"encoder": "mlp", "input_dim": 4, "hidden_dims": [4]}},
        num_labels=2, preprocessing={"data": record, "image_size": 8}))
    collator = MultimodalCollator.from_pretrained(model)
    rng = np.random.RandomState(0)
    examples = [{"seq": rng.randn(n, 4).astype(np.float32), "img": rng.randint(0, 256, (3, 12, 12)).astype(np.uint8)}
                for n in (3, 5)]
    batch = collator(examples)  # no labels: examples to predict on
    assert "labels" not in batch and collator.transform.train is False
    assert torch.allclose(batch["seq"], torch.tensor(np.stack([e["seq"].mean(0) for e in examples])), atol=1e-6)
    assert batch["img"].shape == (2, 3, 12, 12) and batch["img"].dtype == torch.float32
    labelled = collator([{**e, "labels": 1} for e in examples])
    assert labelled["labels"].tolist() == [1, 1] and torch.equal(labelled["img"], batch["img"])


def _wav(seconds: float, rate: int) -> bytes:
    import io

    import soundfile

    buf = io.BytesIO()
    t = np.arange(int(seconds * rate)) / rate
    soundfile.write(buf, (0.5 * np.sin(2 * np.pi * 440 * t)).astype("float32"), rate, format="WAV")
    return buf.getvalue()


def test_a_plain_dataset_audio_column_goes_through_the_feature_extractor(tmp_path):
    import datasets

    from arl_hf.data import MultimodalCollator

    w2v = wav2vec2_extractor(str(tmp_path / "w2v"))
    features = datasets.Features({"snd": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")},
                                  "label": datasets.ClassLabel(names=["a", "b"])})
    split = datasets.Dataset.from_dict(  # 0.1 s at 8 kHz and 0.05 s at 16 kHz, read undecoded (no torchcodec)
        {"snd": [{"bytes": _wav(0.1, 8000), "path": None}, {"bytes": _wav(0.05, 16000), "path": None}],
         "label": [0, 1]}, features=features).cast_column("snd", datasets.Audio(decode=False))
    collator = MultimodalCollator.from_dataset(split, train=False, processors={"snd": f"hf:{w2v}"})
    assert collator.record["modalities"]["snd"]["processor"]["sampling_rate"] == 16000
    batch = collator([split[0], split[1]])
    # both at the extractor's 16 kHz: 1600 and 800 samples, padded to the longest, masked
    assert batch["snd"]["input_values"].shape == (2, 1600)
    assert batch["snd"]["attention_mask"].sum(1).tolist() == [1600, 800]
    assert batch["labels"].tolist() == [0, 1]


def test_processors_travel_with_the_model_through_the_hub(stand_in_hub, tmp_path):
    from transformers import AutoModel

    from arl_hf.data import MultimodalCollator

    bert = tiny_bert(str(tmp_path / "src" / "bert"))
    specs = {"text": processor_spec(bert, "text", "text")}
    before = apply_processor(specs["text"], "text", TEXTS)
    from huggingface_hub import HfApi

    _model_with_processors(tmp_path, specs).save_pretrained(str(tmp_path / "saved"))
    HfApi().create_repo("me/tiny-text")
    HfApi().upload_folder(folder_path=str(tmp_path / "saved"), repo_id="me/tiny-text")
    assert "processors/text/tokenizer_config.json" in stand_in_hub.files("me/tiny-text")
    shutil.rmtree(tmp_path / "src")
    clear_loaded()
    reloaded = AutoModel.from_pretrained("me/tiny-text")
    tokenizer = load_processors(reloaded)["text"]  # from the model's Hub snapshot
    after = apply_processor(tokenizer, "text", TEXTS, max_length=specs["text"]["max_length"])
    assert all(torch.equal(after[k], before[k]) for k in before)
    clear_loaded()
    assert MultimodalCollator.from_pretrained("me/tiny-text").require_labels is False
    again = apply_processor(specs["text"], "text", TEXTS)  # the record entry, resolved from the Hub copy
    assert all(torch.equal(again[k], before[k]) for k in before)
