"""The TRL releases ``verl_dgpo.trl`` supports, in one place.

``setup.py`` reads :data:`SUPPORTED_TRL` without importing this file (``ast.literal_eval``) and turns it
into the ``trl`` requirement of the ``[trl]`` extra; :func:`check_trl_version` refuses, in one line, a TRL
outside that range when ``verl_dgpo.trl`` is imported. Pure Python: no TRL import.
"""

from __future__ import annotations

from typing import Optional

#: Every TRL release tested (CI: 1.12.0 in the main environment, 1.16.0 by scripts/check_trl_release.sh).
#: 1.12.0 is the newest that can share an environment with verl's trainer (verl_dgpo/startup/trl_compat.py).
SUPPORTED_TRL = ("1.12.0", "1.16.0")

#: The TRL of the default test environment (the ``test`` extra): one next to which verl's trainer starts.
TEST_TRL = "1.12.0"


class TRLVersionError(RuntimeError):
    """The installed TRL is outside :func:`supported_range`."""


def supported_range() -> str:
    """The pip specifier admitting every supported release: ``>=1.12.0,<1.17``."""
    major, minor = (int(part) for part in SUPPORTED_TRL[-1].split(".")[:2])
    return f">={SUPPORTED_TRL[0]},<{major}.{minor + 1}"


def installed_trl_version() -> Optional[str]:
    import importlib.metadata

    try:
        return importlib.metadata.version("trl")
    except importlib.metadata.PackageNotFoundError:
        return None


def check_trl_version(version: Optional[str] = None) -> str:
    """Return the installed TRL version, or raise :class:`TRLVersionError` (one line) outside the range."""
    version = installed_trl_version() if version is None else version
    if version is None:
        raise TRLVersionError(f"TRL is not installed; verl_dgpo.trl needs trl{supported_range()}: pip install 'verl-dgpo[trl]'.")
    from packaging.specifiers import SpecifierSet

    if not SpecifierSet(supported_range()).contains(version, prereleases=True):
        raise TRLVersionError(
            f"trl=={version} is installed, but verl_dgpo.trl supports trl{supported_range()} "
            f"(tested: {', '.join(SUPPORTED_TRL)}). Run `pip install 'trl{supported_range()}'`."
        )
    return version
