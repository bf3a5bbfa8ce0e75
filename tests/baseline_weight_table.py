"""The issue's table of gradient weights, written independently of ``verl_dgpo`` (shared by the tests).

``w`` is the weight on A·∇log π of one token with ratio ``r`` and advantage ``a``; regions use strict
inequalities. Methods are verl's loss names: vanilla (GRPO), cispo, gppo, ce_gppo, aspo, dgpo.
"""

from __future__ import annotations


def table_weight(method, r, a, *, eps_low, eps_high, c, beta1=0.75, beta2=1.0, n=1.0, m=2.0) -> float:
    if a == 0:
        return 0.0  # the loss is -A·s: nothing flows, whatever w is
    ln = a < 0 and r < 1 - eps_low
    hp = a > 0 and r > 1 + eps_high
    lp = a > 0 and r < 1 - eps_low
    hn = a < 0 and r > 1 + eps_high
    if method == "vanilla":
        if ln or hp:
            return 0.0
        return 0.0 if (a < 0 and r > c) else r
    if method == "cispo":
        if ln or lp:
            return 1 - eps_low
        if hp or hn:
            return 1 + eps_high
        return r
    if method in ("gppo", "ce_gppo"):
        b1, b2 = (1.0, 1.0) if method == "gppo" else (beta1, beta2)
        if ln:
            return b1 * (1 - eps_low)
        if hp:
            return b2 * (1 + eps_high)
        return 0.0 if (a < 0 and r > c) else r
    if method == "aspo":
        if ln or hp:
            return 0.0
        if a > 0:
            return min(1 / r, c)
        return c if r > c else r
    if method == "dgpo":
        if ln:
            return r ** (n + 1) / (1 - eps_low) ** n
        if hp:
            return (1 + eps_high) ** (1 / m) * r ** (1 - 1 / m)
        return r
    raise AssertionError(f"no closed form for {method!r}")
