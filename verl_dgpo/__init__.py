"""verl-dgpo: DGPO (Decoupled Gradient Policy Optimization, arXiv 2603.14389) for verl.

Importing this package imports neither verl nor torch; verl loads :mod:`verl_dgpo.registry` itself
through the ``verl.plugins`` entry point. :func:`check_installed` makes a failure of that loud.
"""

from verl_dgpo.version import VERL_VERSION, __version__

ENTRY_POINT_GROUP = "verl.plugins"
ENTRY_POINT_VALUE = "verl_dgpo.registry"

__all__ = ["__version__", "VERL_VERSION", "check_installed", "PluginNotInstalledError"]


class PluginNotInstalledError(RuntimeError):
    """verl does not see verl-dgpo's losses (the entry point is missing, disabled or failed to import)."""


def check_installed() -> None:
    """Raise :class:`PluginNotInstalledError` unless ``import verl`` registered every verl-dgpo loss.

    verl imports plugins at ``import verl`` and logs a failure at DEBUG level only, which in a Ray
    worker surfaces much later as "Unsupported loss mode: dgpo". Call this on the driver instead.
    """
    import importlib
    import importlib.metadata
    import os
    import sys

    if not any(ep.value == ENTRY_POINT_VALUE for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)):
        raise PluginNotInstalledError(
            f"no '{ENTRY_POINT_GROUP}' entry point points at {ENTRY_POINT_VALUE}: verl-dgpo is not installed in "
            f"this environment ({sys.executable}). Install it with `pip install -e .` from the checkout."
        )
    policy = os.environ.get("VERL_USE_EXTERNAL_PLUGINS", "auto").strip().lower()
    if policy == "none" or (policy != "auto" and "dgpo" not in {p.strip() for p in policy.split(",")}):
        raise PluginNotInstalledError(
            f"VERL_USE_EXTERNAL_PLUGINS={policy!r} stops `import verl` from loading verl-dgpo in Ray workers; "
            "unset it or add 'dgpo' to it."
        )
    import verl  # noqa: F401  (loads the entry points)

    try:  # a no-op when verl loaded it; otherwise this raises the error verl swallowed at DEBUG level
        importlib.import_module(ENTRY_POINT_VALUE)
    except Exception as err:
        raise PluginNotInstalledError(f"verl could not import its plugin {ENTRY_POINT_VALUE}: {err!r}") from err

    from verl.trainer.ppo import core_algos

    from verl_dgpo.registry import REGISTERED_POLICY_LOSSES

    for name, fn in REGISTERED_POLICY_LOSSES.items():
        if core_algos.POLICY_LOSS_REGISTRY.get(name) is not fn:
            raise PluginNotInstalledError(f"verl's policy loss {name!r} is not verl-dgpo's {fn.__qualname__}")
