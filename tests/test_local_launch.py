"""Driver side of the local preset: config composition, refusals with clear messages, assets, Ray start-up."""

import copy
import os
import time

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import verl_dgpo
from verl_dgpo.local import launch

CONFIG_DIR = os.path.join(os.path.dirname(verl_dgpo.__file__), "config")


@pytest.fixture(scope="module")
def local_config():
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return compose(config_name="local_cpu")


def test_preset_selects_the_local_path_and_the_v0_trainer_by_default(local_config):
    cfg = local_config
    assert cfg.local_cpu.enabled is True
    assert cfg.trainer.use_v1 is False and cfg.actor_rollout_ref.rollout.name == "hf"
    assert cfg.actor_rollout_ref.rollout.checkpoint_engine.backend == "naive"
    assert cfg.algorithm.policy_loss == "dgpo" and cfg.algorithm.adv_estimator == "dgpo"
    assert cfg.ray_kwargs.ray_init.num_gpus == 1


def test_preset_compiles_nothing_in_the_actor_or_the_reference(local_config):
    """Every ``use_torch_compile`` of the actor and the reference is off, the FSDP engine's own included
    (verl compiles entropy_from_logits on ``fsdp_config.use_torch_compile``, default true)."""
    flags = {}

    def walk(node, path):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{path}.{key}")
            elif key == "use_torch_compile":
                flags[f"{path}.{key}"] = value

    walk(OmegaConf.to_container(local_config.actor_rollout_ref, resolve=False), "actor_rollout_ref")
    assert "actor_rollout_ref.actor.fsdp_config.use_torch_compile" in flags
    assert "actor_rollout_ref.ref.fsdp_config.use_torch_compile" in flags
    assert not any(flags.values()), flags


def test_preset_takes_several_optimizer_steps_per_training_step(local_config):
    """DGPO differs from GRPO only where r != 1: that needs > 1 mini-batch or > 1 PPO epoch per step."""
    actor = local_config.actor_rollout_ref.actor
    updates = (local_config.data.train_batch_size // actor.ppo_mini_batch_size) * actor.ppo_epochs
    assert updates >= 2


def test_preset_keeps_the_dgpo_keys_of_dgpo_trainer(local_config):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        base = compose(config_name="dgpo_trainer")
    for key in ("algorithm.dgpo", "actor_rollout_ref.actor.policy_loss"):
        assert OmegaConf.select(local_config, key) == OmegaConf.select(base, key)


@pytest.mark.parametrize(
    "override, key",
    [
        ("actor_rollout_ref.rollout.name=sglang", "actor_rollout_ref.rollout.name"),
        ("actor_rollout_ref.rollout.checkpoint_engine.backend=nccl", "checkpoint_engine.backend"),
    ],
)
def test_unsupported_settings_are_refused_naming_the_key(override, key):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = compose(config_name="local_cpu", overrides=[override])
    with pytest.raises(launch.LocalRunError, match=key):
        launch.check_supported(cfg)


def _vllm_config(*overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return compose(config_name="local_cpu", overrides=["actor_rollout_ref.rollout.name=vllm", *overrides])


def test_vllm_rollout_is_accepted_where_a_cpu_vllm_is_installed_and_refused_in_one_line_where_not(monkeypatch):
    from verl_dgpo.local import vllm_cpu

    monkeypatch.setattr(vllm_cpu, "check_targets", lambda: [])
    monkeypatch.setattr(vllm_cpu, "engine_available", lambda: True)
    launch.check_supported(_vllm_config())
    monkeypatch.setattr(vllm_cpu, "engine_available", lambda: False)
    with pytest.raises(launch.LocalRunError, match="needs a CPU build of vLLM: run `bash scripts/install_vllm_cpu.sh`") as err:
        launch.check_supported(_vllm_config())
    assert "\n" not in str(err.value)
    monkeypatch.setattr(vllm_cpu, "engine_available", lambda: True)
    monkeypatch.setattr(vllm_cpu, "check_targets", lambda: ["cpu_linear_weights: moved"])
    with pytest.raises(launch.LocalRunError, match="cpu_linear_weights: moved"):
        launch.check_supported(_vllm_config())


def test_vllm_rollout_refuses_a_model_whose_heads_cpu_vllm_cannot_run(monkeypatch, tmp_path):
    from verl_dgpo.local import vllm_cpu
    from verl_dgpo.local.assets import make_tiny_model

    monkeypatch.setattr(vllm_cpu, "check_targets", lambda: [])
    monkeypatch.setattr(vllm_cpu, "engine_available", lambda: True)
    make_tiny_model(str(tmp_path / "m16"))  # the preset's default shape: 64 / 4 heads = 16
    make_tiny_model(str(tmp_path / "m32"), num_attention_heads=2, num_key_value_heads=1)
    with pytest.raises(launch.LocalRunError, match="head size of at least 32 .*the model's is 16"):
        launch.check_supported(_vllm_config(f"actor_rollout_ref.model.path={tmp_path / 'm16'}"))
    launch.check_supported(_vllm_config(f"actor_rollout_ref.model.path={tmp_path / 'm32'}"))


def test_vllm_rollout_turns_off_what_cpu_vllm_cannot_do_and_says_each(local_config):
    cfg = _vllm_config()
    assert cfg.actor_rollout_ref.rollout.full_determinism is True and cfg.local_cpu.model.num_attention_heads == 4
    said = launch.prepare_vllm_rollout(cfg)
    rollout = cfg.actor_rollout_ref.rollout
    assert (rollout.enable_sleep_mode, rollout.full_determinism, rollout.dtype) == (False, False, "float32")
    assert rollout.enforce_eager is True
    assert (cfg.local_cpu.model.num_attention_heads, cfg.local_cpu.model.num_key_value_heads) == (2, 1)  # 64/2 = 32
    assert [line.split("=")[0] for line in said] == [
        "actor_rollout_ref.rollout.enable_sleep_mode", "actor_rollout_ref.rollout.full_determinism",
        "actor_rollout_ref.rollout.enforce_eager", "actor_rollout_ref.rollout.dtype",
        "local_cpu.model.num_attention_heads"]  # fmt: skip
    assert launch.prepare_vllm_rollout(cfg) == []  # nothing left to change


def test_the_cpu_vllm_support_is_asked_for_only_by_a_vllm_run(monkeypatch, tmp_path):
    from verl_dgpo.local import vllm_cpu

    environ = {k: v for k, v in os.environ.items() if k not in (vllm_cpu.ENABLE_VARIABLE, vllm_cpu.RECORD_VARIABLE)}
    monkeypatch.setattr(os, "environ", environ)  # what export_environment sets goes with the test
    monkeypatch.setattr(launch, "add_external_module", lambda name: None)
    launch.export_environment(str(tmp_path / "m.jsonl"), threads=1, quiet=False)
    assert vllm_cpu.ENABLE_VARIABLE not in os.environ and not vllm_cpu.enabled()
    launch.export_environment(str(tmp_path / "m.jsonl"), threads=1, quiet=False, vllm_record=str(tmp_path / "r.jsonl"))
    assert vllm_cpu.enabled() and os.environ[vllm_cpu.RECORD_VARIABLE] == str(tmp_path / "r.jsonl")


@pytest.fixture(scope="module")
def local_v1_config():
    """local_cpu with the v1 trainer, composed once; a test that changes it takes a copy."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return compose(config_name="local_cpu", overrides=["trainer.use_v1=true"])


def test_v1_trainer_is_accepted_with_transfer_queue_sized_for_one_machine(local_v1_config):
    cfg = copy.deepcopy(local_v1_config)
    launch.check_supported(cfg)
    assert cfg.transfer_queue.backend.SimpleStorage.num_data_storage_units == 1
    assert launch.choose_trainer(cfg) == "v1"


def test_a_verl_without_the_v0_trainer_runs_v1_and_says_so_in_one_line(local_config, capsys):
    cfg = OmegaConf.create(OmegaConf.to_container(local_config))
    assert launch.choose_trainer(cfg, v0_available=True) == "v0" and cfg.trainer.use_v1 is False
    assert capsys.readouterr().out == ""
    assert launch.choose_trainer(cfg, v0_available=False) == "v1" and cfg.trainer.use_v1 is True
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and "no v0 trainer (verl.trainer.main_ppo_v0)" in lines[0] and "trainer.use_v1=true" in lines[0]


def test_v0_trainer_is_found_where_this_verl_ships_it():
    import importlib

    try:  # what the file lookup (no `import verl`) must agree with: the import itself
        importlib.import_module("verl.trainer.main_ppo_v0")
        importable = True
    except ModuleNotFoundError:
        importable = False
    assert launch.v0_trainer_available() is importable


@pytest.mark.parametrize(
    "overrides, unique",
    [
        ([], True),  # v0 with full_determinism: verl's ids are det-<sample index>
        (["trainer.use_v1=true"], False),  # v1 sends det-0 for every sample
        (["actor_rollout_ref.rollout.full_determinism=false"], False),  # random ids
    ],
)
def test_the_server_is_told_whether_verls_request_ids_name_one_sample_each(overrides, unique, request):
    from verl.utils.config import omega_conf_to_dataclass

    from verl_dgpo.local.hf_rollout import hf_option

    shared = {(): "local_config", ("trainer.use_v1=true",): "local_v1_config"}.get(tuple(overrides))
    if shared:  # composed once in this module; apply_rollout_options changes the config, so a copy
        cfg = copy.deepcopy(request.getfixturevalue(shared))
    else:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
            cfg = compose(config_name="local_cpu", overrides=overrides)
    launch.apply_rollout_options(cfg)
    assert hf_option(omega_conf_to_dataclass(cfg.actor_rollout_ref.rollout), "unique_request_ids", None) is unique


def test_short_memory_is_refused_with_the_key_to_change():
    with pytest.raises(launch.LocalRunError, match=r"only 1\.5 GiB .*local_cpu\.min_free_memory_gib"):
        launch.check_memory(3.0, available=1.5)
    launch.check_memory(3.0, available=8.0)


def test_ray_start_failure_becomes_a_clear_error():
    def refuse(**kwargs):
        raise ConnectionError("address already in use: 127.0.0.1:6379")

    with pytest.raises(launch.LocalRunError, match=r"Ray could not start: ConnectionError: address already in use.*ray stop"):
        launch.start_ray({"address": "local"}, timeout_s=5, init=refuse)


def test_ray_start_hang_becomes_a_clear_error_not_a_hang():
    started = time.time()
    with pytest.raises(launch.LocalRunError, match=r"did not start within 0\.5 s .*local_cpu\.ray_start_timeout_s"):
        launch.start_ray({}, timeout_s=0.5, init=lambda **kwargs: time.sleep(30))
    assert time.time() - started < 5


def test_ray_init_kwargs_start_a_new_local_cluster_with_a_logical_gpu(local_config):
    kwargs = launch.ray_init_kwargs(local_config)
    assert kwargs["address"] == "local" and kwargs["num_gpus"] == 1
    assert "env_vars" in kwargs["runtime_env"]


def test_a_run_attached_to_a_running_cluster_carries_its_environment_to_the_workers(local_config):
    from omegaconf import open_dict

    env = {"VERL_FILE_LOGGER_PATH": "/runs/metrics.jsonl", "VERL_PLATFORM": "cpu", "WANDB_MODE": "offline", "HOME": "/root"}
    assert "VERL_FILE_LOGGER_PATH" not in launch.ray_init_kwargs(local_config, env)["runtime_env"]["env_vars"]
    with open_dict(local_config):
        local_config.ray_kwargs.ray_init.address = "auto"
    kwargs = launch.ray_init_kwargs(local_config, env)
    assert kwargs["address"] == "auto"
    carried = kwargs["runtime_env"]["env_vars"]
    assert {k: carried[k] for k in ("VERL_FILE_LOGGER_PATH", "VERL_PLATFORM", "WANDB_MODE")} == {
        "VERL_FILE_LOGGER_PATH": "/runs/metrics.jsonl", "VERL_PLATFORM": "cpu", "WANDB_MODE": "offline"}
    assert "HOME" not in carried  # only the run's own variables, not the whole shell


def test_assets_are_written_once_and_rewritten_when_their_spec_changes(tmp_path):
    spec = {"model": {"seed": 0}, "task": {"train_size": 16, "val_size": 4, "digits": 1, "alphabet": "7", "seed": 0}}
    paths = launch.write_assets(str(tmp_path), spec)
    assert all(os.path.exists(p) for p in paths.values())
    first = os.path.getmtime(paths["train"])
    time.sleep(0.05)
    assert launch.write_assets(str(tmp_path), spec) == paths and os.path.getmtime(paths["train"]) == first
    spec["task"]["train_size"] = 20
    launch.write_assets(str(tmp_path), spec)
    import pandas as pd

    assert len(pd.read_parquet(paths["train"])) == 20


def test_null_paths_are_filled_and_given_paths_kept(tmp_path, local_config):
    cfg = OmegaConf.create(OmegaConf.to_container(local_config))
    cfg.data.val_files = "/my/val.parquet"
    paths = {"model": "/a/model", "train": "/a/train.parquet", "val": "/a/val.parquet"}
    launch.fill_paths(cfg, paths)
    assert cfg.actor_rollout_ref.model.path == "/a/model"
    assert cfg.data.train_files == "/a/train.parquet" and cfg.data.val_files == "/my/val.parquet"
    assert cfg.reward.custom_reward_function.path.endswith("verl_dgpo/local/task.py")
    assert os.path.isabs(cfg.trainer.default_local_dir)


@pytest.mark.parametrize("value", [True, False])
def test_seeded_sampling_reaches_the_rollout_config_the_server_reads(value):
    from verl.utils.config import omega_conf_to_dataclass

    from verl_dgpo.local.hf_rollout import hf_option
    from verl_dgpo.local.launch import apply_rollout_options

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = compose(config_name="local_cpu", overrides=[f"local_cpu.rollout.seeded_sampling={value}"])
    apply_rollout_options(cfg)
    rollout = omega_conf_to_dataclass(cfg.actor_rollout_ref.rollout)  # what HFRolloutServer.__init__ builds
    assert hf_option(rollout, "seeded_sampling", None) is value


def test_preset_samples_reproducibly_by_default(local_config):
    assert local_config.local_cpu.rollout.seeded_sampling is True
    assert local_config.actor_rollout_ref.rollout.full_determinism is True


def test_available_memory_is_the_kernels_memavailable():
    with open("/proc/meminfo") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
    assert abs(launch.available_memory_gib() - kib / 2**20) < 0.25  # other jobs may allocate in between
