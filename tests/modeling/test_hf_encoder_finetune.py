"""Fine-tuning habits with hf encoders: frozen encoders, a learning rate of their own, LoRA (peft)."""

from __future__ import annotations

import pytest
import torch
from hf_checkpoints import save_bert, save_vit, text_image_rows
from transformers import HfArgumentParser

from arl_hf import ARLConfig, ARLTrainer, MultimodalConfig, MultimodalModel
from arl_hf.data.collator import MultimodalCollator


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    no_dropout = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return {"bert": save_bert(str(root / "bert"), **no_dropout), "vit": save_vit(str(root / "vit"), **no_dropout)}


def build(ckpt):
    torch.manual_seed(0)
    return MultimodalModel(MultimodalConfig(
        modalities={"text": {"encoder": f"hf:{ckpt['bert']}"}, "image": {"encoder": f"hf:{ckpt['vit']}"}},
        num_labels=3))


def one_step(ckpt, tmp_path, **kw):
    """One ARL step (plain SGD: the update is lr x gradient) on 8 rows; the model, its initial state and the logs."""
    model = build(ckpt)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    args = ARLConfig(**{**dict(output_dir=str(tmp_path), per_device_train_batch_size=8, optim="sgd", learning_rate=0.1,
                               lr_scheduler_type="constant", max_steps=1, train_sampling_strategy="sequential",
                               report_to="none", use_cpu=True, save_strategy="no", logging_steps=1,
                               disable_tqdm=True, seed=0, dataloader_num_workers=0), **kw})
    trainer = ARLTrainer(model=model, args=args, train_dataset=text_image_rows(ckpt["bert"], n=8),
                         data_collator=MultimodalCollator(["text", "image"]))
    trainer.train()
    logs = next(h for h in trainer.state.log_history if "grad_scale_image" in h)
    return model, before, logs, trainer


def params(model, prefix):
    return {k: v.detach() for k, v in model.named_parameters() if k.startswith(prefix)}


def test_a_frozen_encoder_stays_and_the_other_is_modulated_as_without_freezing(ckpt, tmp_path):
    free, before, free_logs, _ = one_step(ckpt, tmp_path / "free")
    frozen, _, frozen_logs, trainer = one_step(ckpt, tmp_path / "frozen", freeze_encoders=["text"])
    # the frozen encoder: unchanged, out of the optimizer
    assert all(torch.equal(v, before[k]) for k, v in params(frozen, "encoders.text.").items())
    in_optimizer = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert not any(id(p) in in_optimizer for p in frozen.encoders["text"].parameters())
    # ARL's coefficients are those of the unfrozen run, and they do modulate (scale != 1)
    for m in ("text", "image"):
        assert frozen_logs[f"grad_scale_{m}"] == pytest.approx(free_logs[f"grad_scale_{m}"], abs=1e-6)
    assert abs(frozen_logs["grad_scale_image"] - 1.0) > 0.05
    # the other encoder received exactly the modulated gradient of the unfrozen run (update = lr x gradient)
    moved = 0
    for k, v in params(frozen, "encoders.image.").items():
        free_step, frozen_step = params(free, "encoders.image.")[k] - before[k], v - before[k]
        torch.testing.assert_close(frozen_step, free_step, atol=1e-7, rtol=1e-5, msg=k)
        moved += int(bool(frozen_step.abs().max() > 0))
    assert moved > 20
    # whereas the unfrozen run moved the text encoder
    assert any(not torch.equal(v, before[k]) for k, v in params(free, "encoders.text.").items())


def test_freeze_all_trains_only_the_fusion(ckpt, tmp_path):
    model, before, _, _ = one_step(ckpt, tmp_path, freeze_encoders=True)
    assert all(torch.equal(v, before[k]) for k, v in params(model, "encoders.").items())
    assert any(not torch.equal(v, before[k]) for k, v in params(model, "fusion.").items())


def test_encoder_learning_rate_applies_to_the_pretrained_encoders(ckpt, tmp_path):
    mixed, before, _, trainer = one_step(ckpt, tmp_path / "mixed", learning_rate=0.1, encoder_learning_rate=0.02)
    slow, _, _, _ = one_step(ckpt, tmp_path / "slow", learning_rate=0.02)
    fast, _, _, _ = one_step(ckpt, tmp_path / "fast", learning_rate=0.1)
    for k, v in params(mixed, "encoders.").items():  # encoders stepped with 0.02
        torch.testing.assert_close(v, params(slow, "encoders.")[k], atol=1e-7, rtol=0, msg=k)
    for k, v in params(mixed, "fusion.").items():  # the fusion head with 0.1
        torch.testing.assert_close(v, params(fast, "fusion.")[k], atol=1e-7, rtol=0, msg=k)
        assert not torch.equal(v, params(slow, "fusion.")[k])
    assert sorted({g["lr"] for g in trainer.optimizer.param_groups}) == [0.02, 0.1]


def test_freeze_options_are_checked(ckpt, tmp_path):
    assert ARLConfig(output_dir=str(tmp_path), freeze_encoders=True).freeze_encoders == ["all"]
    assert ARLConfig(output_dir=str(tmp_path), freeze_encoders="text").freeze_encoders == ["text"]
    assert ARLConfig(output_dir=str(tmp_path), freeze_encoders=False).freeze_encoders is None
    (parsed,) = HfArgumentParser(ARLConfig).parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--freeze_encoders", "text", "image", "--encoder_learning_rate", "1e-5"])
    assert parsed.freeze_encoders == ["text", "image"] and parsed.encoder_learning_rate == 1e-5
    from arl_hf.scripts.train import make_parser  # the arl-hf train command line

    parsed = [o for o in make_parser().parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--freeze_encoders", "all"], return_remaining_strings=True)
        if isinstance(o, ARLConfig)]
    assert parsed[0].freeze_encoders == ["all"]
    with pytest.raises(ValueError, match=r"^freeze_encoders: expected True, 'all' or a list of modality names, got 3"):
        ARLConfig(output_dir=str(tmp_path), freeze_encoders=3)
    with pytest.raises(ValueError, match=r"^freeze_encoders: 'all' stands alone"):
        ARLConfig(output_dir=str(tmp_path), freeze_encoders=["all", "text"])
    with pytest.raises(ValueError, match=r"^encoder_learning_rate: expected a finite number >= 0, got -1"):
        ARLConfig(output_dir=str(tmp_path), encoder_learning_rate=-1)
    with pytest.raises(ValueError, match=r"^freeze_encoders: 'audio' is not a modality of the model; expected 'all' "
                                         r"or names of \['text', 'image'\]"):
        one_step(ckpt, tmp_path, freeze_encoders=["audio"])


def test_lora_through_peft_on_the_inner_model(ckpt, tmp_path):
    peft = pytest.importorskip("peft")
    model = build(ckpt)
    inner = model.encoders["text"].model
    model.encoders["text"].model = peft.get_peft_model(inner, peft.LoraConfig(r=2, target_modules=["query", "value"],
                                                                              init_lora_weights=False))
    trainable = [n for n, p in model.encoders["text"].named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    args = ARLConfig(output_dir=str(tmp_path), per_device_train_batch_size=8, optim="sgd", learning_rate=0.1,
                     lr_scheduler_type="constant", max_steps=1, train_sampling_strategy="sequential",
                     report_to="none", use_cpu=True, save_strategy="no", logging_steps=1, disable_tqdm=True, seed=0,
                     dataloader_num_workers=0)
    trainer = ARLTrainer(model=model, args=args, train_dataset=text_image_rows(ckpt["bert"], n=8),
                         data_collator=MultimodalCollator(["text", "image"]))
    trainer.train()
    logs = next(h for h in trainer.state.log_history if "grad_scale_text" in h)
    assert abs(logs["grad_scale_text"] - 1.0) + abs(logs["grad_scale_image"] - 1.0) > 0.05  # ARL modulates
    changed = {k for k, v in model.named_parameters() if not torch.equal(v.detach(), before[k])}
    text_changed = {k for k in changed if k.startswith("encoders.text.")}
    assert text_changed and all("lora_" in k for k in text_changed)  # only the adapters of the text encoder
    assert any(k.startswith("encoders.image.") for k in changed) and any(k.startswith("fusion.") for k in changed)
