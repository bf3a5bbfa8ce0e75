"""Study-only metrics plugin: the same ratio and trust-region metrics for every policy loss.

verl's losses log different things (vanilla: ``pg_clipfrac``; CISPO: almost nothing; ours: region
fractions), so the comparison needs one definition for all. This module is loaded **only in study runs**,
through ``VERL_USE_EXTERNAL_MODULES=verl_dgpo.study.boot`` (set by :mod:`verl_dgpo.study.runs`), in every
process of the run; importing this module itself changes nothing. :func:`install_all` (called by
:mod:`verl_dgpo.study.boot`) rebinds the name ``get_policy_loss_fn`` inside
``verl.workers.utils.losses`` (the actor's loss lookup) to return the registered loss wrapped by
:func:`probed`; verl's loss registry itself is left untouched.

Per policy-loss call (one mini-batch or micro-batch update), from the tensors verl passes in, with
``r = exp(log_prob - old_log_prob)`` over valid response tokens and ``ε_low/ε_high`` resolved like verl's
losses (``clip_ratio_low/high``, falling back to ``clip_ratio``), the wrapper adds to the loss's metrics:

- ``study/ln_frac``  A<0, r<1-ε_low;  ``study/hp_frac``  A>0, r>1+ε_high;
- ``study/lp_frac``  A>0, r<1-ε_low;  ``study/hn_frac``  A<0, r>1+ε_high;
- ``study/out_frac`` r outside [1-ε_low, 1+ε_high] (any advantage sign);
- ``study/ratio_max``, ``study/ratio_min``: extremes of r.

verl averages a loss's metrics over the updates of a training step, which is right for the fractions but
not for the extremes. When ``VERL_DGPO_STUDY_UPDATES_PER_STEP=K`` is set (the runner sets it to the
number of loss calls per training step: PPO epochs x mini-batches x micro-batches), the extremes are
kept as running values over the K calls of a step and reported once, at the step's last call, so the
logged per-step value is the true max (min) over the whole step. Without it, every call reports its
own extremes and the logged value is their mean over the step's updates.

It also makes the ``hf`` rollout's sampling reproducible per request (:mod:`verl_dgpo.study.seeded_sampling`)
unless ``VERL_DGPO_STUDY_SEEDED_SAMPLING=0``.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any, Callable

import torch

UPDATES_ENV = "VERL_DGPO_STUDY_UPDATES_PER_STEP"
#: set to 0 to keep the hf rollout server's own (batch-order dependent) sampling in a study run.
SEEDED_SAMPLING_ENV = "VERL_DGPO_STUDY_SEEDED_SAMPLING"
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


def probed(loss_fn: Callable) -> Callable:
    """``loss_fn`` with the study metrics added to its metrics dict; the loss value is unchanged."""
    if getattr(loss_fn, "__study_probed__", False):
        return loss_fn

    @functools.wraps(loss_fn)
    def wrapper(old_log_prob, log_prob, advantages, response_mask, *args, **kwargs):
        loss, metrics = loss_fn(old_log_prob, log_prob, advantages, response_mask, *args, **kwargs)
        config = kwargs.get("config", args[1] if len(args) > 1 else None)
        eps_low, eps_high = trust_region_bounds(config) if config is not None else (0.2, 0.2)
        stats = ratio_stats(old_log_prob, log_prob, advantages, response_mask, eps_low, eps_high)
        metrics = dict(metrics)
        metrics.update({key: stats[key] for key in FRACTION_KEYS})
        if updates_per_step_from_env() is None:
            metrics.update({key: stats[key] for key in EXTREME_KEYS})
        else:
            metrics.update(_STEP.add(stats["study/ratio_max"], stats["study/ratio_min"]))
        return loss, metrics

    wrapper.__study_probed__ = True
    return wrapper


def install() -> None:
    """Route the actor's loss lookup through :func:`probed` (idempotent)."""
    from verl.trainer.ppo.core_algos import get_policy_loss_fn
    from verl.workers.utils import losses

    if getattr(losses.get_policy_loss_fn, "__study_probed__", False):
        return

    def get_probed_policy_loss_fn(name):
        return probed(get_policy_loss_fn(name))

    get_probed_policy_loss_fn.__study_probed__ = True
    losses.get_policy_loss_fn = get_probed_policy_loss_fn


def install_all() -> None:
    """The probe, and (unless ``VERL_DGPO_STUDY_SEEDED_SAMPLING=0``) the seeded ``hf`` rollout sampling."""
    install()
    if os.environ.get(SEEDED_SAMPLING_ENV, "1") != "0":
        from verl_dgpo.study import seeded_sampling

        seeded_sampling.install()
