"""The baselines' hyper-parameters: defaults, validation naming the key, and the ``algorithm.*`` wiring."""

from __future__ import annotations

import math
import re
import os

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from verl.trainer.ppo.core_algos import get_policy_loss_fn
from verl.utils.config import omega_conf_to_dataclass
from verl.workers.config import ActorConfig

import verl_dgpo
import verl_dgpo.main  # noqa: F401  (registers the dgpo_loss_mode resolver used by the yaml)
import verl_dgpo.registry  # noqa: F401
from verl_dgpo.config import DGPOConfigError, DGPOPolicyLossConfig

CONFIG_DIR = os.path.join(os.path.dirname(verl_dgpo.__file__), "config")


def compose_trainer(*overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        batch = "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1"  # required by verl, irrelevant here
        config = compose("dgpo_trainer", overrides=[batch, *overrides])
    OmegaConf.resolve(config)
    return config


def test_ce_gppo_defaults_are_the_authors_7b_setting():
    config = DGPOPolicyLossConfig()
    assert (config.ce_gppo_beta1, config.ce_gppo_beta2) == (0.75, 1.0)


@pytest.mark.parametrize("key", ["ce_gppo_beta1", "ce_gppo_beta2"])
@pytest.mark.parametrize("bad", [0, -0.5, math.nan, math.inf, "0.5", True, None])
def test_bad_ce_gppo_beta_is_rejected_naming_the_key(key, bad):
    with pytest.raises(DGPOConfigError, match=rf"actor_rollout_ref\.actor\.policy_loss\.{key}=.*> 0"):
        DGPOPolicyLossConfig(**{key: bad})


@pytest.mark.parametrize("method", ["gppo", "ce_gppo", "aspo"])
@pytest.mark.parametrize("bad_c", [1.0, 0.5])
def test_dual_clip_constant_must_exceed_one(method, bad_c):
    config = ActorConfig(strategy="fsdp", ppo_micro_batch_size_per_gpu=1, rollout_n=1, clip_ratio_c=bad_c,
                         policy_loss=DGPOPolicyLossConfig(loss_mode=method))  # fmt: skip
    x = torch.zeros(1, 2)
    with pytest.raises(DGPOConfigError, match=r"actor_rollout_ref\.actor\.clip_ratio_c=.*> 1"):
        get_policy_loss_fn(method)(x, x, x, torch.ones(1, 2, dtype=torch.bool), "token-mean", config)


@pytest.mark.parametrize("method", ["gppo", "ce_gppo", "aspo"])
def test_missing_config_is_a_clear_error(method):
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match=f"the {method} policy loss needs verl's actor config"):
        get_policy_loss_fn(method)(x, x, x, torch.ones(1, 2, dtype=torch.bool), "token-mean", None)


def test_algorithm_keys_reach_the_actor_policy_loss_config():
    config = compose_trainer(
        "algorithm.policy_loss=ce_gppo", "algorithm.ce_gppo.beta1=0.5", "algorithm.ce_gppo.beta2=1.25"
    )
    policy_loss = config.actor_rollout_ref.actor.policy_loss
    assert policy_loss.loss_mode == "ce_gppo"
    assert (policy_loss.ce_gppo_beta1, policy_loss.ce_gppo_beta2) == (0.5, 1.25)
    built = omega_conf_to_dataclass(config.actor_rollout_ref.actor)
    assert isinstance(built.policy_loss, DGPOPolicyLossConfig)
    assert (built.policy_loss.ce_gppo_beta1, built.policy_loss.ce_gppo_beta2) == (0.5, 1.25)


@pytest.mark.parametrize("method", ["gppo", "ce_gppo", "aspo", "cispo", "grpo"])
def test_every_baseline_is_a_valid_algorithm_policy_loss(method):
    config = compose_trainer(f"algorithm.policy_loss={method}")
    assert config.actor_rollout_ref.actor.policy_loss.loss_mode == {"grpo": "vanilla"}.get(method, method)


def test_bad_algorithm_ce_gppo_key_fails_when_the_actor_config_is_built():
    config = compose_trainer("algorithm.policy_loss=ce_gppo", "algorithm.ce_gppo.beta1=-1")
    with pytest.raises(Exception, match=r"actor_rollout_ref\.actor\.policy_loss\.ce_gppo_beta1=-1"):
        omega_conf_to_dataclass(config.actor_rollout_ref.actor)


@pytest.mark.parametrize(
    "override, key",
    [
        ("algorithm.ce_gppo.beta2=0", "actor_rollout_ref.actor.policy_loss.ce_gppo_beta2=0"),
        ("actor_rollout_ref.actor.clip_ratio_c=1.0", "actor_rollout_ref.actor.clip_ratio_c=1.0"),
    ],
)
def test_driver_side_checks_name_a_bad_baseline_key_before_any_worker_starts(override, key):
    from verl_dgpo.main import prepare

    config = compose_trainer("algorithm.policy_loss=ce_gppo", override)
    with pytest.raises(DGPOConfigError, match=re.escape(key)):
        prepare(config)
