"""``algorithm.policy_loss`` and the trainer entry point: composition, driver-side checks, verl's path."""

import math
import os
import subprocess

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from verl import DataProto
from verl.trainer.ppo.core_algos import get_adv_estimator_fn
from verl.utils.config import omega_conf_to_dataclass

import fresh_interpreter  # tests/fresh_interpreter.py
import verl_dgpo
from fresh_interpreter import run_claims
from verl_dgpo import main as entry
from verl_dgpo.config import DGPOPolicyLossConfig
from verl_dgpo.verl_glue.methods import UnknownMethodError, valid_methods


CONFIG_DIR = os.path.join(os.path.dirname(verl_dgpo.__file__), "config")
MICRO = "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2"


def compose_dgpo(*overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return compose("dgpo_trainer", overrides=[MICRO, *overrides])


def test_policy_loss_flag_reaches_the_actor_config_verl_builds():
    config = entry.prepare(compose_dgpo("algorithm.policy_loss=dgpo", "algorithm.dgpo.n=2"))
    actor = omega_conf_to_dataclass(config.actor_rollout_ref.actor)
    assert isinstance(actor.policy_loss, DGPOPolicyLossConfig)
    assert actor.policy_loss.loss_mode == "dgpo"
    assert (actor.policy_loss.dgpo_n, actor.policy_loss.dgpo_m) == (2.0, 2.0)


@pytest.fixture(scope="module")
def v0_config():
    """dgpo_trainer on the v0 trainer, composed and prepared once: the tests using it only read it."""
    return entry.prepare(compose_dgpo("trainer.use_v1=false"))


def test_defaults_are_the_papers(v0_config):
    config = v0_config
    assert config.algorithm.policy_loss == "dgpo" and config.algorithm.adv_estimator == "dgpo"
    actor = omega_conf_to_dataclass(config.actor_rollout_ref.actor)
    assert (actor.policy_loss.dgpo_n, actor.policy_loss.dgpo_m) == (1.0, 2.0)
    assert (actor.clip_ratio_low, actor.clip_ratio_high) == (0.2, 0.2)


@pytest.mark.parametrize("method", valid_methods())
def test_every_method_name_selects_its_verl_loss(method):
    config = entry.prepare(compose_dgpo(f"algorithm.policy_loss={method}"))
    actor = omega_conf_to_dataclass(config.actor_rollout_ref.actor)
    assert actor.policy_loss.loss_mode == {"grpo": "vanilla"}.get(method, method)


def test_unknown_method_lists_the_valid_names():
    with pytest.raises(UnknownMethodError) as info:
        entry.prepare(compose_dgpo("algorithm.policy_loss=dgp0"))
    message = str(info.value)
    assert "algorithm.policy_loss='dgp0'" in message and "Did you mean 'dgpo'" in message
    assert all(name in message for name in ["dgpo", "grpo", "cispo", "gppo", "ce_gppo", "aspo"])


def test_typo_in_a_key_fails_at_composition():
    with pytest.raises(ConfigCompositionException) as info:
        compose_dgpo("algorithm.dgpo.nn=2")
    assert "nn" in str(info.value.__cause__ or info.value)


@pytest.mark.parametrize(
    "override,fragment",
    [
        ("algorithm.adv_estimator=gdpo", "not DGPO. For DGPO use algorithm.adv_estimator=dgpo"),
        ("algorithm.adv_estimator=dgop", "Did you mean 'dgpo'"),
    ],
)
def test_estimator_typos_point_at_dgpo(override, fragment):
    with pytest.raises(entry.ConfigError, match=fragment):
        entry.prepare(compose_dgpo(override))


#: The entry points' runs that import verl, in ONE fresh interpreter (tests/fresh_interpreter.py), in this order:
#: verl's own entry point first (its plugin loading is the claim, before anything of ours is imported), then ours.
ENTRY_RUNS = [
    ["verl main_ppo cfg job", "verl.trainer.main_ppo", ["--cfg", "job", "actor_rollout_ref.actor.policy_loss.loss_mode=dgpo"]],
    ["dgp0", "verl_dgpo.main", ["algorithm.policy_loss=dgp0", MICRO]],  # looked up in verl's registry: after its import
    ["cfg job grpo", "verl_dgpo.main", ["--cfg", "job", "--resolve", "algorithm.policy_loss=grpo", "algorithm.dgpo.m=3"]],
]  # the keys checked before verl is imported: tests/test_without_verl.py


@pytest.fixture(scope="module")
def entry_runs():
    return run_claims("entry_runs(json.loads(sys.argv[1]))", argument=ENTRY_RUNS)


def test_entry_point_fails_cleanly_before_ray_starts(entry_runs):
    proc = fresh_interpreter.claim(entry_runs, "dgp0")
    assert proc["status"] == 2, proc["stderr"][-2000:]
    assert "verl-dgpo: error: " in proc["stderr"] and "Did you mean 'dgpo'" in proc["stderr"]
    assert "Traceback" not in proc["stderr"]
    assert "ray init kwargs" not in proc["stdout"] + proc["stderr"]  # verl's run_ppo was never reached


def test_cfg_job_resolve_prints_the_composed_config(entry_runs):
    proc = fresh_interpreter.claim(entry_runs, "cfg job grpo")
    assert proc["status"] == 0, proc["stderr"][-2000:]
    assert "loss_mode: vanilla" in proc["stdout"] and "dgpo_m: 3" in proc["stdout"]
    assert "_target_: verl_dgpo.config.DGPOPolicyLossConfig" in proc["stdout"]


def test_plain_verl_entry_point_composes_with_our_loss(entry_runs):
    proc = fresh_interpreter.claim(entry_runs, "verl main_ppo cfg job")
    assert proc["status"] == 0, proc["stderr"][-2000:]
    assert "loss_mode: dgpo" in proc["stdout"]


def test_selected_estimator_is_reached_through_verls_registry(v0_config):
    config = v0_config
    assert config.algorithm.adv_estimator == "dgpo"
    assert get_adv_estimator_fn(config.algorithm.adv_estimator).__module__ == "verl_dgpo.verl_glue.registration"


def multi_turn_batch():
    """Prompt 'a', 4 sessions; sessions 0 and 2 have two outputs (turns); only the last one counts."""
    keys = ["a_0_0", "a_0_1", "a_1_0", "a_2_0", "a_2_1", "a_3_0"]
    rewards = [0.0, 1.0, 0.0, 1.0, 0.0, 1.0]  # final outputs: s0 → 1, s1 → 0, s2 → 0, s3 → 1
    token_rewards = torch.tensor([[0.0, r] for r in rewards])
    mask = torch.ones(6, 2)
    data = DataProto.from_dict(
        tensors={"token_level_rewards": token_rewards, "response_mask": mask},
        non_tensors={"uid": np.array(["a"] * 6, dtype=object)},
    )
    return data, keys


def test_dgpo_gets_verls_grpo_multi_turn_session_handling_in_v1():
    from verl.trainer.ppo.v1.utils import compute_advantage_for_multi_trajectories

    config = entry.prepare(compose_dgpo("trainer.use_v1=true"))
    assert config.algorithm.adv_estimator == "grpo"  # see verl_dgpo.main.use_grpo_session_handling
    data, keys = multi_turn_batch()
    out = compute_advantage_for_multi_trajectories(
        data, batch_keys=keys, adv_estimator=config.algorithm.adv_estimator, config=config.algorithm
    )
    # closed form: only the final outputs [1, 0, 0, 1] form the group; mean 0.5, unbiased std sqrt(1/3)
    std = math.sqrt(sum((r - 0.5) ** 2 for r in [1, 0, 0, 1]) / 3)
    final = {0: 1.0, 1: 0.0, 2: 0.0, 3: 1.0}
    expected = [(final[int(k.split("_")[1])] - 0.5) / (std + 1e-6) for k in keys]
    torch.testing.assert_close(out.batch["advantages"][:, 0], torch.tensor(expected), rtol=1e-6, atol=1e-6)


def test_console_script_runs_the_same_entry():
    import shutil

    script = shutil.which("verl-dgpo-train")
    assert script, "the console script verl-dgpo-train is not installed (pip install -e .)"
    proc = subprocess.run([script, "--cfg", "job", "--resolve", "algorithm.policy_loss=cispo"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "loss_mode: cispo" in proc.stdout


@pytest.mark.parametrize("method", ["dgpo", "grpo", "cispo", "gppo", "ce_gppo", "aspo"])
def test_the_papers_methods_map_without_verl_to_what_verls_registry_holds(method):
    from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY

    from verl_dgpo.verl_glue.methods import verl_loss_mode

    assert verl_loss_mode(method) in POLICY_LOSS_REGISTRY
    assert verl_loss_mode(method) == {"grpo": "vanilla"}.get(method, method)


@pytest.mark.parametrize("name", ["dgpo_trainer", "local_cpu"])
def test_verls_folder_by_path_composes_what_the_package_path_composes(name):
    """The entry point's file:// search path (verl_dgpo.main.with_verl_config_folder) against our yaml's pkg:// one."""
    folder_override = entry.with_verl_config_folder([])[0]
    assert folder_override.startswith("hydra.searchpath=['file://")
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        by_package = compose(name, overrides=[MICRO])
        by_path = compose(name, overrides=[MICRO, folder_override])
    assert by_path == by_package


@pytest.mark.parametrize(
    "argv,expected",
    [
        ([], ["SP"]),
        (["--cfg", "job", "--resolve"], ["SP", "--cfg", "job", "--resolve"]),
        (["a=1", "b=2", "--cfg", "job"], ["a=1", "b=2", "SP", "--cfg", "job"]),  # the examples' "$@" at the end
        (["--config-name", "local_cpu", "a=1"], ["--config-name", "local_cpu", "a=1", "SP"]),
        (["-cn", "local_cpu", "--cfg", "job"], ["SP", "-cn", "local_cpu", "--cfg", "job"]),
        (["a=1", "hydra.searchpath=[pkg://mine]"], ["a=1", "hydra.searchpath=[pkg://mine]"]),  # the user's own
        (["++hydra.searchpath=[pkg://mine]"], ["++hydra.searchpath=[pkg://mine]"]),
    ],
)
def test_the_search_path_joins_hydras_overrides_where_argparse_takes_them(argv, expected):
    ours = entry.with_verl_config_folder([])[0]
    assert entry.with_verl_config_folder(argv) == [ours if arg == "SP" else arg for arg in expected]
