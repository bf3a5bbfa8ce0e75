"""``verl-dgpo-check`` and the version policy built on it, against contracts broken on purpose.

The contract code is real (real calls into the installed verl); what is faked is a host that breaks a
contract (a loss caller with another signature, a host that mis-calls our loss, a registry that drops
our entry) or the version string (newer than the newest tested release). The fresh-process registration
rows are replaced by nothing in the in-process tests (they start two `import verl` processes); the
end-to-end test at the bottom runs them for real.
"""

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import verl_dgpo.registry  # noqa: F401
from verl_dgpo import main as entry, version
from verl_dgpo.verl_glue import contracts


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def in_process_only(monkeypatch):
    monkeypatch.setattr(contracts, "start_registration_probes", lambda include_entry_point=True: [])


def rows_by_name(rows):
    return {row.contract: row for row in rows}


def test_the_check_batch_covers_every_region():
    """The check compares verl's gradients with verl_dgpo.reference's closed forms (checked by hand in
    tests/test_reference.py) on a batch that has a token in every region of every method."""
    ratios = [math.exp(lr) for row in contracts.LOG_RATIOS for lr in row]  # the check batch covers every region
    assert any(r < 1 / 3 for r in ratios) and any(1 / 3 < r < 0.8 for r in ratios) and any(0.8 < r < 1.28 for r in ratios)
    assert any(1.28 < r < 3 for r in ratios) and any(r > 3 for r in ratios)


def test_every_contract_holds_on_this_verl(in_process_only):
    rows = contracts.run_checks()
    assert contracts.broken(rows) == []
    names = rows_by_name(rows)
    for loss in verl_dgpo.registry.REGISTERED_POLICY_LOSSES:
        assert names[f"policy loss {loss}"].status == contracts.HOLDS
    assert names["estimator dgpo"].status == contracts.HOLDS and names["v0 trainer Pass@k hooks"].status == contracts.HOLDS


def test_a_ppo_loss_with_another_signature_breaks_the_call_site_contract(monkeypatch, in_process_only, capsys):
    import verl.workers.utils.losses as losses

    def ppo_loss(config, model_output, data, dp_group):  # a release that added a required argument
        raise AssertionError("never reached")

    monkeypatch.setattr(losses, "ppo_loss", ppo_loss)
    assert contracts.main([]) == 1
    out = capsys.readouterr().out
    broken = [line for line in out.splitlines()[:-1] if "  broken  " in line]
    assert len(broken) == len(verl_dgpo.registry.REGISTERED_POLICY_LOSSES)
    assert all(line.startswith("actor call site ppo_loss (") for line in broken)
    assert "dp_group" in broken[0]
    assert "policy loss dgpo" in out and out.splitlines()[-1].startswith(f"verl {version.installed_verl_version()}: ")


def test_a_call_site_that_drops_the_losss_metrics_is_caught(monkeypatch, in_process_only):
    """verl's ppo_loss passing on no metrics of ours: every call-site row is broken, naming the metric."""
    import verl.workers.utils.losses as losses

    real = losses.ppo_loss
    monkeypatch.setattr(losses, "ppo_loss", lambda *args, **kwargs: (real(*args, **kwargs)[0], {}))
    names = rows_by_name(contracts.run_checks())
    for loss in verl_dgpo.registry.REGISTERED_POLICY_LOSSES:
        row = names[f"actor call site ppo_loss ({loss})"]
        assert row.status == contracts.BROKEN and f"actor/{loss}_ln_frac" in row.detail
        assert names[f"policy loss {loss}"].status == contracts.HOLDS


def test_a_host_that_mis_calls_our_loss_is_caught(monkeypatch, in_process_only):
    """verl handing our loss another aggregation than the configured token-mean (the sequences have unequal
    lengths, so every gradient changes): every loss row is broken, naming the closed form it missed."""
    from verl.trainer.ppo import core_algos

    real = core_algos.get_policy_loss_fn

    def get_policy_loss_fn(name):
        fn = real(name)
        return lambda loss_agg_mode="token-mean", **kw: fn(loss_agg_mode="seq-mean-token-mean", **kw)

    monkeypatch.setattr(core_algos, "get_policy_loss_fn", get_policy_loss_fn)
    names = rows_by_name(contracts.run_checks())
    for loss in verl_dgpo.registry.REGISTERED_POLICY_LOSSES:
        assert names[f"policy loss {loss}"].status == contracts.BROKEN
        assert "closed form" in names[f"policy loss {loss}"].detail


def test_a_registry_that_drops_our_entry_breaks_that_loss(monkeypatch, in_process_only):
    from verl.trainer.ppo import core_algos

    monkeypatch.delitem(core_algos.POLICY_LOSS_REGISTRY, "dgpo")
    names = rows_by_name(contracts.run_checks())
    assert names["policy loss dgpo"].status == contracts.BROKEN and "dgpo" in names["policy loss dgpo"].detail
    assert names["policy loss gppo"].status == contracts.HOLDS


# --- the version policy of the entry point (the version string faked, the contract code real) ----------------


def fake_installed(monkeypatch, fake):
    import importlib.metadata as md

    real = md.version
    monkeypatch.delenv("VERL_USE_EXTERNAL_MODULES", raising=False)  # main() sets it; restored after the test
    monkeypatch.setattr(md, "version", lambda name: fake if name == "verl" else real(name))


def test_older_verl_is_refused_in_one_line_before_hydra(monkeypatch, capsys):
    fake_installed(monkeypatch, "0.7.0")
    monkeypatch.setattr(entry, "_hydra_main", lambda: pytest.fail("hydra was reached"))
    with pytest.raises(SystemExit) as info:
        entry.main()
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and "verl==0.7.0" in err and ">=0.7.1" in err


def test_newer_verl_is_admitted_with_one_note_when_every_contract_holds(monkeypatch, in_process_only, capsys):
    fake_installed(monkeypatch, "0.10.0")
    reached = []
    monkeypatch.setattr(entry, "_hydra_main", lambda: reached.append(True))
    entry.main()
    err = capsys.readouterr().err
    assert reached == [True]
    assert err.splitlines() == [
        f"verl-dgpo: note: verl 0.10.0 is newer than the newest tested release {version.SUPPORTED_VERL[-1]}; every contract holds"
    ]


def test_newer_verl_with_a_broken_contract_is_refused_naming_it(monkeypatch, in_process_only, capsys):
    from verl.trainer.ppo import core_algos

    fake_installed(monkeypatch, "0.10.0")
    monkeypatch.delitem(core_algos.POLICY_LOSS_REGISTRY, "dgpo")
    monkeypatch.setattr(entry, "_hydra_main", lambda: pytest.fail("hydra was reached"))
    with pytest.raises(SystemExit) as info:
        entry.main()
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1
    assert err.startswith("verl-dgpo: error: verl 0.10.0 is not a tested release, and the contract 'policy loss dgpo'")


def test_tested_verl_runs_no_contract_check(monkeypatch):
    monkeypatch.setattr(contracts, "run_checks", lambda **kw: pytest.fail("contracts checked on a tested release"))
    reached = []
    monkeypatch.setattr(entry, "_hydra_main", lambda: reached.append(True))
    fake_installed(monkeypatch, version.SUPPORTED_VERL[-1])
    entry.main()
    assert reached == [True]


DROPPING_REGISTRY = """
import importlib.metadata as md
_real = md.version
md.version = lambda name: "0.10.0" if name == "verl" else _real(name)
import atexit, runpy, sys
from verl.trainer.ppo import core_algos

class Dropping(dict):  # a registry that silently drops our entry
    def __setitem__(self, key, value):
        if key != "dgpo":
            super().__setitem__(key, value)

# (`import verl` may already have registered it through the entry point: that entry is dropped too)
core_algos.POLICY_LOSS_REGISTRY = Dropping({k: v for k, v in core_algos.POLICY_LOSS_REGISTRY.items() if k != "dgpo"})
atexit.register(lambda: print("RAY_STARTED" if "ray" in sys.modules and sys.modules["ray"].is_initialized() else "NO_RAY", file=sys.stderr))
sys.argv = ["verl_dgpo.main", "trainer.total_training_steps=1"]
runpy.run_module("verl_dgpo.main", run_name="__main__")
"""


def test_entry_point_refuses_a_newer_verl_whose_registry_drops_our_entry_in_one_line_before_ray():
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERL_USE_EXTERNAL")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(DROPPING_REGISTRY)],
        capture_output=True, text=True, env=env, timeout=300, cwd="/",
    )  # fmt: skip
    errors = [line for line in proc.stderr.splitlines() if line.startswith("verl-dgpo: error:")]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(errors) == 1 and "'policy loss dgpo'" in errors[0] and "verl 0.10.0" in errors[0]
    assert proc.stderr.splitlines()[-1] == "NO_RAY" and "Traceback" not in proc.stderr
