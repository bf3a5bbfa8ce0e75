"""The progress watchdog's logic without Ray: its keys, what the driver makes of the trainer's reports,
which actor deaths end a run, how verl's stage timer reports, and how a run's processes are ended.
(Real runs that stall or lose a worker: tests/test_e2e_watchdog.py, slow tier.)"""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import verl_dgpo
from verl_dgpo.startup import watchdog as wd
from verl_dgpo.verl_glue import stage_heartbeats as hb

CONFIG_DIR = os.path.join(os.path.dirname(verl_dgpo.__file__), "config")


# --- keys --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset, expected", [("dgpo_trainer", (3600.0, 3600.0)), ("local_cpu", (60.0, 600.0))])
def test_each_preset_has_its_limits_and_the_command_line_overrides_them(preset, expected):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        config = compose(preset)
        assert wd.limits(config) == wd.Limits(*expected)
        overridden = compose(preset, overrides=["watchdog.timeout_s=0", "watchdog.startup_timeout_s=2.5"])
    got = wd.limits(overridden)
    assert got == wd.Limits(0.0, 2.5) and got.on
    assert not wd.Limits(0.0, 0.0).on


@pytest.mark.parametrize("value", [-1, "soon", True, float("nan"), float("inf"), None])
def test_a_bad_value_names_the_key_and_what_is_allowed(value):
    config = OmegaConf.create({"watchdog": {"timeout_s": 10, "startup_timeout_s": value}})
    with pytest.raises(wd.WatchdogConfigError) as err:
        wd.limits(config)
    message = str(err.value)
    assert message.startswith(f"watchdog.startup_timeout_s={value!r} is not allowed") and ">= 0" in message
    assert "\n" not in message


def test_a_config_without_the_section_has_the_watchdog_off():
    assert not wd.limits(OmegaConf.create({"trainer": {}})).on


# --- the driver's view of the reports ----------------------------------------------------------------

LIMITS = wd.Limits(timeout_s=60, startup_timeout_s=600)


def report(seq, stage, step, last=None):
    return {"seq": seq, "stage": stage, "last": last, "step": step}


def test_start_up_has_its_own_limit_until_the_first_report_of_another_stage():
    monitor = wd.Monitor(LIMITS, now=1000.0)
    assert monitor.overdue(1000.0 + 599) is None  # no report yet: start-up
    monitor.observe(report(1, hb.START_UP, 0), now=1100.0)
    assert monitor.overdue(1100.0 + 600) is None
    line = monitor.overdue(1100.0 + 601)
    assert "no progress for 601 s in start-up" in line and "watchdog.startup_timeout_s=600" in line


def test_a_stage_that_outlives_the_limit_is_named_with_its_step():
    monitor = wd.Monitor(LIMITS, now=0.0)
    monitor.observe(report(7, "gen", 2), now=10.0)
    monitor.observe(report(7, "gen", 2), now=50.0)  # the same report read again is no progress
    assert monitor.overdue(70.0) is None
    line = monitor.overdue(70.5)
    assert line == (
        "no progress for 60 s in the rollout (generation) stage (verl's timer 'gen') of training step 2; "
        "the limit is watchdog.timeout_s=60."
    )


@pytest.mark.parametrize(
    "timer, words",
    [("reward", "the reward stage"), ("old_log_prob", "the old log-prob stage"), ("ref", "the reference log-prob stage"),
     ("update_actor", "the actor update stage"), ("update_weights", "the weight sync stage"),
     ("testing", "the validation stage"), ("validation", "the validation stage"),
     ("save_checkpoint", "the checkpoint save stage"), ("some_new_timer", "the some_new_timer stage")],
)  # fmt: skip
def test_every_stage_verl_times_has_a_name_a_user_reads(timer, words):
    monitor = wd.Monitor(LIMITS, now=0.0)
    monitor.observe(report(1, timer, 5), now=0.0)
    assert monitor.where() == f"{words} (verl's timer '{timer}') of training step 5"


def test_a_gap_between_stages_names_the_stage_before_it_and_any_report_restarts_the_clock():
    monitor = wd.Monitor(LIMITS, now=0.0)
    monitor.observe(report(3, None, 4, last="update_actor"), now=100.0)
    assert monitor.where() == "between stages, after the actor update stage of training step 4"
    monitor.observe(report(4, "update_weights", 4), now=159.0)
    assert monitor.overdue(218.0) is None and monitor.overdue(219.5) is not None


def test_a_limit_of_zero_never_fires():
    monitor = wd.Monitor(wd.Limits(timeout_s=0, startup_timeout_s=5), now=0.0)
    monitor.observe(report(1, "gen", 1), now=0.0)
    assert monitor.overdue(1e9) is None


# --- actor deaths ------------------------------------------------------------------------------------


def death_cause(reason=None, oom=False):
    from ray.core.generated import common_pb2

    cause = common_pb2.ActorDeathCause()
    if oom:
        cause.oom_context.error_message = "memory"
    elif reason is not None:
        cause.actor_died_error_context.reason = common_pb2.ActorDiedErrorContext.Reason.Value(reason)
    return cause


def actor(name, state="DEAD", job="01000000", pid=42, **cause):
    return {"ActorClassName": name, "State": state, "JobID": job, "Pid": pid, "DeathCause": death_cause(**cause)}


def test_only_deaths_nobody_asked_for_in_this_job_end_the_run():
    table = [
        actor("TaskRunner", state="ALIVE"),
        actor("create_colocated_worker_cls.<locals>.WorkerDict", reason="WORKER_DIED", pid=4321),
        actor("TransferQueueStorage", reason="RAY_KILL"),  # verl ends it itself
        actor("Helper", reason="OUT_OF_SCOPE"),
        actor("AgentLoopWorker", reason="OWNER_DIED"),  # follows its owner's death: the owner is named
        actor("WorkerDict", reason="WORKER_DIED", job="02000000"),  # another job's
        actor("HFRolloutServer", oom=True, pid=7),
        actor("RewardLoopWorker", reason="NODE_DIED", pid=8),
    ]
    found = wd.unexpected_deaths(table, "01000000")
    assert found == [
        {"name": "WorkerDict", "pid": 4321, "reason": "its worker process died"},
        {"name": "HFRolloutServer", "pid": 7, "reason": "the system ran out of memory and killed it"},
        {"name": "RewardLoopWorker", "pid": 8, "reason": "its node died"},
    ]
    monitor = wd.Monitor(LIMITS, now=0.0)
    monitor.observe(report(2, "update_actor", 3), now=0.0)
    assert monitor.death(found[0]) == (
        "the Ray worker WorkerDict, pid 4321 died during the actor update stage (verl's timer 'update_actor') of "
        "training step 3: its worker process died; the run cannot go on without it."
    )


# --- the trainer's reports ---------------------------------------------------------------------------


def test_nested_stages_report_the_innermost_and_start_up_ends_at_the_first_other_stage():
    seen = []
    step = [0]
    beats = hb.StageHeartbeats(seen.append, step_of=lambda: step[0])
    beats.enter(hb.START_UP)
    step[0] = 1
    beats.enter("step")
    beats.enter("gen")
    beats.leave("gen")
    with beats.stage("testing"):
        with beats.stage("validation"):
            pass
    beats.leave("step")
    assert [(s["seq"], s["stage"], s["last"], s["step"]) for s in seen] == [
        (1, "start-up", None, 0),
        (2, None, None, 1),  # inside verl's step timer, no stage of its own yet
        (3, "gen", None, 1),
        (4, None, "gen", 1),
        (5, "testing", "gen", 1),
        (6, "validation", "gen", 1),
        (7, "testing", "validation", 1),
        (8, None, "testing", 1),
        (9, None, "testing", 1),
    ]


def test_a_report_that_cannot_be_sent_does_not_stop_training():
    def broken(state):
        raise ConnectionError("GCS unreachable")

    beats = hb.StageHeartbeats(broken)
    with beats.stage("gen"):
        pass
    assert beats.seq == 2 and beats.open == []


def test_verls_own_fit_runs_with_a_timer_that_reports_and_verls_module_is_untouched(monkeypatch):
    from verl.trainer.ppo import ray_trainer
    from verl.trainer.ppo.v1 import trainer_base, trainer_sync
    from verl.utils.debug import marked_timer

    timed_v0 = hb.timed_methods(ray_trainer.RayPPOTrainer)
    timed_v1 = hb.timed_methods(trainer_sync.PPOTrainerSync)
    assert "fit" in timed_v0 and {"fit", "_step_once", "on_step_end"} <= set(timed_v1)
    assert timed_v0["fit"].__code__ is ray_trainer.RayPPOTrainer.fit.__code__
    assert timed_v1["on_step_end"].__code__ is trainer_sync.PPOTrainerSync.on_step_end.__code__
    for module in (ray_trainer, trainer_base, trainer_sync):
        assert module.marked_timer is marked_timer

    # the reporting timer still does verl's timing, and reports start and end
    seen = []
    monkeypatch.setattr(hb, "HEARTBEATS", hb.StageHeartbeats(seen.append, step_of=lambda: 9))
    timer = timed_v0["fit"].__globals__["marked_timer"]
    timing_raw = {}
    with timer("update_actor", timing_raw, color="red"):
        time.sleep(0.01)
    assert timing_raw["update_actor"] >= 0.01
    assert [(s["stage"], s["last"], s["step"]) for s in seen] == [("update_actor", None, 9), (None, "update_actor", 9)]
    # off: verl's timer alone
    monkeypatch.setattr(hb, "HEARTBEATS", None)
    with timer("gen", timing_raw):
        pass
    assert "gen" in timing_raw and len(seen) == 2


def test_the_trainer_reports_only_when_the_watchdog_is_on(monkeypatch):
    published = []
    monkeypatch.setattr(hb, "publisher", lambda job_id: published.append)
    monkeypatch.setattr("ray.get_runtime_context", lambda: type("C", (), {"get_job_id": lambda self: "01000000"})())
    off = OmegaConf.create({"watchdog": {"timeout_s": 0, "startup_timeout_s": 0}})
    assert hb.start_reporting(off) is None and hb.HEARTBEATS is None
    on = OmegaConf.create({"watchdog": {"timeout_s": 30, "startup_timeout_s": 0}})
    beats = hb.start_reporting(on)
    try:
        assert beats is hb.HEARTBEATS and published == [{"seq": 1, "stage": "start-up", "last": None, "step": None}]
    finally:
        monkeypatch.setattr(hb, "HEARTBEATS", None)


# --- ending a run ------------------------------------------------------------------------------------

#: A "driver" that starts a child, a frozen child and a grandchild that leaves its parent (re-parented, as
#: Ray's processes can be), all carrying the run's mark, and then ends the run as the watchdog does.
ENDING_DRIVER = textwrap.dedent(
    """
    import os, signal, subprocess, sys, time
    from verl_dgpo.startup import watchdog as wd

    mark = "test-mark-" + str(os.getpid())
    os.environ[wd.RUN_MARK] = mark
    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
    child = subprocess.Popen(sleeper)
    frozen = subprocess.Popen(sleeper)
    os.kill(frozen.pid, signal.SIGSTOP)
    orphan = subprocess.Popen([sys.executable, "-c",
        "import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'],"
        " start_new_session=True); print(p.pid, flush=True)"], stdout=subprocess.PIPE, text=True)
    orphan_pid = int(orphan.stdout.readline())
    orphan.wait()
    print(child.pid, frozen.pid, orphan_pid, flush=True)
    wd.end_run("no progress for 61 s in the rollout stage of training step 2.", mark)
    print("not reached", flush=True)
    """
)


def test_ending_a_run_prints_one_line_kills_every_process_of_it_and_exits_3():
    import psutil

    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", ENDING_DRIVER], capture_output=True, text=True, timeout=120)
    assert proc.returncode == wd.EXIT_STATUS, proc.stderr
    assert proc.stderr.splitlines() == ["verl-dgpo: watchdog: no progress for 61 s in the rollout stage of training step 2."]
    pids = [int(pid) for pid in proc.stdout.split()]
    assert len(pids) == 3 and "not reached" not in proc.stdout
    deadline = time.monotonic() + 10
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
        time.sleep(0.05)
    assert not alive, f"left behind: {alive}"
    assert time.monotonic() - started < 60


def test_the_checkpoint_note_names_the_last_complete_step(tmp_path):
    import torch

    assert wd.checkpoint_note(str(tmp_path / "none")) == "No checkpoint was written."
    for step in (1, 2):
        actor = tmp_path / f"global_step_{step}" / "actor"
        actor.mkdir(parents=True)
        torch.save({"w": step}, actor / "model_world_size_1_rank_0.pt")
    torch.save({}, tmp_path / "global_step_1" / "data.pt")  # step 2's data.pt never written: incomplete
    assert wd.checkpoint_note(str(tmp_path)) == (
        f"Last complete checkpoint: step 1 in {tmp_path}; trainer.resume_mode=auto continues from it."
    )


def test_a_watch_that_sees_no_progress_ends_the_run_once_and_a_dead_worker_at_once(monkeypatch):
    clock = [0.0]
    ended = []
    monkeypatch.setattr(wd, "end_run", lambda line, mark: ended.append(line))
    states = {"state": report(1, "gen", 2)}
    monkeypatch.setattr(wd, "read_heartbeat", lambda job: states["state"])
    table = []
    monkeypatch.setattr(wd, "job_actors", lambda job: table)
    dog = wd.Watchdog(wd.Limits(timeout_s=30, startup_timeout_s=100), clock=lambda: clock[0])
    dog.checkpoint_dir = None
    dog.monitor = wd.Monitor(dog.limits, clock[0])
    for t in (1.0, 20.0, 31.0):
        clock[0] = t
        dog.check_once("01000000")
    assert ended == []
    clock[0] = 31.5
    dog.check_once("01000000")
    assert len(ended) == 1 and ended[0].startswith("no progress for 30 s in the rollout (generation) stage")
    assert ended[0].endswith("No checkpoint was written.")

    ended.clear()
    dog.monitor = wd.Monitor(dog.limits, clock[0])
    table.append(actor("WorkerDict", reason="WORKER_DIED", job="01000000", pid=99))
    dog.check_once("01000000")  # long before any limit
    assert len(ended) == 1 and ended[0].startswith("the Ray worker WorkerDict, pid 99 died during the rollout")


def test_the_process_mark_is_set_only_when_the_watchdog_is_on(monkeypatch):
    monkeypatch.delenv(wd.RUN_MARK, raising=False)
    wd.Watchdog(wd.Limits(0, 0)).mark_processes()
    assert wd.RUN_MARK not in os.environ
    dog = wd.Watchdog(wd.Limits(5, 0))
    dog.mark_processes()
    assert os.environ[wd.RUN_MARK] == dog.mark


def test_on_a_verl_whose_own_task_runner_reports_nothing_only_dead_workers_end_the_run(capsys):
    dog = wd.Watchdog(wd.Limits(timeout_s=60, startup_timeout_s=600), poll_s=0.05)
    with dog.watching(reports=False):  # verl < 0.9: verl's task runner, no reports: a limit would end healthy runs
        assert dog._thread is not None and dog._thread.is_alive()  # still watching for dead workers
    dog._thread.join(timeout=5)
    assert dog.limits == wd.Limits(0.0, 0.0) and not dog._thread.is_alive()
    out = capsys.readouterr().out
    assert out.startswith("verl-dgpo: note: ") and "watchdog.timeout_s and watchdog.startup_timeout_s are off" in out


def test_a_store_that_stops_answering_does_not_stop_the_time_limit(monkeypatch):
    import threading

    ended = threading.Event()
    lines = []
    hang = threading.Event()
    monkeypatch.setattr(wd, "read_heartbeat", lambda job: hang.wait(30))  # the GCS call never returns
    monkeypatch.setattr(wd, "job_actors", lambda job: [])
    monkeypatch.setattr(wd, "end_run", lambda line, mark: (lines.append(line), ended.set()))
    monkeypatch.setattr("ray.is_initialized", lambda: True)
    monkeypatch.setattr("ray.get_runtime_context", lambda: type("C", (), {"get_job_id": lambda self: "01000000"})())
    dog = wd.Watchdog(wd.Limits(timeout_s=0.3, startup_timeout_s=0.3), poll_s=0.05)
    started = time.monotonic()
    with dog.watching():
        assert ended.wait(10)
    hang.set()
    assert time.monotonic() - started < 5 and lines[0].startswith("no progress for 0 s in start-up")
