"""Which errors are the user's to fix: the entry point prints them as one line, no traceback, exit status 2."""

from __future__ import annotations

from verl_dgpo import PluginNotInstalledError
from verl_dgpo.maths.hyperparameters import DGPOConfigError
from verl_dgpo.startup.preflight import PreflightError
from verl_dgpo.startup.ray_start import RayStartTimeout
from verl_dgpo.startup.run_identity import RunIdentityError
from verl_dgpo.startup.trl_compat import TRLIncompatibleError
from verl_dgpo.verl_glue.methods import UnknownMethodError
from verl_dgpo.version import VerlVersionError


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
