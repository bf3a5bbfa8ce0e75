"""``DGPOConfig``: TRL's ``GRPOConfig`` plus the policy loss and its hyper-parameters, checked at creation.

ε_low / ε_high are TRL's own ``epsilon`` / ``epsilon_high``. The hyper-parameters keep the names verl's side
uses (``dgpo_n``, ``dgpo_m``, ``ce_gppo_beta1``, ``ce_gppo_beta2``, ``clip_ratio_c``) and are checked by the
same functions, with the same messages, naming the key as typed here. With ``policy_loss`` set, TRL's
``loss_type`` picks only the normalisation of the per-token loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import GRPOConfig

from verl_dgpo.maths.hyperparameters import (
    DGPOConfigError,
    dual_clip_ratio,
    require_number,
    validate_ce_gppo_betas,
    validate_dgpo_exponents,
)
from verl_dgpo.spelling import closest_name

#: The per-token losses ``DGPOTrainer`` replaces TRL's surrogate with.
POLICY_LOSSES = ("dgpo", "gppo", "ce_gppo", "aspo")

#: TRL ``loss_type`` values that are only a normalisation of TRL's clipped surrogate, so ours can take their place.
NORMALISATIONS = ("grpo", "bnpo", "dr_grpo", "dapo", "luspo")


class TRLConfigError(ValueError):
    """A ``DGPOConfig`` value, or a combination of TRL options, that ``DGPOTrainer`` cannot run."""


def _liger_replaces_loss() -> bool:
    """Whether this TRL's ``GRPOTrainer.compute_loss`` sends ``use_liger_kernel=True`` to Liger's fused loss."""
    from trl import GRPOTrainer

    return hasattr(GRPOTrainer, "compute_liger_loss")


def refused_combination(config: "DGPOConfig") -> str | None:
    """The one-line reason ``config`` cannot run with our surrogate, or None."""
    name = f"policy_loss={config.policy_loss!r}"
    if config.loss_type not in NORMALISATIONS:
        return (
            f"loss_type={config.loss_type!r} is TRL's own surrogate, which {name} replaces; with policy_loss set, "
            f"loss_type picks only the normalisation: one of {', '.join(NORMALISATIONS)} (cispo's and vespo's is dapo)."
        )
    if config.importance_sampling_level != "token":
        return (
            f"importance_sampling_level={config.importance_sampling_level!r} cannot be combined with {name}: "
            "its surrogate is per token; use importance_sampling_level='token'."
        )
    if config.delta is not None:
        return (
            f"delta={config.delta!r} clips TRL's own surrogate and cannot be combined with {name}; "
            "leave delta=None (the dual clip of gppo/ce_gppo/aspo is clip_ratio_c)."
        )
    if config.use_liger_kernel and _liger_replaces_loss():
        return (
            f"use_liger_kernel=True makes this TRL compute the loss in Liger's fused kernel, which {name} cannot "
            "replace; set use_liger_kernel=False."
        )
    return None


@dataclass
class DGPOConfig(GRPOConfig):
    """TRL's ``GRPOConfig`` with the policy loss of ``DGPOTrainer`` (DGPO, or the paper's baselines).

    Args:
        policy_loss: ``dgpo`` (default), ``gppo``, ``ce_gppo`` or ``aspo``.
        dgpo_n: DGPO's LN decay exponent, >= 1 (the paper uses 1, or 2 at 1.5B).
        dgpo_m: DGPO's HP decay root, >= 1 (the paper uses 2).
        ce_gppo_beta1, ce_gppo_beta2: CE-GPPO's LN and HP weight scales, > 0 (defaults 0.75 and 1).
        clip_ratio_c: the dual-clip constant of gppo, ce_gppo and aspo, > 1 (verl's default 3).
    """

    policy_loss: str = field(default="dgpo", metadata={"help": f"One of {', '.join(POLICY_LOSSES)}."})
    dgpo_n: float = field(default=1.0, metadata={"help": "DGPO's LN decay exponent n (>= 1)."})
    dgpo_m: float = field(default=2.0, metadata={"help": "DGPO's HP decay root m (>= 1)."})
    ce_gppo_beta1: float = field(default=0.75, metadata={"help": "CE-GPPO's LN weight scale beta1 (> 0)."})
    ce_gppo_beta2: float = field(default=1.0, metadata={"help": "CE-GPPO's HP weight scale beta2 (> 0)."})
    clip_ratio_c: float = field(default=3.0, metadata={"help": "Dual-clip constant c of gppo/ce_gppo/aspo (> 1)."})

    def __post_init__(self):
        self._check_policy_loss()
        try:
            self.dgpo_n, self.dgpo_m = validate_dgpo_exponents(self.dgpo_n, self.dgpo_m)
            self.ce_gppo_beta1, self.ce_gppo_beta2 = validate_ce_gppo_betas(self.ce_gppo_beta1, self.ce_gppo_beta2)
            self.clip_ratio_c = dual_clip_ratio({"clip_ratio_c": self.clip_ratio_c})
        except DGPOConfigError as err:  # verl's key -> the field name typed here
            raise err.for_key(err.key.rsplit(".", 1)[-1]) from None
        require_number("epsilon", self.epsilon, low_open=0.0, high_open=1.0, allowed="in (0, 1)")
        if self.epsilon_high is not None:
            require_number("epsilon_high", self.epsilon_high, low_open=0.0, allowed="> 0")
        super().__post_init__()
        problem = refused_combination(self)
        if problem is not None:
            raise TRLConfigError(problem)

    def _check_policy_loss(self) -> None:
        if self.policy_loss in POLICY_LOSSES:
            return
        close = closest_name(str(self.policy_loss), POLICY_LOSSES)
        hint = f" Did you mean {close!r}?" if close else ""
        raise TRLConfigError(
            f"policy_loss={self.policy_loss!r} is not allowed.{hint} Allowed: {', '.join(POLICY_LOSSES)} "
            "(TRL's own losses are GRPOTrainer's loss_type)."
        )
