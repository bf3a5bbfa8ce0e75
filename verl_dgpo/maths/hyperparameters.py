"""Range checks of DGPO's (and the baselines') hyper-parameters: pure Python, no verl import.

Kept apart from :mod:`verl_dgpo.config` (which subclasses verl's config) so that the plugin module
:mod:`verl_dgpo.registry`, which verl imports *during* ``import verl``, never imports verl's config
classes in the middle of verl's own initialisation.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

POLICY_LOSS_KEY = "actor_rollout_ref.actor.policy_loss"
ACTOR_KEY = "actor_rollout_ref.actor"


class DGPOConfigError(ValueError):
    """A DGPO hyper-parameter is out of range or of the wrong type; the message names the key.

    ``key``, ``value`` and ``allowed`` are kept so that the driver can name the key the user typed
    (``algorithm.dgpo.n``) where it set verl's key (``...policy_loss.dgpo_n``) from it: :meth:`for_key`.
    """

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is not allowed: it must be a number {allowed}.")

    def __reduce__(self):  # picklable across Ray processes despite the three-argument constructor
        return DGPOConfigError, (self.key, self.value, self.allowed)

    def for_key(self, key: str) -> "DGPOConfigError":
        """The same error, naming ``key`` instead."""
        return DGPOConfigError(key, self.value, self.allowed)


def require_number(key: str, value: Any, *, minimum: float | None = None, low_open: float | None = None,
                   high_open: float | None = None, allowed: str) -> float:
    """Return ``value`` as a float, or raise :class:`DGPOConfigError` naming ``key`` and the allowed range.

    ``minimum`` is inclusive; ``low_open`` / ``high_open`` are exclusive bounds.
    """
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    number = float(value) if ok else None
    ok = ok and (
        (minimum is None or number >= minimum)
        and (low_open is None or number > low_open)
        and (high_open is None or number < high_open)
    )
    if not ok:
        raise DGPOConfigError(key, value, allowed)
    return number


def validate_dgpo_exponents(n: Any, m: Any) -> tuple[float, float]:
    """Check DGPO's n (LN decay exponent) and m (HP decay root): real numbers ≥ 1."""
    return (
        require_number(f"{POLICY_LOSS_KEY}.dgpo_n", n, minimum=1.0, allowed=">= 1 (the paper uses 1, or 2 at 1.5B)"),
        require_number(f"{POLICY_LOSS_KEY}.dgpo_m", m, minimum=1.0, allowed=">= 1 (the paper uses 2)"),
    )


def validate_ce_gppo_betas(beta1: Any, beta2: Any) -> tuple[float, float]:
    """Check CE-GPPO's β1 (LN weight scale) and β2 (HP weight scale): real numbers > 0."""
    return (
        require_number(f"{POLICY_LOSS_KEY}.ce_gppo_beta1", beta1, low_open=0.0,
                       allowed="> 0 (the authors use 0.5 at 1.5B, 0.75 at 7B)"),
        require_number(f"{POLICY_LOSS_KEY}.ce_gppo_beta2", beta2, low_open=0.0, allowed="> 0 (the authors use 1)"),
    )  # fmt: skip


def dual_clip_ratio(actor_config: Any) -> float:
    """verl's ``clip_ratio_c`` (default 3, as in verl's ``vanilla``), checked to be > 1 like verl checks it."""
    return require_number(
        f"{ACTOR_KEY}.clip_ratio_c", actor_config.get("clip_ratio_c", 3.0), low_open=1.0,
        allowed="> 1 (verl's default is 3; GPPO's and CE-GPPO's scripts use 10)",
    )  # fmt: skip


def trust_region(actor_config: Any) -> tuple[float, float]:
    """``(ε_low, ε_high)`` from a verl actor config, resolved and validated like verl's losses read them.

    ``clip_ratio_low`` / ``clip_ratio_high`` fall back to ``clip_ratio`` when unset.
    """
    clip_ratio = actor_config.get("clip_ratio", 0.2)
    low = actor_config.get("clip_ratio_low", None)
    high = actor_config.get("clip_ratio_high", None)
    # An unset bound takes clip_ratio's value, so a bad value is the user's clip_ratio: name that key.
    low_key = f"{ACTOR_KEY}.clip_ratio" if low is None else f"{ACTOR_KEY}.clip_ratio_low"
    high_key = f"{ACTOR_KEY}.clip_ratio" if high is None else f"{ACTOR_KEY}.clip_ratio_high"
    low = clip_ratio if low is None else low
    high = clip_ratio if high is None else high
    return (
        require_number(low_key, low, low_open=0.0, high_open=1.0, allowed="in (0, 1)"),
        require_number(high_key, high, low_open=0.0, allowed="> 0"),
    )


def _reader(policy_loss_config: Any):
    """``get(key, default)`` over any policy-loss config: our subclass, a plain ``PolicyLossConfig``, a dict or None."""
    return policy_loss_config.get if policy_loss_config is not None else (lambda key, default: default)


def dgpo_exponents(policy_loss_config: Any) -> tuple[float, float]:
    """(n, m) from any policy-loss config: our subclass, a plain ``PolicyLossConfig`` (defaults) or a dict."""
    get = _reader(policy_loss_config)
    return validate_dgpo_exponents(get("dgpo_n", 1.0), get("dgpo_m", 2.0))


def ce_gppo_betas(policy_loss_config: Any) -> tuple[float, float]:
    """(β1, β2) from any policy-loss config: our subclass, a plain ``PolicyLossConfig`` (defaults) or a dict."""
    get = _reader(policy_loss_config)
    return validate_ce_gppo_betas(get("ce_gppo_beta1", 0.75), get("ce_gppo_beta2", 1.0))
