"""Runs that the progress watchdog ends (tests/test_e2e_watchdog.py, tests/test_recipes_toy.py): how a test
freezes one stage of a real run, waits for the run's end, and checks what a user sees of it.

A stage is stalled by freezing (SIGSTOP) the real process doing it, from inside that process:
tests/fixtures/stall_stage.py, named in ``VERL_USE_EXTERNAL_MODULES`` (with tests/fixtures on ``PYTHONPATH``),
where ``VERL_DGPO_TEST_STALL=<stage>@<step>`` says which stage of which step.
"""

import os
import re
import time

import pytest

import launches  # tests/launches.py (tests/ is on sys.path under pytest)

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
LINE = re.compile(r"^verl-dgpo: watchdog: .*$", re.M)
STEP_ONE = "[dgpo-local] step 1/"  # the driver's progress line of step 1


def stall_env(env: dict, where: str) -> dict:
    """``env`` (a launch's environment) with the stage ``where`` (``<stage>@<step>``) made to stall."""
    return {**env, "PYTHONPATH": FIXTURES + os.pathsep + env.get("PYTHONPATH", ""),
            "VERL_USE_EXTERNAL_MODULES": "stall_stage", "VERL_DGPO_TEST_STALL": where}  # fmt: skip


def wait_for_exit(proc, timeout=400, on_line=None, step_line=STEP_ONE) -> dict:
    """Wait for the launch to end: {"rc", "text", "ended", "step1_at", "wall", "left"} (times: time.time();
    ``step1_at``: when the driver printed ``step_line``, its step-1 progress line unless said otherwise).
    ``on_line(proc)`` runs once, at that moment."""
    result = {"step1_at": None}
    deadline = time.time() + timeout
    while proc.poll() is None:
        if time.time() > deadline:
            launches.kill_tree(proc)
            pytest.fail(f"run did not end within {timeout} s:\n{launches.output(proc)[-4000:]}")
        if result["step1_at"] is None and step_line in launches.output(proc):
            result["step1_at"] = time.time()
            if on_line is not None:
                on_line(proc)
        time.sleep(0.1)
    result.update(rc=proc.returncode, text=launches.output(proc), ended=time.time(), wall=time.time() - proc.started)
    result["left"] = left_behind(proc)
    return result


def left_behind(proc, grace=10.0) -> list:
    """The run's processes still alive ``grace`` s after its driver ended (zombies not counted)."""
    deadline = time.time() + grace
    while True:
        family = launches.marked(proc.token)
        if not family or time.time() > deadline:
            return [(p.pid, p.name()) for p in family]
        time.sleep(0.2)


def watchdog_lines(text) -> list:
    return LINE.findall(text)


def assert_ended_by_the_watchdog(run, *words) -> str:
    """The run ended with exit status 3 and one watchdog line, its last, holding ``words``; no traceback;
    no process of the run left behind. Returns the line."""
    lines = watchdog_lines(run["text"])
    assert run["rc"] == 3, run["text"][-4000:]
    assert len(lines) == 1 and lines[0] == run["text"].rstrip().splitlines()[-1], run["text"][-4000:]
    for word in words:
        assert word in lines[0], lines[0]
    assert "Traceback" not in run["text"], run["text"][-4000:]
    assert run["left"] == [], f"processes of the run left behind: {run['left']}"
    return lines[0]


def assert_ended_within(run, limit, margin) -> float:
    """The run ended ``limit`` s (the watchdog's) after its step line (:func:`wait_for_exit`), give or take
    ``margin`` s: the stalled stage of the next step starts as that line is printed. Returns the seconds."""
    assert run["step1_at"] is not None, run["text"][-4000:]
    since_step1 = run["ended"] - run["step1_at"]
    assert limit - 1 <= since_step1 <= limit + margin, since_step1
    return since_step1
