"""DGPO's hyper-parameters as a verl ``PolicyLossConfig`` subclass, validated when it is built.

verl's ``PolicyLossConfig`` is a strict dataclass, so DGPO's two extra keys need a subclass, selected by::

    actor_rollout_ref.actor.policy_loss._target_=verl_dgpo.config.DGPOPolicyLossConfig
    +actor_rollout_ref.actor.policy_loss.dgpo_n=2     # LN decay exponent n >= 1 (default 1)
    +actor_rollout_ref.actor.policy_loss.dgpo_m=2     # HP decay root m >= 1 (default 2)

(our ``dgpo_trainer.yaml`` sets the target and both keys, so there no ``+`` is needed). The trust-region
bounds are verl's own ``actor_rollout_ref.actor.clip_ratio_low`` / ``clip_ratio_high``.

The baselines' hyper-parameters live in the same subclass: CE-GPPO's ``ce_gppo_beta1`` / ``ce_gppo_beta2``
(yaml: ``algorithm.ce_gppo.{beta1,beta2}``). GPPO, CE-GPPO and ASPO take their dual-clip constant ``c``
from verl's own ``actor_rollout_ref.actor.clip_ratio_c`` (:func:`dual_clip_ratio`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Any

from verl.workers.config import ActorConfig, PolicyLossConfig

POLICY_LOSS_KEY = "actor_rollout_ref.actor.policy_loss"
ACTOR_KEY = "actor_rollout_ref.actor"


class DGPOConfigError(ValueError):
    """A DGPO hyper-parameter is out of range or of the wrong type; the message names the key."""


def require_number(key: str, value: Any, *, minimum: float | None = None, low_open: float | None = None,
                   high_open: float | None = None, allowed: str) -> float:
    """Return ``value`` as a float, or raise :class:`DGPOConfigError` naming ``key`` and the allowed range.

    ``minimum`` is inclusive; ``low_open`` / ``high_open`` are exclusive bounds.
    """
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        value = float(value)
        ok = (
            (minimum is None or value >= minimum)
            and (low_open is None or value > low_open)
            and (high_open is None or value < high_open)
        )
    if not ok:
        raise DGPOConfigError(f"{key}={value!r} is not allowed: it must be a number {allowed}.")
    return value


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
    low = clip_ratio if low is None else low
    high = clip_ratio if high is None else high
    return (
        require_number(f"{ACTOR_KEY}.clip_ratio_low", low, low_open=0.0, high_open=1.0, allowed="in (0, 1)"),
        require_number(f"{ACTOR_KEY}.clip_ratio_high", high, low_open=0.0, allowed="> 0"),
    )


@dataclass
class DGPOPolicyLossConfig(PolicyLossConfig):
    """verl's policy-loss config plus DGPO's decay parameters.

    Args:
        dgpo_n (float): LN-region exponent n ≥ 1: weight on ∇π decays as (r/(1-ε_low))^n for A<0, r<1-ε_low.
        dgpo_m (float): HP-region root m ≥ 1: weight on ∇π decays as ((1+ε_high)/r)^(1/m) for A>0, r>1+ε_high.
        ce_gppo_beta1 (float): CE-GPPO's β1 > 0, the LN weight β1·(1-ε_low). Default 0.75, the CE-GPPO
            authors' 7B training scripts (their 1.5B scripts use 0.5).
        ce_gppo_beta2 (float): CE-GPPO's β2 > 0, the HP weight β2·(1+ε_high). Default 1, as in all their scripts.
    """

    dgpo_n: float = 1.0
    dgpo_m: float = 2.0
    ce_gppo_beta1: float = 0.75
    ce_gppo_beta2: float = 1.0

    def __post_init__(self):
        parent_post_init = getattr(super(), "__post_init__", None)
        if parent_post_init is not None:
            parent_post_init()
        n, m = validate_dgpo_exponents(self.dgpo_n, self.dgpo_m)
        beta1, beta2 = validate_ce_gppo_betas(self.ce_gppo_beta1, self.ce_gppo_beta2)
        # Store the checked floats (fields are frozen after init, so bypass BaseConfig's guard).
        object.__setattr__(self, "dgpo_n", n)
        object.__setattr__(self, "dgpo_m", m)
        object.__setattr__(self, "ce_gppo_beta1", beta1)
        object.__setattr__(self, "ce_gppo_beta2", beta2)


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


def standalone_actor_config(
    loss_mode: str, *, eps_low: float = 0.2, eps_high: float = 0.2, clip_ratio_c: float = 3.0, **policy_loss: Any
) -> ActorConfig:
    """A verl ``ActorConfig`` for calling a registered policy loss outside the trainer (scripts, benchmarks).

    ``policy_loss`` are :class:`DGPOPolicyLossConfig` fields (``dgpo_n``, ``ce_gppo_beta1``, ...); the batch
    sizes verl requires are set to 1 and play no part in any loss.
    """
    return ActorConfig(
        strategy="fsdp",
        ppo_micro_batch_size_per_gpu=1,
        rollout_n=1,
        clip_ratio_low=eps_low,
        clip_ratio_high=eps_high,
        clip_ratio_c=clip_ratio_c,
        policy_loss=DGPOPolicyLossConfig(loss_mode=loss_mode, **policy_loss),
    )
