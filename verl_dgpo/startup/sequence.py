"""A run's start-up, in the order it needs each step; each check runs once, here.

:func:`start` is what ``python -m verl_dgpo.main`` runs on the composed config (the entry point has already
checked the verl release and named the plugin, before hydra: :func:`check_release`, :func:`load_plugin_everywhere`):

1. TRL: whether the installed TRL lets verl's trainer start (:mod:`verl_dgpo.startup.trl_compat`);
2. the keys, before ``import verl``: the config resolved, ``algorithm.policy_loss``, and every DGPO and
   baseline hyper-parameter (:func:`check_keys`), then batch sizes, GPUs, data files and model
   (:func:`verl_dgpo.startup.preflight.checks_without_verl`);
3. the CPU preset, where it is on: free memory, its patch targets on this release, which trainer;
4. with verl imported: the plugin's registration proved, the advantage estimator, verl's own config classes
   built from the config (:func:`check_with_verl`), verl's ``validate_config`` and the rollout engine
   (:func:`verl_dgpo.startup.preflight.checks_with_verl`);
5. the checkpoint folder: same run only, resume from the latest complete checkpoint
   (:mod:`verl_dgpo.startup.run_identity`);
6. Ray, within its time limit, and verl's trainer with our task runner (:mod:`verl_dgpo.startup.ray_start`),
   under the progress watchdog (:mod:`verl_dgpo.startup.watchdog`; its keys are checked with the others in step 2).

A mistake anywhere before step 6 is one line naming the key as typed (:mod:`verl_dgpo.startup.errors`).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from typing import Optional

from omegaconf import DictConfig, OmegaConf

from verl_dgpo import ENTRY_POINT_VALUE, SUPPORTED_VERL, check_installed
from verl_dgpo.maths.hyperparameters import DGPOConfigError
from verl_dgpo.spelling import closest_name
from verl_dgpo.startup.errors import ConfigError, user_error_in
from verl_dgpo.startup.ray_start import bounded_ray_start
from verl_dgpo.startup.trl_compat import check_verl_can_import_trl
from verl_dgpo.verl_glue.external_modules import add_external_module
from verl_dgpo.version import VerlVersionError, check_verl_version, is_tested, untested_note


def check_release() -> str:
    """The installed verl: a tested release, or one on which every contract holds; else one line
    (:class:`VerlVersionError`). Returns its version. Needs no ``import verl`` for a tested release."""
    version = check_verl_version()
    if not is_tested(version):
        check_contracts(version)
    return version


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
        close = closest_name(str(name), sorted(ADV_ESTIMATOR_REGISTRY))
        hint = f" Did you mean {close!r}?" if close else ""
        raise ConfigError(
            f"algorithm.adv_estimator={name!r} is not a registered advantage estimator.{hint} "
            f"Valid: {sorted(ADV_ESTIMATOR_REGISTRY)}"
        )


POLICY_LOSS_NODE = "actor_rollout_ref.actor.policy_loss"


def keys_set_from(config: DictConfig, node: str = POLICY_LOSS_NODE) -> dict[str, str]:
    """verl key -> the key its value comes from, for values that are a plain ``${other.key}`` (unresolved).

    Our yaml sets ``...policy_loss.dgpo_n: ${algorithm.dgpo.n}``, so an error about ``dgpo_n`` is about
    what the user typed as ``algorithm.dgpo.n``; a user who set ``dgpo_n`` itself (verl's own entry point,
    or an override of the long key) replaced the interpolation, and the long key is then the right name.
    """
    section = OmegaConf.select(config, node)
    raw = OmegaConf.to_container(section, resolve=False) if isinstance(section, DictConfig) else {}
    sources = {}
    for name, value in raw.items():
        match = re.fullmatch(r"\$\{([\w.]+)\}", value) if isinstance(value, str) else None
        if match:
            sources[f"{node}.{name}"] = match.group(1)
    return sources


@contextlib.contextmanager
def errors_naming(typed_keys: dict[str, str]):
    """Re-raise the user error inside whatever hydra or OmegaConf wrapped it in, naming the key as it was typed.

    ``typed_keys`` comes from :func:`keys_set_from` on the unresolved config: an error about verl's
    ``...policy_loss.dgpo_n`` names ``algorithm.dgpo.n`` when that is where its value came from.
    """
    try:
        yield
    except Exception as err:
        cause = user_error_in(err)
        if isinstance(cause, DGPOConfigError) and cause.key in typed_keys:
            raise cause.for_key(typed_keys[cause.key]) from err
        if cause is None or cause is err:
            raise
        raise cause from err


def check_keys(config: DictConfig) -> DictConfig:
    """The driver-side checks that need no ``import verl`` (seconds saved on every refusal): resolve the
    config (``algorithm.policy_loss`` is checked by its resolver) and check every DGPO / baseline key, with
    the same functions verl's config classes call later. Resolves ``config`` in place and returns it."""
    from verl_dgpo.maths.hyperparameters import ce_gppo_betas, dgpo_exponents, dual_clip_ratio, trust_region

    with errors_naming(keys_set_from(config)):
        OmegaConf.resolve(config)
        actor = config.actor_rollout_ref.actor
        trust_region(actor)
        dual_clip_ratio(actor)  # c of grpo/gppo/ce_gppo/aspo: fail here, not in a worker's first step
        dgpo_exponents(actor.policy_loss)
        ce_gppo_betas(actor.policy_loss)
    return config


def check_with_verl(config: DictConfig, version: str) -> DictConfig:
    """The driver-side checks that import verl, on a config :func:`check_keys` has passed: the plugin's
    registration on this release, the estimator, and verl's own config classes built from the config (they
    run our config class's checks again, as every worker will, and verl's own)."""
    check_installed(version)
    with errors_naming({}):
        check_adv_estimator(config)

        from verl.utils.config import omega_conf_to_dataclass

        omega_conf_to_dataclass(config.actor_rollout_ref.actor)  # runs DGPOPolicyLossConfig's checks
    use_grpo_session_handling(config)
    return config


def prepare(config: DictConfig) -> DictConfig:
    """Every driver-side check of the config and its resolution, outside a run (tests, a user's own script):
    returns the resolved config that verl's trainer receives."""
    load_plugin_everywhere()
    return check_with_verl(check_keys(config), check_verl_version())


def load_plugin_everywhere() -> None:
    """Name the plugin in ``VERL_USE_EXTERNAL_MODULES`` and load it here.

    Every process that imports verl afterwards (Ray workers inherit the variable) imports the plugin
    eagerly and fails loudly if it cannot, on every release: verl 0.7.1/0.8.0 load nothing else, and
    0.9.x's entry-point loading would only log a failure at DEBUG level. If verl is already imported in
    this process, the plugin is imported directly.
    """
    add_external_module(ENTRY_POINT_VALUE)
    if "verl" in sys.modules:
        import importlib

        importlib.import_module(ENTRY_POINT_VALUE)


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
    """The TaskRunner for the configured trainer (v1 by default, v0 with ``trainer.use_v1=false``).

    verl's own runner, subclassed so that every validation also logs the paper's Avg@k and unbiased
    Pass@k per benchmark (``verl_dgpo/verl_glue/task_runners.py``); verl itself is not modified. None on verl < 0.9,
    which has one trainer and no ``trainer.use_v1``: ``run_ppo`` then picks its own.
    """
    if "use_v1" not in config.trainer:
        return None
    from verl_dgpo.verl_glue import task_runners

    return task_runners.TaskRunnerV1 if config.trainer.use_v1 else task_runners.TaskRunnerV0


def start(config: DictConfig, version: Optional[str] = None) -> None:
    """Steps 1-6 of the module docstring on a composed config; ``version`` is the verl release the entry
    point checked (checked here when None)."""
    version = version or check_verl_version()
    check_verl_can_import_trl()  # before Ray: verl's actor imports TRL's value-head model whenever TRL is importable
    local_cpu = config.get("local_cpu", {}).get("enabled", False)
    from verl_dgpo.local import quiet

    if quiet.enabled(config):
        quiet.quiet_driver()  # before importing verl's trainer, which detects the platform
    # First what needs no verl (its import takes seconds): the keys, batch sizes, GPUs, data files, model.
    from verl_dgpo.startup.preflight import checks_with_verl, checks_without_verl, ray_cluster_address

    config = check_keys(config)
    from verl_dgpo.startup.watchdog import Watchdog

    watchdog = Watchdog.from_config(config)  # watchdog.*: one line for a bad value
    notes = checks_without_verl(config)
    if local_cpu:
        from verl_dgpo.local import check_memory
        from verl_dgpo.local.launch import choose_trainer
        from verl_dgpo.local.patches import require_cpu_preset

        check_memory(config)  # local_cpu.min_free_memory_gib: one line, exit status 3
        require_cpu_preset(version)  # its patch targets, found unchanged: one line on 0.7.1/0.8.0
        choose_trainer(config)  # v1 where this verl has no v0 trainer (one line), before the v1 hand-over below
    config = check_with_verl(config, version)
    checks_with_verl(config)  # verl's validate_config, the rollout engine
    for note in notes:
        print(f"verl-dgpo: note: {note}", flush=True)
    from verl_dgpo.startup.run_identity import guard

    guard(config)  # this run's checkpoint folder: same run only, resume from the latest complete checkpoint
    watchdog.mark_processes()  # before Ray starts: a local cluster's processes carry this run's mark
    if local_cpu:
        from verl_dgpo.local import activate

        activate(config)  # starts Ray itself, within local_cpu.ray_start_timeout_s
    # Imported only now: importing verl's main_ppo probes the accelerator, which logs warnings on a
    # machine without one (before the local preset registers its CPU platform, or before preflight says why).
    import ray
    from verl.trainer.main_ppo import run_ppo
    from verl.utils.device import auto_set_device

    auto_set_device(config)
    runner = task_runner_class(config)
    with watchdog.watching(config.trainer.get("default_local_dir"), reports=runner is not None):  # one line, exit 3
        bounded_ray_start(
            lambda: run_ppo(config, task_runner_class=runner),
            float(config.get("preflight", {}).get("ray_start_timeout_s", 0)),
            is_started=ray.is_initialized,
            address=ray_cluster_address(config, os.environ),
        )




def check_contracts(version: str) -> None:
    """On a verl that is not a tested release: every contract this entry point relies on, or one line.

    Real calls into verl (:func:`verl_dgpo.verl_glue.contracts.run_checks`), seconds; prints one note to stderr when all
    hold, raises :class:`VerlVersionError` naming the first broken contract otherwise.
    """
    import warnings

    from verl_dgpo.verl_glue.contracts import broken, run_checks

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # verl's import-time notices; the rows say what matters
        bad = broken(run_checks(for_main=True))
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise VerlVersionError(
            f"verl {version} is not a tested release, and the contract '{bad[0].contract}' is broken on it: "
            f"{bad[0].detail}{more}. Run `verl-dgpo-check` for every contract, "
            f"or `pip install 'verl=={SUPPORTED_VERL[-1]}'`."
        )
    print(f"verl-dgpo: note: {untested_note(version)}", file=sys.stderr, flush=True)
