"""The progress watchdog on a real local run (``python -m verl_dgpo.main --config-name local_cpu``) whose Ray
worker is killed: the run ends at once, long before any limit, with one line naming the dead worker and exit
status 3, and leaves no process behind.

One launch: verl's v1 trainer at the preset's own limits; the training worker (``WorkerDict``) gets SIGKILL
after step 1. Where a stage stops making progress instead: the rollout (HF server), the actor update and the
checkpoint save of a v0 run that then resumes to the uninterrupted run's metrics, tests/test_e2e_local_resume.py;
verl's vLLM rollout on the v1 trainer, which then resumes to its last step, tests/test_recipes_toy.py.
"""

import os
import signal
import sys
import time

import pytest

import launches  # tests/launches.py (tests/ is on sys.path under pytest)
from stalled_runs import assert_ended_by_the_watchdog, wait_for_exit

pytestmark = pytest.mark.slow

PRESET_LIMIT = 60  # local_cpu.yaml's watchdog.timeout_s


def launch(out, *overrides, v1=False):
    os.makedirs(out, exist_ok=True)
    cmd = [sys.executable, "-m", "verl_dgpo.main", "--config-name", "local_cpu", f"local_cpu.output_dir={out}",
           "local_cpu.task.val_size=16", f"trainer.use_v1={str(v1).lower()}", *overrides]  # fmt: skip
    return launches.start(cmd, out, os.path.join(out, f"launch-{time.time_ns()}.log"), launches.user_env())


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
