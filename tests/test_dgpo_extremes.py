"""Extreme importance ratios, garbage on padding and empty batches never give inf or NaN."""

import itertools
import math

import pytest
import torch
from verl.trainer.ppo.core_algos import get_policy_loss_fn

AGG_MODES = ["token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
DTYPES = [torch.float32, torch.bfloat16]


def extreme_batch(log_ratio, dtype, garbage):
    """Every (A sign, region) combination at log-ratio ±log_ratio, plus masked tokens holding ``garbage``."""
    lr = torch.tensor([[log_ratio, -log_ratio, log_ratio, -log_ratio, 0.0, garbage]] * 2)
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0, 1.0, -1.0], [-2.0, -2.0, 2.0, 2.0, 0.0, 2.0]])
    mask = torch.tensor([[True] * 5 + [False]] * 2)
    old = torch.full_like(lr, -3.0)
    log_prob = (old + lr).to(dtype).requires_grad_(True)
    return log_prob, old.to(dtype), adv.to(dtype), mask


@pytest.mark.parametrize("mode", AGG_MODES)
def test_extreme_log_ratios_give_finite_loss_and_gradients(actor_config_factory, mode):
    """One claim per aggregation mode, checked over a grid of 60 batches (dtype x |log r| x garbage x (n, m))."""
    cases = itertools.product(DTYPES, [20.0, 50.0, 100.0], [1e4, -1e4, float("inf"), float("-inf"), float("nan")], [(1, 2), (3, 1.5)])
    failures = []
    for dtype, log_ratio, garbage, (n, m) in cases:
        log_prob, old, adv, mask = extreme_batch(log_ratio, dtype, garbage)
        loss, metrics = get_policy_loss_fn("dgpo")(old, log_prob, adv, mask, loss_agg_mode=mode, config=actor_config_factory(n=n, m=m))
        loss.backward()
        problems = [
            what
            for what, ok in (
                ("loss", torch.isfinite(loss).item()),
                ("gradient", torch.isfinite(log_prob.grad).all().item()),
                ("masked gradient != 0", (log_prob.grad[~mask] == 0).all().item()),
                ("metrics", all(math.isfinite(float(v)) for v in metrics.values())),
            )
            if not ok
        ]
        if problems:
            failures.append((dtype, log_ratio, garbage, n, m, problems))
    assert not failures, failures


@pytest.mark.parametrize("mode", AGG_MODES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_all_masked_batch_gives_zero_loss_and_zero_gradient(actor_config_factory, mode, dtype):
    log_prob = torch.full((3, 4), 1e4, dtype=dtype, requires_grad=True)
    old = torch.zeros(3, 4, dtype=dtype)
    adv = torch.ones(3, 4, dtype=dtype)
    mask = torch.zeros(3, 4, dtype=torch.bool)
    loss, metrics = get_policy_loss_fn("dgpo")(old, log_prob, adv, mask, loss_agg_mode=mode, config=actor_config_factory())
    loss.backward()
    assert loss.item() == 0.0
    assert (log_prob.grad == 0).all()
    assert metrics["actor/dgpo_ln_frac"] == 0.0 and metrics["actor/dgpo_weight_max"] == 0.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradient_keeps_the_input_dtype(actor_config_factory, dtype):
    log_prob, old, adv, mask = extreme_batch(0.5, dtype, 0.0)
    loss, _ = get_policy_loss_fn("dgpo")(old, log_prob, adv, mask, "token-mean", actor_config_factory())
    loss.backward()
    assert log_prob.grad.dtype == dtype
