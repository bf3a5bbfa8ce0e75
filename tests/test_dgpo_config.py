"""Bad DGPO hyper-parameters fail when the config is built, naming the key and the allowed range."""

import os

import pytest
from hydra import compose, initialize_config_dir

import verl_dgpo
from verl_dgpo.config import DGPOPolicyLossConfig
from verl_dgpo.maths.hyperparameters import DGPOConfigError, trust_region

CONFIG_DIR = os.path.join(os.path.dirname(verl_dgpo.__file__), "config")


@pytest.mark.parametrize(
    "field,value,allowed",
    [
        ("dgpo_n", 0.5, ">= 1"),
        ("dgpo_n", 0, ">= 1"),
        ("dgpo_n", -2, ">= 1"),
        ("dgpo_n", "two", ">= 1"),
        ("dgpo_n", True, ">= 1"),
        ("dgpo_n", float("nan"), ">= 1"),
        ("dgpo_n", float("inf"), ">= 1"),
        ("dgpo_m", 0.99, ">= 1"),
        ("dgpo_m", None, ">= 1"),
        ("dgpo_m", "2", ">= 1"),
    ],
)
def test_bad_exponent_names_key_and_range(field, value, allowed):
    with pytest.raises(DGPOConfigError) as info:
        DGPOPolicyLossConfig(loss_mode="dgpo", **{field: value})
    message = str(info.value)
    assert f"actor_rollout_ref.actor.policy_loss.{field}" in message and allowed in message


@pytest.mark.parametrize("n,m", [(1, 1), (2, 2), (3, 1.5), (1.25, 4)])
def test_valid_exponents_are_kept_as_floats(n, m):
    cfg = DGPOPolicyLossConfig(loss_mode="dgpo", dgpo_n=n, dgpo_m=m)
    assert (cfg.dgpo_n, cfg.dgpo_m) == (float(n), float(m)) and isinstance(cfg.dgpo_n, float)


@pytest.mark.parametrize(
    "low,high,key,allowed",
    [
        (0.0, 0.2, "clip_ratio_low", "in (0, 1)"),
        (1.0, 0.2, "clip_ratio_low", "in (0, 1)"),
        (-0.1, 0.2, "clip_ratio_low", "in (0, 1)"),
        ("wide", 0.2, "clip_ratio_low", "in (0, 1)"),
        (0.2, 0.0, "clip_ratio_high", "> 0"),
        (0.2, -0.3, "clip_ratio_high", "> 0"),
        (0.2, float("inf"), "clip_ratio_high", "> 0"),
    ],
)
def test_bad_trust_region_names_key_and_range(low, high, key, allowed):
    with pytest.raises(DGPOConfigError) as info:
        trust_region({"clip_ratio": 0.2, "clip_ratio_low": low, "clip_ratio_high": high})
    assert f"actor_rollout_ref.actor.{key}" in str(info.value) and allowed in str(info.value)


def test_trust_region_falls_back_to_clip_ratio():
    assert trust_region({"clip_ratio": 0.3, "clip_ratio_low": None, "clip_ratio_high": None}) == (0.3, 0.3)


def compose_dgpo(overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return compose("dgpo_trainer", overrides=overrides)


@pytest.mark.parametrize(
    "override,key",
    [
        ("algorithm.dgpo.n=0", "algorithm.dgpo.n=0 is not allowed"),
        ("algorithm.dgpo.m=abc", "algorithm.dgpo.m='abc' is not allowed"),
        ("actor_rollout_ref.actor.clip_ratio_low=1.5", "actor_rollout_ref.actor.clip_ratio_low"),
        ("actor_rollout_ref.actor.clip_ratio_high=0", "actor_rollout_ref.actor.clip_ratio_high"),
    ],
)
def test_bad_values_fail_on_the_driver_before_training(override, key):
    from verl_dgpo.main import prepare

    config = compose_dgpo([override, "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2"])
    with pytest.raises(Exception) as info:
        prepare(config)
    assert key in str(info.value)
