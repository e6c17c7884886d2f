"""ARLTrainer on its own (as in a notebook) writes and pushes the arl-hf card: library_name,
the trainer's tags and paper, and the metrics of the evaluations it ran, per head."""

from __future__ import annotations

import os

import pytest
import torch

from arl_hf import ARLConfig, ARLTrainer, MultimodalConfig, MultimodalModel


def _tiny_model():
    torch.manual_seed(0)
    return MultimodalModel(MultimodalConfig(modalities={
        "audio": {"encoder": "mlp", "input_dim": 4, "hidden_dims": [8]},
        "visual": {"encoder": "mlp", "input_dim": 3, "hidden_dims": [8]}}, num_labels=2))


def _rows(n, seed):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        label = i % 2
        rows.append({"audio": torch.randn(4, generator=g) + 2 * label, "visual": torch.randn(3, generator=g),
                     "labels": label})
    return rows


def _eval_values(card):
    return {(r.dataset_split, r.metric_name): r.metric_value for r in card.data.eval_results}


def test_notebook_train_save_push_gives_the_arl_hf_card(stand_in_hub, tmp_path):
    from huggingface_hub import ModelCard

    out = str(tmp_path / "nb")
    args = ARLConfig(output_dir=out, max_steps=2, per_device_train_batch_size=8, per_device_eval_batch_size=16,
                     learning_rate=0.05, use_cpu=True, report_to="none", save_strategy="no", disable_tqdm=True,
                     dataloader_num_workers=0, push_to_hub=True, hub_model_id="me/nb-card")
    trainer = ARLTrainer(model=_tiny_model(), args=args, train_dataset=_rows(16, 1), eval_dataset=_rows(16, 2))
    trainer.train()
    assert trainer.state.global_step == 2
    metrics = trainer.evaluate()
    assert trainer.evaluated_metrics == {"eval": {k[len("eval_"):]: v for k, v in metrics.items() if k[len("eval_"):]
                                                  in ("loss", "accuracy", "macro_f1", "accuracy_audio",
                                                      "accuracy_visual", "macro_f1_audio", "macro_f1_visual")}}

    # save_model writes the card beside the weights (main process)
    trainer.save_model()
    local = ModelCard.load(os.path.join(out, "README.md"))
    assert local.data.library_name == "arl-hf"
    assert f"| eval | fused | {100 * metrics['eval_accuracy']:.2f} |" in local.text
    assert f"| eval | audio | {100 * metrics['eval_accuracy_audio']:.2f} |" in local.text
    assert f"| eval | visual | {100 * metrics['eval_accuracy_visual']:.2f} |" in local.text
    assert not local.data.eval_results  # no Hub dataset named: no model-index
    assert "Reproduce the run" not in local.text  # not trained by `arl-hf train`
    assert "trained on **custom data**" in local.text and "--dataset DATASET --split test" in local.text

    # push_to_hub uploads it, with the Hub dataset named here as the eval results' dataset
    trainer.push_to_hub(dataset="me/tiny-data", tags=["nb-tag"])
    assert "README.md" in stand_in_hub.files("me/nb-card")
    card = ModelCard.load("me/nb-card")
    data = card.data
    assert data.library_name == "arl-hf" and data.license == "mit"
    assert set(ARLTrainer._tag_names) | {"strategy-arl", "nb-tag"} <= set(data.tags)
    assert ARLTrainer._paper["title"] in card.text and "wei2025improving" in card.text
    # no arXiv id is recorded for the paper, so the card links no paper page
    assert "huggingface.co/papers/" not in card.text
    assert data.datasets == ["me/tiny-data"]
    values = _eval_values(card)
    assert len(values) == 3 * 2  # heads x (accuracy, macro-F1), one split
    for head, key in (("fused", "accuracy"), ("audio", "accuracy_audio"), ("visual", "accuracy_visual")):
        assert values[("eval", f"Accuracy ({head}, eval)")] == pytest.approx(metrics[f"eval_{key}"], abs=1e-6)
    assert values[("eval", "Macro-F1 (visual, eval)")] == pytest.approx(metrics["eval_macro_f1_visual"], abs=1e-6)
    assert {r.dataset_type for r in data.eval_results} == {"me/tiny-data"}


def test_card_reports_the_evaluations_after_training_and_skips_checkpoints(tmp_path):
    from huggingface_hub import ModelCard

    out = str(tmp_path / "epochs")
    args = ARLConfig(output_dir=out, num_train_epochs=2, per_device_train_batch_size=8, use_cpu=True,
                     report_to="none", eval_strategy="epoch", save_strategy="epoch", disable_tqdm=True,
                     dataloader_num_workers=0, learning_rate=0.05)
    trainer = ARLTrainer(model=_tiny_model(), args=args, train_dataset=_rows(16, 1), eval_dataset=_rows(8, 2))
    trainer.train()
    # the last evaluation of the training loop (epoch 2), under Trainer's prefix
    last = [e for e in trainer.state.log_history if "eval_accuracy" in e][-1]
    assert list(trainer.evaluated_metrics) == ["eval"]
    assert trainer.evaluated_metrics["eval"]["accuracy"] == pytest.approx(last["eval_accuracy"])
    # checkpoints get no card; evaluations after training replace the in-loop one
    assert not any(os.path.isfile(os.path.join(out, d, "README.md")) for d in os.listdir(out))
    val = trainer.evaluate(eval_dataset=_rows(8, 3), metric_key_prefix="validation")
    test = trainer.evaluate(eval_dataset=_rows(8, 4), metric_key_prefix="test")
    assert list(trainer.evaluated_metrics) == ["validation", "test"]
    trainer.configure_model_card(license="apache-2.0", tags=["run-tag"], preset="my-preset")
    trainer.save_model()
    card = ModelCard.load(os.path.join(out, "README.md"))
    assert card.data.license == "apache-2.0" and "run-tag" in card.data.tags
    assert "**Preset:** `my-preset`" in card.text
    assert f"| validation | fused | {100 * val['validation_accuracy']:.2f} |" in card.text
    assert f"| test | audio | {100 * test['test_accuracy_audio']:.2f} |" in card.text
    assert "| eval |" not in card.text

    # a disabled card is neither written at save time nor by create_model_card
    os.remove(os.path.join(out, "README.md"))
    trainer.configure_model_card(enabled=False)
    trainer.save_model()
    assert trainer.create_model_card() is None and not os.path.exists(os.path.join(out, "README.md"))


def test_card_of_a_contract_model_that_is_no_multimodal_model(tmp_path):
    from dataclasses import dataclass
    from typing import Dict, Optional

    from huggingface_hub import ModelCard
    from torch import nn
    from transformers.utils import ModelOutput

    @dataclass
    class Output(ModelOutput):
        logits: Optional[torch.Tensor] = None
        unimodal_logits: Optional[Dict[str, torch.Tensor]] = None

    class TwoTowers(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoders = nn.ModuleDict({"audio": nn.Linear(4, 6), "visual": nn.Linear(3, 6)})
            self.head = nn.Linear(12, 2)

        def forward(self, labels=None, return_unimodal_logits=False, **inputs):
            feats = {m: enc(inputs[m]) for m, enc in self.encoders.items()}
            logits = self.head(torch.cat(list(feats.values()), dim=-1))
            unimodal = {m: self.head(torch.cat([f if k == m else torch.zeros_like(f) for k, f in feats.items()], -1))
                        for m in feats} if return_unimodal_logits else None
            return Output(logits=logits, unimodal_logits=unimodal)

    out = str(tmp_path / "towers")
    args = ARLConfig(output_dir=out, max_steps=1, per_device_train_batch_size=8, use_cpu=True, report_to="none",
                     save_strategy="no", disable_tqdm=True, dataloader_num_workers=0, strategy="none")
    torch.manual_seed(0)
    trainer = ARLTrainer(model=TwoTowers(), args=args, train_dataset=_rows(8, 1))
    trainer.train()
    metrics = trainer.evaluate(eval_dataset=_rows(8, 2), metric_key_prefix="test")
    trainer.save_model()
    card = ModelCard.load(os.path.join(out, "README.md"))
    assert card.data.library_name == "arl-hf" and "strategy-none" in card.data.tags and "arl" not in card.data.tags
    assert "audio: `Linear`, visual: `Linear`" in card.text and "with the `none` strategy" in card.text
    assert f"| test | visual | {100 * metrics['test_accuracy_visual']:.2f} |" in card.text


def test_paper_url_needs_an_arxiv_id():
    from arl_hf.cards import paper_url

    assert paper_url({"title": "t"}) is None
    assert paper_url({"title": "t", "id": "1234.56789"}) == "https://huggingface.co/papers/1234.56789"
