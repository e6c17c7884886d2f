"""The ``hf:`` encoder family: transformers checkpoints (tiny BERT, ViT, AST saved by the tests) as
modality encoders: weights, pooling, dict inputs, reloading in a fresh process, spec errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from hf_checkpoints import STATES, save_ast, save_bert, save_vit, text_image_rows
from safetensors.torch import load_file, save_file

from arl_hf import MultimodalConfig, MultimodalModel
from arl_hf.data.collator import MultimodalCollator
from arl_hf.validation import check_inputs, validate_batch

MLP = {"encoder": "mlp", "input_dim": 3, "hidden_dims": [4]}


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {"bert": save_bert(str(root / "bert")), "vit": save_vit(str(root / "vit")),
            "ast": save_ast(str(root / "ast")), "bert_pooled": save_bert(str(root / "bert_pooled"), pooler=True)}


def text_image_model(ckpt, **text):
    torch.manual_seed(0)
    return MultimodalModel(MultimodalConfig(
        modalities={"text": {"encoder": f"hf:{ckpt['bert']}", **text}, "image": {"encoder": f"hf:{ckpt['vit']}"}},
        num_labels=3))


@pytest.mark.parametrize("name", ["bert", "vit", "ast"])
def test_built_encoder_weights_equal_the_checkpoint(ckpt, name):
    model = MultimodalModel(MultimodalConfig(modalities={"x": {"encoder": f"hf:{ckpt[name]}"},
                                                         "v": MLP}, num_labels=2))
    saved = STATES[ckpt[name]]  # the weights of the model saved there
    built = model.encoders["x"].model.state_dict()
    assert set(saved) == set(built)
    for k, v in saved.items():
        assert torch.equal(built[k], v), k
    fresh = type(model.encoders["x"].model)(model.encoders["x"].model.config)
    assert not all(torch.equal(fresh.state_dict()[k], v) for k, v in saved.items())
    # the checkpoint's config is recorded in the model's config
    hf_config = model.config.modalities["x"]["hf_config"]
    assert hf_config["model_type"] == {"bert": "bert", "vit": "vit", "ast": "audio-spectrogram-transformer"}[name]
    assert model.encoders["x"].out_dim == 16


def test_init_authors_leaves_the_pretrained_weights(ckpt):
    model = MultimodalModel(MultimodalConfig(modalities={"x": {"encoder": f"hf:{ckpt['vit']}"},
                                                         "v": MLP},
                                             num_labels=2, init="authors"))
    saved = STATES[ckpt["vit"]]
    built = model.encoders["x"].model.state_dict()
    assert all(torch.equal(built[k], v) for k, v in saved.items())


def test_pooling_auto_uses_the_pooler_only_when_the_checkpoint_trained_it(ckpt):
    model = text_image_model(ckpt).eval()
    assert model.config.modalities["text"]["pooler_weights"] is False  # BERT saved without pooler
    assert model.config.modalities["image"]["pooler_weights"] is True
    assert model.encoders["text"].model.pooler is None  # no random pooler left in the model
    ids = torch.tensor([[2, 10, 11, 3, 0], [2, 12, 3, 0, 0]])
    mask = (ids != 0).long()
    pixels = torch.randn(2, 3, 32, 32)
    out = model(text={"input_ids": ids, "attention_mask": mask}, image=pixels)
    hidden = model.encoders["text"].model(input_ids=ids, attention_mask=mask).last_hidden_state
    expected = torch.stack([hidden[0, :4].mean(0), hidden[1, :3].mean(0)])  # the masked mean
    torch.testing.assert_close(out.features["text"], expected)
    vit = model.encoders["image"].model(pixel_values=pixels)
    torch.testing.assert_close(out.features["image"], vit.pooler_output)
    # AST: a pooler without parameters (mean of its two class tokens) is used
    ast = MultimodalModel(MultimodalConfig(modalities={"a": {"encoder": f"hf:{ckpt['ast']}"},
                                                       "v": MLP}, num_labels=2)).eval()
    assert ast.config.modalities["a"]["pooler_weights"] is None
    spec = torch.randn(2, 24, 16)
    feats = ast(a=spec, v=torch.randn(2, 3)).features["a"]
    torch.testing.assert_close(feats, ast.encoders["a"].model(input_values=spec).pooler_output)


def test_pooling_options(ckpt):
    ids = torch.tensor([[2, 10, 11, 3, 0], [2, 12, 3, 0, 0]])
    mask = (ids != 0).long()
    cls = text_image_model(ckpt, pooling="cls").eval()
    hidden = cls.encoders["text"].model(input_ids=ids, attention_mask=mask).last_hidden_state
    feats = cls(text={"input_ids": ids, "attention_mask": mask}, image=torch.zeros(2, 3, 32, 32)).features["text"]
    torch.testing.assert_close(feats, hidden[:, 0])
    pooled = MultimodalModel(MultimodalConfig(modalities={"t": {"encoder": f"hf:{ckpt['bert_pooled']}"},
                                                          "v": MLP},
                                              num_labels=2)).eval()
    assert pooled.config.modalities["t"]["pooler_weights"] is True
    bert = pooled.encoders["t"].model
    torch.testing.assert_close(pooled(t=ids, v=torch.zeros(2, 3)).features["t"], bert(input_ids=ids).pooler_output)
    with pytest.raises(ValueError, match=r"^modalities\['text'\]\['pooling'\]: 'pooler' asked, but checkpoint .* "
                                         r"holds no trained pooler weights"):
        text_image_model(ckpt, pooling="pooler")


def test_token_tensor_forms_equal_the_dict(ckpt):
    model = text_image_model(ckpt).eval()
    ids = torch.tensor([[2, 10, 11, 3, 0], [2, 12, 3, 0, 0]])
    mask = (ids != 0).long()
    image = torch.randn(2, 3, 32, 32)
    as_dict = model(text={"input_ids": ids, "attention_mask": mask}, image=image).logits
    as_tokens = model(text=torch.stack([ids, mask], dim=1), image=image).logits  # the (B, 2, L) tokens kind
    torch.testing.assert_close(as_tokens, as_dict)
    as_pixels = model(text={"input_ids": ids, "attention_mask": mask}, image={"pixel_values": image}).logits
    torch.testing.assert_close(as_pixels, as_dict)


def test_dict_inputs_are_checked_by_name(ckpt):
    model = text_image_model(ckpt)
    ids = torch.tensor([[2, 10, 3]])
    image = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match=r"^text\['input_ids'\]: expected an integer tensor, got dtype torch.float32"):
        model(text={"input_ids": ids.float()}, image=image)
    with pytest.raises(ValueError, match=r"^text\['pixel_values'\]: BertModel takes no input 'pixel_values'"):
        model(text={"input_ids": ids, "pixel_values": image}, image=image)
    with pytest.raises(ValueError, match=r"^text\['attention_mask'\]: batch size 2 differs"):
        model(text={"input_ids": ids, "attention_mask": torch.ones(2, 3, dtype=torch.long)}, image=image)
    with pytest.raises(ValueError, match=r"^image: ViTModel takes floating-point 'pixel_values', got dtype "
                                         r"torch.int64"):
        model(text=ids, image=image.long())
    with pytest.raises(ValueError, match=r"^text\['input_ids'\]: expected a torch.Tensor, got list"):
        model(text={"input_ids": [[2, 10, 3]]}, image=image)
    # an encoder that takes no dict says so
    mlp = MultimodalModel(MultimodalConfig(modalities={"a": MLP, "b": MLP}, num_labels=2))
    with pytest.raises(ValueError, match=r"^a: expected a torch.Tensor, got a dict of \['x'\]"):
        mlp(a={"x": torch.randn(1, 3)}, b=torch.randn(1, 3))
    # the batch validator reads the values of every tensor of a dict
    batch = {"text": {"input_ids": ids}, "image": {"pixel_values": image * float("nan")},
             "labels": torch.tensor([0])}
    kinds = {"text": model.encoders["text"].input_kinds, "image": model.encoders["image"].input_kinds}
    assert check_inputs(batch, ["text", "image"], kinds=kinds) == 1
    with pytest.raises(ValueError, match=r"^image\['pixel_values'\]: input contains NaN"):
        validate_batch(batch, ["text", "image"], 3, kinds=kinds)


def test_collator_stacks_and_pads_named_inputs(ckpt):
    rows = text_image_rows(ckpt["bert"], n=4)
    batch = MultimodalCollator(["text", "image"])(rows)
    lengths = [len(r["text"]["input_ids"]) for r in rows]
    assert len(set(lengths)) > 1
    ids, mask = batch["text"]["input_ids"], batch["text"]["attention_mask"]
    assert ids.dtype == torch.int64 and ids.shape == (4, max(lengths))
    assert mask.sum(1).tolist() == lengths and batch["image"].shape == (4, 3, 32, 32)
    for i, r in enumerate(rows):
        assert ids[i, :lengths[i]].tolist() == r["text"]["input_ids"] and ids[i, lengths[i]:].eq(0).all()
    # without a mask, one is added for the padding
    padded = MultimodalCollator(["audio"])([{"audio": {"input_values": [0.5, 0.5, 0.5]}, "labels": 0},
                                            {"audio": {"input_values": [1.0]}, "labels": 1}])["audio"]
    assert padded["input_values"].tolist() == [[0.5, 0.5, 0.5], [1.0, 0.0, 0.0]]
    assert padded["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    with pytest.raises(ValueError, match=r"^text: example 1 holds \['input_ids'\], example 0 holds"):
        MultimodalCollator(["text"])([{"text": {"input_ids": [1], "attention_mask": [1]}, "labels": 0},
                                      {"text": {"input_ids": [1]}, "labels": 0}])


RELOAD = textwrap.dedent("""
    import sys
    import torch
    from safetensors.torch import load_file, save_file
    from arl_hf import MultimodalModel
    from transformers import AutoModel
    saved, inputs, out = sys.argv[1:4]
    x = load_file(inputs)
    feed = {"text": {"input_ids": x["input_ids"], "attention_mask": x["attention_mask"]}, "image": x["image"]}
    a = MultimodalModel.from_pretrained(saved).eval()
    b = AutoModel.from_pretrained(saved).eval()
    with torch.no_grad():
        save_file({"from_pretrained": a(**feed).logits, "auto": b(**feed).logits}, out)
""")


def test_reload_in_a_fresh_process_without_the_source(ckpt, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ckpt["bert"], src / "bert")
    shutil.copytree(ckpt["vit"], src / "vit")
    torch.manual_seed(0)
    model = MultimodalModel(MultimodalConfig(
        modalities={"text": {"encoder": f"hf:{src / 'bert'}"}, "image": {"encoder": f"hf:{src / 'vit'}"}},
        num_labels=3)).eval()
    batch = MultimodalCollator(["text", "image"])(text_image_rows(ckpt["bert"], n=4))
    with torch.no_grad():
        expected = model(text=batch["text"], image=batch["image"]).logits
    model.save_pretrained(tmp_path / "saved")
    shutil.rmtree(src)
    save_file({**batch["text"], "image": batch["image"]}, str(tmp_path / "inputs.safetensors"))
    (tmp_path / "reload.py").write_text(RELOAD)
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(tmp_path / "reload.py"), str(tmp_path / "saved"),
                           str(tmp_path / "inputs.safetensors"), str(tmp_path / "out.safetensors")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = load_file(str(tmp_path / "out.safetensors"))
    assert torch.equal(got["from_pretrained"], expected)
    assert torch.equal(got["auto"], expected)


def test_a_recorded_spec_without_its_source_needs_pretrained_false(ckpt, tmp_path):
    shutil.copytree(ckpt["vit"], tmp_path / "vit")
    config = MultimodalConfig(modalities={"image": {"encoder": f"hf:{tmp_path / 'vit'}"},
                                          "v": MLP}, num_labels=2)
    shutil.rmtree(tmp_path / "vit")
    with pytest.raises(FileNotFoundError, match=r"^modalities\['image'\]\['encoder'\]: checkpoint folder .* does not "
                                                r"exist; set modalities\['image'\]\['pretrained'\] = False"):
        MultimodalModel(config)
    config.modalities["image"]["pretrained"] = False
    assert MultimodalModel(config).encoders["image"].out_dim == 16


def test_spec_errors_name_the_field(ckpt, tmp_path):
    def build(**spec):
        return MultimodalConfig(modalities={"text": {"encoder": f"hf:{ckpt['bert']}", **spec},
                                            "v": MLP}, num_labels=2)

    with pytest.raises(ValueError, match=r"^modalities\['text'\]\['pooling'\]: expected one of \['auto', 'pooler', "
                                         r"'mean', 'cls'\], got 'max'"):
        build(pooling="max")
    with pytest.raises(ValueError, match=r"^modalities\['text'\]\['pretrained'\]: expected True or False"):
        build(pretrained="yes")
    with pytest.raises(ValueError, match=r"^modalities\['text'\]\['hidden'\]: unknown option for encoder"):
        build(hidden=3)
    with pytest.raises(FileNotFoundError, match=r"^modalities\['x'\]\['encoder'\]: no checkpoint folder with a "
                                                r"config.json at"):
        MultimodalConfig(modalities={"x": {"encoder": f"hf:{tmp_path / 'nothing'}"}}, num_labels=2)
    with pytest.raises(ValueError, match=r"^modalities\['x'\]\['encoder'\]: unknown encoder 'hf:'"):
        MultimodalConfig(modalities={"x": {"encoder": "hf:"}}, num_labels=2)


@pytest.mark.parametrize("fusion", ["mmtm", "cross_attention"])
def test_intermediate_fusion_is_refused_in_one_line(ckpt, fusion):
    with pytest.raises(ValueError, match=rf"^modalities\['image'\]\['encoder'\]: fusion '{fusion}' needs stage "
                                         r"outputs: hf encoders expose no stage outputs.*use a late fusion"):
        MultimodalConfig(modalities={"image": {"encoder": f"hf:{ckpt['vit']}"},
                                     "v": MLP}, num_labels=2, fusion=fusion)


def test_audio_and_convolutional_models_pool_their_own_layouts(tmp_path):
    from transformers import ConvNextConfig, ConvNextModel, Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    Wav2Vec2Model(Wav2Vec2Config(conv_dim=(8, 8), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=8,
                                 num_conv_pos_embedding_groups=2, feat_extract_norm="layer", hidden_size=16,
                                 num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
                  ).save_pretrained(tmp_path / "w2v")
    ConvNextModel(ConvNextConfig(hidden_sizes=[8, 12], depths=[1, 1], num_stages=2)).save_pretrained(tmp_path / "cnx")
    model = MultimodalModel(MultimodalConfig(
        modalities={"audio": {"encoder": f"hf:{tmp_path / 'w2v'}"},
                    "image": {"encoder": f"hf:{tmp_path / 'cnx'}", "pooling": "mean"}}, num_labels=2)).eval()
    assert model.encoders["audio"].out_dim == 16 and model.encoders["image"].out_dim == 12
    values = torch.randn(2, 400)
    mask = torch.ones(2, 400, dtype=torch.long)
    mask[1, 250:] = 0  # the second clip is shorter: its padding frames are left out of the mean
    images = torch.randn(2, 3, 32, 32)
    feats = model(audio={"input_values": values, "attention_mask": mask}, image=images).features
    w2v = model.encoders["audio"].model
    hidden = w2v(input_values=values, attention_mask=mask).last_hidden_state
    frames = w2v._get_feature_vector_attention_mask(hidden.shape[1], mask)
    assert frames[1].sum() < frames[0].sum() == hidden.shape[1]
    expected = torch.stack([hidden[i, frames[i].bool()].mean(0) for i in range(2)])
    torch.testing.assert_close(feats["audio"], expected)
    maps = model.encoders["image"].model(pixel_values=images).last_hidden_state  # (B, C, H, W)
    torch.testing.assert_close(feats["image"], maps.mean(dim=(2, 3)))


def test_checkpoints_that_cannot_be_read_are_named(ckpt, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"^modalities\['x'\]\['encoder'\]: cannot read the config of "
                                                r"checkpoint 'nobody-here/no-such-model'"):
        MultimodalConfig(modalities={"x": {"encoder": "hf:nobody-here/no-such-model"}, "v": MLP}, num_labels=2)
    # pickled weights only: refused, not unpickled
    shutil.copytree(ckpt["vit"], tmp_path / "vit")
    torch.save(STATES[ckpt["vit"]], tmp_path / "vit" / "pytorch_model.bin")
    os.remove(tmp_path / "vit" / "model.safetensors")
    config = MultimodalConfig(modalities={"x": {"encoder": f"hf:{tmp_path / 'vit'}"}, "v": MLP}, num_labels=2)
    assert config.modalities["x"]["pooler_weights"] is False  # no safetensors names to read the pooler's from
    with pytest.raises(FileNotFoundError, match=r"^modalities\['x'\]\['encoder'\]: cannot load safetensors weights "
                                                r"of checkpoint .*pickled .bin weights are not loaded"):
        MultimodalModel(config)
    with pytest.raises(ValueError, match=r"^modalities\['x'\]\['hf_config'\]: expected a transformers config dict "
                                         r"with a known 'model_type', got dict with model_type 'nope'"):
        MultimodalConfig(modalities={"x": {"encoder": "hf:any", "hf_config": {"model_type": "nope"}}, "v": MLP},
                         num_labels=2)


def test_reload_fills_a_missing_tensor_without_reading_the_source(ckpt, tmp_path):
    shutil.copytree(ckpt["vit"], tmp_path / "vit")
    model = MultimodalModel(MultimodalConfig(modalities={"image": {"encoder": f"hf:{tmp_path / 'vit'}"}, "v": MLP},
                                             num_labels=2))
    model.save_pretrained(tmp_path / "saved")
    shutil.rmtree(tmp_path / "vit")
    weights = load_file(str(tmp_path / "saved" / "model.safetensors"))
    missing = next(k for k in weights if k.startswith("fusion."))
    del weights[missing]  # a checkpoint without one head tensor: filled from a newly built twin of the model
    save_file(weights, str(tmp_path / "saved" / "model.safetensors"), metadata={"format": "pt"})
    reloaded = MultimodalModel.from_pretrained(tmp_path / "saved")
    loaded, saved = reloaded.state_dict(), model.state_dict()
    assert loaded.keys() == saved.keys() and missing in saved
    for k, v in saved.items():
        assert k == missing or torch.equal(loaded[k], v), k
    assert torch.isfinite(loaded[missing]).all()


def test_an_encoder_decoder_checkpoint_contributes_its_encoder(tmp_path):
    from transformers import BartConfig, BartModel

    torch.manual_seed(0)
    bart = BartModel(BartConfig(vocab_size=50, d_model=16, encoder_layers=1, decoder_layers=1,
                                encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                                decoder_ffn_dim=32, max_position_embeddings=32))
    bart.save_pretrained(tmp_path / "bart")
    model = MultimodalModel(MultimodalConfig(modalities={"text": {"encoder": f"hf:{tmp_path / 'bart'}"}, "v": MLP},
                                             num_labels=2)).eval()
    enc = model.encoders["text"]
    assert enc.out_dim == 16 and not any("decoder" in n for n, _ in enc.named_parameters())
    ids = torch.tensor([[0, 7, 8, 9, 2], [0, 7, 2, 1, 1]])
    mask = (ids != 1).long()
    feats = model(text={"input_ids": ids, "attention_mask": mask}, v=torch.zeros(2, 3)).features["text"]
    hidden = bart.eval().get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(feats, torch.stack([hidden[0].mean(0), hidden[1, :3].mean(0)]))
    model.save_pretrained(tmp_path / "saved")
    shutil.rmtree(tmp_path / "bart")
    reloaded = MultimodalModel.from_pretrained(tmp_path / "saved").eval()
    assert torch.equal(reloaded(text={"input_ids": ids, "attention_mask": mask}, v=torch.zeros(2, 3)).features["text"],
                       feats)


def test_a_composite_checkpoint_is_refused_and_its_tower_works(tmp_path):
    from transformers import CLIPConfig, CLIPModel, CLIPVisionModel

    size = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    CLIPModel(CLIPConfig(text_config=dict(vocab_size=50, **size), projection_dim=8,
                         vision_config=dict(image_size=32, patch_size=8, **size))).save_pretrained(tmp_path / "clip")
    with pytest.raises(ValueError, match=r"^modalities\['image'\]\['encoder'\]: the checkpoint is a composite 'clip' "
                                         r"model with text_config, vision_config; an hf: encoder is one tower"):
        MultimodalConfig(modalities={"image": {"encoder": f"hf:{tmp_path / 'clip'}"}, "v": MLP}, num_labels=2)
    tower = CLIPVisionModel.from_pretrained(tmp_path / "clip")
    tower.save_pretrained(tmp_path / "vision")
    model = MultimodalModel(MultimodalConfig(modalities={"image": {"encoder": f"hf:{tmp_path / 'vision'}"}, "v": MLP},
                                             num_labels=2)).eval()
    images = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(image=images, v=torch.zeros(2, 3)).features["image"],
                               tower.eval()(pixel_values=images).pooler_output)
