"""End to end: ``python -m verl_dgpo.main --config-name local_cpu`` trains through verl's real Ray trainer.

Three short real runs (about a minute each on 2 cores): DGPO for 3 steps, a resumed continuation of it to
step 5, and GRPO's loss (``vanilla``) for 2 steps. Each is a separate process started from a temporary
working directory, exactly as a user would start it.
"""

import collections
import glob
import json
import math
import os
import subprocess
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 1-digit copy over all ten digits: every row's target shows in the rollout dump (for the data-order check)
# and the random model still scores now and then (so advantages, LN/HP regions and gradients are non-zero).
TASK = ["local_cpu.task.alphabet='0123456789'", "local_cpu.task.digits=1"]


def train(out_dir, *overrides, env=None, timeout=600):
    """Run the local preset as a user would; return (process result, per-step metrics, stdout)."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("VERL_USE_EXTERNAL_MODULES", "VERL_PLATFORM")}
    full_env["PYTHONPATH"] = REPO + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    cmd = [sys.executable, "-m", "verl_dgpo.main", "--config-name", "local_cpu", f"local_cpu.output_dir={out_dir}"]
    proc = subprocess.run(
        cmd + list(overrides), cwd=os.path.dirname(out_dir), env=full_env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    newest = max(glob.glob(os.path.join(out_dir, "logs", "metrics-*.jsonl")), key=os.path.getmtime)
    with open(newest) as f:
        steps = {rec["step"]: rec["data"] for rec in map(json.loads, f) if "timing_s/step" in rec["data"]}
    return proc, steps, proc.stdout


def load_safetensors(folder):
    from safetensors.torch import load_file

    state = {}
    for path in glob.glob(os.path.join(folder, "*.safetensors")):
        state.update(load_file(path))
    return state


@pytest.fixture(scope="module")
def dgpo_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("e2e") / "run")
    dump = os.path.join(out, "rollout_weights")
    proc, steps, stdout = train(
        out,
        *TASK,
        "trainer.total_training_steps=3",
        "trainer.save_freq=3",
        "actor_rollout_ref.actor.use_kl_loss=true",  # builds the reference model too (pinned-memory patch)
        "actor_rollout_ref.actor.kl_loss_coef=0.001",
        "actor_rollout_ref.actor.checkpoint.save_contents=[model,optimizer,extra,hf_model]",
        f"trainer.rollout_data_dir={os.path.join(out, 'rollouts')}",
        env={"VERL_DGPO_ROLLOUT_DUMP_DIR": dump},
    )
    return {"out": out, "dump": dump, "steps": steps, "stdout": stdout}


def test_dgpo_run_has_finite_loss_and_grad_norm_every_step(dgpo_run):
    steps = dgpo_run["steps"]
    assert sorted(steps) == [1, 2, 3]
    for data in steps.values():
        for key in ("actor/pg_loss", "actor/grad_norm", "actor/kl_loss"):
            assert math.isfinite(data[key]), (key, data[key])


def test_dgpo_run_reaches_the_ln_or_hp_region(dgpo_run):
    fractions = [d["actor/dgpo_ln_frac"] + d["actor/dgpo_hp_frac"] for d in dgpo_run["steps"].values()]
    assert max(fractions) > 0


def test_dgpo_run_changes_the_actor_weights(dgpo_run):
    initial = load_safetensors(os.path.join(dgpo_run["out"], "assets", "model"))
    trained = load_safetensors(os.path.join(dgpo_run["out"], "checkpoints", "global_step_3", "actor", "huggingface"))
    assert set(trained) <= set(initial) and len(trained) >= 20
    changed = [k for k in trained if not torch.equal(trained[k].float(), initial[k].float())]
    assert len(changed) >= len(trained) // 2


def test_rollout_engine_holds_the_actors_weights_after_each_sync(dgpo_run):
    dump = dgpo_run["dump"]
    assert sorted(os.listdir(dump)) == [f"rollout_step{i}.pt" for i in range(4)]  # before step 1, after each step
    initial = load_safetensors(os.path.join(dgpo_run["out"], "assets", "model"))
    before = torch.load(os.path.join(dump, "rollout_step0.pt"))
    assert all(torch.equal(before[k], initial[k].float()) for k in initial)
    trained = load_safetensors(os.path.join(dgpo_run["out"], "checkpoints", "global_step_3", "actor", "huggingface"))
    after = torch.load(os.path.join(dump, "rollout_step3.pt"))
    for name, tensor in trained.items():
        assert torch.equal(after[name].to(tensor.dtype), tensor), name
    if "lm_head.weight" in after:  # tied to the embedding in the tiny model
        assert torch.equal(after["lm_head.weight"], after["model.embed_tokens.weight"])


def test_run_prints_a_line_per_step_and_a_summary(dgpo_run):
    stdout = dgpo_run["stdout"]
    for step in (1, 2, 3):
        assert f"[dgpo-local] step {step}/3 | reward " in stdout
    assert " | LN " in stdout and " HP " in stdout
    assert "[dgpo-local] finished: 3 training steps" in stdout
    assert "wall time" in stdout and "peak memory, all" in stdout


def expected_targets_per_step(out_dir, steps, batch_size=8, seed=0):
    """The ground truths verl's seeded shuffle should feed at each step, rebuilt independently."""
    import pandas as pd
    from torchdata.stateful_dataloader.sampler import RandomSampler

    targets = [row["ground_truth"] for row in pd.read_parquet(os.path.join(out_dir, "assets", "data", "train.parquet"))["reward_model"]]
    generator = torch.Generator()
    generator.manual_seed(seed)
    order = list(RandomSampler(range(len(targets)), generator=generator))
    return {s: collections.Counter(targets[i] for i in order[(s - 1) * batch_size : s * batch_size]) for s in steps}


def dumped_targets(out_dir, step, n=8):
    with open(os.path.join(out_dir, "rollouts", f"{step}.jsonl")) as f:
        counts = collections.Counter(json.loads(line)["gts"] for line in f)
    return collections.Counter({k: v // n for k, v in counts.items()})


def test_resume_continues_at_the_next_step_and_dataloader_position(dgpo_run):
    out = dgpo_run["out"]
    assert {s: dumped_targets(out, s) for s in (1, 2, 3)} == expected_targets_per_step(out, (1, 2, 3))
    proc, steps, stdout = train(
        out,
        *TASK,
        "trainer.total_training_steps=5",
        "trainer.save_freq=5",
        "trainer.resume_mode=auto",
        f"trainer.rollout_data_dir={os.path.join(out, 'rollouts')}",
    )
    assert sorted(steps) == [4, 5]
    assert {s: dumped_targets(out, s) for s in (4, 5)} == expected_targets_per_step(out, (4, 5))
    state = torch.load(os.path.join(out, "checkpoints", "global_step_5", "data.pt"), weights_only=False)
    assert state["_num_yielded"] == 5
    assert "[dgpo-local] step 4/5" in stdout


def test_vanilla_loss_trains_through_the_same_path(tmp_path):
    proc, steps, stdout = train(
        str(tmp_path / "run"), *TASK, "algorithm.policy_loss=vanilla", "trainer.total_training_steps=2", "trainer.save_freq=-1"
    )
    assert sorted(steps) == [1, 2]
    for data in steps.values():
        assert math.isfinite(data["actor/pg_loss"]) and math.isfinite(data["actor/grad_norm"])
        assert "actor/pg_clipfrac" in data and "actor/dgpo_ln_frac" not in data  # verl's own vanilla loss ran
    assert "[dgpo-local] finished: 2 training steps" in stdout


def run_failing(tmp_path, *overrides):
    env = {k: v for k, v in os.environ.items() if k not in ("VERL_USE_EXTERNAL_MODULES", "VERL_PLATFORM")}
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "verl_dgpo.main", "--config-name", "local_cpu", f"local_cpu.output_dir={tmp_path}/run"]
    return subprocess.run(cmd + list(overrides), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "override, message",
    [
        ("local_cpu.min_free_memory_gib=1000000", "GiB of memory is available, and the local CPU run needs about 1000000.0 GiB"),
        ("+ray_kwargs.ray_init._temp_dir=/proc/no-such-dir", "Ray could not start: FileNotFoundError"),
    ],
)
def test_a_run_that_cannot_start_exits_with_a_clear_message(tmp_path, override, message):
    proc = run_failing(tmp_path, override)
    assert proc.returncode == 3
    assert "verl-dgpo local run: error: " in proc.stderr and message in proc.stderr
    assert "Traceback" not in proc.stderr
