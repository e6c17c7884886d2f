"""Training with ``hf:`` encoders: ARL on BERT + ViT through the Trainer, activation checkpointing."""

from __future__ import annotations

import pytest
import torch
from hf_checkpoints import save_bert, save_vit, text_image_rows

from arl_hf import ARLConfig, ARLTrainer, MultimodalConfig, MultimodalModel
from arl_hf.data.collator import MultimodalCollator


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {"bert": save_bert(str(root / "bert")), "vit": save_vit(str(root / "vit"))}


def build(ckpt, seed=0, **config):
    torch.manual_seed(seed)
    return MultimodalModel(MultimodalConfig(
        modalities={"text": {"encoder": f"hf:{ckpt['bert']}"}, "image": {"encoder": f"hf:{ckpt['vit']}"}},
        num_labels=3, **config))


def args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), per_device_train_batch_size=8, optim="sgd", learning_rate=0.05,
                lr_scheduler_type="constant", max_steps=2, train_sampling_strategy="sequential", report_to="none",
                use_cpu=True, save_strategy="no", logging_steps=1, disable_tqdm=True, seed=0,
                dataloader_num_workers=0)
    base.update(kw)
    return ARLConfig(**base)


def test_arl_trains_bert_and_vit_and_logs_every_modality(ckpt, tmp_path):
    model = build(ckpt)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    trainer = ARLTrainer(model=model, args=args(tmp_path), train_dataset=text_image_rows(ckpt["bert"], n=16),
                         data_collator=MultimodalCollator(["text", "image"]))
    trainer.train()
    logged = [h for h in trainer.state.log_history if "a_text" in h]
    assert len(logged) == 2
    for h in logged:
        for m in ("text", "image"):
            assert 0.0 < h[f"a_{m}"] < 1.0 and h[f"grad_scale_{m}"] > 0 and h[f"loss_{m}"] > 0
        assert h["a_text"] + h["a_image"] == pytest.approx(1.0, abs=1e-5)
    after = model.state_dict()
    for prefix in ("encoders.text.model.", "encoders.image.model.", "fusion."):  # the pretrained weights train
        moved = [k for k in before if k.startswith(prefix) and not torch.equal(before[k], after[k])]
        assert len(moved) >= (2 if prefix == "fusion." else 20), prefix


def test_activation_checkpointing_gives_identical_gradients(ckpt):
    rows = text_image_rows(ckpt["bert"], n=6)
    batch = MultimodalCollator(["text", "image"])(rows)
    grads = []
    for checkpointing in (False, True):
        model = build(ckpt).train()
        if checkpointing:
            model.activation_checkpointing_enable()
            assert model.encoders["text"].model.is_activation_checkpointing
        torch.manual_seed(3)  # dropout draws the same masks: the recomputation replays them
        out = model(text=batch["text"], image=batch["image"], labels=batch["labels"])
        out.loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 40
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], atol=1e-6, rtol=1e-5, msg=n)


def test_every_strategy_trains_and_evaluates_on_dict_inputs(ckpt, tmp_path):
    from arl_hf.strategies import STRATEGIES

    rows = text_image_rows(ckpt["bert"], n=16)
    for name in sorted(STRATEGIES):
        model = build(ckpt)
        trainer = ARLTrainer(model=model, args=args(tmp_path / name, strategy=name, max_steps=2,
                                                    num_train_epochs=1),
                             train_dataset=rows, eval_dataset=rows, data_collator=MultimodalCollator(["text", "image"]))
        trainer.train()
        metrics = trainer.evaluate()
        for key in ("eval_accuracy", "eval_accuracy_text", "eval_accuracy_image"):
            assert 0.0 <= metrics[key] <= 1.0, (name, key)


def test_encoder_features_of_the_suppression_analysis_take_dict_inputs(ckpt):
    from arl_hf.suppression import encoder_features

    model = build(ckpt)
    rows = text_image_rows(ckpt["bert"], n=6)
    feats, labels = encoder_features(model, rows, MultimodalCollator(["text", "image"]), ["text", "image"],
                                     batch_size=4)
    assert feats["text"].shape == (6, 16) and feats["image"].shape == (6, 16) and labels.tolist() == [0, 1, 2] * 2
    batch = MultimodalCollator(["text", "image"])(rows[:4])
    with torch.no_grad():
        expected = model.eval().encoders["text"](batch["text"])
    torch.testing.assert_close(torch.from_numpy(feats["text"][:4]), expected)
