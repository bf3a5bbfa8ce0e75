"""verl-dgpo: DGPO (Decoupled Gradient Policy Optimization, arXiv 2603.14389) for verl.

Importing this package imports neither verl nor torch. verl loads :mod:`verl_dgpo.registry` itself: from
verl 0.9.0 through the ``verl.plugins`` entry point, in every release through the modules named in
``VERL_USE_EXTERNAL_MODULES`` (the only way on 0.7.1 and 0.8.0; ``python -m verl_dgpo.main`` sets it).
:func:`check_installed` says which of the two is active and makes a failure of both loud.
"""

from verl_dgpo.version import SUPPORTED_VERL, VERL_VERSION, __version__

ENTRY_POINT_GROUP = "verl.plugins"
ENTRY_POINT_VALUE = "verl_dgpo.registry"

#: What :func:`check_installed` returns, one per mechanism that loads the plugin into Ray workers.
VIA_ENTRY_POINT = "verl.plugins entry point"
VIA_EXTERNAL_MODULES = "VERL_USE_EXTERNAL_MODULES"

__all__ = [
    "__version__",
    "SUPPORTED_VERL",
    "VERL_VERSION",
    "check_installed",
    "PluginNotInstalledError",
    "VIA_ENTRY_POINT",
    "VIA_EXTERNAL_MODULES",
]


class PluginNotInstalledError(RuntimeError):
    """verl, or a Ray worker started from this process, would not see verl-dgpo's losses."""


def _entry_point_problem() -> "str | None":
    """Why ``import verl`` in a fresh process would not load our entry point, or None if it would."""
    import importlib.metadata
    import os
    import sys

    if not any(ep.value == ENTRY_POINT_VALUE for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)):
        return (
            f"no '{ENTRY_POINT_GROUP}' entry point points at {ENTRY_POINT_VALUE}: verl-dgpo is not installed in "
            f"this environment ({sys.executable}). Install it with `pip install -e .` from the checkout."
        )
    policy = os.environ.get("VERL_USE_EXTERNAL_PLUGINS", "auto").strip().lower()
    if policy == "none" or (policy != "auto" and "dgpo" not in {p.strip() for p in policy.split(",")}):
        return (
            f"VERL_USE_EXTERNAL_PLUGINS={policy!r} stops `import verl` from loading verl-dgpo in Ray workers; "
            "unset it or add 'dgpo' to it."
        )
    return None


def check_installed(version: "str | None" = None) -> str:
    """Which mechanism loads verl-dgpo into every process that imports verl (driver and Ray workers).

    Returns :data:`VIA_EXTERNAL_MODULES` when ``VERL_USE_EXTERNAL_MODULES`` names ``verl_dgpo.registry``
    (any release; Ray workers inherit the variable), else :data:`VIA_ENTRY_POINT` (verl >= 0.9.0 with the
    package installed). Raises :class:`PluginNotInstalledError` when neither holds, e.g. on verl 0.8.0
    without the variable, where a Ray worker would fail much later with "Unsupported loss mode: dgpo";
    or when verl's registries do not hold our functions. Call it on the driver, before Ray starts.
    ``version``: the verl release the caller has already checked (checked here when None).
    """
    import importlib

    from verl_dgpo.verl_glue.external_modules import VARIABLE, external_modules
    from verl_dgpo.version import ENTRY_POINTS_SINCE, check_verl_version, has_entry_points

    if version is None:
        try:
            version = check_verl_version()
        except RuntimeError as err:
            raise PluginNotInstalledError(str(err)) from err
    if ENTRY_POINT_VALUE in external_modules():
        mechanism = VIA_EXTERNAL_MODULES
    elif not has_entry_points(version):
        raise PluginNotInstalledError(
            f"verl=={version} loads plugins only from {VARIABLE} (entry points need verl>={ENTRY_POINTS_SINCE}), "
            f"and it does not name {ENTRY_POINT_VALUE}: Ray workers would not see the dgpo loss. "
            f"Use `python -m verl_dgpo.main` (it sets the variable) or `export {VARIABLE}={ENTRY_POINT_VALUE}`."
        )
    else:
        problem = _entry_point_problem()
        if problem is not None:
            raise PluginNotInstalledError(problem)
        mechanism = VIA_ENTRY_POINT

    import verl  # noqa: F401  (loads the entry points and the external modules)

    try:  # a no-op when verl loaded it; otherwise this raises the error verl swallowed at DEBUG level
        importlib.import_module(ENTRY_POINT_VALUE)
    except Exception as err:
        raise PluginNotInstalledError(f"verl could not import its plugin {ENTRY_POINT_VALUE}: {err!r}") from err

    from verl.trainer.ppo import core_algos

    from verl_dgpo.registry import REGISTERED_ADV_ESTIMATORS, REGISTERED_POLICY_LOSSES

    for name, fn in REGISTERED_POLICY_LOSSES.items():
        if core_algos.POLICY_LOSS_REGISTRY.get(name) is not fn:
            raise PluginNotInstalledError(f"verl's policy loss {name!r} is not verl-dgpo's {fn.__qualname__}")
    for name, fn in REGISTERED_ADV_ESTIMATORS.items():
        if core_algos.ADV_ESTIMATOR_REGISTRY.get(name) is not fn:
            raise PluginNotInstalledError(f"verl's advantage estimator {name!r} is not verl-dgpo's {fn.__qualname__}")
    return mechanism
