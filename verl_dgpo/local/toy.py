"""Assets of a recipe's ``TOY=1`` run: a math training set a tiny model can hit, and that model.

``TOY=1 bash recipes/run_<method>_<size>.sh`` (``recipes/common.sh``) runs the recipe's own argument list
on CPU at toy scale. It needs, with nothing downloaded:

- ``python -m verl_dgpo.local.toy source --out F``: a training set in the format of the paper's
  (``problem``/``answer``/``solution`` rows, as DeepScaleR's), which ``scripts/prepare_data.py`` then turns
  into verl parquet with the six benchmarks' fixtures; the problems are one-digit sums, ``What is $a+b$?``;
- ``python -m verl_dgpo.local.toy model --data train.parquet --out DIR``: the local preset's tiny random
  Qwen2 (:func:`verl_dgpo.local.assets.make_tiny_model`) after a short supervised warm start on the
  prepared prompts, answered ``\\boxed{a+b}``. A random model never writes a ``\\boxed{}`` answer, so
  ``pkg://verl_dgpo.reward`` would score every response 0 and the loss's gradient would be 0; after the
  warm start most sampled responses are boxed and some are right, so step 1's reward is above 0 and
  below 1, and RL has something to move (rewards seen: recipes/README.md).

The warm start is fixed (steps, learning rate, seed) before any RL run and re-used while its inputs are
unchanged (``toy_spec.json`` in the model folder). Its weights are computed once per machine and copied into
each ``TOY_DIR`` (:func:`make_model`; the cache folder is ``$VERL_DGPO_TOY_CACHE``, set it empty to train in
every ``TOY_DIR``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from typing import Optional

SPEC_FILE = "toy_spec.json"
#: The warm start: full-batch AdamW on every prepared training prompt (fixed before any RL run). 400 steps for
#: the head-size-32 shape below: after 200 its answers sampled at temperature 1 were right 14% of the time
#: (the 4-head shape of 200 steps before it: 60%), after 400 65% (8 samples of each of the 36 prompts, HF generate).
WARM_START = {"seed": 0, "steps": 400, "lr": 3e-3}
#: The tiny model's attention shape: head size 32 (hidden 64 / 2 heads), which CPU vLLM's attention runs
#: (it needs at least 32; the local preset's default has 16), so one model serves both rollout engines.
MODEL_SHAPE = {"num_attention_heads": 2, "num_key_value_heads": 1}
#: torch threads of the warm start. One, as every process of the CPU preset (``local_cpu.threads_per_process``):
#: a second thread gains little on a ~100k-parameter model, and on 2 busy cores it spin-waits (seen in the
#: slow tier: about 5x the CPU time of the run on an idle machine).
WARM_START_THREADS = 1


def sum_problems(max_term: int = 5) -> list[dict]:
    """``What is $a+b$?`` for ``0 <= a, b <= max_term``, in the paper's training-set row format."""
    return [
        {"problem": f"What is ${a}+{b}$?", "answer": str(a + b), "solution": f"${a}+{b}={a + b}$, so the answer is $\\boxed{{{a + b}}}$."}
        for a in range(max_term + 1)
        for b in range(max_term + 1)
    ]


def write_source(path: str, max_term: int = 5) -> str:
    """Write :func:`sum_problems` as JSON lines (what ``prepare_data.py --source train=PATH`` reads)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in sum_problems(max_term):
            f.write(json.dumps(row) + "\n")
    return path


def boxed_answer(ground_truth: str) -> str:
    return f"\\boxed{{{ground_truth}}}"


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def warm_start_examples(tokenizer, train_parquet: str) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, response ids) per training row: verl's prompt (chat template, generation prompt) and
    the boxed ground truth followed by end-of-sequence."""
    import pandas as pd

    examples = []
    for messages, reward_model in zip(*(pd.read_parquet(train_parquet)[c] for c in ("prompt", "reward_model"))):
        text = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
        prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
        response = tokenizer(boxed_answer(reward_model["ground_truth"]), add_special_tokens=False)["input_ids"]
        examples.append((prompt, response + [tokenizer.eos_token_id]))
    if not examples:
        raise ValueError(f"{train_parquet} has no rows to warm-start on")
    return examples


def warm_start(model, examples, pad_id: int, *, seed: int, steps: int, lr: float) -> list[float]:
    """Full-batch supervised steps on the response tokens; returns the loss per step."""
    import torch

    width = max(len(p) + len(r) for p, r in examples)
    input_ids = torch.full((len(examples), width), pad_id)
    labels = torch.full((len(examples), width), -100)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    for i, (prompt, response) in enumerate(examples):
        seq = prompt + response
        input_ids[i, : len(seq)] = torch.tensor(seq)
        attention[i, : len(seq)] = 1
        labels[i, len(prompt) : len(seq)] = torch.tensor(response)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


#: Where warm-started models are kept for re-use by every ``TOY_DIR`` on this machine; empty: no cache.
CACHE_VARIABLE = "VERL_DGPO_TOY_CACHE"


def cache_root(environ=None) -> Optional[str]:
    """``$VERL_DGPO_TOY_CACHE``, else ``$XDG_CACHE_HOME/verl-dgpo/toy-models`` (``~/.cache`` by default);
    None when the variable is set empty (every ``TOY_DIR`` then trains its own)."""
    environ = os.environ if environ is None else environ
    if CACHE_VARIABLE in environ:
        return environ[CACHE_VARIABLE] or None
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "verl-dgpo", "toy-models")


def cache_key(spec: dict) -> str:
    """What decides the warm start's weights: its spec (settings, training data) and the code and libraries
    that compute it (this module, the tiny model's definition, torch, transformers)."""
    import importlib.metadata

    from verl_dgpo.local import assets

    inputs = {
        "spec": spec,
        "code": [_sha256(__file__), _sha256(assets.__file__)],
        "libraries": [importlib.metadata.version(name) for name in ("torch", "transformers")],
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:32]


def _train(out_dir: str, train_parquet: str, spec: dict, log) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from verl_dgpo.local.assets import make_tiny_model

    torch.set_num_threads(WARM_START_THREADS)
    make_tiny_model(out_dir, seed=WARM_START["seed"], **MODEL_SHAPE)
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    model = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32)
    examples = warm_start_examples(tokenizer, train_parquet)
    losses = warm_start(model, examples, tokenizer.pad_token_id, **WARM_START)
    model.save_pretrained(out_dir)
    with open(os.path.join(out_dir, SPEC_FILE), "w") as f:
        json.dump({"spec": spec, "loss_first": losses[0], "loss_last": losses[-1]}, f, indent=1)
    log(f"[toy] warm start: {len(examples)} prompts, {len(losses)} steps, loss {losses[0]:.3f} -> {losses[-1]:.3f}; model in {out_dir}")


def _cached(root: str, spec: dict, train_parquet: str, log) -> str:
    """The cache's copy of the model for ``spec``, trained into it first if absent. One process trains,
    the others wait for it (a lock file per key), so runs started together train the model once."""
    import fcntl

    os.makedirs(root, exist_ok=True)
    entry = os.path.join(root, cache_key(spec))
    with open(entry + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.isfile(os.path.join(entry, SPEC_FILE)):
            partial = f"{entry}.partial-{os.getpid()}"
            _train(partial, train_parquet, spec, log)
            os.rename(partial, entry)  # whole or absent: a killed build leaves only a .partial folder
    return entry


def make_model(out_dir: str, train_parquet: str, log=print, environ=None) -> str:
    """The tiny model warm-started on ``train_parquet`` in ``out_dir`` (re-used when its inputs match).

    The weights are computed once per machine (:func:`cache_root`, keyed by :func:`cache_key`) and copied
    into ``out_dir``: the warm start is seeded and single-threaded, so a copy holds what training here would.
    """
    spec = {"warm_start": WARM_START, "threads": WARM_START_THREADS, "shape": MODEL_SHAPE,
            "train_sha256": _sha256(train_parquet)}
    try:
        with open(os.path.join(out_dir, SPEC_FILE)) as f:
            if json.load(f)["spec"] == spec:
                return out_dir
    except (OSError, ValueError, KeyError):
        pass
    root = cache_root(environ)
    if root is None:
        _train(out_dir, train_parquet, spec, log)
        return out_dir
    import shutil

    entry = _cached(root, spec, train_parquet, log)
    shutil.copytree(entry, out_dir, dirs_exist_ok=True)
    log(f"[toy] warm-started model copied from {entry} (cache: ${CACHE_VARIABLE}) to {out_dir}")
    return out_dir


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    source = sub.add_parser("source", help="write the toy training set (JSON lines, the paper's row format)")
    source.add_argument("--out", required=True)
    model = sub.add_parser("model", help="write the warm-started tiny model")
    model.add_argument("--data", required=True, help="the prepared train.parquet")
    model.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.what == "source":
        write_source(args.out)
    else:
        make_model(args.out, args.data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
