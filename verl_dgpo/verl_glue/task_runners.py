"""verl's TaskRunners, each building a trainer whose validation also logs Avg@k and the unbiased Pass@k.

``verl_dgpo.main`` hands one of these to verl's ``run_ppo`` (its ``task_runner_class`` argument exists for
this). Nothing of verl is modified: each runner is a subclass of verl's own, living in the TaskRunner Ray
actor that only our entry point starts, and each builds a subclass of verl's trainer with
:class:`verl_dgpo.eval.validation_metrics.PassAtKValidationMixin` in front.

Both trainers also report each stage verl times to the run's watchdog (:mod:`verl_dgpo.verl_glue.stage_heartbeats`).

* v1 trainer (``trainer.use_v1=true``, verl's default): verl picks the trainer class by name from its
  registry (``trainer.v1.trainer_mode``). In its own actor process, the runner makes that name give the
  Pass@k subclass of verl's class, keeping the name (verl's trainer branches on it), then runs verl's own
  ``run``.
* v0 trainer (``trainer.use_v1=false``, deprecated by verl; the local CPU preset's default): verl's ``TaskRunner.run`` constructs
  ``RayPPOTrainer`` by its module-level name, with no hook. The runner runs verl's own ``run`` code with
  that one name bound to :class:`RayPPOTrainerWithPassAtK` (a new function object over verl's code; verl's
  module and its globals stay as they are), so every other step of verl's start-up is verl's.
"""

from __future__ import annotations

import types

import ray

from verl_dgpo.eval.validation_metrics import PassAtKValidationMixin, use_pass_at_k_trainer
from verl_dgpo.verl_glue.stage_heartbeats import StageHeartbeatsMixin, timed_subclass, use_stage_heartbeats_trainer

def _v0_module():
    """The module of verl's v0 ``TaskRunner`` and ``RayPPOTrainer`` (``main_ppo_v0`` from verl 0.9), or
    None on a verl that no longer ships the v0 trainer."""
    try:
        from verl.trainer import main_ppo_v0 as module
    except ImportError:  # verl < 0.9: the v0 runner is still in main_ppo
        from verl.trainer import main_ppo as module
    if not (hasattr(module, "TaskRunner") and hasattr(module, "RayPPOTrainer")):
        return None
    return module


def _plain_class(runner):
    """The Python class behind a ``@ray.remote`` actor class (verl < 0.9 defines the runner undecorated)."""
    return getattr(runner, "__ray_actor_class__", runner)


_V0 = _v0_module()
_VerlTaskRunnerV0 = _plain_class(_V0.TaskRunner) if _V0 is not None else object


class RayPPOTrainerWithPassAtK(StageHeartbeatsMixin, PassAtKValidationMixin,
                               timed_subclass(_V0.RayPPOTrainer) if _V0 is not None else object):
    """verl's v0 ``RayPPOTrainer``, whose validation metrics also hold Avg@k and Pass@k, and which reports
    its stages to the run's watchdog (:mod:`verl_dgpo.verl_glue.stage_heartbeats`)."""


def run_with_trainer(verl_run: types.FunctionType, trainer_cls: type) -> types.FunctionType:
    """``verl_run``'s code with the global name ``RayPPOTrainer`` bound to ``trainer_cls``.

    Raises ``RuntimeError`` when ``verl_run`` does not build its trainer through that name (another verl
    release), rather than silently running without Pass@k.
    """
    code = verl_run.__code__
    if "RayPPOTrainer" not in code.co_names or code.co_freevars:
        raise RuntimeError(
            f"{verl_run.__module__}.{verl_run.__qualname__} no longer builds its trainer as RayPPOTrainer(...); "
            "verl-dgpo cannot add Pass@k to this verl's v0 validation"
        )
    scope = dict(verl_run.__globals__)
    scope["RayPPOTrainer"] = trainer_cls
    run = types.FunctionType(code, scope, verl_run.__name__, verl_run.__defaults__, verl_run.__closure__)
    run.__qualname__ = verl_run.__qualname__
    run.__doc__ = verl_run.__doc__
    return run


class PassAtKTaskRunnerV0(_VerlTaskRunnerV0):
    """verl's v0 TaskRunner, training with :class:`RayPPOTrainerWithPassAtK`."""

    def __init__(self):
        # Defined here, not inherited: Ray, constructing the actor, fails to run an inherited __init__ that
        # uses zero-argument super() (``TypeError: super(type, obj)``), as verl's does.
        _VerlTaskRunnerV0.__init__(self)

    if _V0 is not None:
        run = run_with_trainer(_VerlTaskRunnerV0.run, RayPPOTrainerWithPassAtK)


def _verl_task_runner_v1():
    try:
        from verl.trainer.main_ppo import TaskRunnerV1
    except ImportError:  # verl < 0.9 has no v1 trainer
        return object
    return _plain_class(TaskRunnerV1)


class PassAtKTaskRunnerV1(_verl_task_runner_v1()):
    """verl's v1 TaskRunner, training with the Pass@k subclass of the configured ``trainer.v1.trainer_mode``."""

    def __init__(self):
        super(PassAtKTaskRunnerV1, self).__init__()  # explicit, as in PassAtKTaskRunnerV0

    def run(self, config):
        use_pass_at_k_trainer(config.trainer.v1.trainer_mode)  # this actor's process: verl's registry is per process
        use_stage_heartbeats_trainer(config.trainer.v1.trainer_mode)  # stages reported to the run's watchdog
        return super().run(config)


TaskRunnerV0 = ray.remote(PassAtKTaskRunnerV0) if _V0 is not None else None  # None: this verl has no v0 trainer
TaskRunnerV1 = ray.remote(PassAtKTaskRunnerV1)
