"""The registered ``dgpo`` policy loss against DGPO's closed forms (arXiv 2603.14389)."""

import math

import pytest
import torch
from verl.trainer.ppo.core_algos import get_policy_loss_fn

from verl_dgpo import reference
from verl_dgpo.maths.losses import dgpo_surrogate

AGG_MODES = ["token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
NM = [(1, 2), (2, 2), (1, 1), (3, 1.5)]
EPS_LOW, EPS_HIGH = 0.2, 0.28


# ---------------------------------------------------------------- closed forms, element by element
def weight(r, a, n, m):
    """Gradient weight w on A·∇log π (paper, Sec. DGPO; verl_dgpo/reference.py), one token at a time."""
    return reference.weight("dgpo", r, a, eps_low=EPS_LOW, eps_high=EPS_HIGH, n=n, m=m)


def agg_scale(mask, mode):
    """d(aggregate)/d(loss[i, t]) for each of verl's aggregation modes, written out per token."""
    rows, cols = mask.shape
    lengths = [int(mask[i].sum()) for i in range(rows)]
    n_tokens = sum(lengths)
    n_seqs = sum(1 for length in lengths if length > 0)
    out = torch.zeros(rows, cols, dtype=torch.float64)
    for i in range(rows):
        for t in range(cols):
            if not mask[i, t]:
                continue
            out[i, t] = {
                "token-mean": 1 / n_tokens,
                "token-sum": 1.0,
                "seq-mean-token-sum": 1 / n_seqs,
                "seq-mean-token-mean": 1 / (lengths[i] + 1e-8) / n_seqs,
                "seq-mean-token-sum-norm": 1 / n_seqs / cols,
            }[mode]
    return out


def expected(log_ratio, adv, mask, mode, n, m, value=False):
    """Closed-form per-token gradient of the aggregated loss w.r.t. log π (or the loss value)."""
    scale = agg_scale(mask, mode)
    grad = torch.zeros_like(scale)
    for i in range(grad.shape[0]):
        for t in range(grad.shape[1]):
            grad[i, t] = -adv[i, t].item() * weight(math.exp(log_ratio[i, t].item()), adv[i, t].item(), n, m)
    grad = grad * scale
    return grad.sum() if value else grad


def batch_covering_all_regions(seed):
    """log-ratios spread over LN/HP/LP/HN/inside, both boundaries exactly and just beside them, A of both
    signs and zero, a ragged mask and one fully masked row."""
    g = torch.Generator().manual_seed(seed)
    rows, cols = 6, 9
    lr = (torch.rand(rows, cols, generator=g, dtype=torch.float64) - 0.5) * 3.0
    lo, hi = math.log1p(-EPS_LOW), math.log1p(EPS_HIGH)
    lr[0, :6] = torch.tensor([lo, hi, lo - 1e-7, lo + 1e-7, hi - 1e-7, hi + 1e-7], dtype=torch.float64)
    adv = torch.randn(rows, cols, generator=g, dtype=torch.float64)
    adv[0, :6] = torch.tensor([-1.0, 1.0, -1.0, -1.0, 1.0, 1.0], dtype=torch.float64)
    adv[1, 0] = 0.0
    lengths = [9, 7, 5, 9, 0, 3]
    mask = torch.tensor([[t < length for t in range(cols)] for length in lengths])
    old = torch.randn(rows, cols, generator=g, dtype=torch.float64) - 2.0
    return old + lr, old, adv, mask, lr


def test_batch_covers_every_region():
    _, _, adv, mask, lr = batch_covering_all_regions(0)
    lo, hi = math.log1p(-EPS_LOW), math.log1p(EPS_HIGH)
    valid = mask
    assert ((adv < 0) & (lr < lo) & valid).any() and ((adv > 0) & (lr > hi) & valid).any()
    assert ((adv > 0) & (lr < lo) & valid).any() and ((adv < 0) & (lr > hi) & valid).any()
    assert ((lr > lo) & (lr < hi) & valid).any()


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("mode", AGG_MODES)
@pytest.mark.parametrize("n,m", NM)
def test_gradient_equals_closed_form_weight(actor_config_factory, n, m, mode, seed):
    log_prob, old, adv, mask, lr = batch_covering_all_regions(seed)
    log_prob.requires_grad_(True)
    config = actor_config_factory(eps_low=EPS_LOW, eps_high=EPS_HIGH, n=n, m=m)
    loss, _ = get_policy_loss_fn("dgpo")(old, log_prob, adv, mask, loss_agg_mode=mode, config=config)
    loss.backward()
    torch.testing.assert_close(log_prob.grad, expected(lr, adv, mask, mode, n, m), rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("mode", AGG_MODES)
@pytest.mark.parametrize("n,m", NM)
def test_forward_value_equals_closed_form(actor_config_factory, n, m, mode):
    log_prob, old, adv, mask, lr = batch_covering_all_regions(3)
    config = actor_config_factory(eps_low=EPS_LOW, eps_high=EPS_HIGH, n=n, m=m)
    loss, _ = get_policy_loss_fn("dgpo")(old, log_prob, adv, mask, loss_agg_mode=mode, config=config)
    # the surrogate's value is the weight itself: loss = agg(-A · w)
    torch.testing.assert_close(loss, expected(lr, adv, mask, mode, n, m, value=True), rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("n,m", NM)
def test_finite_difference_of_surrogate_in_log_ratio_is_the_weight(n, m):
    """∂s/∂ρ with the stop-gradient operand frozen, by central differences, equals the paper's weight."""
    _, _, adv, mask, lr = batch_covering_all_regions(5)
    lo, hi = math.log1p(-EPS_LOW), math.log1p(EPS_HIGH)
    away_from_boundary = ((lr - lo).abs() > 1e-4) & ((lr - hi).abs() > 1e-4)
    h = 1e-6
    kwargs = dict(eps_low=EPS_LOW, eps_high=EPS_HIGH, n=n, m=m)
    plus, _ = dgpo_surrogate(lr + h, lr, adv, **kwargs)
    minus, _ = dgpo_surrogate(lr - h, lr, adv, **kwargs)
    fd = (plus - minus) / (2 * h)
    closed = torch.tensor(
        [[weight(math.exp(x), a, n, m) for x, a in zip(row_lr.tolist(), row_a.tolist())] for row_lr, row_a in zip(lr, adv)],
        dtype=torch.float64,
    )
    torch.testing.assert_close(fd[away_from_boundary], closed[away_from_boundary], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("n,m", NM)
def test_weight_is_continuous_at_both_trust_region_boundaries(n, m):
    for boundary, adv in [(1 - EPS_LOW, -1.0), (1 + EPS_HIGH, 1.0)]:
        left = weight(boundary * (1 - 1e-9), adv, n, m)
        right = weight(boundary * (1 + 1e-9), adv, n, m)
        assert left == pytest.approx(boundary, rel=1e-7) and right == pytest.approx(boundary, rel=1e-7)
        # and the implementation agrees on both sides
        lr = torch.tensor([[math.log(boundary) - 1e-9, math.log(boundary) + 1e-9]], dtype=torch.float64)
        s, _ = dgpo_surrogate(lr, lr, torch.full_like(lr, adv), eps_low=EPS_LOW, eps_high=EPS_HIGH, n=n, m=m)
        torch.testing.assert_close(s, torch.full_like(s, boundary), rtol=1e-7, atol=0)


@pytest.mark.parametrize("mode", AGG_MODES)
@pytest.mark.parametrize("n,m", NM)
def test_on_policy_gradient_equals_vanilla_exactly(actor_config_factory, n, m, mode):
    """At r ≡ 1 (one mini-batch, one epoch) DGPO is GRPO: identical gradients, bit for bit."""
    _, old, adv, mask, _ = batch_covering_all_regions(7)
    grads = {}
    for name in ["dgpo", "vanilla"]:
        log_prob = old.clone().requires_grad_(True)
        config = actor_config_factory(loss_mode=name, eps_low=EPS_LOW, eps_high=EPS_HIGH, n=n, m=m)
        loss, _ = get_policy_loss_fn(name)(old, log_prob, adv, mask, loss_agg_mode=mode, config=config)
        loss.backward()
        grads[name] = log_prob.grad
    assert torch.equal(grads["dgpo"], grads["vanilla"])


def test_rollout_is_weights_multiply_each_token(actor_config_factory):
    log_prob, old, adv, mask, lr = batch_covering_all_regions(2)
    is_w = torch.rand(lr.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 0.5
    log_prob.requires_grad_(True)
    config = actor_config_factory(eps_low=EPS_LOW, eps_high=EPS_HIGH)
    loss, _ = get_policy_loss_fn("dgpo")(old, log_prob, adv, mask, "token-mean", config, rollout_is_weights=is_w)
    loss.backward()
    torch.testing.assert_close(log_prob.grad, expected(lr, adv, mask, "token-mean", 1, 2) * is_w, rtol=1e-6, atol=1e-12)


def test_metrics_report_region_fractions_and_weights(actor_config_factory):
    log_prob, old, adv, mask, lr = batch_covering_all_regions(4)
    config = actor_config_factory(eps_low=EPS_LOW, eps_high=EPS_HIGH, n=2, m=2)
    _, metrics = get_policy_loss_fn("dgpo")(old, log_prob, adv, mask, "token-mean", config)
    lo, hi = math.log1p(-EPS_LOW), math.log1p(EPS_HIGH)
    count = mask.sum().item()
    cells = [(lr[i, t].item(), adv[i, t].item()) for i, t in mask.nonzero().tolist()]
    assert metrics["actor/dgpo_ln_frac"] == pytest.approx(sum(x < lo and a < 0 for x, a in cells) / count)
    assert metrics["actor/dgpo_hp_frac"] == pytest.approx(sum(x > hi and a > 0 for x, a in cells) / count)
    assert metrics["actor/dgpo_lp_frac"] == pytest.approx(sum(x < lo and a > 0 for x, a in cells) / count)
    assert metrics["actor/dgpo_hn_frac"] == pytest.approx(sum(x > hi and a < 0 for x, a in cells) / count)
    weights = [weight(math.exp(x), a, 2, 2) for x, a in cells]
    assert metrics["actor/dgpo_weight_mean"] == pytest.approx(sum(weights) / count, rel=1e-9)
    assert metrics["actor/dgpo_weight_max"] == pytest.approx(max(weights), rel=1e-9)
    assert metrics["actor/ppo_kl"] == pytest.approx(-sum(x for x, _ in cells) / count, rel=1e-9)
    assert all(isinstance(v, float) for v in metrics.values())
