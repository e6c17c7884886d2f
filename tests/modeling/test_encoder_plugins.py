"""Encoder families as plug-ins: a family added as one file (registered from outside the package, built
from a config, trained, saved and reloaded), a family of integer inputs through the batch validator,
the registry's defaults per modality kind, and the one definition of the modality kinds."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import textwrap

import pytest
import torch

from arl_hf import ARLConfig, ARLTrainer, MultimodalConfig, MultimodalModel
from arl_hf.arguments import ModelArguments
from arl_hf.building import modality_specs
from arl_hf.kinds import FLOAT_KINDS, KINDS, STORED_KINDS, accepted_kinds
from arl_hf.modeling.encoders import ENCODERS, default_encoder, register_encoder
from arl_hf.validation import check_inputs, validate_batch

# A prefix family ("conv1d:<width>") over feature sequences, with its own option.
CONV1D_FAMILY = '''
import torch
from torch import nn

from arl_hf.modeling.encoders import EncoderFamily, register_encoder


@register_encoder("conv1d:")
class Conv1dEncoder(EncoderFamily, nn.Module):
    """(B, L, D) -> Conv1d(D, width, kernel) + ReLU -> mean over L."""

    input_kinds = ("sequence",)
    OPTIONS = ("input_dim", "kernel")

    @classmethod
    def validate_spec(cls, spec, field):
        super().validate_spec(spec, field)
        width = spec["encoder"].split(":", 1)[1]
        if not width.isdigit() or int(width) < 1:
            raise ValueError(f"{field}['encoder']: expected 'conv1d:<positive width>', got {spec['encoder']!r}")
        kernel = spec.get("kernel", 3)
        if not isinstance(kernel, int) or kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"{field}['kernel']: expected an odd positive int, got {kernel!r}")

    @classmethod
    def spec_for_input(cls, encoder, kind, shape, args):
        return {"input_dim": shape[-1], "kernel": 3}

    def __init__(self, modality, spec):
        super().__init__()
        kernel = spec.get("kernel", 3)
        self.input_dim = spec["input_dim"]
        self.out_dim = int(spec["encoder"].split(":", 1)[1])
        self.conv = nn.Conv1d(self.input_dim, self.out_dim, kernel, padding=kernel // 2)

    def check_input(self, x, field):
        if x.dim() != 3 or x.shape[-1] != self.input_dim:
            raise ValueError(f"{field}: expected (B, L, {self.input_dim}), got {tuple(x.shape)}")

    def forward(self, x):
        return torch.relu(self.conv(x.transpose(1, 2))).mean(-1)
'''

# A named family of integer inputs: token ids and their mask, (B, 2, L).
TOKEN_FAMILY = '''
import torch
from torch import nn

from arl_hf.modeling.encoders import EncoderFamily, register_encoder


@register_encoder("token_bag")
class TokenBagEncoder(EncoderFamily, nn.Module):
    """Masked mean of token embeddings."""

    input_kinds = ("tokens",)
    default_for = ("tokens",)
    OPTIONS = ("vocab_size", "dim")

    @classmethod
    def spec_for_input(cls, encoder, kind, shape, args):
        return {"vocab_size": 32, "dim": 8}

    def __init__(self, modality, spec):
        super().__init__()
        self.emb = nn.Embedding(spec["vocab_size"], spec["dim"])
        self.out_dim = spec["dim"]

    def check_input(self, x, field):
        if x.dim() != 3 or x.shape[1] != 2:
            raise ValueError(f"{field}: expected (B, 2, L) token ids and mask, got {tuple(x.shape)}")

    def forward(self, x):
        mask = x[:, 1].unsqueeze(-1).to(self.emb.weight.dtype)
        return (self.emb(x[:, 0]) * mask).sum(1) / mask.sum(1).clamp(min=1)
'''


def _import_file(path):
    """Import the Python file ``path`` under a fresh module name (its families register themselves)."""
    name = f"user_encoders_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}_{len(sys.modules)}"
    spec = importlib.util.spec_from_file_location(name, str(path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def registry():
    """``ENCODERS`` as it was, in the same order, after the test (families added or removed here)."""
    before = list(ENCODERS.items())
    yield ENCODERS
    dict.clear(ENCODERS)
    for name, obj in before:
        dict.__setitem__(ENCODERS, name, obj)


def _family_file(tmp_path, name, text):
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(text))
    return path


def _args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, optim="sgd", learning_rate=0.1,
                lr_scheduler_type="constant", max_steps=2, train_sampling_strategy="sequential", report_to="none",
                use_cpu=True, save_strategy="no", logging_steps=1, disable_tqdm=True, seed=0,
                dataloader_num_workers=0)
    base.update(kw)
    return ARLConfig(**base)


# ---------------------------------------------------------------- a family added as one file
def test_a_family_added_as_one_file_builds_trains_saves_and_reloads(tmp_path, registry):
    path = _family_file(tmp_path, "conv1d_family", CONV1D_FAMILY)
    _import_file(path)
    assert "conv1d" in ENCODERS and ENCODERS["conv1d"].encoder_prefix == "conv1d:"
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (8,), generator=g)
    audio = torch.randn(8, 7, 5, generator=g) + y[:, None, None]
    visual = torch.randn(8, 6, generator=g)
    rows = [{"audio": audio[i], "visual": visual[i], "labels": y[i]} for i in range(8)]
    # the run's specs come from the registry: the family takes sequences and gives its own options
    batch = {"audio": audio[:2], "visual": visual[:2], "labels": y[:2]}
    specs = modality_specs(batch, ModelArguments(modality_encoders="audio=conv1d:12", mlp_hidden_dims=[8]))
    assert specs == {"audio": {"encoder": "conv1d:12", "input_dim": 5, "kernel": 3},
                     "visual": {"encoder": "mlp", "input_dim": 6, "hidden_dims": [8]}}
    torch.manual_seed(0)
    model = MultimodalModel(MultimodalConfig(modalities=specs, num_labels=3))
    assert model.encoders["audio"].out_dim == 12 and "Conv1dEncoder" in model._no_split_modules
    before = model.encoders["audio"].conv.weight.detach().clone()
    trainer = ARLTrainer(model=model, args=_args(tmp_path, strategy="arl"), train_dataset=rows)
    trainer.train()
    assert trainer.state.global_step == 2 and all(torch.isfinite(torch.tensor(h["loss"]))
                                                  for h in trainer.state.log_history if "loss" in h)
    assert (model.encoders["audio"].conv.weight.detach() - before).abs().max() > 1e-4  # the family trained
    out = str(tmp_path / "ckpt")
    model.save_pretrained(out)
    with open(os.path.join(out, "config.json")) as fh:
        assert json.load(fh)["modalities"]["audio"] == {"encoder": "conv1d:12", "input_dim": 5, "kernel": 3}
    model.eval()
    with torch.no_grad():
        want = model(audio=audio, visual=visual).logits
    # a fresh process knows no "conv1d:" family until the file is imported again
    dict.pop(ENCODERS, "conv1d")
    with pytest.raises(ValueError, match=r"modalities\['audio'\]\['encoder'\]: unknown encoder 'conv1d:12'"):
        MultimodalModel.from_pretrained(out)
    _import_file(path)
    reloaded = MultimodalModel.from_pretrained(out).eval()
    assert type(reloaded.encoders["audio"]).__name__ == "Conv1dEncoder"
    with torch.no_grad():
        assert torch.equal(reloaded(audio=audio, visual=visual).logits, want)


def test_a_family_validates_its_own_spec_naming_modality_and_option(tmp_path, registry):
    _import_file(_family_file(tmp_path, "conv1d_family", CONV1D_FAMILY))
    mlp = {"encoder": "mlp", "input_dim": 2, "hidden_dims": [2]}
    for spec, message in [
        ({"encoder": "conv1d:8", "input_dim": 5, "kernel": 4}, r"modalities\['text'\]\['kernel'\]: expected an odd"),
        ({"encoder": "conv1d:wide", "input_dim": 5}, r"modalities\['text'\]\['encoder'\]: expected 'conv1d:<positive"),
        ({"encoder": "conv1d:8", "input_dim": 5, "stride": 2},
         r"modalities\['text'\]\['stride'\]: unknown option for encoder 'conv1d:8'; "
         r"expected \['input_dim', 'kernel'\]"),
        ({"encoder": "conv1d", "input_dim": 5},
         r"unknown encoder 'conv1d'; expected 'timm:<model name>' or "
         r"'conv1d:<model name>' or one of \['cnn', 'lstm', 'mlp', 'transformer'\]"),
    ]:
        with pytest.raises(ValueError, match=message):
            MultimodalConfig(modalities={"text": spec, "audio": mlp}, num_labels=2)
    # the family does not take vectors: a one-line error at building, naming what it takes
    with pytest.raises(ValueError, match=r"^audio: encoder 'conv1d:8' takes sequence \(L, D\) float inputs; the "
                                         r"batch holds vector \(D,\) float inputs of shape \(B, 6\); choose an encoder "
                                         r"for vector inputs with --modality_encoders audio=<encoder> \(one of mlp"):
        modality_specs({"audio": torch.zeros(2, 6), "labels": torch.zeros(2).long()},
                       ModelArguments(modality_encoders="audio=conv1d:8"))


def test_register_encoder_takes_a_name_or_a_prefix(registry):
    for bad in ("", ":", "a:b", "a::", 3):
        with pytest.raises(ValueError, match="name: expected an encoder name"):
            register_encoder(bad)
    assert "timm" in ENCODERS and ENCODERS["timm"].encoder_prefix == "timm:"
    with pytest.raises(ValueError,
                       match=r"encoder family 'pics': input_kinds has unknown kind 'images'; expected kinds"):
        register_encoder("pics")(type("Pics", (), {"input_kinds": ("image", "images")}))
    with pytest.raises(ValueError, match=r"encoder family 'pics:': default_for has unknown kind 'video'"):
        register_encoder("pics:")(type("Pics", (), {"input_kinds": ("image",), "default_for": ("video",)}))
    assert "pics" not in ENCODERS
    with pytest.raises(ValueError, match=r"modalities\['a'\]\['encoder'\]: unknown encoder 'timm'"):
        MultimodalConfig(modalities={"a": {"encoder": "timm", "in_chans": 1}}, num_labels=2)
    with pytest.raises(ValueError, match=r"unknown encoder 'mlp:x'"):
        MultimodalConfig(modalities={"a": {"encoder": "mlp:x", "input_dim": 2, "hidden_dims": [2]}}, num_labels=2)


# ---------------------------------------------------------------- integer inputs
def test_an_integer_input_family_passes_the_validator_and_trains(tmp_path, registry):
    _import_file(_family_file(tmp_path, "token_family", TOKEN_FAMILY))
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (8,), generator=g)
    ids = torch.randint(1, 32, (8, 6), generator=g)
    mask = (torch.arange(6)[None] < torch.randint(2, 7, (8, 1), generator=g)).long()
    text = torch.stack([ids * mask, mask], 1)  # (B, 2, L) int64
    audio = torch.randn(8, 4, generator=g) + y[:, None]
    batch = {"text": text, "audio": audio, "labels": y}
    # the registry's default for integer (B, 2, L) inputs is the family that declares it
    assert default_encoder("tokens") == "token_bag"
    specs = modality_specs(batch, ModelArguments(mlp_hidden_dims=[8]))
    assert specs["text"] == {"encoder": "token_bag", "vocab_size": 32, "dim": 8}
    torch.manual_seed(0)
    model = MultimodalModel(MultimodalConfig(modalities=specs, num_labels=3))
    kinds = accepted_kinds(model)
    assert kinds == {"text": ("tokens",), "audio": ("vector",)}
    validate_batch(batch, ["text", "audio"], 3, kinds=kinds)  # passes: the encoder takes token ids
    assert check_inputs(batch, ["text", "audio"], kinds=kinds) == 8
    features = model(text=text, audio=audio).features["text"]
    longer = torch.cat([text, torch.zeros(8, 2, 3, dtype=torch.long)], -1)  # more padding: the same features
    assert features.shape == (8, 8)
    torch.testing.assert_close(model(text=longer, audio=audio).features["text"], features)
    # without the encoder's kinds, and for the built-in families, integers are refused as before
    with pytest.raises(ValueError, match=r"^text: expected a floating-point tensor, got dtype torch.int64$"):
        validate_batch(batch, ["text", "audio"], 3)
    with pytest.raises(ValueError, match=r"^audio: expected a floating-point tensor, got dtype torch.int64$"):
        model(text=text, audio=audio.long())
    with pytest.raises(ValueError, match=r"^text: expected a tensor of its encoder's kinds \(tokens \(2, L\) int\), "
                                         r"got dtype torch.float32$"):
        model(text=text.float(), audio=audio)
    with pytest.raises(ValueError, match="text: expected a floating-point tensor, got dtype torch.bool"):
        check_inputs({"text": text.bool()}, ["text"])
    # the trainer's batch check asks the model too: two steps on token ids
    model.train()
    rows = [{"text": text[i], "audio": audio[i], "labels": y[i]} for i in range(8)]
    before = model.encoders["text"].emb.weight.detach().clone()
    trainer = ARLTrainer(model=model, args=_args(tmp_path, strategy="arl"), train_dataset=rows)
    trainer.train()
    assert trainer.state.global_step == 2
    assert (model.encoders["text"].emb.weight.detach() - before).abs().max() > 1e-4


def test_integer_inputs_without_a_family_are_a_clear_error():
    batch = {"text": torch.zeros(2, 2, 5, dtype=torch.long), "labels": torch.zeros(2).long()}
    with pytest.raises(ValueError, match=r"^text: no registered encoder family takes tokens \(2, L\) int inputs by "
                                         r"default; name one with --modality_encoders text=<encoder>$"):
        modality_specs(batch, ModelArguments())
    with pytest.raises(ValueError, match=r"^text: encoder 'mlp' takes vector \(D,\) float inputs; the batch holds "
                                         r"tokens \(2, L\) int inputs of shape \(B, 2, 5\); choose an encoder for "
                                         r"tokens inputs with --modality_encoders text=<encoder>"):
        modality_specs(batch, ModelArguments(modality_encoders="text=mlp"))
    with pytest.raises(ValueError, match=r"^text: unsupported input of shape \(2, 5\) and dtype int; "
                                         r"expected \(B, \.\.\.\) inputs of a kind: frames"):
        modality_specs({"text": torch.zeros(2, 5, dtype=torch.long)}, ModelArguments())


# ---------------------------------------------------------------- the built-in families through the registry
def test_modality_specs_of_the_built_in_families_are_unchanged():
    """The specs a run builds for each input kind are those it always built (config.json unchanged)."""
    batch = {"audio": torch.zeros(2, 1, 16, 16), "visual": torch.zeros(2, 3, 3, 16, 16), "feat": torch.zeros(2, 7),
             "seq": torch.zeros(2, 5, 4), "labels": torch.zeros(2).long()}
    assert modality_specs(batch, ModelArguments()) == {
        "audio": {"encoder": "timm:resnet18", "in_chans": 1}, "visual": {"encoder": "timm:resnet18", "in_chans": 3},
        "feat": {"encoder": "mlp", "input_dim": 7, "hidden_dims": [256, 256]},
        "seq": {"encoder": "transformer", "input_dim": 4}}
    suggested = {"audio": {"encoder": "cnn", "in_chans": 1}, "seq": {"encoder": "mlp"}, "feat": {"encoder": "lstm"}}
    specs = modality_specs(batch, ModelArguments(sequence_encoder="lstm", vector_encoder="mlp", mlp_hidden_dims=[4]),
                           suggested, kinds={"audio": "spectrogram", "seq": "sequence", "feat": "sequence"})
    assert specs == {"audio": {"encoder": "cnn", "in_chans": 1}, "visual": {"encoder": "timm:resnet18", "in_chans": 3},
                     "feat": {"encoder": "mlp", "input_dim": 7, "hidden_dims": [4]},  # a pooled sequence is a vector
                     "seq": {"encoder": "lstm", "input_dim": 4}}
    specs = modality_specs(batch, ModelArguments(encoder="cnn", modality_encoders="visual=timm:test_resnet"), suggested)
    assert specs["audio"] == {"encoder": "cnn", "in_chans": 1} and specs["visual"]["encoder"] == "timm:test_resnet"


def test_the_issue_case_a_timm_encoder_on_vectors_is_a_one_line_error():
    batch = {"spectrogram": torch.zeros(4, 16), "labels": torch.zeros(4).long()}
    with pytest.raises(ValueError, match=r"^spectrogram: encoder 'timm:resnet18' takes image \(C, H, W\) float, "
                                         r"spectrogram \(1, F, T\) float, frames \(T, C, H, W\) float, flow "
                                         r"\(T, 2, H, W\) float inputs; the batch holds vector \(D,\) float inputs "
                                         r"of shape \(B, 16\); choose an encoder for vector inputs with "
                                         r"--modality_encoders spectrogram=<encoder> \(one of mlp"):
        modality_specs(batch, ModelArguments(modality_encoders="spectrogram=timm:resnet18"))
    # the same spec written by hand: the option timm does not take is named (was a TypeError inside timm)
    cfg = MultimodalConfig(modalities={"spectrogram": {"encoder": "timm:resnet18", "input_dim": 16}}, num_labels=2)
    with pytest.raises(ValueError, match=r"^modalities\['spectrogram'\]\['input_dim'\]: timm model 'resnet18' "
                                         r"takes no option 'input_dim'$"):
        MultimodalModel(cfg)


def test_built_in_families_check_their_own_options():
    base = {"audio": {"encoder": "mlp", "input_dim": 2, "hidden_dims": [2]}}
    with pytest.raises(ValueError, match=r"modalities\['a'\]\['dropout'\]: unknown option for encoder 'mlp'"):
        MultimodalConfig(modalities={**base, "a": {"encoder": "mlp", "input_dim": 4, "hidden_dims": [4],
                                                   "dropout": 0.1}}, num_labels=2)
    with pytest.raises(ValueError, match=r"modalities\['a'\]\['hidden_dims'\]: expected a non-empty list"):
        MultimodalConfig(modalities={**base, "a": {"encoder": "mlp", "input_dim": 4, "hidden_dims": [True]}},
                         num_labels=2)


def test_the_default_sequence_encoder_is_the_first_registered_that_declares_it(registry):
    batch = {"seq": torch.zeros(2, 5, 4)}
    assert modality_specs(batch, ModelArguments())["seq"]["encoder"] == "transformer"
    dict.pop(ENCODERS, "transformer")
    assert modality_specs(batch, ModelArguments())["seq"] == {"encoder": "lstm", "input_dim": 4}
    dict.pop(ENCODERS, "lstm")
    with pytest.raises(ValueError, match=r"seq: no registered encoder family takes sequence \(L, D\) float inputs"):
        modality_specs(batch, ModelArguments())


# ---------------------------------------------------------------- one definition of the kinds
def test_the_modality_kinds_are_defined_once():
    from arl_hf.data.record import MODALITY_KINDS, ModalitySpec
    from arl_hf.data.transforms import MultimodalTransform

    assert MODALITY_KINDS is STORED_KINDS == ("spectrogram", "frames", "flow", "sequence", "image")
    assert {k: (v.layout, v.dtype) for k, v in KINDS.items() if k not in STORED_KINDS} == {
        "vector": ("(D,)", "float"), "waveform": ("(C, S)", "float"), "tokens": ("(2, L)", "int")}
    assert "tokens" not in FLOAT_KINDS and "vector" in FLOAT_KINDS
    with pytest.raises(ValueError, match=r"modalities\['x'\]\['kind'\]: unknown kind 'tokens'"):
        MultimodalTransform({"x": {"kind": "tokens"}}, train=False)
    with pytest.raises(ValueError, match=r"modalities\['x'\]\['kind'\]: expected one of \('spectrogram'"):
        ModalitySpec.from_dict("x", {"kind": "vector"})
    # every built-in family declares kinds of that table
    for name, family in ENCODERS.items():
        assert set(family.input_kinds) <= set(KINDS), name


def test_the_kind_a_dataset_records_picks_the_encoder():
    """A (B, C, S) tensor is a sequence by its rank, a waveform when the dataset's record says so (no built-in
    dataset stores waveforms yet: the kind a record names is what picks the encoder)."""
    from arl_hf.building import build_model

    batch = {"wave": torch.randn(2, 1, 40), "labels": torch.zeros(2).long()}
    record = {"data": {"format": "arl_hf.data/1", "modalities": {"wave": {"kind": "waveform"}}}}
    assert build_model(batch, 2, ModelArguments()).config.modalities["wave"]["encoder"] == "transformer"
    with pytest.raises(ValueError, match=r"^wave: no registered encoder family takes waveform \(C, S\) float inputs"):
        build_model(batch, 2, ModelArguments(), record)
    with pytest.raises(ValueError, match=r"^wave: encoder 'transformer' takes sequence \(L, D\) float inputs; the "
                                         r"batch holds waveform \(C, S\) float inputs of shape \(B, 1, 40\); choose an "
                                         r"encoder for waveform inputs with --modality_encoders wave=<encoder>"):
        build_model(batch, 2, ModelArguments(modality_encoders="wave=transformer"), record)
