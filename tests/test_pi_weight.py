"""The weight on ∇π in units of 1/π_old (``w / r``; verl_dgpo.maths.loss_metrics), against hand closed forms.

``actor/<method>_pi_weight_max`` of the package's losses (dgpo, gppo, ce_gppo, aspo) and the study probe's
``study/pi_weight_*`` for verl's own losses (grpo = ``vanilla``, ``cispo``, ``sapo``) and the package's, whose
weight the probe *measures* from the loss's autograd. The closed forms of ``w / r`` are verl_dgpo/reference.py's,
written from each method's definition apart from the package's maths. ε_low = 0.2, ε_high = 0.28 (asymmetric, so
a swapped bound shows), dual clip c = 3, CE-GPPO β1 = 0.75, β2 = 1, DGPO n = 1 (and 2), m = 2, SAPO τ+ = 1, τ− = 1.05 (verl's).
"""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from verl_dgpo import reference

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENT = os.path.join(ROOT, "experiments", "method_comparison")
EPS_LOW, EPS_HIGH, C = 0.2, 0.28, 3.0

#: (ratio r, advantage A) per region; "A=0" and "masked" tokens must never count, whatever their ratio.
CELLS = {
    "LN": [(0.05, -1.0), (0.5, -0.7)],
    "HP": [(1.5, 1.0), (4.0, 0.3)],
    "LP": [(0.1, 1.0), (0.6, 0.4)],
    "HN": [(1.4, -1.0), (5.0, -0.2)],  # 5 > c: the dual clip's side
    "inside": [(1.0, 1.0), (0.9, -1.0), (1.1, 0.5)],
    "A=0": [(0.01, 0.0)],
}
MASKED = (0.001, -1.0)
OUTSIDE = ("LN", "HP", "LP", "HN")


LOSS_OF = {"grpo": "vanilla", "cispo": "cispo", "sapo": "sapo", "dgpo": "dgpo", "gppo": "gppo", "ce_gppo": "ce_gppo",
           "aspo": "aspo"}


def hand_pi_weight(method, r, a, n=1):
    """w / r of one token with A ≠ 0: verl_dgpo/reference.py's closed form of each method (checked by hand in
    tests/test_reference.py), with this file's ε, c and the defaults β1 = 0.75, β2 = 1, m = 2, τ+ = 1, τ- = 1.05."""
    return reference.pi_weight(LOSS_OF[method], r, a, eps_low=EPS_LOW, eps_high=EPS_HIGH, clip_ratio_c=C, n=n)


def batch(regions):
    """One row per cell of ``regions`` plus one padding column holding MASKED (its ratio must be ignored)."""
    cells = [cell for region in regions for cell in CELLS[region]]
    ratios = torch.tensor([[r, MASKED[0]] for r, _ in cells], dtype=torch.float64)
    adv = torch.tensor([[a, MASKED[1]] for _, a in cells], dtype=torch.float64)
    mask = torch.tensor([[1, 0]] * len(cells))
    old = torch.log(torch.linspace(0.05, 0.9, len(cells), dtype=torch.float64)).unsqueeze(1).expand(-1, 2).contiguous()
    return old + torch.log(ratios), old, adv, mask, cells


def hand_max(method, cells, n=1):
    out = [hand_pi_weight(method, r, a, n) for r, a in cells if a != 0 and not (1 - EPS_LOW <= r <= 1 + EPS_HIGH)]
    return max(out, default=0.0)


SUBSETS = [tuple(CELLS)] + [(region, "A=0") for region in OUTSIDE] + [("inside", "A=0")]


@pytest.mark.parametrize("method", ["dgpo", "gppo", "ce_gppo", "aspo"])
@pytest.mark.parametrize("regions", SUBSETS, ids=lambda r: "+".join(r))
def test_package_loss_logs_pi_weight_max_equal_to_hand_value(actor_config_factory, method, regions):
    from verl.trainer.ppo.core_algos import get_policy_loss_fn

    import verl_dgpo.registry  # noqa: F401

    log_prob, old, adv, mask, cells = batch(regions)
    config = actor_config_factory(loss_mode=method, eps_low=EPS_LOW, eps_high=EPS_HIGH)
    _, metrics = get_policy_loss_fn(method)(old, log_prob, adv, mask, "token-mean", config)
    assert metrics[f"actor/{method}_pi_weight_max"] == pytest.approx(hand_max(method, cells), rel=1e-9, abs=1e-12)


def test_dgpo_n2_pi_weight_is_the_squared_decay(actor_config_factory):
    from verl.trainer.ppo.core_algos import get_policy_loss_fn

    import verl_dgpo.registry  # noqa: F401

    log_prob, old, adv, mask, cells = batch(("LN",))
    config = actor_config_factory(loss_mode="dgpo", eps_low=EPS_LOW, eps_high=EPS_HIGH, n=2)
    _, metrics = get_policy_loss_fn("dgpo")(old, log_prob, adv, mask, "token-mean", config)
    assert metrics["actor/dgpo_pi_weight_max"] == pytest.approx((0.5 / 0.8) ** 2, rel=1e-9)


PROBE = r'''
import json, sys, torch
import comparison_study.plugin as plugin
from comparison_study import probe
from verl.trainer.ppo.core_algos import get_policy_loss_fn
from verl_dgpo.config import standalone_actor_config
cases = json.loads(sys.argv[1])
out = {}
for key, (method, loss, agg, lp, old, adv, mask) in cases.items():
    cfg = standalone_actor_config(loss, eps_low=%r, eps_high=%r, clip_ratio_c=%r)
    lp, old, adv, mask = (torch.tensor(x, dtype=torch.float64) for x in (lp, old, adv, mask))
    _, metrics = get_policy_loss_fn("study_" + loss)(old, lp, adv, mask, agg, cfg, None)
    out[key] = {k: metrics[k] for k in probe.STUDY_PI_WEIGHT_KEYS}
print(json.dumps(out))
''' % (EPS_LOW, EPS_HIGH, C)

def run_probe(cases):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, EXPERIMENT, os.environ.get("PYTHONPATH", "")]))
    env.pop("VERL_USE_EXTERNAL_MODULES", None)
    env.pop("METHOD_COMPARISON_UPDATES_PER_STEP", None)
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(cases)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def probe_results():
    """The study probe's metrics of every method on every subset, in one subprocess (it imports the plugin)."""
    cases = {}
    for method, loss in LOSS_OF.items():
        for regions in SUBSETS:
            log_prob, old, adv, mask, _ = batch(regions)
            for agg in ("token-mean", "seq-mean-token-sum") if regions == SUBSETS[0] else ("token-mean",):
                cases[f"{method}|{'+'.join(regions)}|{agg}"] = (method, loss, agg, log_prob.tolist(), old.tolist(),
                                                                 adv.tolist(), mask.tolist())
    for method in DISTRIBUTION_METHODS:
        log_prob, old, adv, mask = _distribution_case()
        cases[f"{method}|distribution"] = (method, LOSS_OF[method], "token-mean", log_prob.tolist(), old.tolist(),
                                           adv.tolist(), mask.tolist())
    return run_probe(cases)


@pytest.mark.parametrize("method", list(LOSS_OF))
@pytest.mark.parametrize("regions,agg", [(r, "token-mean") for r in SUBSETS] + [(SUBSETS[0], "seq-mean-token-sum")],
                         ids=lambda x: "+".join(x) if isinstance(x, tuple) else x)
def test_study_probe_measures_pi_weight_max_equal_to_hand_value(probe_results, method, regions, agg):
    """grpo and cispo (verl's losses, which log no weight) and sapo included: the probe measures w from the
    loss's own gradient, whatever the aggregation (SAPO's verl loss always aggregates seq-mean-token-mean)."""
    _, _, _, _, cells = batch(regions)
    got = probe_results[f"{method}|{'+'.join(regions)}|{agg}"]
    assert got["study/pi_weight_max"] == pytest.approx(hand_max(method, cells), rel=1e-6, abs=1e-9)


def test_hand_values_grow_for_soft_clips_and_stay_bounded_for_dgpo():
    """The issue's closed forms read off the table: CISPO's LN weight (1-ε_l)/r = 16 at r = 0.05, DGPO's (r/(1-ε_l))."""
    assert hand_pi_weight("cispo", 0.05, -1) == pytest.approx(0.8 / 0.05)
    assert hand_pi_weight("dgpo", 0.05, -1) == pytest.approx(0.05 / 0.8)
    assert hand_max("grpo", [c for r in OUTSIDE for c in CELLS[r]]) == 1.0


DISTRIBUTION_METHODS = ["cispo", "grpo", "dgpo", "sapo"]


def _distribution_case(seed=0, count=200):
    """``count`` graded tokens (A ≠ 0) in LN, HP or inside, a few A = 0 and masked tokens with tiny ratios."""
    gen = torch.Generator().manual_seed(seed)
    ratios = torch.rand(count, generator=gen, dtype=torch.float64) * 2.0 + 0.02
    adv = torch.where(torch.rand(count, generator=gen) < 0.5, -1.0, 1.0).to(torch.float64)
    old = torch.log(torch.rand(count, generator=gen, dtype=torch.float64) * 0.98 + 0.01)
    ratios = torch.cat([ratios, torch.tensor([0.001, 0.002])])
    adv = torch.cat([adv, torch.tensor([0.0, -1.0])])
    old = torch.cat([old, torch.log(torch.tensor([1e-6, 1e-7]))])  # lowest π_old of all: A = 0 and masked
    mask = torch.cat([torch.ones(count), torch.tensor([1.0, 0.0])])
    return (old + torch.log(ratios)).view(2, -1), old.view(2, -1), adv.view(2, -1), mask.view(2, -1)


def _nearest_rank_p99(values):
    values = sorted(values)
    return values[math.ceil(0.99 * len(values)) - 1] if values else 0.0


@pytest.mark.parametrize("method", DISTRIBUTION_METHODS)
def test_study_p99_and_lowest_probability_decile_match_hand_selection(probe_results, method):
    log_prob, old, adv, mask = _distribution_case()
    got = probe_results[f"{method}|distribution"]
    tokens = [(math.exp(lp - o), a, o) for lp, o, a, m in zip(log_prob.flatten().tolist(), old.flatten().tolist(),
                                                                adv.flatten().tolist(), mask.flatten().tolist())
              if m and a != 0]
    assert len(tokens) == 200
    outside = [hand_pi_weight(method, r, a) for r, a, _ in tokens if not (1 - EPS_LOW <= r <= 1 + EPS_HIGH)]
    decile = sorted(tokens, key=lambda t: t[2])[:20]  # ⌈200/10⌉ lowest π_old among graded tokens
    decile_values = [hand_pi_weight(method, r, a) for r, a, _ in decile]
    assert got["study/pi_weight_max"] == pytest.approx(max(outside), rel=1e-6)
    assert got["study/pi_weight_p99"] == pytest.approx(_nearest_rank_p99(outside), rel=1e-6)
    assert got["study/pi_weight_low_decile_max"] == pytest.approx(max(decile_values), rel=1e-6)
    assert got["study/pi_weight_low_decile_p99"] == pytest.approx(_nearest_rank_p99(decile_values), rel=1e-6)
    if method == "cispo":
        assert got["study/pi_weight_p99"] < got["study/pi_weight_max"]  # the case separates the two


def test_distribution_of_an_empty_selection_is_zero():
    from verl_dgpo.maths.loss_metrics import pi_weight_distribution

    z = torch.zeros(2, 3)
    got = pi_weight_distribution(z, z, z, z, z, eps_low=0.2, eps_high=0.2)
    assert got == dict.fromkeys(got, 0.0) and len(got) == 4
    got = pi_weight_distribution(torch.zeros(0, 0), torch.zeros(0, 0), torch.zeros(0, 0), torch.zeros(0, 0),
                                 torch.zeros(0, 0), eps_low=0.2, eps_high=0.2)
    assert set(got.values()) == {0.0}
