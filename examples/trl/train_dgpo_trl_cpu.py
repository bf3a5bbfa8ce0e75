"""DGPO in TRL on CPU, nothing downloaded: ``python examples/trl/train_dgpo_trl_cpu.py``.

A tiny Qwen2 policy and its tokenizer are built in code; the synthetic task rewards completions made of
digits (the fraction of a completion's characters that are digits), which a random policy gets in varying
amounts, so GRPO-style advantages are informative from the first step. ``DGPOTrainer`` is TRL's
``GRPOTrainer`` with DGPO's per-token surrogate; with ``num_iterations=2`` each generation batch is used
twice, so the second pass sees real ratios r = π/π_old and DGPO's decays act (the ``dgpo/*`` metrics).
TRL prints its own progress bar and logs. Prints the mean reward of the first and last five steps.

Options: ``--policy-loss {dgpo,gppo,ce_gppo,aspo}``, ``--steps N``, ``--output-dir DIR``.
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, Qwen2Config

from verl_dgpo.local.assets import make_tokenizer  # an offline byte-level BPE tokenizer, learnt in code
from verl_dgpo.trl import POLICY_LOSSES, DGPOConfig, DGPOTrainer


def digit_reward(completions, **kwargs):
    """The fraction of each completion's characters that are digits."""
    return [sum(ch.isdigit() for ch in text) / max(len(text), 1) for text in completions]


def tiny_policy(seed: int = 0):
    tokenizer = make_tokenizer(vocab_size=300)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def main(argv=None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy-loss", default="dgpo", choices=POLICY_LOSSES)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--output-dir", default=None)
    options = parser.parse_args(argv)
    torch.set_num_threads(2)
    model, tokenizer = tiny_policy()
    prompts = Dataset.from_dict({"prompt": [f"Copy the digits: {n:06d} Answer:" for n in range(0, 999999, 4999)]})
    config = DGPOConfig(
        output_dir=options.output_dir or tempfile.mkdtemp(prefix="dgpo-trl-"),
        policy_loss=options.policy_loss,  # dgpo_n, dgpo_m (and the baselines' keys) keep their defaults
        num_iterations=2, epsilon=0.2, epsilon_high=0.28, loss_type="dapo",
        per_device_train_batch_size=16, num_generations=8, max_completion_length=8,
        learning_rate=3e-3, max_steps=options.steps, logging_steps=1, seed=0,
        use_cpu=True, bf16=False, report_to="none", save_strategy="no",
    )  # fmt: skip
    trainer = DGPOTrainer(
        model=model, reward_funcs=digit_reward, args=config, train_dataset=prompts, processing_class=tokenizer
    )
    trainer.train()
    rewards = [entry["reward"] for entry in trainer.state.log_history if "reward" in entry]
    result = {"reward_first5": sum(rewards[:5]) / 5, "reward_last5": sum(rewards[-5:]) / 5}
    print(f"mean reward, first 5 steps: {result['reward_first5']:.3f}; last 5 steps: {result['reward_last5']:.3f}")
    return result


if __name__ == "__main__":
    main()
