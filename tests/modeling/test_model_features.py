"""Model features transformers users reach for: activation checkpointing (both names, identical
gradients), ``_no_split_modules`` for ``device_map="auto"``, ``main_input_name``, ``input_modalities``."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from arl_hf import ARLConfig, ARLTrainer, MultimodalConfig, MultimodalModel

LATE = {
    "audio": {"encoder": "timm:test_resnet", "in_chans": 1},
    "visual": {"encoder": "transformer", "input_dim": 6, "d_model": 8, "num_heads": 2, "num_layers": 2,
               "dropout": 0.1},
    "text": {"encoder": "mlp", "input_dim": 5, "hidden_dims": [8, 8]},
}
LATE_SHAPES = {"audio": (1, 32, 32), "visual": (4, 6), "text": (5,)}


def _model(specs=LATE, fusion="concat", seed=0, **kw):
    torch.manual_seed(seed)
    return MultimodalModel(MultimodalConfig(modalities=specs, num_labels=3, fusion=fusion, **kw))


def _inputs(shapes=LATE_SHAPES, batch=6):
    g = torch.Generator().manual_seed(1)
    x = {m: torch.randn(batch, *s, generator=g) for m, s in shapes.items()}
    return x, torch.randint(0, 3, (batch,), generator=g)


def _grads(model, inputs, labels):
    model.train()
    model.zero_grad()
    torch.manual_seed(5)  # dropout masks: checkpointing restores the RNG state for its recompute
    out = model(**inputs, labels=labels, return_unimodal_logits=True)
    loss = out.loss + sum(F.cross_entropy(v, labels) for v in out.unimodal_logits.values())
    loss.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", ["activation_checkpointing_enable", "gradient_checkpointing_enable"])
def test_checkpointing_gives_identical_gradients(name):
    model = _model()
    inputs, labels = _inputs()
    plain = _grads(model, inputs, labels)
    assert not model.is_activation_checkpointing
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # gradient_* is transformers' deprecated alias
        getattr(model, name)()
    assert model.is_activation_checkpointing
    assert model.encoders["audio"].backbone.grad_checkpointing  # timm checkpoints its own stages
    calls = []
    func = model.encoders["text"]._gradient_checkpointing_func
    model.encoders["text"]._gradient_checkpointing_func = lambda *a, **k: calls.append(1) or func(*a, **k)
    checkpointed = _grads(model, inputs, labels)
    assert calls == [1]  # the MLP was recomputed in backward, not run plainly
    assert plain.keys() == checkpointed.keys() and len(plain) > 10
    for n in plain:
        torch.testing.assert_close(checkpointed[n], plain[n], rtol=1e-6, atol=1e-7, msg=n)
    model.activation_checkpointing_disable()
    assert not model.is_activation_checkpointing and not model.encoders["audio"].backbone.grad_checkpointing


def test_checkpointing_intermediate_fusion_stages_identical_gradients():
    specs = {"audio": {"encoder": "timm:test_resnet", "in_chans": 1},
             "visual": {"encoder": "mlp", "input_dim": 8, "hidden_dims": [16, 16, 16]}}
    shapes = {"audio": (1, 32, 32), "visual": (8,)}
    model = _model(specs, fusion="mmtm")
    inputs, labels = _inputs(shapes)
    plain = _grads(model, inputs, labels)
    model.activation_checkpointing_enable()
    checkpointed = _grads(model, inputs, labels)
    for n in plain:
        torch.testing.assert_close(checkpointed[n], plain[n], rtol=1e-6, atol=1e-7, msg=n)


def test_reentrant_checkpointing_is_refused_naming_the_field():
    with pytest.raises(ValueError, match=r"activation_checkpointing_kwargs\['use_reentrant'\]: expected False"):
        _model().activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": True})


@pytest.mark.parametrize("flag", ["--activation_checkpointing", "--gradient_checkpointing"])
def test_checkpointing_flags_train_an_arl_step_like_without(flag, tmp_path):
    """``--activation_checkpointing true`` / ``--gradient_checkpointing true`` parse, reach the model
    through the Trainer, and one ARL step lands on the same parameters as without."""
    from arl_hf.scripts.train import make_parser as build_parser

    (parsed, *_) = build_parser().parse_args_into_dataclasses(
        args=[flag, "true", "--output_dir", str(tmp_path / "p"), "--report_to", "none"])
    assert parsed.activation_checkpointing is True

    rows_inputs, labels = _inputs(batch=8)
    rows = [{**{m: v[i] for m, v in rows_inputs.items()}, "labels": labels[i]} for i in range(8)]

    def one_step(checkpointing):
        args = ARLConfig(output_dir=str(tmp_path / str(checkpointing)), strategy="arl", max_steps=1,
                         per_device_train_batch_size=8, optim="sgd", learning_rate=0.1, report_to="none",
                         use_cpu=True, save_strategy="no", disable_tqdm=True, dataloader_num_workers=0,
                         train_sampling_strategy="sequential", seed=0, activation_checkpointing=checkpointing)
        trainer = ARLTrainer(model=_model(), args=args, train_dataset=rows)
        trainer.train()
        assert trainer.model.is_activation_checkpointing is checkpointing
        return dict(trainer.model.named_parameters())

    plain, checkpointed = one_step(False), one_step(True)
    for n, p in plain.items():
        torch.testing.assert_close(checkpointed[n], p, rtol=1e-5, atol=1e-6, msg=n)


def test_no_split_modules_keep_each_encoder_whole():
    from accelerate import infer_auto_device_map
    from accelerate.utils import compute_module_sizes

    model = _model({"audio": {"encoder": "timm:test_resnet", "in_chans": 1},
                    "visual": {"encoder": "timm:test_resnet", "in_chans": 3}})
    assert {"TimmEncoder", "MLPEncoder", "CNNEncoder"} <= set(model._no_split_modules)
    sizes = compute_module_sizes(model)
    memory = {0: int(sizes["encoders.audio"] * 1.3), 1: 4 * sizes[""]}
    free = infer_auto_device_map(model, max_memory=memory)
    # without them accelerate cuts a residual block of the ResNet across devices
    assert any(k.startswith("encoders.audio.backbone.") for k in free)
    kept = infer_auto_device_map(model, max_memory=memory, no_split_module_classes=list(model._no_split_modules))
    assert not any(k.startswith(("encoders.audio.", "encoders.visual.")) for k in kept), kept
    # a user-registered encoder class joins the list
    from torch import nn

    from arl_hf.modeling import ENCODERS, register_encoder

    @register_encoder("tiny_linear_for_test")
    class TinyLinearEncoder(nn.Module):
        def __init__(self, modality, spec):
            super().__init__()
            self.net, self.out_dim = nn.Linear(spec["input_dim"], 4), 4

        def check_input(self, x, field):
            pass

        def forward(self, x):
            return self.net(x)

    try:
        m = _model({"a": {"encoder": "tiny_linear_for_test", "input_dim": 3},
                    "b": {"encoder": "mlp", "input_dim": 3, "hidden_dims": [4]}})
        assert "TinyLinearEncoder" in m._no_split_modules
    finally:
        ENCODERS.pop("tiny_linear_for_test")


def test_main_input_name_and_input_modalities():
    model = _model()
    assert model.main_input_name == "audio"  # the first modality, a key of every batch
    assert model.input_modalities == ["audio", "video", "text"]

def test_trainer_reads_the_main_input(tmp_path):
    """``include_for_metrics=["inputs"]`` hands compute_metrics ``inputs[main_input_name]``
    (with ``"labels"`` as main input it got the labels)."""
    inputs, labels = _inputs(batch=6)
    rows = [{**{m: v[i] for m, v in inputs.items()}, "labels": labels[i]} for i in range(6)]
    seen = {}

    def compute_metrics(eval_pred):
        seen["inputs"] = eval_pred.inputs
        return {}

    args = ARLConfig(output_dir=str(tmp_path), strategy="none", report_to="none", use_cpu=True, disable_tqdm=True,
                     per_device_eval_batch_size=6, include_for_metrics=["inputs"], dataloader_num_workers=0)
    ARLTrainer(model=_model(), args=args, eval_dataset=rows, compute_metrics=compute_metrics).evaluate()
    assert seen["inputs"].shape == (6, 1, 32, 32)
    torch.testing.assert_close(torch.as_tensor(seen["inputs"]), inputs["audio"])


def test_input_modalities_from_kinds_and_names():
    # recorded storage kinds win over names: AV-Digits' visual modality is an image
    record = {"data": {"modalities": {"audio": {"kind": "spectrogram"}, "visual": {"kind": "image"}}}}
    specs = {"audio": {"encoder": "mlp", "input_dim": 3, "hidden_dims": [4]},
             "visual": {"encoder": "mlp", "input_dim": 3, "hidden_dims": [4]}}
    assert _model(specs, preprocessing=record).input_modalities == ["audio", "image"]
    assert _model({"sensor": specs["audio"], "visual": specs["visual"]}).input_modalities == ["time", "video"]
