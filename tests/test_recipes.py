"""Every recipe composes into a valid verl config that selects what its name says (no Ray, no GPU).

``DRY_RUN=1 bash recipes/run_<method>_<size>.sh`` ends in ``python -m verl_dgpo.main --cfg job --resolve
<overrides>``. Starting that process once per recipe costs seconds each (it imports verl), so the recipes'
bash runs here with a ``python`` first on PATH that only records those arguments; all 18 override lists are
then composed in this process with hydra's compose API, as ``verl_dgpo.main`` composes them. One recipe
still dry-runs end to end through the real interpreter (``test_env_vars_and_trailing_hydra_arguments_take_effect``).
"""

import importlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from verl_dgpo.local import vllm_cpu
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
    scripts = sorted(p for folder in ("recipes", "examples", "scripts") for p in (ROOT / folder).rglob("*.sh"))
    return [*scripts, ROOT / ".ci" / "run"]


def test_shellcheck_passes_on_every_script():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None and not os.environ.get("CI"):
        pytest.skip("shellcheck is not installed here (apt-get install -y shellcheck); CI installs it")
    assert shellcheck, "shellcheck is not installed: apt-get install -y shellcheck (.ci/run does)"
    scripts = shell_scripts()
    assert len(scripts) >= len(RECIPES) + 1
    proc = subprocess.run([shellcheck, *map(str, scripts)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


# --- TOY=1: the recipe's own argument list, only hardware and scale values swapped ------------------

#: Keys TOY=1 may change (recipes/README.md, "TOY=1"), as dotted prefixes of the composed config. Derived
#: keys (verl interpolates them from one of these) are listed with the key they follow.
TOY_SWAPPED = (
    # model and data: the warm-started tiny model, fixture data prepared by scripts/prepare_data.py
    "actor_rollout_ref.model.path", "actor_rollout_ref.rollout.prometheus.served_model_name",
    "critic.model.tokenizer_path",  # verl 0.7.1 and 0.8.0 interpolate it from actor_rollout_ref.model.path
    "data.train_files", "data.val_files",
    # hardware: the CPU preset's device, platform, rollout server and worker counts
    "local_cpu", "trainer.device", "trainer.n_gpus_per_node", "actor_rollout_ref.rollout.n_gpus_per_node",
    "actor_rollout_ref.actor.strategy", "actor_rollout_ref.ref.strategy",
    "actor_rollout_ref.actor.use_torch_compile", "actor_rollout_ref.ref.use_torch_compile",
    "actor_rollout_ref.actor.fsdp_config.use_torch_compile", "actor_rollout_ref.ref.fsdp_config.use_torch_compile",
    "actor_rollout_ref.model.override_config", "actor_rollout_ref.rollout.name",
    "distillation.teacher_models.teacher_model.inference.name",
    "actor_rollout_ref.rollout.tensor_model_parallel_size", "actor_rollout_ref.rollout.checkpoint_engine.backend",
    "actor_rollout_ref.rollout.free_cache_engine", "actor_rollout_ref.rollout.agent.num_workers",
    "reward.num_workers", "data.dataloader_num_workers", "transfer_queue.backend.SimpleStorage.num_data_storage_units",
    "ray_kwargs.ray_init",
    # scale: batch, group, length and token budgets, steps, learning rate of a ~100k-parameter model
    "data.train_batch_size", "actor_rollout_ref.actor.ppo_mini_batch_size", "critic.ppo_mini_batch_size",
    "actor_rollout_ref.rollout.n", "actor_rollout_ref.rollout.val_kwargs.n", "actor_rollout_ref.actor.rollout_n",
    "actor_rollout_ref.ref.rollout_n", "critic.rollout_n",
    "data.max_prompt_length", "data.max_response_length", "actor_rollout_ref.rollout.prompt_length",
    "actor_rollout_ref.rollout.response_length", "distillation.teacher_models.teacher_model.inference.prompt_length",
    "distillation.teacher_models.teacher_model.inference.response_length",
    "actor_rollout_ref.actor.ppo_max_token_len_per_gpu", "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu",
    "actor_rollout_ref.ref.log_prob_max_token_len_per_gpu", "critic.ppo_max_token_len_per_gpu",
    "critic.forward_max_token_len_per_gpu",
    "actor_rollout_ref.actor.optim.lr",
    "trainer.total_training_steps", "trainer.save_freq", "trainer.test_freq",
    # where files go and how they are logged (nothing sent anywhere)
    "trainer.default_local_dir", "trainer.logger",
)  # fmt: skip
TOY_METHODS = ("dgpo", "grpo", "cispo", "gppo", "ce_gppo", "aspo")
#: verl 0.9.0 added the v1 trainer (and ``trainer.use_v1``); the recipes' TOY=1 runs keep it on where it exists.
VERL_HAS_V1_TRAINER = hasattr(importlib.import_module("verl.trainer.main_ppo"), "TaskRunnerV1")


def flatten(tree, prefix=""):
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def swapped(key):
    return any(key == p or key.startswith(p + ".") for p in TOY_SWAPPED)


@pytest.fixture(scope="module")
def toy_composed(recording_python, tmp_path_factory):
    """{recipe name: its TOY=1 composed config}, for every 1.5B recipe and the 14B DGPO one."""
    toy_dir = str(tmp_path_factory.mktemp("toy"))
    scripts = [ROOT / "recipes" / f"run_{m}_1.5b.sh" for m in TOY_METHODS] + [ROOT / "recipes" / "run_dgpo_14b.sh"]
    return {s.name: compose(record_args(recording_python, s, TOY="1", TOY_DIR=toy_dir)) for s in scripts}


def test_toy_changes_only_hardware_and_scale_keys(composed, toy_composed):
    for name, toy in toy_composed.items():
        real, fake = flatten(composed[name]), flatten(toy)
        changed = sorted(k for k in set(real) | set(fake) if real.get(k, "<absent>") != fake.get(k, "<absent>"))
        assert changed, name
        assert [k for k in changed if not swapped(k)] == [], (name, [k for k in changed if not swapped(k)])


def test_toy_keeps_what_the_recipe_exercises(toy_composed):
    for name, cfg in toy_composed.items():
        actor, rollout = cfg["actor_rollout_ref"]["actor"], cfg["actor_rollout_ref"]["rollout"]
        method = NAME.match(name)["method"]
        if VERL_HAS_V1_TRAINER:
            assert cfg["trainer"]["use_v1"] is True and cfg["trainer"]["v1"]["trainer_mode"] == "sync"
        else:  # verl < 0.9: its one trainer, no switch to leave on
            assert "use_v1" not in cfg["trainer"]
        assert cfg["algorithm"]["adv_estimator"] == "dgpo" and actor["policy_loss"]["loss_mode"] == VERL_LOSS.get(method, method)
        assert (cfg["data"]["filter_overlong_prompts"], cfg["data"]["truncation"]) == (True, "error")
        assert cfg["reward"]["custom_reward_function"]["path"] == "pkg://verl_dgpo.reward"
        assert cfg["trainer"]["val_before_train"] is True and cfg["trainer"]["resume_mode"] == "auto"
        assert cfg["actor_rollout_ref"]["model"]["use_remove_padding"] is True
        assert cfg["actor_rollout_ref"]["model"]["enable_gradient_checkpointing"] is True
        assert actor["use_dynamic_bsz"] and rollout["log_prob_use_dynamic_bsz"]
        assert rollout["val_kwargs"]["do_sample"] is True and rollout["val_kwargs"]["n"] == 4
        # the swapped values: the CPU preset's hardware, the toy assets, files a user can open
        assert cfg["local_cpu"]["enabled"] is True and cfg["trainer"]["device"] == "cpu"
        assert rollout["name"] == ("vllm" if vllm_cpu.engine_available() else "hf")  # the recipe's own where it can run
        assert cfg["actor_rollout_ref"]["model"]["path"].endswith("/model")
        assert cfg["data"]["val_files"].endswith("/data/benchmarks.parquet")
        assert "tensorboard" in cfg["trainer"]["logger"] and "console" in cfg["trainer"]["logger"]
        # no torch.compile anywhere in the actor or reference: verl's FSDP engine compiles entropy_from_logits
        # on its own fsdp_config.use_torch_compile (default true), and inductor's C++ build takes minutes of CPU
        compile_flags = {k: v for k, v in flatten(cfg["actor_rollout_ref"]).items() if k.endswith("use_torch_compile")}
        assert len(compile_flags) >= 4 and not any(compile_flags.values()), compile_flags
    assert toy_composed["run_dgpo_14b.sh"]["trainer"]["nnodes"] == 2  # the recipe's cluster shape is kept
    assert toy_composed["run_dgpo_1.5b.sh"]["trainer"]["nnodes"] == 1


def test_toy_rejects_a_value_other_than_0_or_1():
    proc = dry_run(ROOT / "recipes" / "run_dgpo_1.5b.sh", TOY="yes")
    assert proc.returncode == 2 and "TOY=yes" in proc.stderr


def test_toy_says_which_rollout_engine_it_runs_and_takes_toy_rollout(tmp_path):
    """The recipe's vLLM engine where a CPU vLLM is installed, else the HF server, said in one line; TOY_ROLLOUT
    picks one, and any other value is refused naming it."""
    script = ROOT / "recipes" / "run_dgpo_1.5b.sh"
    default = "vllm" if vllm_cpu.engine_available() else "hf"
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")  # this interpreter's packages
    for env, engine in (({}, default), ({"TOY_ROLLOUT": "hf"}, "hf")):
        proc = dry_run(script, TOY="1", TOY_DIR=str(tmp_path), PATH=path, **env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert yaml.safe_load(proc.stdout)["actor_rollout_ref"]["rollout"]["name"] == engine
        assert ("rollout engine" in proc.stderr) == (not env), proc.stderr[-2000:]
        if not env:
            assert f"TOY=1: rollout engine {engine} " in proc.stderr
    proc = dry_run(script, TOY="1", TOY_DIR=str(tmp_path), PATH=path, TOY_ROLLOUT="sglang")
    assert proc.returncode == 2 and "TOY_ROLLOUT=sglang is not one of hf vllm" in proc.stderr
