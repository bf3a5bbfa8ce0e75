"""The held-out study (``--config heldout``): DGPO against GRPO judged by held-out Avg@32 / Pass@32.

Pre-registered in ``results/heldout/preregistration.md`` (committed with this file's settings before any run).
This module holds the study's plan — its two arms, the checkpoint steps, the held-out prompts, the evaluation
settings — and the evaluation step: every saved checkpoint of every run is evaluated with the project's own
``python -m verl_dgpo.eval`` (the command users run for the paper's tables), grading with the reward the runs
trained on, and its ``summary.json`` is kept under ``runs/<method>/seed<k>/eval/step<N>_<evaluation>/``.

The plan is recorded in the study's ``study.json`` (``StudyConfig.heldout``); everything here reads it from there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from typing import Callable, Optional

#: the arms: the primary comparison (grpo, dgpo) on seeds 10-17, the soft-clip arm on seeds 10-14 (paired with
#: grpo's runs of the same seeds). Seeds never used before: short 0-2, long 0-4, stress 0-4, its pilot 100.
PRIMARY_METHODS = ("grpo", "dgpo")
PRIMARY_SEEDS = tuple(range(10, 18))
SOFT_CLIP_METHODS = ("gppo_c10", "ce_gppo_c10")
SOFT_CLIP_SEEDS = tuple(range(10, 15))
#: the stress study's 70 steps (where the two studies meet) and the final step.
STEPS = 100
CHECKPOINT_STEPS = (70, 100)
HELDOUT_FILE = "heldout.parquet"
#: the held-out strings: the warm start's held-out set (never in its SFT data), minus any string of the RL data
#: (train and val splits) of any seed of this study, the first HELDOUT_PROMPTS of them in the warm start's order
#: (256: one evaluation of 256 prompts x 32 samples takes ~80 s of CPU with the HF back-end, 496 twice that).
WARM_START_HELDOUT = 500
HELDOUT_PROMPTS = 256
RL_TRAIN_SIZE, RL_VAL_SIZE = 1024, 64
#: the reward the runs trained on (the local preset's copy task), in verl's custom-reward form.
REWARD = {"path": "pkg://verl_dgpo.local.task", "name": "compute_score"}
#: evaluation settings per checkpoint; "t1" is the primary's (the rollout's own sampling), "t06" the recipes'
#: validation sampling, "greedy" one greedy answer per prompt. max_new_tokens = the runs' max response length.
EVALUATIONS = {
    "t1": {"k": 32, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 7, "seed": 0},
    "t06": {"k": 32, "temperature": 0.6, "top_p": 0.95, "max_new_tokens": 7, "seed": 0},
    "greedy": {"k": 1, "temperature": 0.0, "top_p": 1.0, "max_new_tokens": 7, "seed": 0},
}
#: which evaluations each checkpoint gets: step 70 (where this study meets the stress study) the primary's sampling
#: and greedy, the final step all three.
CHECKPOINT_EVALUATIONS = {70: ("t1", "greedy"), 100: ("t1", "t06", "greedy")}
#: the primary comparison and its rule's constants (preregistration.md, "Primary comparison").
PRIMARY = {"metric": "avg@32", "evaluation": "t1", "step": 100, "method": "dgpo", "reference": "grpo",
           "confidence": 0.95,
           # the paper's smallest DGPO - GRPO gain in Average Avg@32, percentage points (7B: 62.0 - 58.9, 14B:
           # 56.7 - 53.6; 1.5B: 52.7 - 48.4), paper_results.csv
           "paper_gain": 3.1}
#: the secondary comparisons (Bonferroni over all of them, each interval at 1 - 0.05 / len).
SECONDARY = (
    {"id": "S1", "method": "dgpo", "metric": "pass@32", "evaluation": "t1", "step": 100},
    {"id": "S2", "method": "dgpo", "metric": "avg@32", "evaluation": "t06", "step": 100},
    {"id": "S3", "method": "dgpo", "metric": "avg@1", "evaluation": "greedy", "step": 100},
    {"id": "S4", "method": "dgpo", "metric": "avg@32", "evaluation": "t1", "step": 70},
    {"id": "S5", "method": "gppo_c10", "metric": "avg@32", "evaluation": "t1", "step": 100},
    {"id": "S6", "method": "ce_gppo_c10", "metric": "avg@32", "evaluation": "t1", "step": 100},
    {"id": "S7", "method": "gppo_c10", "metric": "final_reward", "evaluation": None, "step": None},
    {"id": "S8", "method": "gppo_c10", "metric": "peak_grad_norm", "evaluation": None, "step": None},
    {"id": "S9", "method": "ce_gppo_c10", "metric": "final_reward", "evaluation": None, "step": None},
    {"id": "S10", "method": "ce_gppo_c10", "metric": "peak_grad_norm", "evaluation": None, "step": None},
)


def plan() -> dict:
    """The study's plan as recorded in ``study.json`` (``heldout`` key)."""
    return json.loads(json.dumps({
        "arms": {"primary": {"methods": PRIMARY_METHODS, "seeds": PRIMARY_SEEDS},
                 "soft_clip": {"methods": SOFT_CLIP_METHODS, "seeds": SOFT_CLIP_SEEDS}},
        "checkpoint_steps": CHECKPOINT_STEPS,
        "heldout": {"file": HELDOUT_FILE, "warm_start_heldout": WARM_START_HELDOUT, "prompts": HELDOUT_PROMPTS,
                    "excluded": f"strings of the RL train ({RL_TRAIN_SIZE}) and val ({RL_VAL_SIZE}) data of seeds "
                                f"{sorted(set(PRIMARY_SEEDS) | set(SOFT_CLIP_SEEDS))}"},
        "reward": REWARD,
        "evaluations": EVALUATIONS,
        "checkpoint_evaluations": {str(step): names for step, names in CHECKPOINT_EVALUATIONS.items()},
        "primary": PRIMARY,
        "secondary": SECONDARY,
        "secondary_alpha": 0.05,
    }))


def run_matrix(heldout: dict) -> list[tuple[str, int]]:
    """(method, seed) in the order they run: the primary arm seed-major, then the soft-clip arm seed-major."""
    order = []
    for arm in ("primary", "soft_clip"):
        for seed in heldout["arms"][arm]["seeds"]:
            for method in heldout["arms"][arm]["methods"]:
                order.append((method, seed))
    return order


# ---- the held-out prompts ------------------------------------------------------------------------------------

def heldout_strings(digits: int, warm_start_seed: int, seeds, count: int = HELDOUT_PROMPTS) -> list[str]:
    """The first ``count`` of the warm start's held-out strings, in its order, that are in no RL data of ``seeds``."""
    from comparison_study.warm_start import split_strings
    from verl_dgpo.local.task import make_rows

    _, heldout = split_strings(digits, WARM_START_HELDOUT, warm_start_seed)
    seen = set()
    for seed in seeds:
        for split, size in (("train", RL_TRAIN_SIZE), ("val", RL_VAL_SIZE)):
            seen.update(r["reward_model"]["ground_truth"]
                        for r in make_rows(size, digits=digits, alphabet="0123456789", seed=seed, split=split))
    kept = [s for s in heldout if s not in seen]
    if len(kept) < count:
        raise ValueError(f"only {len(kept)} held-out strings are left, {count} asked for")
    return kept[:count]


def heldout_rows(strings: list[str]) -> list[dict]:
    """verl RL rows of the copy task (as ``verl_dgpo.local.task.make_rows`` writes them), split ``heldout``."""
    from verl_dgpo.local.task import DATA_SOURCE

    return [{"data_source": DATA_SOURCE, "prompt": [{"role": "user", "content": f"Copy the digits: {s}"}],
             "ability": "copy", "reward_model": {"style": "rule", "ground_truth": s},
             "extra_info": {"split": "heldout", "index": i}} for i, s in enumerate(strings)]


def write_heldout(path: str, digits: int, warm_start_seed: int, seeds) -> int:
    import pandas as pd

    rows = heldout_rows(heldout_strings(digits, warm_start_seed, seeds))
    pd.DataFrame(rows).to_parquet(path)
    return len(rows)


# ---- checkpoints and their evaluation ----------------------------------------------------------------------

def checkpoint_model(directory: str, step: int) -> Optional[str]:
    """The Hugging Face weights verl saved at ``step`` in a run folder (``verl/checkpoints/<exp>/global_step_N``)."""
    root = os.path.join(directory, "verl", "checkpoints")
    if not os.path.isdir(root):
        return None
    for experiment in sorted(os.listdir(root)):
        path = os.path.join(root, experiment, f"global_step_{step}", "actor", "huggingface")
        if os.path.exists(os.path.join(path, "config.json")) and any(
                f.endswith(".safetensors") for f in os.listdir(path)):
            return path
    return None


def eval_dir(directory: str, step: int, name: str) -> str:
    return os.path.join(directory, "eval", f"step{step}_{name}")


def summary_of(directory: str, step: int, name: str) -> Optional[dict]:
    """The committed ``summary.json`` of one evaluation if it is complete, else None."""
    path = os.path.join(eval_dir(directory, step, name), "summary.json")
    try:
        with open(path) as f:
            summary = json.load(f)
    except (OSError, ValueError):
        return None
    return summary if summary.get("complete") else None


def evaluations_of(heldout: dict) -> list[tuple[int, str]]:
    """(checkpoint step, evaluation name) of every evaluation a run gets."""
    return [(int(step), name) for step, names in heldout["checkpoint_evaluations"].items() for name in names]


def evaluated(directory: str, heldout: dict) -> bool:
    return all(summary_of(directory, step, name) is not None for step, name in evaluations_of(heldout))


def eval_command(model: str, data: str, out: str, settings: dict, reward: dict) -> list[str]:
    return [sys.executable, "-m", "verl_dgpo.eval", "--model", model, "--data", data, "--out", out,
            "--k", str(settings["k"]), "--temperature", str(settings["temperature"]), "--top-p", str(settings["top_p"]),
            "--max-new-tokens", str(settings["max_new_tokens"]), "--seed", str(settings["seed"]), "--backend", "hf",
            "--reward-path", reward["path"], "--reward-name", reward["name"], "--chunk-size", "1", "--no-progress"]


def evaluate_run(directory: str, study_dir: str, heldout: dict, env: dict, log: Callable[[str], None] = print,
                 timeout_s: float = 3600.0) -> list[str]:
    """Evaluate every checkpoint of one finished run that lacks a complete summary; return the failures."""
    failures = []
    data = os.path.join(study_dir, heldout["heldout"]["file"])
    for step, name in evaluations_of(heldout):
        settings = heldout["evaluations"][name]
        model = checkpoint_model(directory, step)
        if summary_of(directory, step, name) is not None:
            continue
        if model is None:
            failures.append(f"{directory}: no checkpoint at step {step}")
            continue
        out = eval_dir(directory, step, name)
        cmd = eval_command(model, data, out, settings, heldout["reward"])
        log(f"evaluate {os.path.relpath(out, study_dir)}")
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "eval.log"), "a") as console:
            try:
                code = subprocess.run(cmd, stdout=console, stderr=subprocess.STDOUT, env=env,
                                      timeout=timeout_s).returncode
            except subprocess.TimeoutExpired:
                code = -9
        if code != 0 or summary_of(directory, step, name) is None:
            failures.append(f"evaluation {out} failed (exit status {code}); log: {out}/eval.log")
    return failures


def drop_unevaluable(directory: str, heldout: dict) -> bool:
    """A run that finished training but whose checkpoints are gone (e.g. a fresh clone) before every evaluation
    was made cannot be evaluated: remove its record so that it is trained again. True if it was removed."""
    if evaluated(directory, heldout) or not os.path.exists(os.path.join(directory, "run.json")):
        return False
    if all(checkpoint_model(directory, step) is not None for step in heldout["checkpoint_steps"]):
        return False
    shutil.rmtree(directory)
    return True


#: every failed training attempt of the study, one JSON line each (``run.py`` redoes a run's folder from scratch,
#: so the record lives beside ``runs/``): ``{"method", "seed", "error", "steps_logged"}``.
FAILURES_FILE = "failed_attempts.jsonl"
#: the preregistration: "If a run fails twice, it is named as missing"; amendments.md (2026-12-08): a failure is
#: one of the training run, so an attempt that logged no training step (ended by the machine first) is not one.
FAILURES_MAKING_MISSING = 2


def record_failure(study_dir: str, method: str, seed: int, error: str, steps_logged: int) -> None:
    with open(os.path.join(study_dir, FAILURES_FILE), "a") as f:
        f.write(json.dumps({"method": method, "seed": seed, "error": error, "steps_logged": steps_logged}) + "\n")


def training_failures(study_dir: str, method: str, seed: int) -> list[dict]:
    """The failed attempts of one run that count (amendments.md): those that logged a training step."""
    path = os.path.join(study_dir, FAILURES_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        attempts = [json.loads(line) for line in f if line.strip()]
    return [a for a in attempts if a["method"] == method and a["seed"] == seed and a["steps_logged"] > 0]


def missing(study_dir: str, method: str, seed: int) -> bool:
    """The run failed twice: it is named as missing and not started again."""
    return len(training_failures(study_dir, method, seed)) >= FAILURES_MAKING_MISSING
