"""Versions in one place: this package's own, and the verl releases it supports.

``setup.py`` reads this file without importing it (``ast.literal_eval`` of the tuples below) and turns
:data:`SUPPORTED_VERL` into its ``verl`` requirement, ``verl>=0.7.1`` with no upper bound. The policy of
the trainer entry point, before Ray starts: a verl older than the oldest tested release is refused in
one line; a tested one runs; any other (a newer release, a patch release, verl's main branch) runs only
if every contract of :mod:`verl_dgpo.check` holds on it, with one note saying so, and is refused in one
line naming the contract that broke otherwise. Adding a tested release: append it to
:data:`SUPPORTED_VERL` (and to :data:`CPU_MAIN_JOB_VERL` if CI runs the CPU preset on it); ``.ci/run``
checks every release listed here. Pure Python: no verl import.
"""

from __future__ import annotations

from typing import Optional

__version__ = "0.1.0"

#: Every verl release verl-dgpo is tested against (CI: the main environment and scripts/check_verl_release.sh).
SUPPORTED_VERL = ("0.7.1", "0.8.0", "0.9.0", "0.9.1")

#: Tested releases on which CI runs ``python -m verl_dgpo.main --config-name local_cpu`` (verl's trainer on
#: CPU). Not a gate: the preset runs on any verl whose patch targets are unchanged
#: (:func:`verl_dgpo.local.patches.check_patch_targets`); 0.7.1 and 0.8.0 lack them.
CPU_MAIN_JOB_VERL = ("0.9.0", "0.9.1")

#: First release whose ``import verl`` loads the ``verl.plugins`` entry points; older ones load only the
#: modules named in ``VERL_USE_EXTERNAL_MODULES``.
ENTRY_POINTS_SINCE = "0.9.0"

#: The newest supported release: the one the main environment (README's install, .ci/run) runs.
VERL_VERSION = SUPPORTED_VERL[-1]


class VerlVersionError(RuntimeError):
    """The installed verl is not a release verl-dgpo supports (or not one the requested job runs on)."""


def release(version: str) -> tuple[int, ...]:
    """``"0.9.1"`` → ``(0, 9, 1)``; pre-/dev-/local suffixes are dropped (``"0.10.0.dev0"`` → ``(0, 10, 0)``)."""
    from packaging.version import Version

    return Version(version).release


def supported_range() -> str:
    """The pip specifier of the verl releases verl-dgpo admits: ``>=0.7.1`` (no upper bound, as in setup.py)."""
    return f">={SUPPORTED_VERL[0]}"


def installed_verl_version() -> Optional[str]:
    """The installed verl's version from its package metadata (no ``import verl``), or None if absent."""
    import importlib.metadata

    try:
        return importlib.metadata.version("verl")
    except importlib.metadata.PackageNotFoundError:
        return None


def check_verl_version(version: Optional[str] = None) -> str:
    """Return the installed verl version, or raise :class:`VerlVersionError` if it is older than the oldest
    tested release (or absent). A newer or untested one passes here; :func:`is_tested` tells which, and
    ``verl_dgpo.main`` then runs the contract checks (:mod:`verl_dgpo.check`) before starting."""
    version = installed_verl_version() if version is None else version
    if version is None:
        raise VerlVersionError(f"verl is not installed; verl-dgpo needs verl{supported_range()}.")
    from packaging.specifiers import SpecifierSet

    if not SpecifierSet(supported_range()).contains(version, prereleases=True):
        raise VerlVersionError(
            f"verl=={version} is installed, but verl-dgpo needs verl{supported_range()} "
            f"(tested: {', '.join(SUPPORTED_VERL)}). Run `pip install 'verl=={VERL_VERSION}'`."
        )
    return version


def is_tested(version: str) -> bool:
    """Whether ``version`` is one of :data:`SUPPORTED_VERL` (CI runs everything on it)."""
    from packaging.version import Version

    return any(Version(version) == Version(tested) for tested in SUPPORTED_VERL)


def untested_note(version: str) -> str:
    """The entry point's note for an untested verl whose every contract holds."""
    from packaging.version import Version

    if Version(version) > Version(VERL_VERSION):
        return f"verl {version} is newer than the newest tested release {VERL_VERSION}; every contract holds"
    return f"verl {version} is not a tested release ({', '.join(SUPPORTED_VERL)}); every contract holds"


def has_entry_points(version: Optional[str] = None) -> bool:
    """Whether this verl's ``import verl`` loads the ``verl.plugins`` entry points."""
    version = installed_verl_version() if version is None else version
    return version is not None and release(version) >= release(ENTRY_POINTS_SINCE)
