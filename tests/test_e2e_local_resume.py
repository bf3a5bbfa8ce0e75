"""Interrupted runs end to end: a local run killed with SIGKILL, then ended three times by the progress watchdog,
resumes each time from its last complete checkpoint and at last logs exactly the metrics an uninterrupted
run with the same seed logs.

One uninterrupted reference and one interrupted run (one folder, five launches, the reference's arguments):

- ``v0_reference`` (tests/v0_reference.py, shared with tests/test_e2e_local.py): 4 steps, a checkpoint
  after every step, never interrupted;
- ``interrupted``: (1) killed (the driver and every process under it, SIGKILL) the moment verl starts writing
  the step-2 checkpoint; then started again with ``trainer.resume_mode=auto`` each time, with a stage of step 3
  frozen (tests/fixtures/stall_stage.py, tests/stalled_runs.py) under ``watchdog.timeout_s=STALL_LIMIT`` (on
  the command line, as a user would; shorter than the preset's 60 s to keep the slow tier short): (2) the
  rollout server stops answering, (3) the actor update stops, (4) the worker stops after writing its files of
  the step-3 checkpoint; each must end with exit status 3 and one line naming the stage and step, leaving no
  process behind; (5) the last launch finishes. (A run ended in the middle of a step on verl's v1 trainer
  with verl's vLLM rollout: the TOY=1 DGPO recipe's, tests/test_recipes_toy.py; a killed Ray worker:
  tests/test_e2e_watchdog.py.)

Metrics that depend only on the training computation must be equal exactly: with seeded sampling each
response is a function of (seed, step, prompt, sample index, weights), the weights, optimizer and
learning-rate schedule are restored from the checkpoint and the dataloader position from ``data.pt``.
Only the rollout-side log-probabilities (``rollout_corr/*``, ``training/rollout_*``) are compared to a
tolerance (1e-3): the rollout server computes them in batches whose padding width depends on which
requests arrived together, which changes the last bits of a float32 forward pass.
"""

import glob
import json
import os
import time

import pytest
import torch

import launches  # tests/launches.py (tests/ is on sys.path under pytest)
from stalled_runs import assert_ended_by_the_watchdog, assert_ended_within, wait_for_exit, watchdog_lines
from v0_reference import STEPS, finish, metrics_by_step, start
from verl_dgpo.verl_glue import checkpoints

pytestmark = pytest.mark.slow

ROLLOUT_SIDE = ("rollout_corr/", "training/rollout_")
NOT_COMPARED = ("timing_s/", "timing_per_token_ms/", "perf/", "actor/perf/")
KILL_ATTEMPTS = 3  # launches tried for a kill that lands during the step-2 checkpoint write
HARMLESS = ("No supported accelerator", "engine is not available", "Token authentication is enabled", "Disabled critic")


def newest_metrics_steps(out, since: float) -> list:
    steps = []
    for path in glob.glob(os.path.join(out, "logs", "metrics-*.jsonl")):
        if os.path.getmtime(path) >= since:
            with open(path, "rb") as f:
                steps += [json.loads(l)["step"] for l in f if l.endswith(b"\n") and b"timing_s/step" in l]
    return steps


def ckpt_dir(out):
    return os.path.join(out, "checkpoints", "dgpo")


#: The watchdog's limit in launches 2-4 (a stage of the preset's step takes about a second), and how long after
#: the last step's progress line it may end the run (it looks once a second).
STALL_LIMIT = 20
MARGIN = 15
#: Launches 2-4: the frozen stage of step 3 (``update_actor@1``: the first actor update of that launch, which
#: resumes at step 3), and the words its watchdog line must hold.
STALLS = {
    "rollout": ("rollout@3", "the rollout (generation) stage"),
    "actor update": ("update_actor@1", "the actor update stage"),
    "checkpoint save": ("save_checkpoint@3", "the checkpoint save stage"),
}


def stalled_launch(out, where):
    proc = start(out, "trainer.resume_mode=auto", f"watchdog.timeout_s={STALL_LIMIT}", stall=where)
    run = wait_for_exit(proc, step_line="[dgpo-local] step 2/")  # printed by launch 2 only (3, 4 resume at step 3)
    run["latest_after"] = checkpoints.latest_complete(ckpt_dir(out))
    run["tracker_after"] = checkpoints.tracker_step(ckpt_dir(out))
    return run


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    # 1. killed while verl writes the step-2 checkpoint (its actor/ folder has just appeared). The tiny model's
    # save takes milliseconds, so the kill can land after it; then the launch is repeated in a fresh folder
    # (at most KILL_ATTEMPTS launches), and the test below still requires that the kept one landed mid-write.
    for attempt in range(KILL_ATTEMPTS):
        out = str(tmp_path_factory.mktemp("interrupted"))
        result = {"out": out, "kill_attempts": attempt + 1}
        proc = start(out)
        step2 = os.path.join(ckpt_dir(out), "global_step_2")
        launches.kill_when(lambda: os.path.isdir(os.path.join(step2, "actor")), proc,
                           armed=lambda: checkpoints.tracker_step(ckpt_dir(out)) == 1)  # fmt: skip
        result["step2_at_kill"] = checkpoints.folder_state(step2)
        result["step2_files_at_kill"] = sorted(os.listdir(step2)) + sorted(os.listdir(os.path.join(step2, "actor")))
        result["tracker_after_kill"] = checkpoints.tracker_step(ckpt_dir(out))
        if not result["step2_at_kill"][0]:
            break
    # 2-4. resumed, each time with a stage of step 3 frozen, so that the watchdog ends it
    for stage, (where, _) in STALLS.items():
        result[stage] = stalled_launch(out, where)
        if stage == "checkpoint save":
            step3 = os.path.join(ckpt_dir(out), "global_step_3")
            result["step3_after_save_stall"] = checkpoints.folder_state(step3)
            result["step3_actor_files"] = sorted(os.listdir(os.path.join(step3, "actor"))) if os.path.isdir(step3) else []
    # 5. resumed to the end
    started = time.time()
    result["resume_text"] = finish(start(out, "trainer.resume_mode=auto"))
    result["resume_steps"] = sorted(newest_metrics_steps(out, started))
    result["steps"] = metrics_by_step(out)
    return result


def test_reference_runs_all_steps_quietly_and_names_the_folders_without_weights(v0_reference):
    reference = v0_reference
    assert sorted(reference["steps"]) == list(range(1, STEPS + 1))
    text = reference["text"]
    for line in HARMLESS:
        assert line not in text, line
    # max_actor_ckpt_to_keep=2 with a save every step: verl deleted the weights of steps 1 and 2
    summary = [l for l in text.splitlines() if "[dgpo-local] checkpoints:" in l][0]
    assert "complete checkpoints at steps 3, 4" in summary and "1, 2 hold only data.pt" in summary, summary


def test_the_kill_landed_during_the_checkpoint_write(interrupted):
    complete, _ = interrupted["step2_at_kill"]
    assert not complete, f"the save had already finished when the kill landed: {interrupted['step2_files_at_kill']}"
    assert interrupted["tracker_after_kill"] == 1


def test_the_launch_after_the_kill_resumes_from_the_last_complete_checkpoint(interrupted):
    text = interrupted["rollout"]["text"]
    assert "resuming from checkpoint step 1" in text, text[-3000:]
    assert "[dgpo-local] step 2/4" in text, text[-3000:]  # trained step 2, then its rollout of step 3 stalled


@pytest.mark.parametrize("stage", STALLS)
def test_a_stalled_stage_ends_the_run_within_the_limit_with_one_line_naming_it(interrupted, stage):
    run = interrupted[stage]
    words = [STALLS[stage][1], "of training step 3"]
    if stage == "rollout":
        words += [f"watchdog.timeout_s={STALL_LIMIT}", "Last complete checkpoint: step 2"]
    assert_ended_by_the_watchdog(run, *words)
    if stage == "rollout":  # step 3's rollout starts as step 2's line is printed (the others resume at step 3)
        assert_ended_within(run, STALL_LIMIT, MARGIN)
    assert run["latest_after"].step == 2 and run["tracker_after"] == 2


def test_a_stalled_checkpoint_save_never_leaves_its_checkpoint_looking_complete(interrupted):
    assert "resuming from checkpoint step 2" in interrupted["checkpoint save"]["text"]
    # the worker froze after writing its files of step 3: the weights are there, verl's data.pt is not
    assert "model_world_size_1_rank_0.pt" in interrupted["step3_actor_files"], interrupted["step3_actor_files"]
    assert interrupted["step3_after_save_stall"] == (False, False)


def test_the_last_launch_resumes_from_the_last_complete_checkpoint_and_finishes(interrupted):
    text = interrupted["resume_text"]
    assert "resuming from checkpoint step 2" in text, text[-3000:]
    assert interrupted["resume_steps"] == [3, 4]
    assert "finished: 2 training steps (3..4)" in text
    assert watchdog_lines(text) == []
    # the dataloader position came back with the checkpoint: 4 batches drawn by the end
    state = torch.load(os.path.join(ckpt_dir(interrupted["out"]), f"global_step_{STEPS}", "data.pt"), weights_only=False)
    assert state["_num_yielded"] == STEPS


def test_resumed_metrics_equal_the_uninterrupted_runs(v0_reference, interrupted):
    ref, got = v0_reference["steps"], interrupted["steps"]
    assert sorted(got) == list(range(1, STEPS + 1))
    compared = 0
    for step in range(1, STEPS + 1):
        for key, value in ref[step].items():
            if key.startswith(NOT_COMPARED) or not isinstance(value, (int, float)):
                continue
            if key.startswith(ROLLOUT_SIDE):
                assert got[step][key] == pytest.approx(value, rel=1e-3, abs=1e-3), (step, key)
            else:
                assert got[step][key] == value, (step, key, got[step][key], value)
                compared += 1
    assert compared > 40 * STEPS  # rewards, advantages, losses, DGPO region fractions, grad norms, lengths...
    assert len({ref[s]["critic/score/mean"] for s in ref} | {ref[s]["actor/grad_norm"] for s in ref}) > 2
