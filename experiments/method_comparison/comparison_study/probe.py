"""The comparison's uniform metrics, computed from the tensors verl hands a policy loss (no verl import).

Per policy-loss call (one mini-batch or micro-batch update), with ``r = exp(log_prob - old_log_prob)`` over
valid response tokens and ``ε_low/ε_high`` resolved like verl's losses (``clip_ratio_low/high``, falling
back to ``clip_ratio``):

- ``study/ln_frac``  A<0, r<1-ε_low;  ``study/hp_frac``  A>0, r>1+ε_high;
- ``study/lp_frac``  A>0, r<1-ε_low;  ``study/hn_frac``  A<0, r>1+ε_high;
- ``study/out_frac`` r outside [1-ε_low, 1+ε_high] (any advantage sign);
- ``study/ratio_max``, ``study/ratio_min``: extremes of r;
- ``study/pi_weight_max``, ``study/pi_weight_p99``, ``study/pi_weight_low_decile_max``,
  ``study/pi_weight_low_decile_p99``: the weight on ∇π in units of 1/π_old, ``w / r``, over the
  out-of-trust-region tokens and over the lowest-π_old decile (definitions:
  :mod:`verl_dgpo.maths.loss_metrics`), with ``w`` **measured** from the wrapped loss's own autograd by
  :func:`measured_weight`, the same way for verl's losses and the package's.

verl averages a loss's metrics over the updates of a training step, which is right for the fractions but
not for the extremes. When ``METHOD_COMPARISON_UPDATES_PER_STEP=K`` is set (the runner sets it to the number
of loss calls per training step), :class:`StepExtremes` keeps the extremes over the K calls of a step and
reports them once, at the step's last call, so the logged per-step value is the true max (min) of the step;
the four ``pi_weight`` values of a step are likewise the largest of its updates' values.
The losses that attach these metrics are registered by :mod:`comparison_study.plugin`.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable

import torch

from verl_dgpo.maths.loss_metrics import PI_WEIGHT_KEYS, pi_weight_distribution
from verl_dgpo.maths.losses import log_ratio_and_validity

UPDATES_ENV = "METHOD_COMPARISON_UPDATES_PER_STEP"
FRACTION_KEYS = ("study/ln_frac", "study/hp_frac", "study/lp_frac", "study/hn_frac", "study/out_frac")
EXTREME_KEYS = ("study/ratio_max", "study/ratio_min")
STUDY_PI_WEIGHT_KEYS = tuple(f"study/{key}" for key in PI_WEIGHT_KEYS)
#: log-ratios are clamped to this before exp, so an extreme ratio is large but finite.
LOG_RATIO_BOUND = 60.0


def trust_region_bounds(config: Any) -> tuple[float, float]:
    """``(ε_low, ε_high)`` as verl's vanilla loss reads them (``clip_ratio_*`` falling back to ``clip_ratio``)."""
    get = config.get if hasattr(config, "get") else (lambda key, default=None: getattr(config, key, default))
    clip = get("clip_ratio", 0.2)
    low, high = get("clip_ratio_low", None), get("clip_ratio_high", None)
    return float(clip if low is None else low), float(clip if high is None else high)


@torch.no_grad()
def ratio_stats(old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
                response_mask: torch.Tensor, eps_low: float, eps_high: float) -> dict[str, float]:
    """Region fractions over valid tokens and the extremes of r (``nan`` extremes for an empty mask)."""
    valid = response_mask.bool()
    log_ratio = (log_prob.detach().float() - old_log_prob.float()).clamp(-LOG_RATIO_BOUND, LOG_RATIO_BOUND)
    ratio = log_ratio.exp()
    adv = advantages.float()
    low, high = ratio < 1.0 - eps_low, ratio > 1.0 + eps_high
    neg, pos = adv < 0, adv > 0
    count = valid.sum().clamp(min=1)
    regions = (neg & low, pos & high, pos & low, neg & high, low | high)
    fractions = [((region & valid).sum() / count).item() for region in regions]
    if bool(valid.any()):
        extremes = [ratio[valid].max().item(), ratio[valid].min().item()]
    else:
        extremes = [math.nan, math.nan]
    return dict(zip(FRACTION_KEYS + EXTREME_KEYS, fractions + extremes))


def measured_weight(loss_fn: Callable, old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
                    response_mask: torch.Tensor, loss_agg_mode: str, config: Any, **kwargs) -> torch.Tensor:
    """Per token, the weight ``w`` on ``A·∇log π`` that ``loss_fn`` (a verl policy loss) actually applies.

    The aggregated loss's gradient in ``log_prob`` is ``g_t = -c_t·A_t·w_t(r_t)``, with ``c_t`` the
    aggregation's per-token factor (token-mean: 1/N; SAPO's seq-mean-token-mean: 1/(B·L_i)), which does not
    depend on r. At ``log_prob = old_log_prob`` (``r ≡ 1``) every method here has ``w = 1`` (on-policy they
    all reduce to the plain policy gradient; SAPO's gate has slope 1/4·4 there), so that second gradient is
    ``g0_t = -c_t·A_t`` and ``w_t = g_t / g0_t``. Both come from two extra calls of the loss on detached copies
    (no rollout correction weights); tokens with ``A = 0`` or masked get 0. The value carries the host's own
    rounding (its ratio in the trainer's precision), so a closed-form 1 can read e.g. 1.002.
    """
    grads = []
    with torch.enable_grad():
        for point in (log_prob, old_log_prob):
            x = point.detach().clone().requires_grad_(True)
            loss, _ = loss_fn(old_log_prob.detach(), x, advantages, response_mask, loss_agg_mode, config, None, **kwargs)
            (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
            grads.append(torch.zeros_like(x) if grad is None else grad.detach())
    g, g0 = grads
    graded = response_mask.bool() & (advantages != 0) & (g0 != 0)
    return torch.where(graded, g / torch.where(graded, g0, 1.0), 0.0)


@torch.no_grad()
def pi_weight_stats(weight: torch.Tensor, old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
                    response_mask: torch.Tensor, eps_low: float, eps_high: float) -> dict[str, float]:
    """:data:`STUDY_PI_WEIGHT_KEYS` of one update from the measured ``weight`` (log r clamped at ±20, as the losses)."""
    log_ratio, _ = log_ratio_and_validity(log_prob.detach(), old_log_prob, response_mask)
    stats = pi_weight_distribution(weight, log_ratio, old_log_prob, advantages, response_mask,
                                   eps_low=eps_low, eps_high=eps_high)
    return {f"study/{key}": value for key, value in stats.items()}


class StepExtremes:
    """Running max/min of r (and max of each ``pi_weight`` value) over the ``updates_per_step`` loss calls of a step."""

    def __init__(self, updates_per_step: int):
        self.updates_per_step = updates_per_step
        self.calls = 0
        self._reset()

    def _reset(self) -> None:
        self.max = -math.inf
        self.min = math.inf
        self.maxima: dict[str, float] = {}

    def add(self, ratio_max: float, ratio_min: float, maxima: dict[str, float] | None = None) -> dict[str, float]:
        """Record one call; return the step's extremes at its last call, else an empty dict."""
        if not math.isnan(ratio_max):
            self.max, self.min = max(self.max, ratio_max), min(self.min, ratio_min)
        for key, value in (maxima or {}).items():
            self.maxima[key] = max(self.maxima.get(key, -math.inf), value)
        self.calls += 1
        if self.calls < self.updates_per_step:
            return {}
        out = {"study/ratio_max": self.max, "study/ratio_min": self.min, **self.maxima}
        self.calls = 0
        self._reset()
        return out


def updates_per_step_from_env() -> int | None:
    value = os.environ.get(UPDATES_ENV)
    if not value:
        return None
    count = int(value)
    if count < 1:
        raise ValueError(f"{UPDATES_ENV} must be a positive integer, got {value!r}")
    return count


_STEP = StepExtremes(updates_per_step_from_env() or 1)
