"""Checks before Ray starts (verl_dgpo/startup/preflight.py), method-name typos, and the key named in an error.

Everything here composes configs in-process and reads hand-made tiny parquet files; the two end-to-end
cases run the entry point and a recipe as subprocesses that must stop before Ray.
"""

import functools
import os
import subprocess
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hydra import compose, initialize_config_dir

from verl_dgpo import main as entry
from verl_dgpo.startup import preflight as preflight_module
from verl_dgpo.spelling import closest_name, edit_distance
from verl_dgpo.verl_glue.methods import METHODS, UnknownMethodError, verl_loss_mode
from verl_dgpo.startup.preflight import (
    PreflightError,
    check_batch_sizes,
    check_data_files,
    check_gpus,
    check_model,
    check_rollout_backend,
    check_verl_config,
    preflight,
)
from verl_dgpo.startup.ray_start import RayStartTimeout, bounded_ray_start
from verl_dgpo.maths.hyperparameters import DGPOConfigError


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MICRO = "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2"


def composed(*overrides, name="dgpo_trainer"):
    with initialize_config_dir(config_dir=entry.CONFIG_DIR, version_base=None):
        return compose(name, overrides=list(overrides))


def prepared(*overrides, name="dgpo_trainer"):
    return entry.prepare(composed(*overrides, name=name))


# --- names -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "a,b,distance",
    [("kitten", "sitting", 3), ("dgpo", "dgpo", 0), ("dgpo", "dpgo", 1), ("dgppo", "gppo", 1), ("", "aspo", 4)],
)
def test_edit_distance_matches_hand_counts(a, b, distance):
    assert edit_distance(a, b) == distance == edit_distance(b, a)


@pytest.mark.parametrize(
    "typed,meant",
    [("dgppo", "dgpo"), ("dpgo", "dgpo"), ("cipso", "cispo"), ("ce-gppo", "ce_gppo"), ("GRPO", "grpo"), ("aspo_", "aspo")],
)
def test_typo_suggests_the_papers_method(typed, meant):
    with pytest.raises(UnknownMethodError) as info:
        verl_loss_mode(typed)
    message = str(info.value)
    assert f"algorithm.policy_loss={typed!r}" in message and f"Did you mean {meant!r}?" in message


def test_error_lists_the_papers_methods_not_verls_internals():
    with pytest.raises(UnknownMethodError) as info:
        verl_loss_mode("xyz")
    message = str(info.value)
    assert "Allowed: dgpo, grpo, cispo, gppo, ce_gppo, aspo" in message and "Did you mean" not in message
    assert "bypass_mode" not in message and "vanilla" not in message


def test_any_registered_verl_loss_is_still_accepted():
    from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY

    assert "bypass_mode" in POLICY_LOSS_REGISTRY
    assert verl_loss_mode("bypass_mode") == "bypass_mode" and verl_loss_mode("grpo") == "vanilla"
    assert closest_name("vanila", sorted(POLICY_LOSS_REGISTRY)) == "vanilla"
    assert closest_name("completely_else", METHODS) is None


# --- the key the user typed --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override,allowed",
    [
        ("algorithm.dgpo.n=0", ">= 1"),
        ("algorithm.dgpo.m=0.5", ">= 1"),
        ("algorithm.ce_gppo.beta1=0", "> 0"),
        ("algorithm.ce_gppo.beta2=-1", "> 0"),
    ],
)
def test_error_names_the_short_key_typed(override, allowed):
    with pytest.raises(DGPOConfigError) as info:
        prepared(override, MICRO)
    message = str(info.value)
    assert message.startswith(f"{override} is not allowed")
    assert allowed in message and "policy_loss" not in message


def test_error_names_the_long_key_when_that_was_typed():
    with pytest.raises(DGPOConfigError, match=r"^actor_rollout_ref\.actor\.policy_loss\.dgpo_n=0 is not allowed"):
        prepared("actor_rollout_ref.actor.policy_loss.dgpo_n=0", MICRO)


def test_unset_bound_is_reported_as_clip_ratio():
    with pytest.raises(DGPOConfigError, match=r"^actor_rollout_ref\.actor\.clip_ratio=1\.5 .*in \(0, 1\)"):
        prepared("actor_rollout_ref.actor.clip_ratio=1.5", "actor_rollout_ref.actor.clip_ratio_low=null", MICRO)


# --- 1. config -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override,key",
    [
        ("data.train_batch_size=0", "data.train_batch_size"),
        ("actor_rollout_ref.actor.ppo_mini_batch_size=-2", "actor_rollout_ref.actor.ppo_mini_batch_size"),
        ("actor_rollout_ref.rollout.n=0", "actor_rollout_ref.rollout.n"),
        ("trainer.n_gpus_per_node=0", "trainer.n_gpus_per_node"),
    ],
)
def test_sizes_below_one_are_refused_by_key(override, key):
    with pytest.raises(PreflightError) as info:
        check_batch_sizes(prepared(override, name="local_cpu"))
    assert str(info.value).startswith(f"{override} is not allowed") and "integer >= 1" in str(info.value)


def test_fewer_prompts_than_a_mini_batch_names_both_keys():
    config = prepared("data.train_batch_size=2", "actor_rollout_ref.actor.ppo_mini_batch_size=4", name="local_cpu")
    with pytest.raises(PreflightError) as info:
        check_batch_sizes(config)
    assert "data.train_batch_size=2" in str(info.value)
    assert "must be >= actor_rollout_ref.actor.ppo_mini_batch_size (4)" in str(info.value)


def test_dynamic_batch_size_relation_left_to_verl_as_verl_does():
    config = prepared(
        "data.train_batch_size=2", "actor_rollout_ref.actor.ppo_mini_batch_size=4",
        "actor_rollout_ref.actor.use_dynamic_bsz=true", name="local_cpu",
    )  # fmt: skip
    check_batch_sizes(config)


def test_verls_own_relations_fail_on_the_driver():
    # verl's validate_config: sampling validation needs temperature > 0.
    config = prepared(
        "actor_rollout_ref.rollout.val_kwargs.do_sample=true", "actor_rollout_ref.rollout.temperature=0",
        name="local_cpu",
    )  # fmt: skip
    with pytest.raises(PreflightError, match=r"validate_config\) refused the config: validation gen temperature"):
        check_verl_config(config)


def test_local_preset_defaults_pass_every_check():
    assert preflight(prepared(name="local_cpu"), visible_gpus=0, environ={}) == []


# --- 2. resources ----------------------------------------------------------------------------------


@functools.cache
def gpu_config(nodes=1, per_node=8):
    """Composed once per (nodes, per_node) in this module: check_gpus only reads the config."""
    return composed(f"trainer.nnodes={nodes}", f"trainer.n_gpus_per_node={per_node}", MICRO)


def test_no_gpu_points_at_the_cpu_preset():
    with pytest.raises(PreflightError) as info:
        check_gpus(gpu_config(), visible=0, environ={})
    message = str(info.value)
    assert message.startswith("trainer.n_gpus_per_node=8 (x trainer.nnodes=1) needs 8 GPUs")
    assert "has 0 GPU(s)" in message and "--config-name local_cpu" in message


def test_too_few_gpus_names_the_allowed_count():
    with pytest.raises(PreflightError, match=r"has 4 GPU\(s\) \(CUDA_VISIBLE_DEVICES='0,1,2,3'\)\. Allowed: trainer\.n_gpus_per_node <= 4"):
        check_gpus(gpu_config(), visible=4, environ={"CUDA_VISIBLE_DEVICES": "0,1,2,3"})


def test_enough_gpus_pass_silently():
    assert check_gpus(gpu_config(), visible=8, environ={}) == []


@pytest.mark.parametrize("nodes,environ", [(2, {}), (1, {"RAY_ADDRESS": "10.0.0.1:6379"})])
def test_cluster_runs_check_only_this_nodes_share(nodes, environ):
    (note,) = check_gpus(gpu_config(nodes=nodes), visible=0, environ=environ)
    assert f"trainer.nnodes={nodes} x trainer.n_gpus_per_node=8 = {8 * nodes} GPUs" in note
    assert "only this node's share can be checked" in note


# --- 3. back-ends ----------------------------------------------------------------------------------


def test_missing_vllm_is_named(monkeypatch):
    monkeypatch.setattr(preflight_module, "package_installed", lambda name: name == "sglang")
    with pytest.raises(PreflightError) as info:
        check_rollout_backend(composed("actor_rollout_ref.rollout.name=vllm"))
    message = str(info.value)
    assert message.startswith("actor_rollout_ref.rollout.name=vllm needs the Python package 'vllm'")
    assert message.endswith("or actor_rollout_ref.rollout.name=sglang (installed).")


def test_installed_engine_passes(monkeypatch):
    monkeypatch.setattr(preflight_module, "package_installed", lambda name: name == "sglang")
    check_rollout_backend(composed("actor_rollout_ref.rollout.name=sglang"))


def test_unknown_rollout_lists_verls():
    with pytest.raises(PreflightError, match=r"rollout\.name='vllmm' is not a rollout verl knows\. Allowed: sglang, trtllm, vllm"):
        check_rollout_backend(composed("actor_rollout_ref.rollout.name=vllmm"))


# --- 4. inputs: data -------------------------------------------------------------------------------


def write_parquet(path, columns):
    pq.write_table(pa.table(columns), path)
    return str(path)


def good_columns(prompt_key="prompt"):
    return {
        prompt_key: [[{"role": "user", "content": "1+1?"}]],
        "data_source": ["toy"],
        "reward_model": [{"style": "rule", "ground_truth": "2"}],
    }


def data_config(train, val, *extra):
    return composed(f"data.train_files={train}", f"data.val_files={val}", *extra, name="local_cpu")


def test_well_formed_parquet_passes(tmp_path):
    good = write_parquet(tmp_path / "good.parquet", good_columns())
    check_data_files(data_config(good, f"[{good},{good}]"))


def test_missing_file_names_the_key(tmp_path):
    good = write_parquet(tmp_path / "good.parquet", good_columns())
    missing = tmp_path / "nope.parquet"
    with pytest.raises(PreflightError) as info:
        check_data_files(data_config(good, missing))
    assert str(info.value).startswith(f"data.val_files: '{missing}' does not exist. Allowed: existing .parquet files")


def test_other_format_names_allowed_ones(tmp_path):
    csv = tmp_path / "train.csv"
    csv.write_text("prompt\n1\n")
    with pytest.raises(PreflightError, match=r"^data\.train_files: .* is not a \.parquet file\. Allowed: \.parquet"):
        check_data_files(data_config(csv, csv))


def test_missing_prompt_column_is_named(tmp_path):
    columns = good_columns()
    del columns["prompt"]
    bad = write_parquet(tmp_path / "bad.parquet", columns)
    with pytest.raises(PreflightError) as info:
        check_data_files(data_config(bad, bad))
    assert str(info.value).startswith(f"data.train_files: '{bad}' lacks the column(s) prompt that verl reads")
    assert "data.prompt_key" in str(info.value)


def test_reward_model_without_ground_truth_is_named(tmp_path):
    columns = good_columns()
    columns["reward_model"] = [{"style": "rule"}]
    bad = write_parquet(tmp_path / "bad.parquet", columns)
    with pytest.raises(PreflightError, match=r"lacks the column\(s\) reward_model\.ground_truth"):
        check_data_files(data_config(bad, bad))


def test_prompt_key_is_the_configured_one(tmp_path):
    custom = write_parquet(tmp_path / "q.parquet", good_columns(prompt_key="question"))
    check_data_files(data_config(custom, custom, "data.prompt_key=question"))
    with pytest.raises(PreflightError, match=r"lacks the column\(s\) prompt "):
        check_data_files(data_config(custom, custom))


def test_unreadable_parquet_is_reported(tmp_path):
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    with pytest.raises(PreflightError, match=r"^data\.train_files: .* is not a readable parquet file"):
        check_data_files(data_config(broken, broken))


def test_unset_train_files_outside_the_local_preset():
    config = composed("data.train_files=null", MICRO)
    with pytest.raises(PreflightError, match=r"^data\.train_files is not set"):
        check_data_files(config)


# --- 4. inputs: model ------------------------------------------------------------------------------


@functools.cache
def model_config(path):
    """Composed once per path in this module: check_model only reads the config."""
    return composed(f"actor_rollout_ref.model.path={path}", MICRO)


def test_model_directory_needs_config_json(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert check_model(model_config(tmp_path), environ={}) == []
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PreflightError, match=r"^actor_rollout_ref\.model\.path: .* has no config\.json"):
        check_model(model_config(empty), environ={})


def test_missing_local_path_is_refused(tmp_path):
    with pytest.raises(PreflightError, match=r"^actor_rollout_ref\.model\.path: .* is not a model directory"):
        check_model(model_config(tmp_path / "nothing" / "here"), environ={})


def fake_hub_cache(root, repo_id):
    folder = root / ("models--" + repo_id.replace("/", "--"))
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("abc123")
    (folder / "snapshots" / "abc123").mkdir(parents=True)
    (folder / "snapshots" / "abc123" / "config.json").write_text("{}")


def test_hub_id_in_the_cache_passes_offline(tmp_path, monkeypatch):
    from huggingface_hub import constants

    fake_hub_cache(tmp_path, "org/cached-model")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    assert check_model(model_config("org/cached-model"), environ={"HF_HUB_OFFLINE": "1"}) == []


def test_uncached_hub_id_offline_names_offline_mode(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(PreflightError) as info:
        check_model(model_config("org/absent-model"), environ={"HF_HUB_OFFLINE": "1"})
    message = str(info.value)
    assert message.startswith("actor_rollout_ref.model.path=org/absent-model is not in the local Hugging Face cache")
    assert "HF_HUB_OFFLINE=1 forbids downloading it" in message


def test_uncached_hub_id_online_is_a_note(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    (note,) = check_model(model_config("org/absent-model"), environ={})
    assert "will download it" in note


# --- bounded Ray start -----------------------------------------------------------------------------


def test_ray_start_that_never_answers_is_stopped_with_a_message():
    started = time.monotonic()
    with pytest.raises(RayStartTimeout) as info:
        bounded_ray_start(lambda: time.sleep(5), 0.3, is_started=lambda: False, address="10.9.9.9:6379")
    assert time.monotonic() - started < 2
    message = str(info.value)
    assert "did not reach the Ray cluster at 10.9.9.9:6379 within 0.3 s (preflight.ray_start_timeout_s)" in message


def test_alarm_after_ray_is_up_lets_training_run():
    import signal

    before = signal.getsignal(signal.SIGALRM)
    done = []
    bounded_ray_start(lambda: (time.sleep(0.6), done.append(True)), 0.2, is_started=lambda: True)
    assert done == [True] and signal.getsignal(signal.SIGALRM) is before


# --- end to end: exit 2, one line, before Ray -------------------------------------------------------


def run_until_exit(command, env_overrides):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VERL_USE_EXTERNAL")}
    env.update(PYTHONPATH=REPO, **env_overrides)
    started = time.monotonic()
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, cwd=REPO)
    return proc, time.monotonic() - started


def assert_one_line_before_ray(proc, key):
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"verl-dgpo: error: {key}"), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "ray init kwargs" not in proc.stdout and "starting Ray" not in proc.stdout


# local_cpu with data.train_batch_size=0: one line, exit 2, before verl and Ray, nothing written:
# tests/test_without_verl.py (one fresh interpreter for the refusals before verl's import)


def test_recipe_without_gpus_or_data_exits_2_within_60_s(tmp_path):
    proc, wall = run_until_exit(
        ["bash", "recipes/run_dgpo_7b.sh"],
        {"CUDA_VISIBLE_DEVICES": "", "DATA_DIR": str(tmp_path / "no-data"), "CHECKPOINT_ROOT": str(tmp_path)},
    )
    assert_one_line_before_ray(proc, "trainer.n_gpus_per_node=8")
    assert wall < 60


def test_timeout_wrapped_by_ray_still_reaches_the_user():
    # ray.init turns an exception raised inside its connection loop into ConnectionError (seen with ray 2.60).
    def ray_like_init():
        try:
            time.sleep(5)
        except RayStartTimeout as err:
            raise ConnectionError("Failed to connect to Ray cluster") from err

    with pytest.raises(ConnectionError) as info:
        bounded_ray_start(ray_like_init, 0.2, is_started=lambda: False)
    assert isinstance(entry.user_error_in(info.value), RayStartTimeout)
