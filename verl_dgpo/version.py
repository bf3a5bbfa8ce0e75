"""Versions in one place: this package's own, and the verl releases it supports.

``setup.py`` reads this file without importing it (``ast.literal_eval`` of the tuples below) and turns
:data:`SUPPORTED_VERL` into its ``verl`` requirement. The trainer entry point refuses, before Ray starts,
a verl outside that range. Adding a release: append it to :data:`SUPPORTED_VERL` (and to
:data:`CPU_MAIN_JOB_VERL` if the CPU preset runs on it), and add ``bash scripts/check_verl_release.sh X``
to ``.ci/run``. Pure Python: no verl import.
"""

from __future__ import annotations

from typing import Optional

__version__ = "0.1.0"

#: Every verl release verl-dgpo is tested against (CI: the main environment and scripts/check_verl_release.sh).
SUPPORTED_VERL = ("0.7.1", "0.8.0", "0.9.0", "0.9.1")

#: Releases on which ``python -m verl_dgpo.main --config-name local_cpu`` brings verl's trainer up on CPU.
CPU_MAIN_JOB_VERL = ("0.9.0", "0.9.1")

#: First release whose ``import verl`` loads the ``verl.plugins`` entry points; older ones load only the
#: modules named in ``VERL_USE_EXTERNAL_MODULES``.
ENTRY_POINTS_SINCE = "0.9.0"

#: The newest supported release: the one the main environment (README's install, .ci/run) runs.
VERL_VERSION = SUPPORTED_VERL[-1]


class VerlVersionError(RuntimeError):
    """The installed verl is not a release verl-dgpo supports (or not one the requested job runs on)."""


def _release(version: str) -> tuple[int, ...]:
    """``"0.9.1"`` → ``(0, 9, 1)``; pre-/dev-/local suffixes are dropped (``"0.10.0.dev0"`` → ``(0, 10, 0)``)."""
    from packaging.version import Version

    return Version(version).release


def supported_range() -> str:
    """The pip specifier that admits every supported release: ``>=0.7.1,<0.10``."""
    major, minor = _release(SUPPORTED_VERL[-1])[:2]
    return f">={SUPPORTED_VERL[0]},<{major}.{minor + 1}"


def installed_verl_version() -> Optional[str]:
    """The installed verl's version from its package metadata (no ``import verl``), or None if absent."""
    import importlib.metadata

    try:
        return importlib.metadata.version("verl")
    except importlib.metadata.PackageNotFoundError:
        return None


def check_verl_version(version: Optional[str] = None) -> str:
    """Return the installed verl version, or raise :class:`VerlVersionError` if it is outside the range."""
    version = installed_verl_version() if version is None else version
    if version is None:
        raise VerlVersionError(f"verl is not installed; verl-dgpo needs verl{supported_range()}.")
    from packaging.specifiers import SpecifierSet

    if not SpecifierSet(supported_range()).contains(version, prereleases=True):
        raise VerlVersionError(
            f"verl=={version} is installed, but verl-dgpo supports verl{supported_range()} "
            f"(tested: {', '.join(SUPPORTED_VERL)}). Run `pip install 'verl=={VERL_VERSION}'`."
        )
    return version


def check_cpu_main_job(version: Optional[str] = None) -> None:
    """Raise :class:`VerlVersionError` unless the CPU preset (``--config-name local_cpu``) runs on this verl."""
    version = check_verl_version(version)
    if version not in CPU_MAIN_JOB_VERL:
        raise VerlVersionError(
            f"the local_cpu preset runs verl's trainer on CPU only with verl {' or '.join(CPU_MAIN_JOB_VERL)}, "
            f"but verl=={version} is installed. Run `pip install 'verl=={VERL_VERSION}'`, or use a GPU config."
        )


def has_entry_points(version: Optional[str] = None) -> bool:
    """Whether this verl's ``import verl`` loads the ``verl.plugins`` entry points."""
    version = installed_verl_version() if version is None else version
    return version is not None and _release(version) >= _release(ENTRY_POINTS_SINCE)
