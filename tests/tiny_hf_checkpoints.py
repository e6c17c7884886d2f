"""Tiny Hugging Face checkpoints written by the tests (offline): BERT with a vocabulary file, ViT at
32x32, a wav2vec2 and an AST feature extractor. Each maker returns the checkpoint folder."""

from __future__ import annotations

import os

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "dog", "sat", "on", "mat", "a", "red",
         "blue", "bird", "sang", "ran", "fast", "slow", "big"]


def tiny_bert(folder: str, max_positions: int = 16, seed: int = 0) -> str:
    """A 1-layer BERT (hidden 16) with ``vocab.txt`` and its tokenizer (no pooler weights)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    os.makedirs(folder, exist_ok=True)
    vocab = os.path.join(folder, "vocab.txt")
    with open(vocab, "w", encoding="utf-8") as fh:
        fh.write("\n".join(WORDS) + "\n")
    BertTokenizer(vocab=vocab).save_pretrained(folder)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(WORDS), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=max_positions)
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    return folder


def tiny_vit(folder: str, seed: int = 0) -> str:
    """A 1-layer ViT on 32x32 images (patch 8, hidden 16) with its image processor."""
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    os.makedirs(folder, exist_ok=True)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    torch.manual_seed(seed)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32)
    ViTModel(config, add_pooling_layer=False).save_pretrained(folder)
    return folder


def wav2vec2_extractor(folder: str, sampling_rate: int = 16000) -> str:
    """A folder holding only a wav2vec2 feature extractor (zero-mean unit-variance, attention mask)."""
    from transformers import Wav2Vec2FeatureExtractor

    Wav2Vec2FeatureExtractor(sampling_rate=sampling_rate, return_attention_mask=True).save_pretrained(folder)
    return folder


def ast_extractor(folder: str) -> str:
    """A folder holding only a small AST feature extractor (16 mel bins, 64 frames)."""
    from transformers import ASTFeatureExtractor

    ASTFeatureExtractor(num_mel_bins=16, max_length=64).save_pretrained(folder)
    return folder


def tiny_roberta(folder: str, max_positions: int = 18, seed: int = 0) -> str:
    """A 1-layer RoBERTa (position ids start after the padding index 1) with a character-level BPE
    tokenizer (no merges)."""
    import torch
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizer

    os.makedirs(folder, exist_ok=True)
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}
    vocab.update({ch: 5 + i for i, ch in enumerate("abcdefghijklmnopqrstuvwxyz\u0120")})
    RobertaTokenizer(vocab=vocab, merges=[]).save_pretrained(folder)
    torch.manual_seed(seed)
    config = RobertaConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=32, max_position_embeddings=max_positions, pad_token_id=1)
    RobertaModel(config, add_pooling_layer=False).save_pretrained(folder)
    return folder
