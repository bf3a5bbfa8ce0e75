"""Trainer entry point: ``python -m verl_dgpo.main`` (console script ``verl-dgpo-train``).

It composes ``verl_dgpo/config/dgpo_trainer.yaml`` (verl's ``ppo_trainer`` plus our deltas), checks on
the driver, before Ray starts, that the plugin is registered, that verl is the pinned release and that
every DGPO key is valid, and then runs verl's own PPO trainer. Hydra's flags work as usual, e.g.
``python -m verl_dgpo.main --cfg job --resolve`` prints the composed config.
"""

from __future__ import annotations

import difflib
import os
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from verl_dgpo import PluginNotInstalledError, check_installed
from verl_dgpo.external_modules import add_external_module
from verl_dgpo.methods import UnknownMethodError, verl_loss_mode
from verl_dgpo.run_identity import RunIdentityError
from verl_dgpo.validation import DGPOConfigError
from verl_dgpo.version import VERL_VERSION

OmegaConf.register_new_resolver("dgpo_loss_mode", verl_loss_mode, replace=True)


class ConfigError(ValueError):
    """The composed training config is invalid; the message names the key."""


class VerlVersionError(RuntimeError):
    """The installed verl is not the release this package is pinned to."""


#: Errors that are the user's to fix: printed as one clear line, no traceback.
USER_ERRORS = (
    ConfigError, DGPOConfigError, UnknownMethodError, PluginNotInstalledError, VerlVersionError, RunIdentityError
)


def user_error_in(err: BaseException):
    """The first of ``USER_ERRORS`` in ``err``'s cause chain (hydra and OmegaConf wrap them), or None."""
    while err is not None:
        if isinstance(err, USER_ERRORS):
            return err
        err = err.__cause__ or err.__context__
    return None


def check_verl_version() -> None:
    import verl

    if verl.__version__ != VERL_VERSION:
        raise VerlVersionError(
            f"verl-dgpo is built and tested against verl=={VERL_VERSION}, but verl=={verl.__version__} is installed. "
            f"Run `pip install verl=={VERL_VERSION}`."
        )


def check_adv_estimator(config: DictConfig) -> None:
    from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY

    name = config.algorithm.adv_estimator
    name = getattr(name, "value", name)
    if name == "gdpo" and config.algorithm.get("policy_loss") == "dgpo":
        raise ConfigError(
            "algorithm.adv_estimator=gdpo is verl's GDPO (multi-reward decoupled normalisation), not DGPO. "
            "For DGPO use algorithm.adv_estimator=dgpo."
        )
    if name not in ADV_ESTIMATOR_REGISTRY:
        close = difflib.get_close_matches(str(name), list(ADV_ESTIMATOR_REGISTRY), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"algorithm.adv_estimator={name!r} is not a registered advantage estimator.{hint} "
            f"Valid: {sorted(ADV_ESTIMATOR_REGISTRY)}"
        )


def prepare(config: DictConfig) -> DictConfig:
    """Driver-side checks and resolution; returns the resolved config that verl's trainer receives."""
    check_installed()
    check_verl_version()
    try:
        OmegaConf.resolve(config)
        check_adv_estimator(config)

        from verl.utils.config import omega_conf_to_dataclass

        from verl_dgpo.validation import dual_clip_ratio, trust_region

        actor = omega_conf_to_dataclass(config.actor_rollout_ref.actor)  # runs DGPOPolicyLossConfig's checks
        trust_region(actor)
        dual_clip_ratio(actor)  # c of grpo/gppo/ce_gppo/aspo: fail here, not in a worker's first step
    except Exception as err:
        cause = user_error_in(err)
        if cause is None or cause is err:
            raise
        raise cause from err
    use_grpo_session_handling(config)
    # Make every Ray worker import the plugin eagerly and fail loudly if it cannot (verl's entry-point
    # loading would only log the failure at DEBUG level).
    add_external_module("verl_dgpo.registry")
    return config


def use_grpo_session_handling(config: DictConfig) -> None:
    """Hand verl's v1 trainer ``grpo`` where the user chose ``dgpo``.

    The two estimators are numerically identical (tests/test_dgpo_estimator.py), but verl 0.9.1's v1
    trainer gives multi-turn sessions their special handling (only each session's final output enters
    the group statistics) when the estimator is literally ``grpo``
    (``verl/trainer/ppo/v1/utils.py::compute_advantage_for_multi_trajectories``). Renaming it in the
    config the driver hands to verl gives ``dgpo`` every behaviour verl gives GRPO, with no patch of verl.
    The v0 trainer has no such case, and there the ``dgpo`` estimator itself runs.
    """
    if config.trainer.get("use_v1", False) and config.algorithm.adv_estimator == "dgpo":
        print("verl-dgpo: algorithm.adv_estimator=dgpo is passed to verl's v1 trainer as 'grpo' (identical advantages).")
        config.algorithm.adv_estimator = "grpo"


def task_runner_class(config: DictConfig):
    """verl's TaskRunner for the configured trainer version (v1 by default, v0 with trainer.use_v1=false)."""
    if config.trainer.use_v1:
        from verl.trainer.main_ppo import TaskRunnerV1

        return TaskRunnerV1
    from verl.trainer.main_ppo_v0 import TaskRunner

    return TaskRunner


def run(config: DictConfig) -> None:
    from verl_dgpo.local import quiet

    if quiet.enabled(config):
        quiet.quiet_driver()  # before importing verl's trainer, which detects the platform
    from verl.trainer.main_ppo import run_ppo
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config
    from verl.utils.device import auto_set_device

    config = prepare(config)
    from verl_dgpo.run_identity import guard

    guard(config)  # this run's checkpoint folder: same run only, resume from the latest complete checkpoint
    runner = None
    if config.get("local_cpu", {}).get("enabled", False):
        from verl_dgpo.local import activate

        runner = activate(config)
    auto_set_device(config)
    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    run_ppo(config, task_runner_class=runner or task_runner_class(config))


#: Our yaml folder, as a file-system path: the package-relative form would name the module
#: ``verl_dgpo.config`` (config.py) when run as a console script, not this folder.
CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config")


@hydra.main(config_path=CONFIG_DIR, config_name="dgpo_trainer", version_base=None)
def _hydra_main(config: DictConfig) -> None:
    try:
        run(config)
    except Exception as err:
        cause = user_error_in(err)
        if cause is None:
            raise
        print(f"verl-dgpo: error: {cause}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    _hydra_main()


if __name__ == "__main__":
    main()
