"""Which verl releases are admitted (setup.py, the entry point) and how the plugin reaches Ray workers.

The release-by-release claims run in tests/release (and per release via scripts/check_verl_release.sh);
these check the gate itself against hand-written ranges. What an untested verl must pass instead of a
version list is tests/test_contract_check.py.
"""

import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

import verl_dgpo
from verl_dgpo import version

ROOT = Path(__file__).resolve().parents[1]
RANGE = SpecifierSet(">=0.7.1")  # written by hand: the oldest tested release and up, no upper bound


def test_supported_range_is_the_hand_written_one():
    assert SpecifierSet(version.supported_range()) == RANGE
    assert version.SUPPORTED_VERL == ("0.7.1", "0.8.0", "0.9.0", "0.9.1")


@pytest.mark.parametrize("release", ["0.7.1", "0.8.0", "0.9.0", "0.9.1"])
def test_supported_releases_pass_the_gate(release):
    assert version.check_verl_version(release) == release


@pytest.mark.parametrize("release", ["0.6.1", "0.7.0", "0.7.1rc1"])
def test_older_releases_are_refused_naming_the_range(release):
    with pytest.raises(version.VerlVersionError) as info:
        version.check_verl_version(release)
    message = str(info.value)
    assert "\n" not in message and f"verl=={release}" in message and ">=0.7.1" in message


@pytest.mark.parametrize("release", ["0.9.2", "0.10.0", "0.10.0.dev0", "1.0.0"])
def test_untested_newer_releases_pass_the_version_gate_but_are_not_tested(release):
    """They reach the contract checks (verl_dgpo.startup.sequence.check_contracts) instead of a refusal."""
    assert version.check_verl_version(release) == release
    assert not version.is_tested(release)
    assert version.untested_note(release) == (
        f"verl {release} is newer than the newest tested release 0.9.1; every contract holds"
    )


def test_tested_releases_are_tested():
    assert all(version.is_tested(r) for r in ("0.7.1", "0.8.0", "0.9.0", "0.9.1", "0.9.1.0"))
    assert not version.is_tested("0.8.1")


def test_setup_py_requires_the_same_range_for_verl_and_its_vllm_extra(tmp_path):
    """No upper bound (pip never downgrades a newer verl), and not verl's ``verl-core`` extra: on verl's main
    branch it names TransferQueue by a git URL, which pip cannot resolve from the package registry."""
    proc = subprocess.run(
        [sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    requires = (next(tmp_path.glob("*.egg-info")) / "requires.txt").read_text()
    section, by_section = "", {}
    for line in requires.splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif line.strip():
            by_section.setdefault(section, []).append(Requirement(line))
    verl = [r for r in by_section[""] if r.name == "verl"]
    assert len(verl) == 1 and verl[0].specifier == RANGE and not verl[0].extras
    assert {"TransferQueue", "fastapi", "uvicorn", "cachetools"} <= {r.name for r in by_section[""]}
    gpu = by_section["gpu"]
    assert [(r.name, r.extras, r.specifier) for r in gpu] == [("verl", {"vllm"}, RANGE)]


@pytest.mark.parametrize("release", ["0.7.1", "0.8.0"])
def test_check_installed_on_releases_without_entry_points_needs_the_variable(monkeypatch, release):
    monkeypatch.setattr(version, "installed_verl_version", lambda: release)
    monkeypatch.delenv("VERL_USE_EXTERNAL_MODULES", raising=False)
    with pytest.raises(verl_dgpo.PluginNotInstalledError, match="VERL_USE_EXTERNAL_MODULES"):
        verl_dgpo.check_installed()
    monkeypatch.setenv("VERL_USE_EXTERNAL_MODULES", "json,verl_dgpo.registry")
    assert verl_dgpo.check_installed() == verl_dgpo.VIA_EXTERNAL_MODULES


def test_check_installed_on_this_verl_names_the_entry_point_without_the_variable(monkeypatch):
    if not version.has_entry_points():
        pytest.skip("this verl has no entry-point loading (covered by tests/release)")
    monkeypatch.delenv("VERL_USE_EXTERNAL_MODULES", raising=False)
    monkeypatch.delenv("VERL_USE_EXTERNAL_PLUGINS", raising=False)
    assert verl_dgpo.check_installed() == verl_dgpo.VIA_ENTRY_POINT


@pytest.mark.parametrize("release,expected", [("0.7.1", False), ("0.8.0", False), ("0.9.0", True), ("0.9.1", True)])
def test_entry_points_from_0_9_0(release, expected):
    assert version.has_entry_points(release) is expected
