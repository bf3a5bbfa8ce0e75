"""The progress watchdog of every ``python -m verl_dgpo.main`` run: a run that stops making progress ends
with one line and exit status 3, never hangs.

Progress is what the trainer reports (:mod:`verl_dgpo.verl_glue.stage_heartbeats`: the start and end of every stage
verl times, in the TaskRunner actor, through Ray's GCS key-value store). On the driver, a thread
(:class:`Watchdog`) reads that state every second and keeps the time of its last change by the driver's
own clock (:class:`Monitor`). The run is ended when

- one stage (rollout / generation, reward, old log-prob, reference, actor update, weight sync,
  validation, checkpoint save, or the gap between two of them) has run ``watchdog.timeout_s`` without
  a report; start-up (workers, models, rollout servers, checkpoint loading, first weight sync) has its own
  limit, ``watchdog.startup_timeout_s``; ``0`` turns either off;
- an actor of this run's Ray job dies without being asked to (its worker process or node died, or the
  kernel killed it for memory: Ray's death cause), at once: the driver may be waiting on it forever.

Ending a run (:func:`end_run`): one line on stderr naming the stage and the step (or the worker), then
every process of the run gets SIGKILL (this driver's descendants, and every process carrying this run's
mark in its environment, :data:`RUN_MARK`: a local Ray cluster's GCS, raylet and workers inherit it, also
those Ray re-parents), then the driver exits with status 3. A checkpoint being written at that moment stays
incomplete (verl writes ``data.pt`` and the tracker only after the weights; see
:mod:`verl_dgpo.verl_glue.checkpoints`), so ``trainer.resume_mode=auto`` continues from the last complete one.
On a Ray cluster the driver only joined (``RAY_ADDRESS``), the job's actors on other machines end with the
driver, as Ray ends every actor of a job whose driver has exited.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from numbers import Real
from typing import Callable, Iterable, Optional

from verl_dgpo.startup.preflight import PreflightError
from verl_dgpo.verl_glue.stage_heartbeats import NAMESPACE, START_UP, heartbeat_key, stage_label

#: Exit status of a run the watchdog ended (the local preset's "could not run").
EXIT_STATUS = 3
PREFIX = "verl-dgpo: watchdog: "
#: Environment variable every process of a run started here inherits: its value is this run's.
RUN_MARK = "VERL_DGPO_RUN"
KEYS = ("timeout_s", "startup_timeout_s")
#: Ray's reasons for an actor's death that no one asked for (``ActorDiedErrorContext.reason``).
UNEXPECTED_DEATHS = {"WORKER_DIED": "its worker process died", "NODE_DIED": "its node died"}


class WatchdogConfigError(PreflightError):
    """A ``watchdog.*`` key has a value the watchdog cannot use; the message names it."""


@dataclass(frozen=True)
class Limits:
    timeout_s: float
    startup_timeout_s: float

    @property
    def on(self) -> bool:
        return self.timeout_s > 0 or self.startup_timeout_s > 0

    def for_stage(self, stage: Optional[str]) -> tuple[float, str]:
        """(limit, key) that applies while ``stage`` (a verl timer name, :data:`START_UP` or None) runs."""
        if stage == START_UP:
            return self.startup_timeout_s, "watchdog.startup_timeout_s"
        return self.timeout_s, "watchdog.timeout_s"


def limits(config) -> Limits:
    """The ``watchdog`` section of ``config``, checked: each key a number of seconds >= 0 (0: off).
    A config without the section (composed without our yaml) has the watchdog off."""
    section = config.get("watchdog", None)
    if section is None:
        return Limits(0.0, 0.0)
    values = {}
    for key in KEYS:
        value = section.get(key, None)
        if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value < 0:
            raise WatchdogConfigError(
                f"watchdog.{key}={value!r} is not allowed: it must be a number of seconds >= 0 "
                f"(0 turns this limit of the watchdog off)."
            )
        values[key] = float(value)
    return Limits(**values)


# --- what the driver makes of the reports ------------------------------------------------------------


class Monitor:
    """The last report the driver saw and when (its own clock); :meth:`overdue` says when a limit is passed."""

    def __init__(self, limits: Limits, now: float):
        self.limits = limits
        # (last report, when the driver saw it) in one tuple: the reader and the judge are two threads
        self._seen = ({"seq": None, "stage": START_UP, "last": None, "step": None}, now)

    @property
    def state(self) -> dict:
        return self._seen[0]

    @property
    def since(self) -> float:
        return self._seen[1]

    def observe(self, state: Optional[dict], now: float) -> None:
        """A report read from the store (None: none yet, or unreadable); a new ``seq`` is progress."""
        if state and state.get("seq") != self.state.get("seq"):
            self._seen = (dict(state), now)

    def where(self) -> str:
        """``the rollout (generation) stage of training step 2`` and the like."""
        stage, step = self.state.get("stage"), self.state.get("step")
        if stage == START_UP:
            resumed = f" (from step {step})" if step else ""
            return f"start-up{resumed} (workers, models, rollout servers, checkpoint loading, first weight sync)"
        if stage is None:
            last = self.state.get("last")
            text = f"between stages, after the {stage_label(last)} stage" if last else "between stages"
        else:
            text = f"the {stage_label(stage)} stage (verl's timer '{stage}')"
        return text + (f" of training step {step}" if step is not None else "")

    def overdue(self, now: float) -> Optional[str]:
        """The line to end the run with, or None while the current stage is within its limit."""
        state, since = self._seen
        limit, key = self.limits.for_stage(state.get("stage"))
        if limit <= 0 or now - since <= limit:
            return None
        return f"no progress for {now - since:.0f} s in {self.where()}; the limit is {key}={limit:g}."

    def death(self, actor: dict) -> str:
        """The line for an actor of the run that died unasked (an entry of :func:`unexpected_deaths`)."""
        pid = f", pid {actor['pid']}" if actor.get("pid") else ""
        return (
            f"the Ray worker {actor['name']}{pid} died during {self.where()}: {actor['reason']}; "
            f"the run cannot go on without it."
        )


def unexpected_deaths(actors: Iterable[dict], job_id: str) -> list[dict]:
    """The actors of job ``job_id`` in ``actors`` (Ray's actor table entries) that died unasked, as
    ``{"name", "pid", "reason"}``; deaths asked for (``ray.kill``, out of scope) are not listed."""
    found = []
    for actor in actors:
        if actor.get("State") != "DEAD" or actor.get("JobID") != job_id:
            continue
        cause = actor.get("DeathCause")
        reason = death_reason(cause)
        if reason is None:
            continue
        name = (actor.get("ActorClassName") or "actor").rsplit(".", 1)[-1]  # verl's fused class is local to a function
        found.append({"name": name, "pid": actor.get("Pid"), "reason": reason})
    return found


def death_reason(cause) -> Optional[str]:
    """Why an actor died, when no one asked it to (Ray's ``ActorDeathCause``), else None."""
    if cause is None:
        return None
    if cause.HasField("oom_context"):
        return "the system ran out of memory and killed it"
    if cause.HasField("actor_died_error_context"):
        context = cause.actor_died_error_context
        from ray.core.generated import common_pb2

        reason = common_pb2.ActorDiedErrorContext.Reason.Name(context.reason)
        if reason in UNEXPECTED_DEATHS:
            return UNEXPECTED_DEATHS[reason]
    return None


# --- ending a run ------------------------------------------------------------------------------------


def run_processes(mark: Optional[str], root: Optional[int] = None) -> list:
    """Every living process of this run: ``root``'s descendants (default: this process's) and every process
    whose environment carries ``RUN_MARK=mark``; ``root`` itself excluded."""
    import psutil

    root = os.getpid() if root is None else root
    found = {}
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(root).children(recursive=True):
            found[child.pid] = child
    if mark:
        for process in psutil.process_iter():
            if process.pid in found or process.pid == root:
                continue
            with contextlib.suppress(psutil.Error):
                if process.environ().get(RUN_MARK) == mark:
                    found[process.pid] = process
    return [p for p in found.values() if _alive(p)]


def _alive(process) -> bool:
    import psutil

    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _signal_all(processes, signum) -> None:
    for process in processes:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(process.pid, signum)


def kill_run(mark: Optional[str], wait_s: float = 10.0) -> list:
    """SIGKILL every process of the run (frozen first with SIGSTOP, so that none starts another or reacts
    to the others' end); returns those still alive after ``wait_s`` (none expected)."""
    for _ in range(3):
        family = run_processes(mark)
        if not family:
            return []
        _signal_all(family, signal.SIGSTOP)
        family = run_processes(mark)  # any started meanwhile
        _signal_all(family, signal.SIGKILL)
        deadline = time.monotonic() + wait_s / 3
        while time.monotonic() < deadline and any(_alive(p) for p in family):
            with contextlib.suppress(ChildProcessError):
                while os.waitpid(-1, os.WNOHANG)[0]:  # reap this driver's own children (Ray's GCS, raylet)
                    pass
            time.sleep(0.05)
    return run_processes(mark)


_ENDING = threading.Lock()


def end_run(line: str, mark: Optional[str], exit=os._exit) -> None:
    """Print ``line`` (one line, stderr), end every process of the run, exit with :data:`EXIT_STATUS`.
    The first caller wins; a second (another thread) waits for the exit."""
    if not _ENDING.acquire(blocking=False):
        while True:
            time.sleep(3600)
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    sys.stderr.write(PREFIX + line + "\n")
    sys.stderr.flush()
    with contextlib.suppress(OSError):  # what Ray's client prints while its cluster goes is not the user's news
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
    kill_run(mark)
    exit(EXIT_STATUS)


def checkpoint_note(directory: Optional[str]) -> str:
    """What ``trainer.resume_mode=auto`` would continue from, for the line."""
    if not directory or not os.path.isdir(directory):
        return "No checkpoint was written."
    from verl_dgpo.verl_glue.checkpoints import latest_complete

    latest = latest_complete(directory)
    if latest is None:
        return f"No complete checkpoint in {directory}."
    return f"Last complete checkpoint: step {latest.step} in {directory}; trainer.resume_mode=auto continues from it."


# --- the driver's thread -----------------------------------------------------------------------------


def read_heartbeat(job_id: str) -> Optional[dict]:
    from ray.experimental.internal_kv import _internal_kv_get

    raw = _internal_kv_get(heartbeat_key(job_id), namespace=NAMESPACE)
    return json.loads(raw) if raw else None


def job_actors(job_id: str) -> list[dict]:
    import ray

    return list(ray._private.state.state.actor_table(None, job_id=ray.JobID(bytes.fromhex(job_id))).values())


class Watchdog:
    """The driver's watch over one run (see the module docstring). :meth:`watching` wraps verl's ``run_ppo``."""

    def __init__(self, limits: Limits, checkpoint_dir: Optional[str] = None, poll_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic):
        self.limits, self.checkpoint_dir, self.poll_s, self.clock = limits, checkpoint_dir, poll_s, clock
        self.mark = f"{os.getpid()}-{time.time_ns()}"
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.monitor: Optional[Monitor] = None
        self._deaths_only = False

    @classmethod
    def from_config(cls, config) -> "Watchdog":
        """The watchdog ``config``'s ``watchdog.*`` keys ask for; a bad value raises :class:`WatchdogConfigError`."""
        return cls(limits(config))

    def mark_processes(self) -> None:
        """Before Ray starts: every process started from here on (a local Ray cluster) carries the mark."""
        if self.limits.on:
            os.environ[RUN_MARK] = self.mark

    def end(self, line: str) -> None:
        end_run(f"{line} Ended the run's Ray processes. {checkpoint_note(self.checkpoint_dir)}", self.mark)

    def look(self, job_id: str) -> None:
        """Read the trainer's report and Ray's actor table (GCS calls); a worker that died ends the run."""
        state = None
        with contextlib.suppress(Exception):  # an unreadable store is no progress
            state = read_heartbeat(job_id)
        self.monitor.observe(state, self.clock())
        try:
            dead = unexpected_deaths(job_actors(job_id), job_id)
        except Exception:  # noqa: BLE001 - the actor table is a help; the time limit still holds
            dead = []
        if dead:
            self.end(self.monitor.death(dead[0]))

    def judge(self) -> None:
        """The time limit, from what :meth:`look` last saw (no call that can block)."""
        line = self.monitor.overdue(self.clock())
        if line:
            self.end(line)

    def check_once(self, job_id: str) -> None:
        self.look(job_id)
        self.judge()

    def _run(self) -> None:
        import ray

        while not ray.is_initialized():  # verl's run_ppo starts Ray (preflight.ray_start_timeout_s bounds it)
            if self._stop.wait(0.2):
                return
        job_id = ray.get_runtime_context().get_job_id()
        self.monitor = Monitor(self.limits, self.clock())

        def keep_looking():  # its own thread: a GCS that stops answering blocks it, not the time limit
            while not self._stop.wait(self.poll_s):
                self.look(job_id)

        threading.Thread(target=keep_looking, name="dgpo-watchdog-reader", daemon=True).start()
        while not self._stop.wait(self.poll_s):
            self.judge()

    @contextlib.contextmanager
    def watching(self, checkpoint_dir: Optional[str] = None, reports: bool = True):
        """Watch while the body (verl's ``run_ppo``) runs. A body that fails because a worker died ends
        the run the same way, naming the worker, instead of a traceback. ``checkpoint_dir``: the run's
        ``trainer.default_local_dir``, for the line's note on what a resumed run continues from.
        ``reports=False``: the trainer cannot report its stages (verl < 0.9 runs its own task runner), so
        only a dead worker ends the run, and a note says so."""
        if checkpoint_dir:
            self.checkpoint_dir = os.path.abspath(str(checkpoint_dir))
        if self.limits.on and not reports:
            print("verl-dgpo: note: on this verl the trainer runs verl's own task runner, which does not report its "
                  "stages: watchdog.timeout_s and watchdog.startup_timeout_s are off; a Ray worker that dies still "
                  "ends the run.", flush=True)  # fmt: skip
            self.limits = Limits(0.0, 0.0)
            self._deaths_only = True
        if not (self.limits.on or self._deaths_only):
            yield
            return
        self._thread = threading.Thread(target=self._run, name="dgpo-watchdog", daemon=True)
        self._thread.start()
        try:
            yield
        except Exception as err:
            self._stop.set()
            self._after_failure(err)
            raise
        finally:
            self._stop.set()

    def _after_failure(self, err: BaseException) -> None:
        import ray

        if not (_caused_by_dead_actor(err) and ray.is_initialized() and self.monitor is not None):
            return
        job_id = ray.get_runtime_context().get_job_id()
        with contextlib.suppress(Exception):
            self.monitor.observe(read_heartbeat(job_id), self.clock())
        try:
            dead = unexpected_deaths(job_actors(job_id), job_id)
        except Exception:  # noqa: BLE001
            dead = []
        if dead:
            self.end(self.monitor.death(dead[0]))


def _caused_by_dead_actor(err: Optional[BaseException]) -> bool:
    from ray.exceptions import RayActorError

    seen = 0
    while err is not None and seen < 20:
        if isinstance(err, RayActorError) or "RayActorError" in type(err).__name__ or "ActorDiedError" in str(type(err)):
            return True
        cause = getattr(err, "cause", None)
        err = cause if isinstance(cause, BaseException) else (err.__cause__ or err.__context__)
        seen += 1
    return False
