"""The local preset's synthetic task: copy a digit string, scored exactly.

Prompt (one chat message): ``"Copy the digits: 381"``; ground truth ``"381"``, its ``digits`` characters
drawn uniformly from ``alphabet``. A response scores 1.0 when, after leading whitespace, it begins with
exactly the ground-truth string, else 0.0 (:func:`compute_score`).

How hard it is for the preset's random-init ~100k-parameter model (measured with GRPO-style updates,
lr 1e-2, 8 prompts x 8 samples, 2 mini-batches): with a one-symbol alphabet (the preset's ``"7"``) the
model only has to find and keep the right output, starting near 0.05 (one token in ~20 of its 512-token
vocabulary) and reaching 1.0 within the preset's 30 steps (the step: docs/measurements.md); with two symbols it must also read the prompt and
needs 30 to 60+ steps depending on the seed; with all ten digits it stays below 0.4 after 120 steps.

:func:`write_task` writes verl's RL parquet format: ``prompt`` (chat messages), ``data_source``,
``ability``, ``reward_model = {style: rule, ground_truth}`` and ``extra_info = {split, index}``.
This file is also loaded by path as verl's ``reward.custom_reward_function`` (so it imports nothing
from the package).
"""

from __future__ import annotations

import os
import random

DATA_SOURCE = "verl_dgpo/copy_digits"


DIGITS = "0123456789"


def make_rows(
    count: int, *, digits: int = 1, alphabet: str = DIGITS, seed: int = 0, split: str = "train"
) -> list[dict]:
    """``count`` rows of the copy task: ``digits``-long strings drawn uniformly from ``alphabet``."""
    if digits < 1:
        raise ValueError(f"local_cpu.task.digits must be >= 1, got {digits}")
    alphabet = str(alphabet)
    if not alphabet or any(c not in DIGITS for c in alphabet):
        raise ValueError(f"local_cpu.task.alphabet must be a non-empty string of digits 0-9, got {alphabet!r}")
    rng = random.Random(f"{seed}/{split}")
    rows = []
    for index in range(count):
        target = "".join(rng.choice(alphabet) for _ in range(digits))
        rows.append(
            {
                "data_source": DATA_SOURCE,
                "prompt": [{"role": "user", "content": f"Copy the digits: {target}"}],
                "ability": "copy",
                "reward_model": {"style": "rule", "ground_truth": target},
                "extra_info": {"split": split, "index": index},
            }
        )
    return rows


def write_task(
    out_dir: str,
    *,
    train_size: int = 1024,
    val_size: int = 64,
    digits: int = 1,
    alphabet: str = DIGITS,
    seed: int = 0,
) -> tuple[str, str]:
    """Write ``train.parquet`` and ``val.parquet`` to ``out_dir``; return their paths."""
    import pandas as pd

    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for split, size in (("train", train_size), ("val", val_size)):
        path = os.path.join(out_dir, f"{split}.parquet")
        pd.DataFrame(make_rows(size, digits=digits, alphabet=alphabet, seed=seed, split=split)).to_parquet(path)
        paths.append(path)
    return paths[0], paths[1]


def score_copy(response: str, target: str) -> float:
    """1.0 if ``response`` (leading whitespace ignored) starts with exactly ``target``, else 0.0."""
    return 1.0 if response.lstrip().startswith(target) else 0.0


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> float:
    """verl's custom reward function signature; see :func:`score_copy`."""
    return score_copy(str(solution_str), str(ground_truth))
