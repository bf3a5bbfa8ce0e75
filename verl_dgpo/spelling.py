"""The one "did you mean" of the package: the closest of a list of names to what a user typed.

Used wherever a name the user typed is refused (a method, an advantage estimator, TRL's ``policy_loss``),
so every refusal suggests the same way. Pure Python; imports nothing of this package or of a host.
"""

from __future__ import annotations

#: A suggestion is made only within this many single-character edits.
MAX_TYPO_EDITS = 2


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
