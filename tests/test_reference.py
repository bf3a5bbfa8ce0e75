"""verl_dgpo/reference.py, the closed forms every loss test and ``verl-dgpo-check`` compare against, checked
by hand: a few weights of every method worked out with pencil and paper, and the properties the papers state
(continuity at the trust-region boundaries, DGPO's default n = 1, m = 2, w/r bounded for DGPO, growing for CISPO).
"""

import math

import pytest

from verl_dgpo import reference
from verl_dgpo.verl_glue import contracts

#: verl-dgpo-check's hyper-parameters: ε_l = 0.2, ε_h = 0.28, c = 3, n = 2, m = 1.5, β1 = 0.6, β2 = 0.9.
CHECK = contracts.PARAMS


def w(method, r, a, **params):
    return reference.weight(method, r, a, **{**CHECK, **params})


def test_the_check_uses_the_reference_with_its_own_parameters():
    assert contracts.closed_form_weight("dgpo", 0.5, -1.0) == w("dgpo", 0.5, -1.0)
    assert CHECK == {"eps_low": 0.2, "eps_high": 0.28, "clip_ratio_c": 3.0, "n": 2.0, "m": 1.5, "beta1": 0.6, "beta2": 0.9}


def test_dgpo_weights_by_hand():
    assert w("dgpo", 0.5, -1.0) == pytest.approx(0.5**3 / 0.8**2)  # LN: r^(n+1)/(1-ε_l)^n
    assert w("dgpo", 2.0, 1.0) == pytest.approx(1.28 ** (1 / 1.5) * 2.0 ** (1 / 3))  # HP
    assert w("dgpo", 0.5, 1.0) == 0.5 and w("dgpo", 2.0, -1.0) == 2.0  # LP, HN: r
    assert w("dgpo", 1.1, 1.0) == 1.1 and w("dgpo", 1.1, -1.0) == 1.1  # inside: r
    # the defaults n = 1, m = 2: r²/(1-ε_l) and sqrt((1+ε_h)·r)
    assert reference.weight("dgpo", 0.5, -1.0, eps_low=0.2, eps_high=0.28) == pytest.approx(0.25 / 0.8)
    assert reference.weight("dgpo", 2.0, 1.0, eps_low=0.2, eps_high=0.28) == pytest.approx(math.sqrt(1.28 * 2.0))


def test_baseline_weights_by_hand():
    assert w("vanilla", 0.5, -1.0) == 0.0 and w("vanilla", 2.0, 1.0) == 0.0  # PPO's clipped sides
    assert w("vanilla", 0.5, 1.0) == 0.5 and w("vanilla", 2.0, -1.0) == 2.0 and w("vanilla", 4.0, -1.0) == 0.0  # dual clip
    assert w("cispo", 0.5, -1.0) == pytest.approx(0.8) and w("cispo", 0.5, 1.0) == pytest.approx(0.8)  # clip(r)
    assert w("cispo", 2.0, 1.0) == pytest.approx(1.28) and w("cispo", 2.0, -1.0) == pytest.approx(1.28)
    assert w("cispo", 1.1, 1.0) == 1.1
    assert w("gppo", 0.5, -1.0) == pytest.approx(0.8) and w("gppo", 2.0, 1.0) == pytest.approx(1.28)
    assert w("gppo", 4.0, -1.0) == 0.0 and w("gppo", 2.0, -1.0) == 2.0 and w("gppo", 0.5, 1.0) == 0.5
    assert w("ce_gppo", 0.5, -1.0) == pytest.approx(0.48) and w("ce_gppo", 2.0, 1.0) == pytest.approx(1.152)
    assert w("ce_gppo", 4.0, -1.0) == 0.0 and w("ce_gppo", 1.1, 1.0) == 1.1
    assert w("aspo", 0.9, 1.0) == pytest.approx(1 / 0.9) and w("aspo", 0.2, 1.0) == 3.0  # 1/r, capped at c
    assert w("aspo", 2.0, 1.0) == 0.0 and w("aspo", 0.5, -1.0) == 0.0 and w("aspo", 4.0, -1.0) == 3.0
    assert w("aspo", 2.0, -1.0) == 2.0  # HN below c: r
    # SAPO, τ+ = 1, τ- = 1.05: w = 4·r·σ(τ(r-1))·(1-σ); at r = 1 σ = 1/2, so w = 1
    assert w("sapo", 1.0, 1.0) == pytest.approx(1.0) and w("sapo", 1.0, -1.0) == pytest.approx(1.0)
    s = 1 / (1 + math.exp(-1.05))
    assert w("sapo", 2.0, -1.0) == pytest.approx(8 * s * (1 - s))


def test_a_zero_advantage_is_inside():
    assert reference.region(0.01, 0.0, 0.2, 0.28) == "inside" and w("dgpo", 0.01, 0.0) == 0.01
    assert [reference.region(r, a, 0.2, 0.28) for r, a in [(0.5, -1), (2, 1), (0.5, 1), (2, -1), (1, 1)]] == [
        "LN", "HP", "LP", "HN", "inside"]  # fmt: skip


@pytest.mark.parametrize("method", ["dgpo", "cispo", "gppo"])
@pytest.mark.parametrize("n,m", [(1.0, 2.0), (2.0, 1.5), (3.0, 1.0)])
def test_weight_is_continuous_at_both_trust_region_boundaries(method, n, m):
    """DGPO's and the clipped-IS methods' weights meet ``r`` at 1-ε_l (A < 0) and 1+ε_h (A > 0)."""
    for boundary, adv in [(0.8, -1.0), (1.28, 1.0)]:
        left = w(method, boundary * (1 - 1e-9), adv, n=n, m=m)
        right = w(method, boundary * (1 + 1e-9), adv, n=n, m=m)
        assert left == pytest.approx(boundary, rel=1e-7) and right == pytest.approx(boundary, rel=1e-7)


def test_pi_weight_is_bounded_for_dgpo_and_grows_for_cispo():
    """The weight on ∇π, w/r, in LN: CISPO's (1-ε_l)/r = 16 at r = 0.05; DGPO's (r/(1-ε_l))^n -> 0."""
    assert reference.pi_weight("cispo", 0.05, -1, eps_low=0.2, eps_high=0.28) == pytest.approx(0.8 / 0.05)
    assert reference.pi_weight("dgpo", 0.05, -1, eps_low=0.2, eps_high=0.28) == pytest.approx(0.05 / 0.8)
    assert reference.pi_weight("dgpo", 0.05, -1, eps_low=0.2, eps_high=0.28, n=2) == pytest.approx((0.05 / 0.8) ** 2)


def test_an_unknown_method_is_refused():
    with pytest.raises(KeyError, match="known: vanilla"):
        w("ppo", 1.0, 1.0)
