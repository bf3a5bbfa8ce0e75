"""``algorithm.policy_loss``: the one switch that picks a method of the paper's tables.

A method name maps onto verl's ``actor_rollout_ref.actor.policy_loss.loss_mode``. The methods a user
picks first are :data:`METHODS` (the paper's DGPO and its five baselines); they are what an error lists
and what a typo is matched against. Every other policy loss registered with verl is accepted too, by its
registered name, but not listed. ``grpo`` is an alias of verl's ``vanilla`` (PPO clip with dual-clip,
c = ``actor_rollout_ref.actor.clip_ratio_c``, 3 by default).
"""

from __future__ import annotations

ALIASES = {"grpo": "vanilla"}

#: The methods of the paper's tables, in the order a user meets them (DGPO first).
METHODS = ("dgpo", "grpo", "cispo", "gppo", "ce_gppo", "aspo")

#: A suggestion is made only within this many single-character edits.
MAX_TYPO_EDITS = 2


class UnknownMethodError(ValueError):
    """``algorithm.policy_loss`` names no registered policy loss."""


def valid_methods() -> list[str]:
    """Every accepted name: verl's registered policy losses (ours included) and the aliases."""
    from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY

    return sorted(set(POLICY_LOSS_REGISTRY) | set(ALIASES))


def edit_distance(a: str, b: str) -> int:
    """Optimal-string-alignment distance: insertions, deletions, substitutions and adjacent swaps cost 1."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i] + [0] * len(b)
        for j, char_b in enumerate(b, start=1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b))
            if i > 1 and j > 1 and char_a == b[j - 2] and a[i - 2] == char_b:
                current[j] = min(current[j], previous2[j - 2] + 1)
        previous2, previous = previous, current
    return previous[-1]


def _common_prefix(a: str, b: str) -> int:
    length = 0
    for char_a, char_b in zip(a, b):
        if char_a != char_b:
            break
        length += 1
    return length


def closest_name(typed: str, candidates) -> str | None:
    """The candidate fewest edits away (at most :data:`MAX_TYPO_EDITS`); ties go to the longer shared
    prefix, then to the earlier candidate. ``dgppo`` is one edit from both ``dgpo`` and ``gppo`` and
    shares ``dgp`` with the first, so it gets ``dgpo``."""
    typed = str(typed).lower()
    ranked = sorted(
        (edit_distance(typed, name), -_common_prefix(typed, name), index, name)
        for index, name in enumerate(candidates)
    )
    if not ranked or ranked[0][0] > MAX_TYPO_EDITS:
        return None
    return ranked[0][-1]


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
