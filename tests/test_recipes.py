"""Every recipe composes into a valid verl config that selects what its name says (DRY_RUN=1, no Ray/GPU)."""

import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("run_*.sh"))
NAME = re.compile(r"run_(?P<method>[a-z_]+)_(?P<size>[0-9.]+b)\.sh")
VERL_LOSS = {"grpo": "vanilla"}


def dry_run(script, *args, **env_overrides):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERL_USE_EXTERNAL")}
    env.update(DRY_RUN="1", **env_overrides)
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, env=env, timeout=300, cwd="/")


@pytest.fixture(scope="module")
def composed():
    """Dry-run every recipe once (two at a time) and parse the printed config."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        procs = dict(zip(RECIPES, pool.map(dry_run, RECIPES)))
    out = {}
    for script, proc in procs.items():
        assert proc.returncode == 0, f"{script.name}: {proc.stderr[-3000:]}"
        out[script.name] = yaml.safe_load(proc.stdout)
    return out


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


def test_env_vars_and_trailing_hydra_arguments_take_effect():
    proc = dry_run(
        ROOT / "recipes" / "run_dgpo_1.5b.sh",
        "data.max_response_length=123",
        "trainer.total_training_steps=7",
        MODEL_PATH="/models/local-copy",
        ROLLOUT_N="3",
        DGPO_N="3",
        DGPO_M="1.5",
        NNODES="4",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["actor_rollout_ref"]["model"]["path"] == "/models/local-copy"
    assert cfg["actor_rollout_ref"]["rollout"]["n"] == 3
    assert cfg["actor_rollout_ref"]["actor"]["policy_loss"]["dgpo_n"] == 3
    assert cfg["actor_rollout_ref"]["actor"]["policy_loss"]["dgpo_m"] == 1.5
    assert cfg["trainer"]["nnodes"] == 4
    assert cfg["data"]["max_response_length"] == 123 and cfg["trainer"]["total_training_steps"] == 7


def test_typo_in_a_trailing_key_fails_the_dry_run():
    proc = dry_run(ROOT / "recipes" / "run_grpo_7b.sh", "data.max_respnse_length=1")
    assert proc.returncode != 0
    assert "max_respnse_length" in proc.stderr and "not in struct" in proc.stderr


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
