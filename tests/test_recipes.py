"""Every recipe composes into a valid verl config that selects what its name says (no Ray, no GPU).

``DRY_RUN=1 bash recipes/run_<method>_<size>.sh`` ends in ``python -m verl_dgpo.main --cfg job --resolve
<overrides>``. Starting that process once per recipe costs seconds each (it imports verl), so the recipes'
bash runs here with a ``python`` first on PATH that only records those arguments; all 18 override lists are
then composed in this process with hydra's compose API, as ``verl_dgpo.main`` composes them. One recipe
still dry-runs end to end through the real interpreter (``test_env_vars_and_trailing_hydra_arguments_take_effect``).
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("run_*.sh"))
NAME = re.compile(r"run_(?P<method>[a-z_]+)_(?P<size>[0-9.]+b)\.sh")
VERL_LOSS = {"grpo": "vanilla"}
DRY_RUN_FLAGS = ["--cfg", "job", "--resolve"]

# Stands in for `python` on PATH: records the arguments of the trainer call (NUL-separated) and exits;
# any other python call goes to the real interpreter.
RECORDING_PYTHON = """#!/usr/bin/env bash
if [ "${1-}" = -m ] && [ "${2-}" = verl_dgpo.main ]; then
  shift 2
  printf '%s\\0' "$@" > "$RECORD_ARGS_TO"
  exit 0
fi
exec "$REAL_PYTHON" "$@"
"""


def recipe_env(**overrides):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERL_USE_EXTERNAL")}
    env.update(DRY_RUN="1", **overrides)
    return env


def dry_run(script, *args, **env_overrides):
    """The real dry run: bash, then ``python -m verl_dgpo.main --cfg job --resolve`` printing the config."""
    return subprocess.run(
        ["bash", str(script), *args], capture_output=True, text=True, env=recipe_env(**env_overrides), timeout=300, cwd="/"
    )


@pytest.fixture(scope="module")
def recording_python(tmp_path_factory):
    folder = tmp_path_factory.mktemp("recording_python")
    (folder / "python").write_text(RECORDING_PYTHON)
    (folder / "python").chmod(0o755)
    return folder


def record_args(folder, script, *args, **env_overrides):
    """The arguments ``script``'s dry run hands ``python -m verl_dgpo.main``, recorded by the stand-in python."""
    record = folder / f"{script.name}.args"
    record.unlink(missing_ok=True)
    env = recipe_env(PATH=f"{folder}{os.pathsep}{os.environ['PATH']}", REAL_PYTHON=sys.executable, RECORD_ARGS_TO=str(record))
    env.update(env_overrides)
    proc = subprocess.run(["bash", str(script), *args], capture_output=True, text=True, env=env, timeout=60, cwd="/")
    assert proc.returncode == 0, f"{script.name}: {proc.stderr[-3000:]}"
    recorded = record.read_bytes().decode().split("\0")[:-1]
    assert recorded[: len(DRY_RUN_FLAGS)] == DRY_RUN_FLAGS, (script.name, recorded[:5])  # DRY_RUN prints the resolved config
    return recorded[len(DRY_RUN_FLAGS) :]


@pytest.fixture(scope="module")
def recorded_args(recording_python):
    """{recipe name: its hydra overrides}."""
    return {script.name: record_args(recording_python, script) for script in RECIPES}


def compose(overrides):
    """The config ``python -m verl_dgpo.main --cfg job --resolve <overrides>`` prints, as plain containers."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    import verl_dgpo.registry  # noqa: F401  (main() loads it before hydra; verl < 0.9 loads no entry points)
    from verl_dgpo.main import CONFIG_DIR  # also registers the config's resolvers

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return OmegaConf.to_container(hydra_compose(config_name="dgpo_trainer", overrides=list(overrides)), resolve=True)


@pytest.fixture(scope="module")
def composed(recorded_args):
    return {name: compose(args) for name, args in recorded_args.items()}


def test_a_recipe_for_every_method_and_size():
    found = {(NAME.match(p.name)["method"], NAME.match(p.name)["size"]) for p in RECIPES}
    methods = {"dgpo", "grpo", "cispo", "gppo", "ce_gppo", "aspo"}
    assert found == {(m, s) for m in methods for s in ("1.5b", "7b", "14b")}


@pytest.mark.parametrize("script", RECIPES, ids=lambda p: p.name)
def test_recipe_selects_its_method_model_and_lengths(composed, script):
    method, size = NAME.match(script.name)["method"], NAME.match(script.name)["size"]
    cfg = composed[script.name]
    actor = cfg["actor_rollout_ref"]["actor"]
    assert cfg["algorithm"]["policy_loss"] == method
    assert actor["policy_loss"]["loss_mode"] == VERL_LOSS.get(method, method)
    assert cfg["algorithm"]["adv_estimator"] == "dgpo"
    assert cfg["actor_rollout_ref"]["model"]["path"] == f"deepseek-ai/DeepSeek-R1-Distill-Qwen-{size.upper()}"
    assert actor["policy_loss"]["dgpo_n"] == (2 if size == "1.5b" else 1) and actor["policy_loss"]["dgpo_m"] == 2
    assert cfg["data"]["max_prompt_length"] == 1024 and cfg["data"]["max_response_length"] == 8192
    assert cfg["actor_rollout_ref"]["rollout"]["val_kwargs"]["n"] == 32
    assert actor["clip_ratio_c"] == (10.0 if method in ("gppo", "ce_gppo") else 3.0)
    assert cfg["reward"]["custom_reward_function"]["path"] == "pkg://verl_dgpo.reward"
    assert cfg["data"]["val_files"].endswith("benchmarks.parquet")
    if method == "ce_gppo":
        assert (actor["policy_loss"]["ce_gppo_beta1"], actor["policy_loss"]["ce_gppo_beta2"]) == (0.75, 1.0)


def test_env_vars_and_trailing_hydra_arguments_take_effect(recording_python):
    """End to end through the real interpreter; the in-process composition of the same call prints the same."""
    script = ROOT / "recipes" / "run_dgpo_1.5b.sh"
    args = ("data.max_response_length=123", "trainer.total_training_steps=7")
    env = dict(MODEL_PATH="/models/local-copy", ROLLOUT_N="3", DGPO_N="3", DGPO_M="1.5", NNODES="4")
    proc = dry_run(script, *args, **env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = yaml.safe_load(proc.stdout)
    assert cfg == compose(record_args(recording_python, script, *args, **env))
    assert cfg["actor_rollout_ref"]["model"]["path"] == "/models/local-copy"
    assert cfg["actor_rollout_ref"]["rollout"]["n"] == 3
    assert cfg["actor_rollout_ref"]["actor"]["policy_loss"]["dgpo_n"] == 3
    assert cfg["actor_rollout_ref"]["actor"]["policy_loss"]["dgpo_m"] == 1.5
    assert cfg["trainer"]["nnodes"] == 4
    assert cfg["data"]["max_response_length"] == 123 and cfg["trainer"]["total_training_steps"] == 7


def test_typo_in_a_trailing_key_fails_the_composition(recorded_args):
    from hydra.errors import ConfigCompositionException

    args = recorded_args["run_grpo_7b.sh"]
    with pytest.raises(ConfigCompositionException) as err:
        compose([*args, "data.max_respnse_length=1"])
    chain, cause = [], err.value
    while cause is not None:
        chain.append(str(cause))
        cause = cause.__cause__
    text = "\n".join(chain)
    assert "max_respnse_length" in text and "not in struct" in text


@pytest.mark.parametrize("env,fragment", [({"METHOD": "dpgo", "SIZE": "7b"}, "METHOD=dpgo"), ({"METHOD": "dgpo", "SIZE": "3b"}, "SIZE=3b")])
def test_common_script_rejects_unknown_method_or_size(env, fragment):
    proc = dry_run(ROOT / "recipes" / "common.sh", **env)
    assert proc.returncode == 2 and fragment in proc.stderr


def shell_scripts():
    return sorted(p for folder in ("recipes", "examples", "scripts") for p in (ROOT / folder).rglob("*.sh"))


def test_shellcheck_passes_on_every_script():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None and not os.environ.get("CI"):
        pytest.skip("shellcheck is not installed here (apt-get install -y shellcheck); CI installs it")
    assert shellcheck, "shellcheck is not installed: apt-get install -y shellcheck (.ci/run does)"
    scripts = shell_scripts()
    assert len(scripts) >= len(RECIPES) + 1
    proc = subprocess.run([shellcheck, *map(str, scripts)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
