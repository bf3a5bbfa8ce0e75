"""Claims that must hold on every tested verl release (verl_dgpo.version.SUPPORTED_VERL) and on the next one
(verl's main branch, ../shared/verl-next/, checked by ``scripts/check_verl_release.sh --wheel``), beyond what
``verl-dgpo-check`` checks on it.

They run in the main environment with README's test command, and in a venv per other release through
``scripts/check_verl_release.sh X``, right after ``verl-dgpo-check``. The check covers the losses through
verl's registry and its actor call sites (0.7.1's ``dp_actor``, the engine's ``ppo_loss``) against
``verl_dgpo/reference.py``'s closed forms, the step and the metrics those call sites pass on, the estimator
through ``compute_advantage``, and the registration in a fresh process by each mechanism. Here remains what
the check does not see: whether the release is a tested one, what ``check_installed`` answers (and that
nothing registers on 0.7.1/0.8.0 without the variable), and the entry point (``--cfg job``, its note on an
untested verl, its one-line refusals before Ray).
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

import verl_dgpo
from verl_dgpo.version import SUPPORTED_VERL, has_entry_points, installed_verl_version, is_tested, untested_note


ROOT = Path(__file__).resolve().parents[2]
VERL = installed_verl_version()


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERL_USE_EXTERNAL")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def run_python(code, **env):
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, env=clean_env(**env), timeout=300, cwd="/",
    )  # fmt: skip


def test_this_release_is_a_tested_one_or_newer():
    from packaging.version import Version

    assert is_tested(VERL) or Version(VERL) > Version(SUPPORTED_VERL[-1]), f"verl {VERL}: add it to SUPPORTED_VERL"


# --- registration in a fresh process, by this release's own mechanism ------------------------------

REGISTRATION_PROBE = """
    import sys
    assert "verl_dgpo" not in sys.modules  # nothing of ours is imported before verl is
    import verl
    from verl.trainer.ppo import core_algos
    fn = core_algos.POLICY_LOSS_REGISTRY.get("dgpo")
    est = core_algos.ADV_ESTIMATOR_REGISTRY.get("dgpo")
    print("loss", getattr(fn, "__module__", None), "estimator", getattr(est, "__module__", None))
    import verl_dgpo
    try:
        print("mechanism", verl_dgpo.check_installed().replace(" ", "_"))
    except verl_dgpo.PluginNotInstalledError as err:
        print("refused", str(err).replace(" ", "_"))
"""


def test_check_installed_names_this_releases_mechanism_in_a_fresh_process():
    """verl-dgpo-check's registration rows see where a fresh ``import verl`` registers the loss; this is what
    a user's ``check_installed`` answers, and that a release without entry points registers nothing unasked."""
    plain = run_python(REGISTRATION_PROBE)
    assert plain.returncode == 0, plain.stderr
    words = plain.stdout.split()
    if has_entry_points(VERL):  # 0.9.x: `import verl` loads the verl.plugins entry point (registry: the check's row)
        assert words[4:] == ["mechanism", verl_dgpo.VIA_ENTRY_POINT.replace(" ", "_")]
    else:  # 0.7.1/0.8.0: nothing without the variable, and check_installed says so
        assert words[:4] == ["loss", "None", "estimator", "None"]
        assert words[4] == "refused" and "VERL_USE_EXTERNAL_MODULES" in words[5]

    named = run_python(REGISTRATION_PROBE, VERL_USE_EXTERNAL_MODULES="verl_dgpo.registry")
    assert named.returncode == 0, named.stderr
    assert named.stdout.split()[4:] == ["mechanism", verl_dgpo.VIA_EXTERNAL_MODULES]  # registry: the check's row


# --- the trainer config and the version gate, through the entry point ---------------------------------


def run_entry(*args, fake_verl_version=None):
    """``python -m verl_dgpo.main ARGS`` in a fresh process (optionally with a faked installed verl version).

    At exit the process prints RAY_STARTED or NO_RAY to stderr: whether Ray was initialised.
    """
    lines = ["import atexit, runpy, sys"]
    if fake_verl_version:
        lines += [
            "import importlib.metadata as md",
            "_real = md.version",
            f"md.version = lambda name: {fake_verl_version!r} if name == 'verl' else _real(name)",
        ]
    lines += [
        "ray_started = lambda: 'ray' in sys.modules and sys.modules['ray'].is_initialized()",
        "atexit.register(lambda: print('RAY_STARTED' if ray_started() else 'NO_RAY', file=sys.stderr))",
        f"sys.argv = ['verl_dgpo.main', *{list(args)!r}]",
        "runpy.run_module('verl_dgpo.main', run_name='__main__')",
    ]
    return run_python("\n".join(lines))


def test_cfg_job_resolves_dgpo_with_n_2():
    """On an untested verl (verl's main branch) the entry point first prints its one note to stderr."""
    proc = run_entry("--cfg", "job", "--resolve", "algorithm.policy_loss=dgpo", "algorithm.dgpo.n=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    notes = [line for line in proc.stderr.splitlines() if line.startswith("verl-dgpo: note: verl ")]
    assert notes == ([] if is_tested(VERL) else [f"verl-dgpo: note: {untested_note(VERL)}"])
    config = yaml.safe_load(proc.stdout)
    policy_loss = config["actor_rollout_ref"]["actor"]["policy_loss"]
    assert policy_loss["loss_mode"] == "dgpo"
    assert policy_loss["dgpo_n"] == 2 and config["algorithm"]["dgpo"]["n"] == 2


@pytest.mark.parametrize("fake", ["0.6.1", "0.7.0"])
def test_older_verl_is_refused_in_one_line_before_ray(fake):
    proc = run_entry("trainer.total_training_steps=1", fake_verl_version=fake)
    lines = [line for line in proc.stderr.splitlines() if line != "NO_RAY"]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert lines == [lines[0]] and f"verl=={fake}" in lines[0] and ">=0.7.1" in lines[0]
    assert proc.stderr.splitlines()[-1] == "NO_RAY" and "Traceback" not in proc.stderr


def test_cpu_main_job_is_refused_in_one_line_where_its_patch_targets_are_missing():
    """0.7.1 and 0.8.0 lack the internals the CPU patches target: local_cpu gets one line naming one."""
    from verl_dgpo.local.patches import check_patch_targets

    problems = check_patch_targets()
    if not problems:
        pytest.skip(f"verl {VERL} has every CPU patch target (the CPU main job runs on it)")
    proc = run_entry("--config-name", "local_cpu")
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("verl-dgpo: error:")]
    assert len(lines) == 1 and f"verl=={VERL}" in lines[0] and problems[0] in lines[0]
    assert proc.stderr.splitlines()[-1] == "NO_RAY" and "Traceback" not in proc.stderr
