"""Trainer side of the progress watchdog: each stage verl times becomes a heartbeat the driver can see.

verl's trainers time every stage of a training step with ``verl.utils.debug.marked_timer`` (``gen``,
``reward``, ``old_log_prob``, ``ref``, ``update_actor``, ``update_weights``, ``testing``,
``save_checkpoint`` ...). :func:`with_stage_heartbeats` builds a subclass of a verl trainer class in
which every method that uses ``marked_timer`` is verl's own code run with that one global name bound to
a timer that also reports the stage's start and end (:func:`copy_with_global`: a new function object over
verl's code, verl's module and its globals stay as they are), and whose start-up (``init_workers`` /
``init``) and validation (``_validate``) report themselves as stages too.

The reports go to Ray's key-value store in the GCS (:func:`publisher`; one small write per stage start
and end, keyed by the Ray job, so the driver reads them on any node), as the state :class:`StageHeartbeats`
keeps: the innermost open stage, the training step, and a sequence number that changes at every report.
The driver's watchdog (:mod:`verl_dgpo.startup.watchdog`) decides what no change for too long means. Nothing here
runs outside the TaskRunner actor that ``verl_dgpo.main`` starts, and nothing is reported when the
watchdog is off.
"""

from __future__ import annotations

import contextlib
import json
import logging
import types
from typing import Callable, Optional

logger = logging.getLogger(__name__)

#: Ray internal key-value namespace and key of a run's heartbeat state (one key per Ray job).
NAMESPACE = "verl_dgpo"
KEY_PREFIX = "watchdog/heartbeat/"

#: The stage a user reads for each of verl's timer names (names not listed are shown as verl spells them).
STAGES = {
    "gen": "rollout (generation)",
    "reward": "reward",
    "old_log_prob": "old log-prob",
    "ref": "reference log-prob",
    "values": "critic values",
    "adv": "advantage",
    "update_critic": "critic update",
    "update_actor": "actor update",
    "update_weights": "weight sync",
    "testing": "validation",
    "validation": "validation",
    "save_checkpoint": "checkpoint save",
    "dump_rollout_generations": "rollout dump",
    "start_profile": "profiler start",
    "stop_profile": "profiler stop",
    "start-up": "start-up",
}
#: verl's timer around a whole training step: a report, but not a stage of its own.
STEP_TIMER = "step"
START_UP = "start-up"
TIMER_NAME = "marked_timer"


def heartbeat_key(job_id: str) -> str:
    return KEY_PREFIX + job_id


def stage_label(name: Optional[str]) -> str:
    return STAGES.get(name, name) if name else "between stages"


class StageHeartbeats:
    """The open stages of one trainer; every start and end is handed to ``publish`` as a JSON-able dict:
    ``{"seq", "stage" (innermost open stage other than the step, or None), "last" (the last stage that
    ended), "step"}``. ``step_of`` gives the trainer's current step (None before the trainer exists)."""

    def __init__(self, publish: Callable[[dict], None], step_of: Callable[[], Optional[int]] = lambda: None):
        self.publish, self.step_of = publish, step_of
        self.open: list[str] = []
        self.last: Optional[str] = None
        self.seq = 0

    def state(self) -> dict:
        inner = [name for name in self.open if name != STEP_TIMER]
        return {"seq": self.seq, "stage": inner[-1] if inner else None, "last": self.last, "step": self.step_of()}

    def _report(self) -> None:
        self.seq += 1
        try:
            self.publish(self.state())
        except Exception as err:  # noqa: BLE001 - a lost report must not stop training; the driver sees silence
            logger.warning("verl-dgpo watchdog: could not report a heartbeat: %s: %s", type(err).__name__, err)

    def enter(self, name: str) -> None:
        if name != START_UP and START_UP in self.open:
            self.open.remove(START_UP)  # the first stage of training (or of the first validation) ends start-up
        self.open.append(name)
        self._report()

    def leave(self, name: str) -> None:
        for index in range(len(self.open) - 1, -1, -1):
            if self.open[index] == name:
                del self.open[index]
                break
        if name != STEP_TIMER:
            self.last = name
        self._report()

    @contextlib.contextmanager
    def stage(self, name: str):
        self.enter(name)
        try:
            yield
        finally:
            self.leave(name)


#: This process's heartbeats (the TaskRunner actor runs one trainer), or None: nothing is reported.
HEARTBEATS: Optional[StageHeartbeats] = None


def current() -> Optional[StageHeartbeats]:
    return HEARTBEATS


def publisher(job_id: str) -> Callable[[dict], None]:
    """A ``publish`` for :class:`StageHeartbeats` writing to Ray's GCS key-value store under this job's key."""
    from ray.experimental.internal_kv import _internal_kv_put

    key = heartbeat_key(job_id)

    def publish(state: dict) -> None:
        _internal_kv_put(key, json.dumps(state), overwrite=True, namespace=NAMESPACE)

    return publish


def start_reporting(config) -> Optional[StageHeartbeats]:
    """In the TaskRunner actor: report stages when ``watchdog`` is on in ``config`` (a timeout > 0)."""
    global HEARTBEATS
    section = (config.get("watchdog", None) if hasattr(config, "get") else None) or {}
    if not any(float(section.get(key, 0) or 0) > 0 for key in ("timeout_s", "startup_timeout_s")):
        HEARTBEATS = None
        return None
    import ray

    HEARTBEATS = StageHeartbeats(publisher(ray.get_runtime_context().get_job_id()))
    HEARTBEATS.enter(START_UP)
    return HEARTBEATS


def reporting_timer(verl_timer):
    """verl's ``marked_timer``, reporting its stage's start and end to :data:`HEARTBEATS` when set."""

    @contextlib.contextmanager
    def marked_timer(name, timing_raw, *args, **kwargs):
        beats = HEARTBEATS
        if beats is None:
            with verl_timer(name, timing_raw, *args, **kwargs):
                yield
            return
        with beats.stage(name), verl_timer(name, timing_raw, *args, **kwargs):
            yield

    marked_timer.__wrapped__ = verl_timer
    return marked_timer


def copy_with_global(func: types.FunctionType, name: str, value, scopes: Optional[dict] = None) -> types.FunctionType:
    """``func``'s code with the global ``name`` bound to ``value`` (a copy of its module's globals; verl's
    module is not touched). ``scopes`` shares one copy per module between the functions of a class."""
    scopes = {} if scopes is None else scopes
    key = id(func.__globals__)
    if key not in scopes:
        scope = dict(func.__globals__)
        scope[name] = value
        scopes[key] = scope
    copy = types.FunctionType(func.__code__, scopes[key], func.__name__, func.__defaults__, func.__closure__)
    copy.__kwdefaults__ = func.__kwdefaults__
    copy.__qualname__, copy.__doc__, copy.__module__ = func.__qualname__, func.__doc__, func.__module__
    copy.__dict__.update(func.__dict__)
    return copy


def timed_methods(cls: type) -> dict[str, types.FunctionType]:
    """Every method ``cls`` resolves to verl code that calls verl's ``marked_timer``, as a copy whose timer
    reports heartbeats (the most derived definition of each name, as ``cls`` resolves it)."""
    chosen: dict[str, types.FunctionType] = {}
    for klass in reversed(cls.__mro__):
        for attr, value in vars(klass).items():
            chosen.pop(attr, None)
            if isinstance(value, types.FunctionType) and TIMER_NAME in value.__code__.co_names:
                timer = value.__globals__.get(TIMER_NAME)
                if timer is not None and str(getattr(timer, "__module__", "")).startswith("verl."):
                    chosen[attr] = value
    scopes: dict = {}
    wrapped: dict = {}
    result = {}
    for attr, func in chosen.items():
        timer = func.__globals__[TIMER_NAME]
        if id(timer) not in wrapped:
            wrapped[id(timer)] = reporting_timer(timer)
        result[attr] = copy_with_global(func, TIMER_NAME, wrapped[id(timer)], scopes)
    return result


class StageHeartbeatsMixin:
    """In front of verl's trainer class: the trainer reports its stages when the watchdog is on (the
    TaskRunner builds the trainer with the run's config), validation is a stage, and every report carries
    the trainer's step. Start-up is the stage from the trainer's construction until its first other stage:
    workers, models, rollout servers, checkpoint loading, the first weight sync."""

    def __init__(self, *args, **kwargs):
        config = kwargs.get("config", args[0] if args else None)
        beats = start_reporting(config) if config is not None else None
        if beats is not None:
            beats.step_of = lambda: getattr(self, "global_steps", None)
        super().__init__(*args, **kwargs)

    def _validate(self, *args, **kwargs):
        beats = HEARTBEATS
        if beats is None:
            return super()._validate(*args, **kwargs)
        with beats.stage("validation"):
            return super()._validate(*args, **kwargs)


def timed_subclass(trainer_cls: type) -> type:
    """A subclass of ``trainer_cls`` (same name) whose methods that use verl's ``marked_timer`` report
    heartbeats (:func:`timed_methods`)."""
    return type(trainer_cls.__name__, (trainer_cls,), {**timed_methods(trainer_cls), "__module__": __name__})


def with_stage_heartbeats(trainer_cls: type) -> type:
    """``trainer_cls`` (a verl trainer, or a subclass of one) reporting its stages; same class name."""
    if issubclass(trainer_cls, StageHeartbeatsMixin):
        return trainer_cls
    return type(trainer_cls.__name__, (StageHeartbeatsMixin, timed_subclass(trainer_cls)),
                {"__module__": __name__})  # fmt: skip


def use_stage_heartbeats_trainer(mode: str) -> None:
    """In this process, make verl's v1 trainer registry give :func:`with_stage_heartbeats` of mode ``mode``'s class."""
    from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY

    cls = TRAINER_REGISTRY.get(mode)
    if cls is not None:
        TRAINER_REGISTRY[mode] = with_stage_heartbeats(cls)
