"""``VERL_USE_EXTERNAL_MODULES``: the modules ``import verl`` imports in every process that imports it.

verl reads the variable at ``import verl`` (comma-separated module names) and, unlike its entry-point
loading, lets an import failure raise. Ray workers inherit the driver's environment, so a module named
here before Ray starts reaches every worker. Pure Python: no verl import.
"""

from __future__ import annotations

import os
from typing import MutableMapping, Optional

VARIABLE = "VERL_USE_EXTERNAL_MODULES"


def external_modules(env: Optional[MutableMapping[str, str]] = None) -> list[str]:
    """The module names listed in ``env`` (default ``os.environ``), in order, without empty entries."""
    env = os.environ if env is None else env
    return [name.strip() for name in env.get(VARIABLE, "").split(",") if name.strip()]


def add_external_module(module: str, env: Optional[MutableMapping[str, str]] = None) -> None:
    """Append ``module`` to ``VERL_USE_EXTERNAL_MODULES`` in ``env`` (default ``os.environ``) unless listed."""
    env = os.environ if env is None else env
    names = external_modules(env)
    if module not in names:
        env[VARIABLE] = ",".join(names + [module])
