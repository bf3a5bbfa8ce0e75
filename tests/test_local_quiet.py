"""Quiet by default: the expected start-up warnings are filtered, other warnings still show."""

import logging
import subprocess
import sys
import warnings

from verl_dgpo.local import quiet


def test_python_warnings_value_keeps_the_users_entries_and_adds_each_harmless_one_once():
    value = quiet.python_warnings_value("error::DeprecationWarning")
    entries = value.split(",")
    assert entries[0] == "error::DeprecationWarning"
    assert "ignore:megatron engine is not available:UserWarning" in entries
    assert len(entries) == 1 + len(quiet.HARMLESS_WARNINGS)
    assert quiet.python_warnings_value(value) == value


def test_workers_get_the_filter():
    env = {}
    quiet.quiet_workers(env)
    assert "ignore:Disabled critic as algorithm.adv_estimator != gae:UserWarning" in env["PYTHONWARNINGS"].split(",")


def test_a_worker_with_that_environment_hides_exactly_those_warnings():
    """A fresh interpreter, as a Ray worker is, with PYTHONWARNINGS set as the preset sets it."""
    code = (
        "import warnings\n"
        "warnings.warn(\"megatron engine is not available: ModuleNotFoundError('megatron')\", UserWarning)\n"
        "warnings.warn('Disabled critic as algorithm.adv_estimator != gae. If it is not intended', UserWarning)\n"
        "warnings.warn('something else entirely', UserWarning)\n"
    )
    env = {"PYTHONWARNINGS": quiet.python_warnings_value("")}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert "something else entirely" in proc.stderr
    assert "megatron" not in proc.stderr and "Disabled critic" not in proc.stderr


def test_driver_filters_the_warnings_and_the_platform_fallback_lines(caplog):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet.quiet_driver()
        warnings.warn("veomni engine is not available: x", UserWarning)
        warnings.warn("an unrelated warning", UserWarning)
    assert [str(w.message) for w in seen] == ["an unrelated warning"]
    # the platform lines are dropped even after verl sets the logger's level on import, other lines kept
    logger = logging.getLogger(quiet.PLATFORM_LOGGER)
    logger.setLevel(logging.INFO)
    caplog.set_level(logging.INFO, logger=quiet.PLATFORM_LOGGER)
    logger.warning("No supported accelerator detected. Registered: %s. Falling back to 'nvidia'.", ("nvidia",))
    logger.warning("Replacing already-initialised platform 'cuda' with 'cpu'")
    logger.warning("a real problem")
    ray_logger = logging.getLogger(quiet.RAY_AUTH_LOGGER)
    ray_logger.warning("Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to opt out.")
    assert [r.getMessage() for r in caplog.records] == ["a real problem"]
    quiet.quiet_driver()  # idempotent
    assert sum(isinstance(f, quiet.DropLines) for f in logger.filters) == 1


def test_quiet_is_on_for_the_local_preset_unless_switched_off():
    assert quiet.enabled({"local_cpu": {"enabled": True}})
    assert not quiet.enabled({"local_cpu": {"enabled": True, "quiet": False}})
    assert not quiet.enabled({"trainer": {}})
