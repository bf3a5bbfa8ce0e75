"""Quiet by default: the local preset hides the start-up lines that are expected on a machine without a GPU.

Each is harmless there, and none is hidden by patching verl or Ray:

- verl's platform detection, run on the driver before the preset registers its ``cpu`` platform, logs
  "No supported accelerator detected … Falling back to 'nvidia'", "Platform 'nvidia' … is registered but
  not available" and then "Replacing already-initialised platform 'cuda' with 'cpu'" (logger
  ``verl.plugin.platform.platform_manager``): that logger is set to ERROR in the driver;
- ``import verl.workers.engine`` warns "<name> engine is not available" for each optional training engine
  that is not installed (torchtitan, veomni, automodel, mindspeed, megatron; FSDP is what runs): a warnings
  filter in the driver, and the same filter in every Ray process through ``PYTHONWARNINGS``;
- verl warns "Disabled critic as algorithm.adv_estimator != gae" (GRPO-style methods use no critic): a
  warnings filter in the driver and the workers;
- Ray warns "Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to opt out"
  when ``RAY_AUTH_MODE`` is unset: the preset sets ``RAY_AUTH_MODE=token`` (the same token authentication,
  chosen explicitly, which Ray does not warn about) unless the user set it.

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
RAY_AUTH_MODE = "RAY_AUTH_MODE"


def enabled(config) -> bool:
    """``local_cpu.quiet`` (default true) of a local-preset config."""
    local = config.get("local_cpu", None) or {}
    return bool(local.get("enabled", False)) and bool(local.get("quiet", True))


def quiet_driver() -> None:
    """Filter the harmless warnings in this (the driver's) process."""
    logging.getLogger(PLATFORM_LOGGER).setLevel(logging.ERROR)
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
    env.setdefault(RAY_AUTH_MODE, "token")
