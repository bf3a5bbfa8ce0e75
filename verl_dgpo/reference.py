"""The closed forms every check of a loss compares against: one per method, written from the papers' formulas.

``weight(method, r, a, ...)`` is the weight ``w`` of one token in ``∂loss/∂log π = -A · w`` (the loss is
``-A · surrogate``), given its ratio ``r = π/π_old`` and its advantage ``a``. The regions use strict
inequalities: LN (``a < 0``, ``r < 1-ε_low``), HP (``a > 0``, ``r > 1+ε_high``), LP (``a > 0``,
``r < 1-ε_low``), HN (``a < 0``, ``r > 1+ε_high``), inside elsewhere. ``c`` is the dual clip
(``clip_ratio_c``). A token with ``a = 0`` has the weight of its region's formula (it is "inside" for the
sign-dependent methods); its gradient ``-A · w`` is 0 whatever ``w`` is.

* ``vanilla`` (GRPO/PPO clip with the dual clip): 0 in LN and HP, 0 for ``a < 0`` and ``r > c``, ``r`` elsewhere.
* ``cispo``: ``w = clip(r, 1-ε_low, 1+ε_high)`` on every token.
* ``gppo`` (and ``ce_gppo`` with its β1, β2): ``β1·(1-ε_low)`` in LN, ``β2·(1+ε_high)`` in HP, PPO's dual clip
  (0 for ``a < 0``, ``r > c``), ``r`` elsewhere; GPPO is β1 = β2 = 1.
* ``aspo``: 0 in LN and HP; for ``a > 0`` elsewhere ``min(1/r, c)``; for ``a ≤ 0`` elsewhere ``min(r, c)``.
* ``dgpo`` (arXiv 2603.14389, "From log pi to pi"): ``r^(n+1)/(1-ε_low)^n`` in LN,
  ``(1+ε_high)^(1/m)·r^(1-1/m)`` in HP, ``r`` elsewhere.
* ``sapo`` (verl's soft gate ``f(r) = σ(τ(r-1))·4/τ``): ``w = r·f'(r) = 4·r·σ(1-σ)``, τ = τ+ for ``a > 0``,
  τ- otherwise.

This module is the reference: it imports nothing but Python's ``math`` (``tests/test_architecture.py``
holds it to that), so it can never share a mistake with the code it checks (``verl_dgpo/maths/``).
``verl-dgpo-check`` (:mod:`verl_dgpo.verl_glue.contracts`) and the tests read it.
"""

from __future__ import annotations

import math

#: The methods :func:`weight` knows, by verl's loss names.
METHODS = ("vanilla", "cispo", "gppo", "ce_gppo", "aspo", "dgpo", "sapo")


def region(r: float, a: float, eps_low: float, eps_high: float) -> str:
    """``"LN"``, ``"HP"``, ``"LP"``, ``"HN"`` or ``"inside"`` (strict inequalities; ``a = 0`` is inside)."""
    if r < 1 - eps_low and a != 0:
        return "LN" if a < 0 else "LP"
    if r > 1 + eps_high and a != 0:
        return "HP" if a > 0 else "HN"
    return "inside"


def weight(
    method: str,
    r: float,
    a: float,
    *,
    eps_low: float,
    eps_high: float,
    clip_ratio_c: float = 3.0,
    beta1: float = 0.75,
    beta2: float = 1.0,
    n: float = 1.0,
    m: float = 2.0,
    tau_pos: float = 1.0,
    tau_neg: float = 1.05,
) -> float:
    """The weight ``w`` on ``A·∇log π`` of one token (see the module's docstring for each formula)."""
    c = clip_ratio_c
    ln = a < 0 and r < 1 - eps_low
    hp = a > 0 and r > 1 + eps_high
    beyond_dual_clip = a < 0 and r > c
    if method == "vanilla":
        return 0.0 if (ln or hp or beyond_dual_clip) else r
    if method == "cispo":
        return min(max(r, 1 - eps_low), 1 + eps_high)
    if method in ("gppo", "ce_gppo"):
        b1, b2 = (beta1, beta2) if method == "ce_gppo" else (1.0, 1.0)
        if ln:
            return b1 * (1 - eps_low)
        if hp:
            return b2 * (1 + eps_high)
        return 0.0 if beyond_dual_clip else r
    if method == "aspo":
        if ln or hp:
            return 0.0
        return min(1 / r, c) if a > 0 else min(r, c)
    if method == "dgpo":
        if ln:
            return r ** (n + 1) / (1 - eps_low) ** n
        if hp:
            return (1 + eps_high) ** (1 / m) * r ** (1 - 1 / m)
        return r
    if method == "sapo":
        tau = tau_pos if a > 0 else tau_neg
        s = 1 / (1 + math.exp(-tau * (r - 1)))
        return 4 * r * s * (1 - s)
    raise KeyError(f"no closed form for {method!r}; known: {', '.join(METHODS)}")


def pi_weight(method: str, r: float, a: float, **params) -> float:
    """The weight on ``∇π`` in units of ``1/π_old``: ``w / r`` (``∇log π = ∇π / π``)."""
    return weight(method, r, a, **params) / r
