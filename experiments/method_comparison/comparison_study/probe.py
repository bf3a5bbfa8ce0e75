"""The comparison's uniform metrics, computed from the tensors verl hands a policy loss (no verl import).

Per policy-loss call (one mini-batch or micro-batch update), with ``r = exp(log_prob - old_log_prob)`` over
valid response tokens and ``ε_low/ε_high`` resolved like verl's losses (``clip_ratio_low/high``, falling
back to ``clip_ratio``):

- ``study/ln_frac``  A<0, r<1-ε_low;  ``study/hp_frac``  A>0, r>1+ε_high;
- ``study/lp_frac``  A>0, r<1-ε_low;  ``study/hn_frac``  A<0, r>1+ε_high;
- ``study/out_frac`` r outside [1-ε_low, 1+ε_high] (any advantage sign);
- ``study/ratio_max``, ``study/ratio_min``: extremes of r.

verl averages a loss's metrics over the updates of a training step, which is right for the fractions but
not for the extremes. When ``METHOD_COMPARISON_UPDATES_PER_STEP=K`` is set (the runner sets it to the number
of loss calls per training step), :class:`StepExtremes` keeps the extremes over the K calls of a step and
reports them once, at the step's last call, so the logged per-step value is the true max (min) of the step.
The losses that attach these metrics are registered by :mod:`comparison_study.plugin`.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch

UPDATES_ENV = "METHOD_COMPARISON_UPDATES_PER_STEP"
FRACTION_KEYS = ("study/ln_frac", "study/hp_frac", "study/lp_frac", "study/hn_frac", "study/out_frac")
EXTREME_KEYS = ("study/ratio_max", "study/ratio_min")
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


class StepExtremes:
    """Running max/min of r over the ``updates_per_step`` loss calls of a training step."""

    def __init__(self, updates_per_step: int):
        self.updates_per_step = updates_per_step
        self.calls = 0
        self.max = -math.inf
        self.min = math.inf

    def add(self, ratio_max: float, ratio_min: float) -> dict[str, float]:
        """Record one call; return the step's extremes at its last call, else an empty dict."""
        if not math.isnan(ratio_max):
            self.max, self.min = max(self.max, ratio_max), min(self.min, ratio_min)
        self.calls += 1
        if self.calls < self.updates_per_step:
            return {}
        out = {"study/ratio_max": self.max, "study/ratio_min": self.min}
        self.calls, self.max, self.min = 0, -math.inf, math.inf
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
