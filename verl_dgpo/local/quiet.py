"""Quiet by default: the local preset hides the start-up lines that are expected on a machine without a GPU.

Each is harmless there, and none is hidden by patching verl or Ray:

- verl's platform detection, run on the driver before the preset registers its ``cpu`` platform, logs
  "No supported accelerator detected … Falling back to 'nvidia'", "Platform 'nvidia' … is registered but
  not available" and then "Replacing already-initialised platform 'cuda' with 'cpu'": a logging filter on
  that logger (``verl.plugin.platform.platform_manager``) drops exactly these three (a filter, not a level:
  verl sets the logger's level when the module is imported);
- Ray logs "Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to opt out"
  when it starts the local cluster with its default token authentication: the same kind of filter on
  Ray's logger (authentication stays on);
- ``import verl.workers.engine`` warns "<name> engine is not available" for each optional training engine
  that is not installed (torchtitan, veomni, automodel, mindspeed, megatron; FSDP is what runs): a warnings
  filter in the driver, and the same filter in every Ray process through ``PYTHONWARNINGS``;
- verl warns "Disabled critic as algorithm.adv_estimator != gae" (GRPO-style methods use no critic): a
  warnings filter in the driver and the workers.

:func:`quiet_driver` applies the driver's part (call it before verl's config checks);
:func:`quiet_workers` the environment the Ray processes inherit (call it before Ray starts).
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import MutableMapping, Optional

#: (start of the warning's message, why it is harmless on the local preset)
HARMLESS_WARNINGS = (
    ("torchtitan engine is not available", "optional training engine; the preset trains with FSDP"),
    ("veomni engine is not available", "optional training engine; the preset trains with FSDP"),
    ("automodel engine is not available", "optional training engine; the preset trains with FSDP"),
    ("mindspeed engine is not available", "optional training engine; the preset trains with FSDP"),
    ("megatron engine is not available", "optional training engine; the preset trains with FSDP"),
    ("Disabled critic as algorithm.adv_estimator != gae", "group-relative methods use no critic"),
)
PLATFORM_LOGGER = "verl.plugin.platform.platform_manager"
RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
#: logger -> starts of the harmless lines it logs
HARMLESS_LOG_LINES = {
    PLATFORM_LOGGER: (
        "No supported accelerator detected",
        "Platform 'nvidia' (PlatformCUDA) is registered but not available",
        "Replacing already-initialised platform 'cuda' with 'cpu'",
    ),
    RAY_AUTH_LOGGER: ("Token authentication is enabled for this Ray cluster",),
}


class DropLines(logging.Filter):
    """Drops the records whose message starts with one of ``prefixes``."""

    def __init__(self, prefixes):
        super().__init__()
        self.prefixes = tuple(prefixes)

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


def enabled(config) -> bool:
    """``local_cpu.quiet`` (default true) of a local-preset config."""
    local = config.get("local_cpu", None) or {}
    return bool(local.get("enabled", False)) and bool(local.get("quiet", True))


def quiet_driver() -> None:
    """Filter the harmless warnings in this (the driver's) process (idempotent)."""
    for name, prefixes in HARMLESS_LOG_LINES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropLines) for f in logger.filters):
            logger.addFilter(DropLines(prefixes))
    for message, _ in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=UserWarning)


def python_warnings_value(existing: str = "") -> str:
    """``PYTHONWARNINGS`` with one ``ignore:<message>:UserWarning`` entry per harmless warning appended
    (the user's own entries kept first; ``PYTHONWARNINGS`` matches the message's start, as typed)."""
    entries = [e for e in existing.split(",") if e.strip()]
    for message, _ in HARMLESS_WARNINGS:
        entry = f"ignore:{message}:UserWarning"
        if entry not in entries:
            entries.append(entry)
    return ",".join(entries)


def quiet_workers(env: Optional[MutableMapping[str, str]] = None) -> None:
    """Environment for every Ray process of the run (they inherit the driver's)."""
    env = os.environ if env is None else env
    env["PYTHONWARNINGS"] = python_warnings_value(env.get("PYTHONWARNINGS", ""))
