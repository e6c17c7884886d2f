"""Tiny transformers checkpoints saved by the tests (offline): BERT with its own vocabulary file,
ViT at 32x32, a small AST; and the rows of a text + image dataset tokenized with that vocabulary."""

from __future__ import annotations

import os

import torch

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(40)]
#: folder -> the state dict of the model saved there (the names of the model in memory)
STATES = {}
SIZE = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)


def save_bert(folder: str, seed: int = 0, pooler: bool = False, **overrides) -> str:
    """A BERT checkpoint (saved without its pooler unless ``pooler``) and its ``vocab.txt``."""
    from transformers import BertConfig, BertModel

    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(VOCAB) + "\n")
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(VOCAB), max_position_embeddings=32, **{**SIZE, **overrides})
    return _save(BertModel(config, add_pooling_layer=pooler), folder)


def _save(model, folder: str) -> str:
    model.save_pretrained(folder)
    STATES[folder] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return folder


def save_vit(folder: str, seed: int = 1, **overrides) -> str:
    """A ViT checkpoint for 3x32x32 images (with its pooler)."""
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(seed)
    return _save(ViTModel(ViTConfig(image_size=32, patch_size=8, **{**SIZE, **overrides})), folder)


def save_ast(folder: str, seed: int = 2) -> str:
    """An AST checkpoint for (24 frames x 16 mel bins) spectrograms."""
    from transformers import ASTConfig, ASTModel

    torch.manual_seed(seed)
    return _save(ASTModel(ASTConfig(num_mel_bins=16, max_length=24, patch_size=8, frequency_stride=8,
                                    time_stride=8, **SIZE)), folder)


def tokenizer(folder: str):
    from transformers import BertTokenizerFast

    return BertTokenizerFast(vocab=os.path.join(folder, "vocab.txt"))


def text_image_rows(bert_folder: str, n: int = 16, seed: int = 0):
    """Rows ``{"text": {"input_ids", "attention_mask"}, "image": (3, 32, 32), "labels"}``: sentences of
    varying length (the collator pads them), the label readable from both modalities."""
    g = torch.Generator().manual_seed(seed)
    tok = tokenizer(bert_folder)
    rows = []
    for i in range(n):
        y = i % 3
        words = [f"w{y * 10 + int(j)}" for j in torch.randint(0, 10, (2 + i % 4,), generator=g)]
        enc = tok(" ".join(words))
        image = torch.randn(3, 32, 32, generator=g) + 0.5 * y
        rows.append({"text": {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]},
                     "image": image, "labels": y})
    return rows
