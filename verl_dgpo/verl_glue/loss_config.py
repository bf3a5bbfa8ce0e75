"""DGPO's hyper-parameters as a verl ``PolicyLossConfig`` subclass, validated when it is built.

verl's ``PolicyLossConfig`` is a strict dataclass, so DGPO's two extra keys need a subclass, selected by::

    actor_rollout_ref.actor.policy_loss._target_=verl_dgpo.config.DGPOPolicyLossConfig
    +actor_rollout_ref.actor.policy_loss.dgpo_n=2     # LN decay exponent n >= 1 (default 1)
    +actor_rollout_ref.actor.policy_loss.dgpo_m=2     # HP decay root m >= 1 (default 2)

(our ``dgpo_trainer.yaml`` sets the target and both keys, so there no ``+`` is needed). The trust-region
bounds are verl's own ``actor_rollout_ref.actor.clip_ratio_low`` / ``clip_ratio_high``.

The baselines' hyper-parameters live in the same subclass: CE-GPPO's ``ce_gppo_beta1`` / ``ce_gppo_beta2``
(yaml: ``algorithm.ce_gppo.{beta1,beta2}``). GPPO, CE-GPPO and ASPO take their dual-clip constant ``c``
from verl's own ``actor_rollout_ref.actor.clip_ratio_c`` (:func:`verl_dgpo.maths.hyperparameters.dual_clip_ratio`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from verl.workers.config import ActorConfig, PolicyLossConfig

from verl_dgpo.maths.hyperparameters import (  # noqa: F401  (DGPOConfigError re-exported)
    DGPOConfigError,
    validate_ce_gppo_betas,
    validate_dgpo_exponents,
)


@dataclass
class DGPOPolicyLossConfig(PolicyLossConfig):
    """verl's policy-loss config plus DGPO's decay parameters and CE-GPPO's gradient scales.

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
