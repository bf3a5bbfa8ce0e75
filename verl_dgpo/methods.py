"""``algorithm.policy_loss``: the one switch that picks a method of the paper's tables.

A method name maps onto verl's ``actor_rollout_ref.actor.policy_loss.loss_mode``. Every policy loss
registered with verl is a valid name (verl's own and ours); ``grpo`` is an alias of verl's ``vanilla``
(PPO clip with dual-clip, c = ``actor_rollout_ref.actor.clip_ratio_c``, 3 by default).
"""

from __future__ import annotations

import difflib

ALIASES = {"grpo": "vanilla"}


class UnknownMethodError(ValueError):
    """``algorithm.policy_loss`` names no registered policy loss."""


def valid_methods() -> list[str]:
    from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY

    return sorted(set(POLICY_LOSS_REGISTRY) | set(ALIASES))


def verl_loss_mode(method: str) -> str:
    """verl's ``loss_mode`` for a method name, or :class:`UnknownMethodError` listing the valid names."""
    from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY

    loss_mode = ALIASES.get(method, method)
    if loss_mode not in POLICY_LOSS_REGISTRY:
        names = valid_methods()
        close = difflib.get_close_matches(str(method), names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UnknownMethodError(f"algorithm.policy_loss={method!r} is not a known method.{hint} Valid: {names}")
    return loss_mode
