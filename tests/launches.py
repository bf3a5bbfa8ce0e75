"""Real trainer launches for the slow tests: start one as a user would, wait for it, or kill it as a crash would.

Every launch carries a mark in its environment (``VERL_DGPO_TEST_LAUNCH``) that Ray's GCS, raylet and
workers inherit, so that :func:`kill_tree` finds every process of that run, even those Ray re-parented.
"""

import json
import os
import signal
import subprocess
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH_MARK = "VERL_DGPO_TEST_LAUNCH"


def user_env(**extra) -> dict:
    """This environment as a user's shell would have it (no plugin variables set), the checkout importable."""
    env = {k: v for k, v in os.environ.items() if k not in ("VERL_USE_EXTERNAL_MODULES", "VERL_PLATFORM")}
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def start(cmd, cwd, log_path, env) -> subprocess.Popen:
    """Start ``cmd`` in its own session, output to ``log_path``; the process gets ``log``, ``token``, ``started``."""
    env = {**env, LAUNCH_MARK: f"{os.getpid()}-{time.time_ns()}"}
    log = open(log_path, "w+")
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    proc.log, proc.token, proc.started = log, env[LAUNCH_MARK], time.time()
    return proc


def v1_rollout_rows(path) -> list:
    """The rows of one step's file of verl's v1 rollout dump (``trainer.rollout_data_dir``), one per response:
    its ``input``, ``output``, ``gts``, ``score`` and ``uid``."""
    with open(path) as f:
        return [json.loads(line) for line in f]


def v1_rollout_groups(rows) -> dict:
    """{prompt uid: [response, ...]} from :func:`v1_rollout_rows` (each row's ``uid`` is its TransferQueue
    key, ``<prompt uid>_<session>_<output index>``)."""
    groups = {}
    for row in rows:
        groups.setdefault(row["uid"].rsplit("_", 2)[0], []).append(row["output"])
    return groups


def output(proc) -> str:
    proc.log.flush()
    proc.log.seek(0)
    return proc.log.read()


def marked(token) -> list:
    """Every live process whose environment carries this launch's mark."""
    import psutil

    found = []
    for p in psutil.process_iter():
        try:
            if p.environ().get(LAUNCH_MARK) == token:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def is_ray_worker(process) -> bool:
    """A Ray worker process (its title is ``ray::<actor or task>``)."""
    import psutil

    try:
        return any(arg.startswith("ray::") for arg in process.cmdline()[:1])
    except psutil.Error:
        return False


def sigkill(pids) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def kill_marked(token) -> None:
    """SIGKILL every process carrying ``token``; fails if one survives."""
    import psutil

    for _ in range(3):  # a process started while the first ones were being killed is found in the next round
        family = marked(token)
        if not family:
            break
        sigkill(p.pid for p in family)
        psutil.wait_procs(family, timeout=30)
    assert not marked(token), "processes of the killed run survived SIGKILL"


def kill_tree(proc) -> None:
    """SIGKILL the driver and every process of its run at once, as a crash would; fails if one survives."""
    kill_marked(proc.token)
    proc.wait(timeout=60)


def finish(proc, timeout) -> str:
    """Wait for the launch; its output. A launch that fails, or outlives ``timeout`` (then killed), fails the test."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        pytest.fail(f"run did not finish within {timeout} s:\n{output(proc)[-4000:]}")
    text = output(proc)
    assert proc.returncode == 0, text[-6000:]
    return text


def kill_when(condition, proc, armed=lambda: True, timeout=600, poll=0.001) -> None:
    """SIGKILL the whole run the moment ``condition()`` holds (polled every ``poll`` s).

    The run's processes are listed once ``armed()`` holds (every process the kill must reach exists by
    then), so that the kill itself is a few system calls, not a scan of every process on the machine;
    :func:`kill_tree` then finds any process started since. Ray's workers (``ray::<actor>``, the processes
    that write checkpoints) get the first signals. From then until the kill this process polls as a
    real-time (SCHED_FIFO) task where the system allows it: on 2 cores busy with the run and another
    worker's, an ordinary process woke late and was preempted by each process it signalled (16 SIGKILLs
    took 28-528 ms, while the tiny model's whole checkpoint write takes about 75 ms)."""
    deadline = time.time() + timeout
    family = None
    try:
        while time.time() < deadline:
            if family is None and armed():
                family = [p.pid for p in sorted(marked(proc.token), key=lambda p: not is_ray_worker(p))]
                real_time_priority()
            if family is not None and condition():
                sigkill([*family, proc.pid])
                normal_priority()
                kill_tree(proc)
                return
            if proc.poll() is not None:
                pytest.fail(f"run ended (status {proc.returncode}) before the kill point:\n{output(proc)[-4000:]}")
            time.sleep(poll if family is not None else 0.05)
    finally:
        normal_priority()
    kill_tree(proc)
    pytest.fail(f"kill point not reached within {timeout} s:\n{output(proc)[-4000:]}")


def real_time_priority() -> None:
    """This process, as a SCHED_FIFO task (lowest real-time priority), where permitted."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except (AttributeError, OSError):  # not Linux, or no CAP_SYS_NICE: an ordinary process polls
        pass


def normal_priority() -> None:
    try:
        if os.sched_getscheduler(0) != os.SCHED_OTHER:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except (AttributeError, OSError):
        pass
