"""Where the installed verl's files are, found without running ``import verl``.

``import verl`` takes seconds (it imports torch, tensordict and transformers). The entry point composes its
config from verl's yaml folder and refuses bad input before it imports verl, so it locates verl's files
through ``importlib.util.find_spec("verl")``, which finds the package without executing it.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Optional


def package_dir(name: str = "verl") -> Optional[str]:
    """The installed package ``name``'s folder (verl's by default), found without running it; None when it is
    not importable. :mod:`verl_dgpo.startup.trl_compat` finds TRL's with it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    return locations[0] if locations else None


def config_dir() -> Optional[str]:
    """verl's hydra config folder (what ``pkg://verl.trainer.config`` names), or None when verl has none."""
    root = package_dir()
    folder = os.path.join(root, "trainer", "config") if root else None
    return folder if folder and os.path.isfile(os.path.join(folder, "ppo_trainer.yaml")) else None


def has_module(dotted: str) -> bool:
    """Whether verl ships the module ``dotted`` (e.g. ``verl.trainer.main_ppo_v0``) as a source file."""
    root = package_dir()
    parts = dotted.split(".")
    if root is None or parts[0] != "verl":
        return False
    path = os.path.join(root, *parts[1:])
    return os.path.isfile(path + ".py") or os.path.isfile(os.path.join(path, "__init__.py"))
