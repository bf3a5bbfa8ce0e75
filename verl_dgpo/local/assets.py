"""A tiny Qwen2 model and tokenizer made offline, in code: the embedded default needs no download.

``make_tiny_model(dir)`` writes a Hugging Face model folder (config, random-init weights, tokenizer with a
ChatML chat template) that ``AutoModelForCausalLM`` / ``AutoTokenizer`` and verl load like any other.
The tokenizer is byte-level BPE, so it can encode any text (math prompts included); its merges are learnt
from a small built-in corpus of digits, operators and chat markup.
"""

from __future__ import annotations

import os
from typing import Iterable, Optional

BOS, EOS, PAD = "<|im_start|>", "<|im_end|>", "<|endoftext|>"

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def default_corpus() -> list[str]:
    """Text the BPE merges are learnt from: numbers, arithmetic, chat roles and a few common words."""
    lines = [f"{a} + {b} = {a + b}" for a in range(100) for b in range(0, 100, 7)]
    lines += [f"Copy the digits: {n:06d} Answer: {n:06d}" for n in range(0, 999999, 9973)]
    lines += ["user", "assistant", "system", "What is", "the answer", "\\boxed{", "}", "Let's think step by step."]
    return lines


def make_tokenizer(corpus: Optional[Iterable[str]] = None, vocab_size: int = 512):
    """A byte-level BPE ``PreTrainedTokenizerFast`` with eos ``<|im_end|>``, pad ``<|endoftext|>`` and ChatML."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus if corpus is not None else default_corpus()), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def make_tiny_model(
    out_dir: str,
    *,
    seed: int = 0,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    intermediate_size: int = 128,
    max_position_embeddings: int = 512,
    vocab_size: int = 512,
    corpus: Optional[Iterable[str]] = None,
) -> str:
    """Write a seeded random-init Qwen2 causal LM and its tokenizer to ``out_dir``; return ``out_dir``.

    The defaults give about 100k parameters (tied embeddings), the size verl's trainer was seen to train
    on 2 CPU cores at about a second per step.
    """
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    tokenizer = make_tokenizer(corpus, vocab_size=vocab_size)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
