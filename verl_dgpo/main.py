"""Trainer entry point: ``python -m verl_dgpo.main`` (console script ``verl-dgpo-train``).

It composes ``verl_dgpo/config/dgpo_trainer.yaml`` (verl's ``ppo_trainer`` plus our deltas; verl's yaml
folder by its file path, :func:`with_verl_config_folder`, so that composing imports no verl), checks the
keys that need no verl (:func:`check_config`, :func:`verl_dgpo.startup.preflight.checks_without_verl`) before it
imports verl, then checks on the driver, before Ray starts, that verl is a tested release or one on which every contract holds
(:mod:`verl_dgpo.version`, :mod:`verl_dgpo.check`), that the plugin is registered, that every DGPO key
is valid and that the run can start (:mod:`verl_dgpo.startup.preflight`:
verl's config checks, GPUs, rollout engine, data files, model), and then runs verl's own PPO trainer
(built by a subclass of verl's TaskRunner whose validation also logs the paper's Avg@k and unbiased
Pass@k, ``verl_dgpo/verl_glue/task_runners.py``; verl itself is not modified), with a time limit on Ray's
start-up (:mod:`verl_dgpo.startup.ray_start`). It names ``verl_dgpo.registry`` in ``VERL_USE_EXTERNAL_MODULES``
before verl is imported, so the driver and every Ray worker load the plugin on every release (0.7.1 and
0.8.0 have no entry-point loading). Hydra's flags work as usual, e.g. ``python -m verl_dgpo.main --cfg job --resolve`` prints the composed config.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from verl_dgpo import ENTRY_POINT_VALUE, SUPPORTED_VERL, PluginNotInstalledError, check_installed
from verl_dgpo.verl_glue.external_modules import add_external_module
from verl_dgpo.spelling import closest_name
from verl_dgpo.verl_glue.methods import UnknownMethodError, verl_loss_mode
from verl_dgpo.startup.preflight import PreflightError
from verl_dgpo.startup.ray_start import RayStartTimeout, bounded_ray_start
from verl_dgpo.startup.run_identity import RunIdentityError
from verl_dgpo.maths.hyperparameters import DGPOConfigError
from verl_dgpo.startup.trl_compat import TRLIncompatibleError, check_verl_can_import_trl
from verl_dgpo.version import VerlVersionError, check_verl_version, is_tested, untested_note

OmegaConf.register_new_resolver("dgpo_loss_mode", verl_loss_mode, replace=True)


class ConfigError(ValueError):
    """The composed training config is invalid; the message names the key."""


#: Errors that are the user's to fix: printed as one clear line, no traceback.
USER_ERRORS = (
    ConfigError, DGPOConfigError, UnknownMethodError, PluginNotInstalledError, VerlVersionError, PreflightError,
    RayStartTimeout, RunIdentityError, TRLIncompatibleError,
)  # fmt: skip


def user_error_in(err: BaseException):
    """The first of ``USER_ERRORS`` in ``err``'s cause chain (hydra and OmegaConf wrap them), or None."""
    while err is not None:
        if isinstance(err, USER_ERRORS):
            return err
        err = err.__cause__ or err.__context__
    return None


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


def check_config(config: DictConfig) -> DictConfig:
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


def prepare_with_verl(config: DictConfig) -> DictConfig:
    """The driver-side checks that import verl, on a config :func:`check_config` has passed: the release,
    the plugin's registration, the estimator, and verl's own config classes built from the config."""
    check_verl_version()
    load_plugin_everywhere()
    check_installed()
    with errors_naming({}):
        check_adv_estimator(config)

        from verl.utils.config import omega_conf_to_dataclass

        omega_conf_to_dataclass(config.actor_rollout_ref.actor)  # runs DGPOPolicyLossConfig's checks
    use_grpo_session_handling(config)
    return config


def prepare(config: DictConfig) -> DictConfig:
    """Every driver-side check and resolution; returns the resolved config that verl's trainer receives."""
    return prepare_with_verl(check_config(config))


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


def run(config: DictConfig) -> None:
    check_verl_can_import_trl()  # before Ray: verl's actor imports TRL's value-head model whenever TRL is importable
    local_cpu = config.get("local_cpu", {}).get("enabled", False)
    from verl_dgpo.local import quiet

    if quiet.enabled(config):
        quiet.quiet_driver()  # before importing verl's trainer, which detects the platform
    # First what needs no verl (its import takes seconds): the keys, batch sizes, GPUs, data files, model.
    from verl_dgpo.startup.preflight import checks_with_verl, checks_without_verl, ray_cluster_address

    config = check_config(config)
    notes = checks_without_verl(config)
    if local_cpu:
        from verl_dgpo.local import check_memory
        from verl_dgpo.local.launch import choose_trainer
        from verl_dgpo.local.patches import require_cpu_preset

        check_memory(config)  # local_cpu.min_free_memory_gib: one line, exit status 3
        require_cpu_preset(check_verl_version())  # its patch targets, found unchanged: one line on 0.7.1/0.8.0
        choose_trainer(config)  # v1 where this verl has no v0 trainer (one line), before the v1 hand-over below
    config = prepare_with_verl(config)
    checks_with_verl(config)  # verl's validate_config, the rollout engine
    for note in notes:
        print(f"verl-dgpo: note: {note}", flush=True)
    from verl_dgpo.startup.run_identity import guard

    guard(config)  # this run's checkpoint folder: same run only, resume from the latest complete checkpoint
    if local_cpu:
        from verl_dgpo.local import activate

        activate(config)  # starts Ray itself, within local_cpu.ray_start_timeout_s
    # Imported only now: importing verl's main_ppo probes the accelerator, which logs warnings on a
    # machine without one (before the local preset registers its CPU platform, or before preflight says why).
    import ray
    from verl.trainer.main_ppo import run_ppo
    from verl.utils.device import auto_set_device

    auto_set_device(config)
    bounded_ray_start(
        lambda: run_ppo(config, task_runner_class=task_runner_class(config)),
        float(config.get("preflight", {}).get("ray_start_timeout_s", 0)),
        is_started=ray.is_initialized,
        address=ray_cluster_address(config, os.environ),
    )


#: Our yaml folder (the package ``verl_dgpo.config``), as a file-system path, the same whichever way
#: the entry point is started (``python -m``, console script).
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


SEARCH_PATH_KEY = "hydra.searchpath"

#: hydra's command-line options that take a value (``hydra._internal.utils.get_args_parser``); ``--info``
#: takes one optionally.
HYDRA_VALUE_OPTIONS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                       "--config-dir", "-cd", "--experimental-rerun", "--info", "-i"}  # fmt: skip


def _overrides_end(argv: list[str]) -> int:
    """Where hydra's overrides (its one block of positional arguments) end in ``argv``; 0 if there are none."""
    end, expects_value = 0, False
    for index, arg in enumerate(argv):
        if arg.startswith("-"):
            if end:
                break
            expects_value = arg in HYDRA_VALUE_OPTIONS
        elif expects_value:
            expects_value = False
        else:
            end = index + 1
    return end


def with_verl_config_folder(argv: list[str]) -> list[str]:
    """``argv`` with ``hydra.searchpath=['file://<verl's config folder>']`` added to its overrides: the folder
    our yaml names as ``pkg://verl.trainer.config``. hydra reads a ``pkg://`` folder by importing its package,
    which imports verl; by its path the same folder lets every check that needs no verl refuse bad input first.
    ``argv`` is left as it is where the user sets the search path, or the folder is not found."""
    if any(arg.lstrip("+").startswith(SEARCH_PATH_KEY + "=") for arg in argv):
        return argv
    from verl_dgpo.verl_glue.verl_files import config_dir

    folder = config_dir()
    if folder is None or "'" in folder or "\\" in folder:
        return argv
    end = _overrides_end(argv)
    return [*argv[:end], f"{SEARCH_PATH_KEY}=['file://{folder}']", *argv[end:]]


def main() -> None:
    # Before hydra and before Ray: a verl older than the oldest tested release gets one line, an untested
    # one (newer, or a patch release) its contract checks; then the plugin is named for verl's own loader
    # so that the `dgpo_loss_mode` resolver sees `dgpo` on every release.
    try:
        version = check_verl_version()
        load_plugin_everywhere()
        if not is_tested(version):
            check_contracts(version)
    except VerlVersionError as err:
        print(f"verl-dgpo: error: {err}", file=sys.stderr)
        sys.exit(2)
    sys.argv[1:] = with_verl_config_folder(sys.argv[1:])
    _hydra_main()


if __name__ == "__main__":
    main()
