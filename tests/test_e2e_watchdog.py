"""The progress watchdog on real local runs (``python -m verl_dgpo.main --config-name local_cpu``): a run
whose stage stops making progress, or whose Ray worker is killed, ends with one line and exit status 3,
leaves no process behind, and ``trainer.resume_mode=auto`` continues from its last complete checkpoint.

A stage is stalled by freezing (SIGSTOP) the real process doing it, from inside that process
(tests/fixtures/stall_stage.py, named in ``VERL_USE_EXTERNAL_MODULES``): the ``hf`` rollout server at step
2's first request, the training worker in its actor update, or after writing its files of the step-2
checkpoint. Five launches in all, few steps each; the stalls run under ``watchdog.timeout_s=STALL_LIMIT``
(set on the command line, as a user would), shorter than the preset's 60 s to keep the slow tier short:

- ``v0_chain`` (one folder, v0 trainer, 3 steps, a checkpoint every step): the rollout stalls at step 2;
  the resumed run stalls in the step-2 checkpoint save; the run resumed again finishes from step 2;
- ``v1_actor_stall``: verl's v1 trainer, the actor update of step 1 stalls;
- ``v1_killed_worker``: verl's v1 trainer at the preset's own limits, the training worker (``WorkerDict``)
  gets SIGKILL after step 1: the run ends long before any limit.
"""

import os
import signal
import sys
import time

import pytest

import launches  # tests/launches.py (tests/ is on sys.path under pytest)
from stalled_runs import assert_ended_by_the_watchdog, assert_ended_within, stall_env, wait_for_exit, watchdog_lines
from verl_dgpo.verl_glue import checkpoints

pytestmark = pytest.mark.slow

STALL_LIMIT = 30  # s: watchdog.timeout_s of the stalled runs
MARGIN = 15  # s: the watchdog looks once a second; the step line shows up to ~1 s after the stage starts
PRESET_LIMIT = 60  # local_cpu.yaml's watchdog.timeout_s


def launch(out, *overrides, stall=None, v1=False):
    os.makedirs(out, exist_ok=True)
    cmd = [sys.executable, "-m", "verl_dgpo.main", "--config-name", "local_cpu", f"local_cpu.output_dir={out}",
           "local_cpu.task.val_size=16", f"trainer.use_v1={str(v1).lower()}", *overrides]  # fmt: skip
    env = launches.user_env()
    if stall:
        env = stall_env(env, stall)
    return launches.start(cmd, out, os.path.join(out, f"launch-{time.time_ns()}.log"), env)


def ckpt_dir(out):
    return os.path.join(out, "checkpoints", "dgpo")


@pytest.fixture(scope="module")
def v0_chain(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("watchdog-v0"))
    common = ["trainer.total_training_steps=3", "trainer.save_freq=1", f"watchdog.timeout_s={STALL_LIMIT}"]
    runs = {"out": out}
    runs["rollout"] = wait_for_exit(launch(out, *common, stall="rollout@2"))
    runs["latest_after_rollout_stall"] = checkpoints.latest_complete(ckpt_dir(out))
    runs["save"] = wait_for_exit(launch(out, *common, "trainer.resume_mode=auto", stall="save_checkpoint@2"))
    step2 = os.path.join(ckpt_dir(out), "global_step_2")
    runs["step2_after_save_stall"] = checkpoints.folder_state(step2)
    runs["step2_actor_files"] = sorted(os.listdir(os.path.join(step2, "actor"))) if os.path.isdir(step2) else []
    runs["tracker_after_save_stall"] = checkpoints.tracker_step(ckpt_dir(out))
    runs["resumed"] = wait_for_exit(launch(out, *common, "trainer.resume_mode=auto"))
    return runs


def test_a_stalled_rollout_ends_within_the_limit_naming_the_stage_and_step(v0_chain):
    run = v0_chain["rollout"]
    assert_ended_by_the_watchdog(run, "the rollout (generation) stage", "of training step 2",
                                 f"watchdog.timeout_s={STALL_LIMIT}", "Last complete checkpoint: step 1")  # fmt: skip
    assert_ended_within(run, STALL_LIMIT, MARGIN)
    assert v0_chain["latest_after_rollout_stall"].step == 1


def test_a_stalled_checkpoint_save_is_named_and_its_checkpoint_never_looks_complete(v0_chain):
    run = v0_chain["save"]
    assert "resuming from checkpoint step 1" in run["text"], run["text"][-3000:]
    assert_ended_by_the_watchdog(run, "the checkpoint save stage", "of training step 2")
    # the worker froze after writing its files of step 2: the weights are there, verl's data.pt is not
    assert "model_world_size_1_rank_0.pt" in v0_chain["step2_actor_files"], v0_chain["step2_actor_files"]
    assert v0_chain["step2_after_save_stall"] == (False, False)
    assert v0_chain["tracker_after_save_stall"] == 1


def test_resume_mode_auto_continues_from_the_last_complete_checkpoint_and_finishes(v0_chain):
    run = v0_chain["resumed"]
    assert run["rc"] == 0, run["text"][-4000:]
    assert "resuming from checkpoint step 1" in run["text"]
    assert "finished: 2 training steps (2..3)" in run["text"], run["text"][-2000:]
    assert watchdog_lines(run["text"]) == []
    assert checkpoints.latest_complete(ckpt_dir(v0_chain["out"])).step == 3


def test_a_stalled_actor_update_under_verls_v1_trainer_is_named(tmp_path):
    run = wait_for_exit(launch(str(tmp_path), "trainer.total_training_steps=1", f"watchdog.timeout_s={STALL_LIMIT}",
                               stall="update_actor@1", v1=True))  # fmt: skip
    assert_ended_by_the_watchdog(run, "the actor update stage", "of training step 1")


def test_a_killed_worker_ends_the_run_at_once_naming_it(tmp_path):
    killed = {}

    def kill_the_training_worker(proc):
        workers = [p for p in launches.marked(proc.token) if p.cmdline()[:1] and p.cmdline()[0].startswith("ray::WorkerDict")]
        if len(workers) != 1:
            launches.kill_tree(proc)
            pytest.fail(f"not one training worker: {[p.cmdline()[:1] for p in launches.marked(proc.token)]}")
        os.kill(workers[0].pid, signal.SIGKILL)
        killed.update(pid=workers[0].pid, at=time.time())

    run = wait_for_exit(launch(str(tmp_path), "trainer.total_training_steps=4", "trainer.save_freq=-1", v1=True),
                        on_line=kill_the_training_worker)  # fmt: skip
    line = assert_ended_by_the_watchdog(run, f"the Ray worker WorkerDict, pid {killed['pid']} died",
                                        "its worker process died")  # fmt: skip
    assert run["ended"] - killed["at"] < PRESET_LIMIT / 2, (run["ended"] - killed["at"], line)
