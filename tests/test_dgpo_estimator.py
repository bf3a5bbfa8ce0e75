"""The ``dgpo`` advantage estimator: closed-form group advantages, equality with verl's GRPO, selection."""

import math

import numpy as np
import pytest
import torch
from verl import DataProto
from verl.trainer.ppo import core_algos
from verl.trainer.ppo.ray_trainer import compute_advantage

from verl_dgpo.registry import compute_dgpo_outcome_advantage

REWARDS = [[1.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5]]  # prompt "a": mixed; prompt "b": all equal


def hand_made_batch():
    """Two prompts × four responses of width 3; ragged masks; rewards on the last valid token."""
    lengths = [3, 2, 1, 3, 2, 3, 1, 2]
    rewards = [r for group in REWARDS for r in group]
    mask = torch.tensor([[t < n for t in range(3)] for n in lengths], dtype=torch.float32)
    token_rewards = torch.zeros(8, 3)
    for i, (n, r) in enumerate(zip(lengths, rewards)):
        token_rewards[i, n - 1] = r
    index = np.array(["a"] * 4 + ["b"] * 4, dtype=object)
    return token_rewards, mask, index


def closed_form(normalize, eps=1e-6):
    """A_i = (R_i - mean) / (std + eps) with the unbiased std, per group, written out by hand."""
    out = []
    for group in REWARDS:
        mean = sum(group) / len(group)
        std = math.sqrt(sum((r - mean) ** 2 for r in group) / (len(group) - 1))
        out += [(r - mean) / (std + eps) if normalize else r - mean for r in group]
    return out


class Algo(dict):
    """A mapping with ``.get`` like verl's AlgoConfig / DictConfig."""


@pytest.mark.parametrize("normalize", [True, False])
def test_group_advantages_match_closed_form_and_equal_groups_give_zero(normalize):
    token_rewards, mask, index = hand_made_batch()
    fn = core_algos.get_adv_estimator_fn("dgpo")
    adv, returns = fn(token_rewards, mask, index, config=Algo(norm_adv_by_std_in_grpo=normalize))
    expected = torch.tensor(closed_form(normalize)).unsqueeze(-1) * mask
    torch.testing.assert_close(adv, expected, rtol=1e-6, atol=1e-7)
    assert torch.equal(adv, returns)
    assert torch.isfinite(adv).all() and (adv[4:] == 0).all()


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_numerically_identical_to_verl_grpo(normalize, seed):
    g = torch.Generator().manual_seed(seed)
    token_rewards = (torch.rand(24, 5, generator=g) < 0.3).float()
    mask = (torch.rand(24, 5, generator=g) < 0.8).float()
    mask[:, 0] = 1
    index = np.array([f"p{i}" for i in torch.randint(0, 7, (24,), generator=g).tolist()], dtype=object)
    ours, _ = compute_dgpo_outcome_advantage(token_rewards, mask, index, config=Algo(norm_adv_by_std_in_grpo=normalize))
    theirs, _ = core_algos.compute_grpo_outcome_advantage(token_rewards, mask, index, norm_adv_by_std_in_grpo=normalize)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)


def test_single_response_group_keeps_its_reward_and_epsilon_is_read_from_config():
    token_rewards = torch.tensor([[0.0, 2.0]])
    mask = torch.ones(1, 2)
    adv, _ = compute_dgpo_outcome_advantage(token_rewards, mask, np.array(["solo"]), config=Algo(epsilon=1.0))
    torch.testing.assert_close(adv, torch.tensor([[1.0, 1.0]]))  # (2 - 0) / (1 + 1)


def test_verl_compute_advantage_reaches_the_dgpo_estimator():
    """verl's own ``compute_advantage`` (ray_trainer.py) with adv_estimator='dgpo' uses our function."""
    token_rewards, mask, index = hand_made_batch()
    data = DataProto.from_dict(
        tensors={"token_level_rewards": token_rewards, "response_mask": mask},
        non_tensors={"uid": index},
    )
    out = compute_advantage(data, adv_estimator="dgpo", config=Algo(norm_adv_by_std_in_grpo=True))
    expected = torch.tensor(closed_form(True)).unsqueeze(-1) * mask
    torch.testing.assert_close(out.batch["advantages"], expected, rtol=1e-6, atol=1e-7)
