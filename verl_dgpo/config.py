"""DGPO's hyper-parameters as a verl ``PolicyLossConfig`` subclass, validated when it is built.

verl's ``PolicyLossConfig`` is a strict dataclass, so DGPO's two extra keys need a subclass, selected by::

    actor_rollout_ref.actor.policy_loss._target_=verl_dgpo.config.DGPOPolicyLossConfig
    +actor_rollout_ref.actor.policy_loss.dgpo_n=2     # LN decay exponent n >= 1 (default 1)
    +actor_rollout_ref.actor.policy_loss.dgpo_m=2     # HP decay root m >= 1 (default 2)

(our ``dgpo_trainer.yaml`` sets the target and both keys, so there no ``+`` is needed). The trust-region
bounds are verl's own ``actor_rollout_ref.actor.clip_ratio_low`` / ``clip_ratio_high``.
"""

from __future__ import annotations

from dataclasses import dataclass

from verl.workers.config import PolicyLossConfig

from verl_dgpo.validation import DGPOConfigError, validate_dgpo_exponents  # noqa: F401  (re-exported)


@dataclass
class DGPOPolicyLossConfig(PolicyLossConfig):
    """verl's policy-loss config plus DGPO's decay parameters.

    Args:
        dgpo_n (float): LN-region exponent n ≥ 1: weight on ∇π decays as (r/(1-ε_low))^n for A<0, r<1-ε_low.
        dgpo_m (float): HP-region root m ≥ 1: weight on ∇π decays as ((1+ε_high)/r)^(1/m) for A>0, r>1+ε_high.
    """

    dgpo_n: float = 1.0
    dgpo_m: float = 2.0

    def __post_init__(self):
        parent_post_init = getattr(super(), "__post_init__", None)
        if parent_post_init is not None:
            parent_post_init()
        n, m = validate_dgpo_exponents(self.dgpo_n, self.dgpo_m)
        # Store the checked floats (fields are frozen after init, so bypass BaseConfig's guard).
        object.__setattr__(self, "dgpo_n", n)
        object.__setattr__(self, "dgpo_m", m)
