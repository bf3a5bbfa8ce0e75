"""Supervised warm start of the tiny model on the copy-digits task, to a documented held-out accuracy.

The paper starts RL from a competent reasoner; a random-init 100k-parameter model is not one. This
module trains the tiny Qwen2 of :func:`verl_dgpo.local.assets.make_tiny_model` by teacher forcing on
``prompt -> target + <|im_end|>`` (cross-entropy on the response tokens only, the prompt rendered with
the same chat template verl's RL dataset uses), and **stops as soon as the held-out accuracy reaches
``target_accuracy``** (checked every ``eval_every`` optimizer steps), so the RL runs start from a policy
that is competent but far from the ceiling. Accuracy can jump between two checks (the copy skill is
learnt in a sharp transition); when a check lands above ``max_accuracy``, training goes back to the
last checked point below the band and continues with the learning rate halved and checks twice as
often, until a check lands in ``[target_accuracy, max_accuracy]``.

Accuracy is what the RL reward measures at the rollout's temperature: the mean of
:func:`verl_dgpo.local.task.score_copy` over ``samples_per_prompt`` responses sampled at temperature
``temperature`` (1.0, verl's rollout default) for each held-out prompt. Held-out prompts are digit
strings that never occur in the SFT training set (the string space is split, not the row list).

Everything is seeded (model init, data split, batch order, evaluation sampling) and runs on one CPU
thread in about a minute for the study's settings. The output folder is a Hugging Face model folder
(weights + tokenizer, committed with the study's results) plus ``warm_start.json`` with the spec, the
measured accuracies and the sha256 of the weights. :func:`ensure_warm_start` re-uses a folder whose
weights match that sha256, retrains when the weights are absent, and refuses to go on when the retrained
(or present) weights differ from the recorded ones: every run of a study starts from the same bytes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random
from dataclasses import asdict, dataclass
from typing import Optional

import torch

SPEC_FILE = "warm_start.json"
WEIGHTS_FILE = "model.safetensors"


class WarmStartError(RuntimeError):
    """The warm start on disk cannot be used for this study (message says why and what to do)."""


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class WarmStartSpec:
    """Everything that determines the warm-start checkpoint (its JSON form is the cache key)."""

    digits: int = 3
    seed: int = 0
    heldout_size: int = 200
    target_accuracy: float = 0.35
    max_accuracy: float = 0.5
    max_reverts: int = 6
    revert_lr_factor: float = 0.5
    max_steps: int = 3000
    batch_size: int = 64
    lr: float = 3e-3
    eval_every: int = 10
    samples_per_prompt: int = 4
    temperature: float = 1.0
    max_new_tokens: int = 4
    # tiny model shape (make_tiny_model arguments)
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 128

    def __post_init__(self):
        if not isinstance(self.digits, int) or self.digits < 1:
            raise ValueError(f"warm_start.digits must be an integer >= 1, got {self.digits!r}")
        if not 0.0 < self.target_accuracy <= self.max_accuracy < 1.0:
            raise ValueError(
                f"warm_start.target_accuracy and max_accuracy must satisfy 0 < target <= max < 1, got "
                f"{self.target_accuracy!r} and {self.max_accuracy!r}"
            )
        if self.heldout_size < 1 or self.heldout_size >= 10**self.digits:
            raise ValueError(
                f"warm_start.heldout_size must be in [1, {10 ** self.digits - 1}] for digits={self.digits}, "
                f"got {self.heldout_size!r}"
            )


def split_strings(digits: int, heldout_size: int, seed: int) -> tuple[list[str], list[str]]:
    """All ``digits``-long digit strings, shuffled by ``seed`` and split into (train, held-out), disjoint."""
    strings = [f"{i:0{digits}d}" for i in range(10**digits)]
    random.Random(f"warm-start/{seed}").shuffle(strings)
    return strings[heldout_size:], strings[:heldout_size]


def prompt_messages(target: str) -> list[dict]:
    """The copy task's chat prompt for ``target``, as :func:`verl_dgpo.local.task.make_rows` writes it."""
    return [{"role": "user", "content": f"Copy the digits: {target}"}]


def prompt_text(tokenizer, target: str) -> str:
    """The chat-rendered prompt verl's RL dataset feeds the model for the copy task (see ``task.make_rows``)."""
    return tokenizer.apply_chat_template(prompt_messages(target), add_generation_prompt=True, tokenize=False)


def encode_example(tokenizer, target: str) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids): the response is the target digits followed by the eos token."""
    prompt = tokenizer(prompt_text(tokenizer, target), add_special_tokens=False)["input_ids"]
    response = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return prompt, response


def collate(examples: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch; ``labels`` are -100 except on response tokens (the loss is on the response only)."""
    length = max(len(p) + len(r) for p, r in examples)
    ids = torch.full((len(examples), length), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), length), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), length), dtype=torch.long)
    for row, (p, r) in enumerate(examples):
        seq = p + r
        ids[row, : len(seq)] = torch.tensor(seq)
        labels[row, len(p) : len(seq)] = torch.tensor(r)
        mask[row, : len(seq)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@torch.no_grad()
def sample_responses(model, tokenizer, targets: list[str], *, samples_per_prompt: int, temperature: float,
                     max_new_tokens: int, generator: torch.Generator) -> list[list[str]]:
    """``samples_per_prompt`` decoded responses per target's prompt, from the project's one sampling helper
    (:func:`verl_dgpo.local.sampling.generate_tokens`, the one the ``hf`` rollout uses; greedy when
    ``temperature == 0``). Decoding stops at eos; special tokens are dropped, as verl's reward does."""
    from verl_dgpo.local.sampling import generate_tokens

    prompts = [tokenizer(prompt_text(tokenizer, t), add_special_tokens=False)["input_ids"] for t in targets]
    prompts = [p for p in prompts for _ in range(samples_per_prompt)]
    tokens, _ = generate_tokens(model, prompts, max_new_tokens=max_new_tokens, pad_id=tokenizer.pad_token_id,
                                eos_ids={tokenizer.eos_token_id}, temperature=temperature, generator=generator)
    texts = [tokenizer.decode(row, skip_special_tokens=True) for row in tokens.tolist()]
    return [texts[i : i + samples_per_prompt] for i in range(0, len(texts), samples_per_prompt)]


def sampled_accuracy(model, tokenizer, targets: list[str], *, samples_per_prompt: int, temperature: float,
                     max_new_tokens: int, seed: int) -> float:
    """Mean copy-task reward over sampled responses to ``targets``' prompts (seeded)."""
    from verl_dgpo.local.task import score_copy

    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    responses = sample_responses(model, tokenizer, targets, samples_per_prompt=samples_per_prompt,
                                 temperature=temperature, max_new_tokens=max_new_tokens, generator=generator)
    model.train(was_training)
    scores = [score_copy(r, t) for t, rs in zip(targets, responses) for r in rs]
    return sum(scores) / len(scores)


def train_warm_start(spec: WarmStartSpec, out_dir: str, log=print) -> dict:
    """Write the random-init tiny model, fine-tune it until held-out accuracy >= target, save it to ``out_dir``.

    Returns the record written to ``out_dir/warm_start.json``: the spec, the optimizer steps taken, the
    held-out sampled accuracy (the stopping statistic), a fresh re-measurement of it with another seed, the
    greedy held-out accuracy and the accuracy history.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from verl_dgpo.local.assets import make_tiny_model

    make_tiny_model(out_dir, seed=spec.seed, hidden_size=spec.hidden_size, num_hidden_layers=spec.num_hidden_layers,
                    num_attention_heads=spec.num_attention_heads, num_key_value_heads=spec.num_key_value_heads,
                    intermediate_size=spec.intermediate_size)
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    model = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32)
    model.train()

    train_strings, heldout = split_strings(spec.digits, spec.heldout_size, spec.seed)
    examples = [encode_example(tokenizer, s) for s in train_strings]
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.0)
    order = torch.Generator().manual_seed(spec.seed)
    evaluate = dict(samples_per_prompt=spec.samples_per_prompt, temperature=spec.temperature,
                    max_new_tokens=spec.max_new_tokens)

    def batches():
        while True:
            perm = torch.randperm(len(examples), generator=order).tolist()
            for first in range(0, len(perm) - spec.batch_size + 1, spec.batch_size):
                yield collate([examples[i] for i in perm[first : first + spec.batch_size]], tokenizer.pad_token_id)

    def snapshot():
        return step, copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())

    history = []
    step, accuracy, lr, every, since_eval, reverts = 0, 0.0, spec.lr, spec.eval_every, 0, 0
    saved = snapshot()
    data = batches()
    while step < spec.max_steps:
        loss = model(**next(data)).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss = loss.detach()
        step += 1
        since_eval += 1
        if since_eval < every:
            continue
        since_eval = 0
        accuracy = sampled_accuracy(model, tokenizer, heldout, seed=spec.seed, **evaluate)
        history.append({"step": step, "lr": lr, "loss": float(loss), "heldout_accuracy": accuracy})
        log(f"warm start step {step}: lr {lr:.2g}, loss {float(loss):.3f}, held-out sampled accuracy {accuracy:.3f}")
        if accuracy < spec.target_accuracy:
            saved = snapshot()
        elif accuracy <= spec.max_accuracy:
            break
        elif reverts < spec.max_reverts:  # overshot the band: back to the last point below it, smaller steps
            reverts += 1
            step, model_state, optim_state = saved
            model.load_state_dict(model_state)
            optimizer.load_state_dict(optim_state)
            lr *= spec.revert_lr_factor
            for group in optimizer.param_groups:
                group["lr"] = lr
            every = max(1, every // 2)
            log(f"warm start: {accuracy:.3f} > {spec.max_accuracy}; back to step {step}, lr {lr:.2g}, eval every {every}")
        else:
            break
    if not spec.target_accuracy <= accuracy <= spec.max_accuracy:
        raise RuntimeError(
            f"the warm start ended at {accuracy:.3f} held-out accuracy after {step} steps, outside the band "
            f"[{spec.target_accuracy}, {spec.max_accuracy}]; change warm_start.lr, max_steps or the band"
        )

    model.eval()
    record = {
        "spec": asdict(spec),
        "steps": step,
        "heldout_accuracy": accuracy,
        "heldout_accuracy_remeasured": sampled_accuracy(model, tokenizer, heldout, seed=spec.seed + 10_000, **evaluate),
        "heldout_greedy_accuracy": sampled_accuracy(model, tokenizer, heldout, seed=0, samples_per_prompt=1,
                                                    temperature=0.0, max_new_tokens=spec.max_new_tokens),
        "train_accuracy": sampled_accuracy(model, tokenizer, train_strings[: spec.heldout_size], seed=spec.seed, **evaluate),
        "history": history,
    }
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    record["weights_sha256"] = file_sha256(os.path.join(out_dir, WEIGHTS_FILE))
    with open(os.path.join(out_dir, SPEC_FILE), "w") as f:
        json.dump(record, f, indent=1)
    return record


def load_record(out_dir: str) -> Optional[dict]:
    try:
        with open(os.path.join(out_dir, SPEC_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def ensure_warm_start(spec: WarmStartSpec, out_dir: str, log=print) -> dict:
    """The warm-start record for ``spec`` in ``out_dir``, training it first if the folder holds none.

    Weights present: their sha256 must equal the record's. Weights absent but a record present (e.g. a
    clone without them): retrain, and refuse unless the new weights' sha256 equals the record's.
    A record for another spec, or one without a sha256 (its weights were never kept), is refused too.
    """
    record = load_record(out_dir)
    weights = os.path.join(out_dir, WEIGHTS_FILE)
    if record is None:
        torch.set_num_threads(1)
        return train_warm_start(spec, out_dir, log=log)
    if record.get("spec") != asdict(spec):
        raise WarmStartError(
            f"{out_dir}/{SPEC_FILE} records a warm start with another spec than this study's; "
            "use another --out, or delete that folder to retrain"
        )
    expected = record.get("weights_sha256")
    if expected is None:
        raise WarmStartError(
            f"{out_dir}/{SPEC_FILE} records no weights sha256 (the weights of that warm start were not kept), "
            "so new runs could not start from the same model; rebuild its report with --report-only, or use another --out"
        )
    if os.path.exists(weights):
        actual = file_sha256(weights)
        if actual != expected:
            raise WarmStartError(f"{weights} has sha256 {actual}, but {SPEC_FILE} records {expected}; refusing to use it")
        return record
    log(f"warm start weights missing under {out_dir}: retraining and checking them against sha256 {expected}")
    torch.set_num_threads(1)
    kept = dict(record)
    new = train_warm_start(spec, out_dir, log=log)
    if new["weights_sha256"] != expected:
        os.remove(weights)
        with open(os.path.join(out_dir, SPEC_FILE), "w") as f:
            json.dump(kept, f, indent=1)
        raise WarmStartError(
            f"the retrained warm start has sha256 {new['weights_sha256']}, not the recorded {expected} (another "
            "torch build or CPU?); refusing to start runs from different weights. Restore the committed weights."
        )
    return new
