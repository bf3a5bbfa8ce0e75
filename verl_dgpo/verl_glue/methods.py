"""``algorithm.policy_loss``: the one switch that picks a method of the paper's tables.

A method name maps onto verl's ``actor_rollout_ref.actor.policy_loss.loss_mode``. The methods a user
picks first are :data:`METHODS` (the paper's DGPO and its five baselines); they are what an error lists
and what a typo is matched against. Every other policy loss registered with verl is accepted too, by its
registered name, but not listed. ``grpo`` is an alias of verl's ``vanilla`` (PPO clip with dual-clip,
c = ``actor_rollout_ref.actor.clip_ratio_c``, 3 by default).
"""

from __future__ import annotations

from verl_dgpo.spelling import closest_name

ALIASES = {"grpo": "vanilla"}

#: The methods of the paper's tables, in the order a user meets them (DGPO first).
METHODS = ("dgpo", "grpo", "cispo", "gppo", "ce_gppo", "aspo")


class UnknownMethodError(ValueError):
    """``algorithm.policy_loss`` names no registered policy loss."""


def valid_methods() -> list[str]:
    """Every accepted name: verl's registered policy losses (ours included) and the aliases."""
    from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY

    return sorted(set(POLICY_LOSS_REGISTRY) | set(ALIASES))


def verl_loss_mode(method: str) -> str:
    """verl's ``loss_mode`` for a method name, or :class:`UnknownMethodError` listing :data:`METHODS`.

    A name of :data:`METHODS` maps without ``import verl`` (verl's own ``vanilla`` and ``cispo``, and this
    plugin's losses, whose registration ``verl_dgpo.check_installed`` proves before a run); any other name
    is looked up in verl's registry.
    """
    loss_mode = ALIASES.get(method, method)
    if method in METHODS:
        return loss_mode
    from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY

    if loss_mode not in POLICY_LOSS_REGISTRY:
        close = closest_name(method, METHODS) or closest_name(method, sorted(POLICY_LOSS_REGISTRY))
        hint = f" Did you mean {close!r}?" if close else ""
        raise UnknownMethodError(
            f"algorithm.policy_loss={method!r} is not a known method.{hint} "
            f"Allowed: {', '.join(METHODS)} (or the name of any other policy loss registered with verl)."
        )
    return loss_mode
