"""Our entry point's TaskRunners build trainers that log Pass@k, and leave verl itself unmodified.

That Ray builds both as actors (an inherited ``__init__`` with zero-argument ``super()`` once failed there)
is shown by the slow tier's real runs, whose validations only our subclasses log as Pass@k: v0 in
tests/test_e2e_local.py, v1 in tests/test_e2e_local_v1.py and the ``TOY=1`` recipes."""

import types

import numpy as np
import pytest
from omegaconf import OmegaConf

from verl_dgpo.verl_glue import task_runners
from verl_dgpo.eval.validation_metrics import PassAtKValidationMixin
from verl_dgpo.verl_glue.stage_heartbeats import StageHeartbeatsMixin


def test_v0_runner_runs_verls_code_with_our_trainer_and_verls_module_is_untouched():
    from verl.trainer import main_ppo_v0
    from verl.trainer.ppo.ray_trainer import RayPPOTrainer

    verl_run = main_ppo_v0.TaskRunner.__ray_actor_class__.run
    ours = task_runners.PassAtKTaskRunnerV0.run
    assert ours.__code__ is verl_run.__code__  # every step of start-up is verl's own
    assert ours.__globals__["RayPPOTrainer"] is task_runners.RayPPOTrainerWithPassAtK
    assert issubclass(task_runners.RayPPOTrainerWithPassAtK, RayPPOTrainer)
    assert issubclass(task_runners.RayPPOTrainerWithPassAtK, PassAtKValidationMixin)
    assert main_ppo_v0.RayPPOTrainer is RayPPOTrainer  # verl's module still builds verl's trainer
    assert verl_run.__globals__["RayPPOTrainer"] is RayPPOTrainer


def test_run_with_trainer_rebinds_only_that_name():
    scope = {"RayPPOTrainer": "verl's", "other": 3}
    exec("def run(x):\n    return RayPPOTrainer, other, x", scope)
    rebound = task_runners.run_with_trainer(scope["run"], "ours")
    assert rebound(1) == ("ours", 3, 1)
    assert scope["run"](1) == ("verl's", 3, 1)


def test_run_with_trainer_refuses_code_that_does_not_build_RayPPOTrainer():
    def run(self, config):
        return config

    with pytest.raises(RuntimeError, match="no longer builds its trainer as RayPPOTrainer"):
        task_runners.run_with_trainer(run, object)


def test_v0_trainer_validation_logs_unbiased_pass_at_k():
    trainer = object.__new__(task_runners.RayPPOTrainerWithPassAtK)  # _val_metrics_update uses no state
    # one source, two prompts of n=4 samples: c=1 and c=2 correct
    scores = [1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    uids = ["p"] * 4 + ["q"] * 4
    metrics = trainer._val_metrics_update(np.array(["s"] * 8, dtype=object), uids, {"reward": scores}, [])
    # pass@2 = 1 - C(n-c, 2)/C(n, 2): p: 1 - 3/6, q: 1 - 1/6
    assert metrics["val-core/s/reward/pass@2"] == pytest.approx(((1 - 3 / 6) + (1 - 1 / 6)) / 2)
    assert metrics["val-core/s/reward/pass@4"] == pytest.approx(1.0)
    assert metrics["val-core/s/reward/pass@1"] == pytest.approx((1 / 4 + 2 / 4) / 2)
    assert metrics["val-core/s/reward/avg@4"] == pytest.approx(3 / 8)
    assert metrics["val-core/s/reward/mean@4"] == pytest.approx(3 / 8)  # verl's own, kept


@pytest.fixture
def v1_registry():
    """verl's v1 trainer registry, restored after the test."""
    pytest.importorskip("transfer_queue")
    from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY

    before = dict(TRAINER_REGISTRY)
    yield TRAINER_REGISTRY
    TRAINER_REGISTRY.clear()
    TRAINER_REGISTRY.update(before)


@pytest.mark.parametrize("mode", ["sync", "colocate_async"])
def test_v1_runner_keeps_the_mode_name_and_verl_builds_the_pass_at_k_subclass(monkeypatch, v1_registry, mode):
    from verl.trainer.ppo.v1 import get_trainer_cls

    verl_cls = v1_registry[mode]
    seen = {}

    def verl_run(self, config):  # what verl's TaskRunnerV1.run does first: look the class up by the mode
        seen["mode"] = config.trainer.v1.trainer_mode
        seen["cls"] = get_trainer_cls(config.trainer.v1.trainer_mode)

    base = task_runners.PassAtKTaskRunnerV1.__mro__[1]
    monkeypatch.setattr(base, "run", verl_run)
    config = OmegaConf.create({"trainer": {"v1": {"trainer_mode": mode}}})
    task_runners.PassAtKTaskRunnerV1.run(object.__new__(task_runners.PassAtKTaskRunnerV1), config)
    # verl's trainer branches on the literal mode (e.g. `trainer_mode == "sync"`): it must not be renamed
    assert seen["mode"] == mode
    assert issubclass(seen["cls"], PassAtKValidationMixin) and issubclass(seen["cls"], verl_cls)
    # verl's own class, unmodified, behind the mixins; the subclass runs verl's own fit, whose stage timer
    # also reports to the watchdog (verl_dgpo/stage_heartbeats.py)
    from verl.utils.debug import marked_timer

    assert verl_cls in seen["cls"].__mro__ and issubclass(seen["cls"], StageHeartbeatsMixin)
    assert seen["cls"].fit.__code__ is verl_cls.fit.__code__ and verl_cls.fit.__globals__["marked_timer"] is marked_timer
    assert seen["cls"].fit.__globals__["marked_timer"].__wrapped__ is marked_timer
    others = {k: v for k, v in v1_registry.items() if k != mode}
    assert all(not issubclass(v, (PassAtKValidationMixin, StageHeartbeatsMixin)) for v in others.values())


def test_v1_runner_leaves_an_unknown_mode_to_verls_error(monkeypatch, v1_registry):
    from verl.trainer.ppo.v1 import get_trainer_cls

    before = dict(v1_registry)
    base = task_runners.PassAtKTaskRunnerV1.__mro__[1]
    monkeypatch.setattr(base, "run", lambda self, config: get_trainer_cls(config.trainer.v1.trainer_mode))
    config = OmegaConf.create({"trainer": {"v1": {"trainer_mode": "mystery"}}})
    with pytest.raises(Exception, match="mystery"):
        task_runners.PassAtKTaskRunnerV1.run(object.__new__(task_runners.PassAtKTaskRunnerV1), config)
    assert dict(v1_registry) == before


@pytest.mark.parametrize("use_v1, expected", [(True, "TaskRunnerV1"), (False, "TaskRunnerV0")])
def test_entry_point_picks_our_runner(use_v1, expected):
    from verl_dgpo.main import task_runner_class

    config = OmegaConf.create({"trainer": {"use_v1": use_v1}})
    assert task_runner_class(config) is getattr(task_runners, expected)


def test_rebound_run_is_a_plain_function():
    assert isinstance(task_runners.PassAtKTaskRunnerV0.run, types.FunctionType)


def test_a_verl_without_the_v0_trainer_gives_no_v0_module(monkeypatch):
    """verl 0.9.1 with main_ppo_v0 removed: main_ppo then holds only the v1 runner, so there is no v0 module
    (and TaskRunnerV0 is None, instead of an AttributeError when the entry point imports this module)."""
    import sys

    import verl.trainer

    monkeypatch.delattr(verl.trainer, "main_ppo_v0", raising=False)
    monkeypatch.setitem(sys.modules, "verl.trainer.main_ppo_v0", None)  # `import` of it raises ImportError
    assert task_runners._v0_module() is None
    monkeypatch.undo()
    from verl.trainer import main_ppo_v0

    assert task_runners._v0_module() is main_ppo_v0
