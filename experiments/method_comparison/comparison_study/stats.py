"""Seed-paired statistics of the report: differences against the reference method with a 95% t-interval.

Pure Python, no verl. For a metric ``x`` and seeds ``s`` run by both methods, the paired differences are
``d_s = x(method, s) - x(reference, s)``; the interval is Student's t over seeds:
``mean(d) ± t(0.975, n-1) · sd(d) / sqrt(n)`` with the sample standard deviation (``ddof=1``). With one
seed there is no interval (``nan`` bounds).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Mapping, Optional

#: two-sided 95% quantiles t(0.975, df) of Student's t for df = 1..30 (standard table values).
T_975 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)


def t_quantile_975(df: int) -> float:
    if not 1 <= df <= len(T_975):
        raise ValueError(f"t quantile table covers 1..{len(T_975)} degrees of freedom, got {df}")
    return T_975[df - 1]


@dataclass(frozen=True)
class PairedDifference:
    seeds: tuple[int, ...]
    differences: tuple[float, ...]
    mean: float
    low: float
    high: float

    @property
    def n(self) -> int:
        return len(self.differences)

    def sign(self) -> int:
        """+1 if the interval lies above 0, -1 if below, 0 if it contains 0 (or there is none)."""
        if math.isnan(self.low) or math.isnan(self.high):
            return 0
        return 1 if self.low > 0 else -1 if self.high < 0 else 0


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _incomplete_beta(a: float, b: float, x: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: int) -> float:
    """Student's t distribution function with ``df`` degrees of freedom."""
    tail = 0.5 * _incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t (0.5 < p < 1), by bisection on :func:`t_cdf` to 1e-10."""
    if not 0.5 < p < 1.0 or df < 1:
        raise ValueError(f"t_quantile needs 0.5 < p < 1 and df >= 1, got p={p}, df={df}")
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        high *= 2.0
    while high - low > 1e-10:
        mid = 0.5 * (low + high)
        low, high = (mid, high) if t_cdf(mid, df) < p else (low, mid)
    return 0.5 * (low + high)


def two_sided_t(confidence: float, df: int) -> float:
    """t(1 - (1 - confidence)/2, df); the 95% value from the standard table (as every report before used)."""
    if confidence == 0.95:
        return t_quantile_975(df)
    return t_quantile(1.0 - (1.0 - confidence) / 2.0, df)


def paired_difference(values: Mapping[int, float], reference: Mapping[int, float],
                      confidence: float = 0.95) -> Optional[PairedDifference]:
    """``values - reference`` over the seeds both have, with the t-interval of the mean at ``confidence``
    (95% unless asked; None if no seed)."""
    seeds = tuple(sorted(set(values) & set(reference)))
    if not seeds:
        return None
    diffs = tuple(values[s] - reference[s] for s in seeds)
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return PairedDifference(seeds, diffs, mean, math.nan, math.nan)
    half = two_sided_t(confidence, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return PairedDifference(seeds, diffs, mean, mean - half, mean + half)


def first_step_reaching(steps: list[int], rewards: list[float], threshold: float, window: int) -> Optional[int]:
    """The first step whose trailing mean reward over ``window`` steps (fewer at the start) is >= ``threshold``."""
    for i, step in enumerate(steps):
        recent = rewards[max(0, i - window + 1): i + 1]
        if statistics.fmean(recent) >= threshold:
            return step
    return None


def steps_to_threshold(reached: list[Optional[int]], budget: int) -> tuple[float, int]:
    """(mean steps with seeds that never reach the threshold counted as ``budget``, number that reached)."""
    return statistics.fmean(budget if r is None else r for r in reached), sum(r is not None for r in reached)
