"""The start-up runs each check once, in the order its docstring lists (verl_dgpo/startup/sequence.py)."""

import sys

import pytest

import verl_dgpo
import verl_dgpo.version
from verl_dgpo import main as entry
from verl_dgpo.startup import preflight, run_identity, sequence

from test_main_config import compose_dgpo


def test_main_checks_the_release_once_and_hands_it_to_the_start_up(monkeypatch):
    calls, handed = [], []
    real = sequence.check_verl_version
    monkeypatch.setattr(sequence, "check_verl_version", lambda *a: calls.append(a) or real(*a))
    monkeypatch.setattr(entry, "start", lambda config, version: handed.append(version))
    monkeypatch.delenv("VERL_USE_EXTERNAL_MODULES", raising=False)  # main() names the plugin; restored after
    monkeypatch.setattr(sys, "argv", ["verl-dgpo-train", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2"])
    entry.main()
    assert len(calls) == 1 and handed == [verl_dgpo.version.installed_verl_version()]


def test_check_installed_uses_the_release_it_is_given(monkeypatch):
    def checked_again(*args):
        raise AssertionError("the verl release was checked a second time")

    monkeypatch.setattr(verl_dgpo.version, "check_verl_version", checked_again)
    assert verl_dgpo.check_installed(verl_dgpo.version.installed_verl_version()) in {
        verl_dgpo.VIA_ENTRY_POINT, verl_dgpo.VIA_EXTERNAL_MODULES,
    }  # fmt: skip


def test_start_runs_each_step_once_in_the_documented_order(monkeypatch):
    """Every step replaced by a recorder that passes the config on; Ray is never started."""
    order = []

    def step(name, returns=None):
        def record(config, *args, **kwargs):
            order.append(name)
            return config if returns == "config" else returns

        return record

    monkeypatch.setattr(sequence, "check_verl_can_import_trl", lambda: order.append("trl"))
    monkeypatch.setattr(sequence, "check_keys", step("keys", "config"))
    monkeypatch.setattr(preflight, "checks_without_verl", step("files", []))
    monkeypatch.setattr(sequence, "check_with_verl", step("with verl", "config"))
    monkeypatch.setattr(preflight, "checks_with_verl", step("verl's validate_config"))
    monkeypatch.setattr(run_identity, "guard", step("checkpoint folder"))
    monkeypatch.setattr(sequence, "bounded_ray_start", lambda *a, **k: order.append("ray"))
    monkeypatch.setattr(sequence, "check_verl_version", lambda *a: pytest.fail("the release was checked again"))
    sequence.start(compose_dgpo(), version="0.9.1")
    assert order == ["trl", "keys", "files", "with verl", "verl's validate_config", "checkpoint folder", "ray"]
