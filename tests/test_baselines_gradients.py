"""Every method of the paper's tables, through verl's registry: gradient weights, extremes, on-policy limit.

The expected weights are the table of issue 5 (and of the paper notes), the closed forms of
``verl_dgpo/reference.py`` (written apart from the maths, checked by hand in tests/test_reference.py): w is the weight on A·∇log π, so with
``loss_agg_mode="token-sum"`` the gradient of the loss with respect to ``log_prob`` is ``-A·w`` per token.
"""

from __future__ import annotations

import math

import pytest
import torch
import verl  # noqa: F401  (loads the plugin through its entry point)
from verl.trainer.ppo.core_algos import get_policy_loss_fn
from verl.workers.config import ActorConfig

import verl_dgpo.registry  # noqa: F401  (registers the losses even without the entry point)
from verl_dgpo import reference
from verl_dgpo.config import standalone_actor_config
from verl_dgpo.maths.losses import masked_log_ratio

EPS_LOW, EPS_HIGH = 0.2, 0.28  # deliberately unequal
BETA1, BETA2 = 0.6, 1.1  # CE-GPPO, not the defaults, so that the config is proven to reach the loss
DGPO_N, DGPO_M = 2.0, 3.0

METHODS = ["vanilla", "cispo", "gppo", "ce_gppo", "aspo", "dgpo"]
OURS = ["gppo", "ce_gppo", "aspo", "dgpo"]


def actor_config(loss_mode: str, clip_ratio_c: float = 3.0, **policy_loss) -> ActorConfig:
    """A real verl ActorConfig (batch sizes are irrelevant to a loss) with our policy-loss subclass."""
    bounds = dict(eps_low=EPS_LOW, eps_high=EPS_HIGH, clip_ratio_c=clip_ratio_c)
    return standalone_actor_config(loss_mode, **bounds, **policy_loss)


def table_config(method: str, clip_ratio_c: float) -> ActorConfig:
    return actor_config(
        method, clip_ratio_c, ce_gppo_beta1=BETA1, ce_gppo_beta2=BETA2, dgpo_n=DGPO_N, dgpo_m=DGPO_M
    )


def table_weight(method: str, r: float, a: float, c: float) -> float:
    params = dict(eps_low=EPS_LOW, eps_high=EPS_HIGH, beta1=BETA1, beta2=BETA2, n=DGPO_N, m=DGPO_M)
    return reference.weight(method, r, a, clip_ratio_c=c, **params)


# Ratios in every region for both signs, away from the boundaries: LP below 1/c (ASPO's cap), LP, inside,
# HP and HN below c, HP and HN beyond c (for c = 3 and for c = 10), and tokens with A = 0.
RATIOS = [0.05, 0.2, 0.5, 0.79, 0.81, 1.0, 1.1, 1.27, 1.29, 2.0, 5.0, 15.0, 60.0]
ADVANTAGES = [1.3, -0.7, 0.0]


def region_batch(dtype=torch.float64):
    pairs = [(r, a) for a in ADVANTAGES for r in RATIOS]
    ratio = torch.tensor([r for r, _ in pairs], dtype=torch.float64)
    adv = torch.tensor([a for _, a in pairs], dtype=torch.float64)
    old = -torch.linspace(0.3, 4.0, len(pairs), dtype=torch.float64)
    log_prob = (old + ratio.log()).to(dtype)
    return pairs, old.to(dtype).view(1, -1), log_prob.view(1, -1), adv.to(dtype).view(1, -1)


def grad_of_loss(method, config, old, log_prob, adv, mask, agg="token-sum"):
    log_prob = log_prob.clone().requires_grad_(True)
    loss, metrics = get_policy_loss_fn(method)(
        old_log_prob=old, log_prob=log_prob, advantages=adv, response_mask=mask, loss_agg_mode=agg, config=config
    )
    loss.backward()
    return loss, log_prob.grad, metrics


@pytest.mark.parametrize("clip_ratio_c", [3.0, 10.0])
@pytest.mark.parametrize("method", METHODS)
def test_gradient_weight_matches_table_in_every_region(method, clip_ratio_c):
    pairs, old, log_prob, adv = region_batch()
    mask = torch.ones_like(old, dtype=torch.bool)
    _, grad, _ = grad_of_loss(method, table_config(method, clip_ratio_c), old, log_prob, adv, mask)
    expected = torch.tensor([[-a * table_weight(method, r, a, clip_ratio_c) for r, a in pairs]], dtype=torch.float64)
    torch.testing.assert_close(grad, expected, rtol=1e-6, atol=1e-9)


def test_region_batch_covers_every_region_and_both_dual_clip_sides():
    pairs, *_ = region_batch()
    ln = any(a < 0 and r < 1 - EPS_LOW for r, a in pairs)
    hp = any(a > 0 and r > 1 + EPS_HIGH for r, a in pairs)
    lp_below_inverse_c = any(a > 0 and r < 1 / 3 for r, a in pairs)
    hn_between = any(a < 0 and 1 + EPS_HIGH < r < 3 for r, a in pairs)
    hn_beyond_10 = any(a < 0 and r > 10 for r, a in pairs)
    hp_beyond = any(a > 0 and r > 10 for r, a in pairs)
    assert ln and hp and lp_below_inverse_c and hn_between and hn_beyond_10 and hp_beyond


@pytest.mark.parametrize("beta1, beta2", [(0.75, 1.0), (0.5, 1.0)])
def test_ce_gppo_defaults_and_authors_1p5b_setting_scale_the_clipped_weights(beta1, beta2):
    """With the default config (β1=0.75, β2=1) and the authors' 1.5B setting (β1=0.5)."""
    config = actor_config("ce_gppo", ce_gppo_beta1=beta1) if beta1 != 0.75 else actor_config("ce_gppo")
    old = torch.zeros(1, 2, dtype=torch.float64)
    log_prob = torch.tensor([[math.log(0.5), math.log(1.6)]], dtype=torch.float64)
    adv = torch.tensor([[-1.0, 1.0]], dtype=torch.float64)
    _, grad, _ = grad_of_loss("ce_gppo", config, old, log_prob, adv, torch.ones(1, 2, dtype=torch.bool))
    expected = torch.tensor([[beta1 * (1 - EPS_LOW), -beta2 * (1 + EPS_HIGH)]], dtype=torch.float64)
    torch.testing.assert_close(grad, expected)


@pytest.mark.parametrize("method", METHODS)
def test_finite_at_log_ratio_100_and_exactly_zero_gradient_on_masked_tokens(method):
    for dtype in (torch.float32, torch.bfloat16):
        old = torch.tensor([[-1.0, -1.0, -2.0, -2.0, -1.0, -1.0]], dtype=dtype)
        delta = torch.tensor([[100.0, -100.0, 100.0, -100.0, 0.1, -0.1]], dtype=dtype)
        adv = torch.tensor([[1.0, -1.0, -1.0, 1.0, 0.5, -0.5]], dtype=dtype)
        mask = torch.tensor([[True, True, False, False, True, True]])
        loss, grad, metrics = grad_of_loss(method, table_config(method, 3.0), old, old + delta, adv, mask, "token-mean")
        assert torch.isfinite(loss).all(), dtype
        assert torch.isfinite(grad).all(), dtype
        assert torch.equal(grad[~mask], torch.zeros(2, dtype=dtype)), dtype
        assert grad[0, 4] != 0 and grad[0, 5] != 0, dtype  # ordinary tokens still learn
        assert all(math.isfinite(v) for v in metrics.values()), dtype


@pytest.mark.parametrize("method", OURS)
def test_our_losses_ignore_any_garbage_on_masked_tokens(method):
    for garbage in (1e4, -1e4, math.inf, -math.inf, math.nan):
        old = torch.tensor([[-1.0, -1.0, -1.0]])
        log_prob = torch.tensor([[-0.9, garbage, -1.2]])
        adv = torch.tensor([[1.0, -1.0, -1.0]])
        mask = torch.tensor([[True, False, True]])
        loss, grad, metrics = grad_of_loss(method, table_config(method, 3.0), old, log_prob, adv, mask, "token-mean")
        assert torch.isfinite(loss) and torch.isfinite(grad).all() and grad[0, 1] == 0, garbage
        assert all(math.isfinite(v) for v in metrics.values()), garbage


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "token-sum"])
@pytest.mark.parametrize("method", METHODS)
def test_on_policy_gradient_equals_vanilla(method, agg):
    gen = torch.Generator().manual_seed(7)
    old = -torch.rand(4, 9, generator=gen, dtype=torch.float64) * 5
    adv = torch.randn(4, 1, generator=gen, dtype=torch.float64).expand(4, 9).contiguous()
    mask = torch.rand(4, 9, generator=gen) < 0.8
    mask[:, 0] = True
    _, grad, _ = grad_of_loss(method, table_config(method, 3.0), old, old.clone(), adv, mask, agg)
    _, reference, _ = grad_of_loss("vanilla", table_config("vanilla", 3.0), old, old.clone(), adv, mask, agg)
    torch.testing.assert_close(grad, reference, rtol=1e-12, atol=1e-15)
    assert grad.abs().sum() > 0


def test_gppo_reports_vanillas_loss_value_and_clip_fractions():
    """GPPO changes PPO's gradient only: the authors' loss value and clip statistics are PPO's."""
    gen = torch.Generator().manual_seed(3)
    old = -torch.rand(6, 40, generator=gen, dtype=torch.float64) * 3
    log_prob = old + torch.randn(6, 40, generator=gen, dtype=torch.float64)  # many tokens beyond c
    adv = torch.randn(6, 40, generator=gen, dtype=torch.float64)
    mask = torch.rand(6, 40, generator=gen) < 0.9
    loss, _, ours = grad_of_loss("gppo", table_config("gppo", 3.0), old, log_prob, adv, mask, "token-mean")
    ref_loss, _, ref = grad_of_loss("vanilla", table_config("vanilla", 3.0), old, log_prob, adv, mask, "token-mean")
    torch.testing.assert_close(loss, ref_loss)
    for key in ("actor/pg_clipfrac", "actor/pg_clipfrac_lower", "actor/ppo_kl"):
        assert ours[key] == pytest.approx(ref[key], rel=1e-6), key  # verl averages these in float32
    assert ours["actor/pg_clipfrac_lower"] > 0


@pytest.mark.parametrize("method", OURS)
def test_region_fractions_count_masked_tokens_out(method):
    r = torch.tensor([[0.5, 0.5, 1.0, 2.0, 2.0, 0.5]], dtype=torch.float64)
    adv = torch.tensor([[-1.0, 1.0, 1.0, 1.0, -1.0, -1.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, True, True, True, False]])
    old = torch.full_like(r, -1.0)
    _, _, metrics = grad_of_loss(method, table_config(method, 3.0), old, old + r.log(), adv, mask, "token-mean")
    fractions = [metrics[f"actor/{method}_{k}_frac"] for k in ("ln", "hp", "lp", "hn")]
    assert fractions == pytest.approx([0.2, 0.2, 0.2, 0.2])
    assert metrics["actor/pg_clipfrac"] == pytest.approx(0.4)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_shared_log_ratio_is_clamped_masked_and_has_unit_derivative_only_where_valid(dtype):
    """The ratio set-up every loss of ours shares, like verl's: log r clamped to ±20, 0 and no gradient on padding."""
    old = torch.tensor([[-1.0, -1.0, -1.0, -1.0, -1.0, -1.0]], dtype=dtype)
    delta = torch.tensor([[0.5, -0.25, 30.0, -30.0, 20.0, 0.5]], dtype=dtype)
    mask = torch.tensor([[True, True, True, True, True, False]])
    log_prob = (old + delta).requires_grad_(True)
    log_ratio = masked_log_ratio(log_prob, old, mask)
    (log_ratio * torch.arange(1.0, 7.0)).sum().backward()  # distinct upstream gradients per token
    assert log_ratio.dtype == torch.promote_types(dtype, torch.float32)
    expected = torch.tensor([[0.5, -0.25, 20.0, -20.0, 20.0, 0.0]], dtype=log_ratio.dtype)
    torch.testing.assert_close(log_ratio.detach(), expected)
    assert log_prob.grad.tolist() == [[1.0, 2.0, 0.0, 0.0, 5.0, 0.0]]  # derivative 1 up to the bound, inclusive


@pytest.mark.parametrize("method", OURS)
def test_rollout_is_weights_scale_each_tokens_gradient(method):
    pairs, old, log_prob, adv = region_batch()
    mask = torch.ones_like(old, dtype=torch.bool)
    is_weights = torch.linspace(0.5, 2.0, old.shape[-1], dtype=torch.float64).view(1, -1)
    config = table_config(method, 3.0)
    _, plain, _ = grad_of_loss(method, config, old, log_prob, adv, mask)
    weighted_lp = log_prob.clone().requires_grad_(True)
    loss, _ = get_policy_loss_fn(method)(
        old, weighted_lp, adv, mask, "token-sum", config, rollout_is_weights=is_weights
    )
    loss.backward()
    torch.testing.assert_close(weighted_lp.grad, plain * is_weights)
