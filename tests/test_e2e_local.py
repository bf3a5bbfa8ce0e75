"""End to end: ``python -m verl_dgpo.main --config-name local_cpu`` trains through verl's real Ray trainer.

Two real runs, each a separate process started from a temporary working directory exactly as a user would
start it: the session's v0 reference run (tests/v0_reference.py: DGPO for 4 steps, with the reference
model, the rollout dumps and a ten-digit task whose rows can be told apart; the crash test of
tests/test_e2e_local_resume.py resumes against it) and the default run (DGPO, seed 0, 30 steps), which
must visibly learn. Every claim below reads one of these runs; none starts its own. (GRPO's ``vanilla``
loss through the same path: tests/test_paper_pipeline.py.)
All are ``slow`` (`python -m pytest -q -m slow -n 2 tests`). The two runs that cannot start stay in the default
tier: they stop before any trainer process exists.
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

import launches  # tests/launches.py (tests/ is on sys.path under pytest)
from v0_reference import STEPS

#: The learning claim: mean reward over the first 3 steps at most this, over the last 3 at least LEARNED.
UNLEARNED, LEARNED = 0.3, 0.8
LEARNING_RUNS = [("dgpo", 0)]  # GRPO's vanilla loss trains in tests/test_paper_pipeline.py


def train(out_dir, *overrides, timeout=900):
    """Run the local preset as a user would; return (process result, per-step metrics, stdout)."""
    full_env = launches.user_env()
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


def learning_run(root, method, seed):
    _, steps, stdout = train(os.path.join(root, f"{method}-{seed}"), f"algorithm.policy_loss={method}", f"local_cpu.seed={seed}")
    return {"steps": steps, "stdout": stdout}


@pytest.fixture(scope="module")
def learning(tmp_path_factory):
    """{(method, seed): the default run with that method and seed}, each launched the first time a test asks for it."""
    root = str(tmp_path_factory.mktemp("e2e"))
    done = {}

    def get(method, seed):
        if (method, seed) not in done:
            done[method, seed] = learning_run(root, method, seed)
        return done[method, seed]

    return get


@pytest.fixture
def dgpo_run(v0_reference):
    """The v0 reference run, with the names these tests read."""
    out = v0_reference["out"]
    return {"out": out, "dump": os.path.join(out, "rollout_weights"), "steps": v0_reference["steps"],
            "stdout": v0_reference["text"]}


@pytest.mark.slow
def test_dgpo_run_has_finite_loss_and_grad_norm_every_step(dgpo_run):
    steps = dgpo_run["steps"]
    assert sorted(steps) == list(range(1, STEPS + 1))
    for data in steps.values():
        for key in ("actor/pg_loss", "actor/grad_norm", "actor/kl_loss"):
            assert math.isfinite(data[key]), (key, data[key])


@pytest.mark.slow
def test_dgpo_run_reaches_the_ln_or_hp_region(dgpo_run):
    fractions = [d["actor/dgpo_ln_frac"] + d["actor/dgpo_hp_frac"] for d in dgpo_run["steps"].values()]
    assert max(fractions) > 0


@pytest.mark.slow
def test_dgpo_run_changes_the_actor_weights(dgpo_run):
    initial = load_safetensors(os.path.join(dgpo_run["out"], "assets", "model"))
    trained = load_safetensors(os.path.join(dgpo_run["out"], "checkpoints", "dgpo", f"global_step_{STEPS}", "actor", "huggingface"))
    assert set(trained) <= set(initial) and len(trained) >= 20
    changed = [k for k in trained if not torch.equal(trained[k].float(), initial[k].float())]
    assert len(changed) >= len(trained) // 2


@pytest.mark.slow
def test_rollout_engine_holds_the_actors_weights_after_each_sync(dgpo_run):
    dump = dgpo_run["dump"]
    assert sorted(os.listdir(dump)) == [f"rollout_step{i}.pt" for i in range(STEPS + 1)]  # before step 1, after each
    initial = load_safetensors(os.path.join(dgpo_run["out"], "assets", "model"))
    before = torch.load(os.path.join(dump, "rollout_step0.pt"))
    assert all(torch.equal(before[k], initial[k].float()) for k in initial)
    trained = load_safetensors(os.path.join(dgpo_run["out"], "checkpoints", "dgpo", f"global_step_{STEPS}", "actor", "huggingface"))
    after = torch.load(os.path.join(dump, f"rollout_step{STEPS}.pt"))
    for name, tensor in trained.items():
        assert torch.equal(after[name].to(tensor.dtype), tensor), name
    if "lm_head.weight" in after:  # tied to the embedding in the tiny model
        assert torch.equal(after["lm_head.weight"], after["model.embed_tokens.weight"])


@pytest.mark.slow
def test_run_prints_a_line_per_step_and_a_summary(dgpo_run):
    stdout = dgpo_run["stdout"]
    for step in range(1, STEPS + 1):
        assert f"[dgpo-local] step {step}/{STEPS} | reward " in stdout
    assert " | LN " in stdout and " HP " in stdout
    assert f"[dgpo-local] finished: {STEPS} training steps" in stdout
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


@pytest.mark.slow
def test_the_responses_of_a_group_are_not_all_identical(dgpo_run):
    """verl's rollout dump (v0 under full_determinism, the preset's setting): no prompt of any step got
    8 (or, drawn k times in a step, 8k) identical responses. v0's dump has no uid: grouped by prompt."""
    for step in range(1, STEPS + 1):
        groups = collections.defaultdict(list)
        with open(os.path.join(dgpo_run["out"], "rollouts", f"{step}.jsonl")) as f:
            for row in map(json.loads, f):
                groups[row["input"]].append(row["output"])
        assert sum(map(len, groups.values())) == 64 and all(len(g) % 8 == 0 for g in groups.values())
        assert min(len(set(g)) for g in groups.values()) > 1, step


@pytest.mark.slow
def test_each_step_trains_on_the_batch_verls_seeded_shuffle_draws(dgpo_run):
    steps = range(1, STEPS + 1)
    assert {s: dumped_targets(dgpo_run["out"], s) for s in steps} == expected_targets_per_step(dgpo_run["out"], steps)


@pytest.mark.slow
@pytest.mark.parametrize("method, seed", LEARNING_RUNS)
def test_default_run_learns_the_task(learning, method, seed):
    """The default run (30 steps) visibly learns: reward <= 0.3 over its first 3 steps and >= 0.8 over its last 3."""
    run = learning(method, seed)
    steps = run["steps"]
    rewards = [steps[s]["critic/score/mean"] for s in sorted(steps)]
    print(f"\n{method} seed {seed} rewards: " + " ".join(f"{r:.3f}" for r in rewards))
    print("\n".join(line for line in run["stdout"].splitlines() if "wall time" in line or "peak memory" in line))
    assert sorted(steps) == list(range(1, 31))
    first, last = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert first <= UNLEARNED and last >= LEARNED, (first, last, rewards)


def run_failing(tmp_path, *overrides):
    env = launches.user_env()
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
