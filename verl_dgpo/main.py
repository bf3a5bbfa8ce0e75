"""Trainer entry point: ``python -m verl_dgpo.main`` (console script ``verl-dgpo-train``).

Before hydra, it checks the verl release (a tested one, or one on which every contract holds) and names the
plugin in ``VERL_USE_EXTERNAL_MODULES``, so that the driver and every Ray worker load it on every release
(0.7.1 and 0.8.0 have no entry-point loading). It then composes ``verl_dgpo/config/dgpo_trainer.yaml``
(verl's ``ppo_trainer`` plus our deltas; verl's yaml folder by its file path,
:func:`with_verl_config_folder`, so that composing imports no verl) and hands the config to the start-up
sequence, :func:`verl_dgpo.startup.sequence.start`, which checks everything else once, in order, before Ray
starts, and runs verl's own PPO trainer. A user's mistake is one line and exit status 2. Hydra's flags work as
usual, e.g. ``python -m verl_dgpo.main --cfg job --resolve`` prints the composed config.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

import hydra
from omegaconf import DictConfig, OmegaConf

from verl_dgpo.startup.errors import ConfigError, user_error_in  # noqa: F401  (ConfigError: the entry's errors)
from verl_dgpo.startup.sequence import check_release, load_plugin_everywhere, prepare, start  # noqa: F401
from verl_dgpo.startup.sequence import task_runner_class  # noqa: F401
from verl_dgpo.verl_glue.methods import verl_loss_mode
from verl_dgpo.version import VerlVersionError

OmegaConf.register_new_resolver("dgpo_loss_mode", verl_loss_mode, replace=True)

#: The verl release :func:`main` checked before hydra, handed to the start-up sequence.
_checked_release: Optional[str] = None


#: Our yaml folder (the package ``verl_dgpo.config``), as a file-system path, the same whichever way
#: the entry point is started (``python -m``, console script).
CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config")


@hydra.main(config_path=CONFIG_DIR, config_name="dgpo_trainer", version_base=None)
def _hydra_main(config: DictConfig) -> None:
    try:
        start(config, _checked_release)
    except Exception as err:
        cause = user_error_in(err)
        if cause is None:
            raise
        print(f"verl-dgpo: error: {cause}", file=sys.stderr)
        sys.exit(2)


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
    global _checked_release
    try:
        _checked_release = check_release()
        load_plugin_everywhere()
    except VerlVersionError as err:
        print(f"verl-dgpo: error: {err}", file=sys.stderr)
        sys.exit(2)
    sys.argv[1:] = with_verl_config_folder(sys.argv[1:])
    _hydra_main()


if __name__ == "__main__":
    main()
