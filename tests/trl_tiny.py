"""A tiny Qwen2 policy, its tokenizer and a synthetic prompt set, made in code (nothing downloaded)."""

from __future__ import annotations

import torch


def tiny_policy(seed: int = 0, folder=None):
    """``(model, tokenizer)``: a seeded random-init 1-layer Qwen2 (hidden 32) and a byte-level BPE tokenizer.

    With ``folder``, the model is saved there and loaded back, so that TRL can load its reference model
    (``beta > 0``) from the model's ``name_or_path``.
    """
    from transformers import AutoModelForCausalLM, Qwen2Config

    from verl_dgpo.local.assets import make_tokenizer

    tokenizer = make_tokenizer(vocab_size=300)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    if folder is not None:
        model.save_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return model, tokenizer


def prompts(count: int = 16):
    from datasets import Dataset

    return Dataset.from_dict({"prompt": [f"{a} + {a + 1} =" for a in range(count)]})


def digit_reward(completions, **kwargs):
    """Fraction of a completion's characters that are digits: a reward a random policy gets in varying amounts."""
    return [sum(ch.isdigit() for ch in text) / max(len(text), 1) for text in completions]
