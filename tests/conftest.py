"""Shared fixtures. Closed forms live in the test files themselves, written apart from the package's code."""

import pytest


def make_actor_config(loss_mode="dgpo", eps_low=0.2, eps_high=0.28, n=1.0, m=2.0, **policy_loss_extra):
    """A real verl ``ActorConfig`` whose policy loss is our ``DGPOPolicyLossConfig``."""
    from verl.workers.config import ActorConfig

    from verl_dgpo.config import DGPOPolicyLossConfig

    return ActorConfig(
        strategy="fsdp",
        rollout_n=1,
        ppo_micro_batch_size_per_gpu=1,
        clip_ratio_low=eps_low,
        clip_ratio_high=eps_high,
        policy_loss=DGPOPolicyLossConfig(loss_mode=loss_mode, dgpo_n=n, dgpo_m=m, **policy_loss_extra),
    )


@pytest.fixture
def actor_config_factory():
    return make_actor_config


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config, items):
    """Under ``--dist loadgroup`` (pytest.ini) a test that names no ``xdist_group`` stays with the rest of its
    file, as under ``--dist loadfile``: one worker runs a file's tests and builds its module-scoped runs once.
    A slow file whose runs can be split names groups of its own (tests/test_recipes_toy.py)."""
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
