"""Group-relative outcome advantage used by DGPO (pure torch, no verl import).

For the responses ``i`` of one prompt (a *group* G, identified by ``index``) with scalar rewards
``R_i = Σ_t token_level_rewards[i, t]``:

    A_i = (R_i - mean_G(R)) / (std_G(R) + ε)     if normalize_by_std   (std: unbiased, N-1)
    A_i =  R_i - mean_G(R)                       otherwise (Dr.GRPO)

and ``A_i`` is broadcast to every response token (zero on masked tokens). A group of a single response
gets mean 0 and std 1, so its advantage is its reward (scaled by 1/(1+ε)), as in verl's GRPO. A group
whose rewards are all equal gets A = 0 exactly. This is numerically the same as verl's ``grpo``
estimator (``compute_grpo_outcome_advantage``); it is vectorised instead of looping in Python.
"""

from __future__ import annotations

from typing import Sequence

import torch


def group_ids(index: Sequence | torch.Tensor) -> torch.Tensor:
    """Map arbitrary per-response group keys (strings, ints) to dense ids 0..G-1 (first-seen order).

    ``index`` is any sequence or anything with ``tolist()`` (a tensor, or the numpy array of uids verl passes)."""
    keys = index.tolist() if hasattr(index, "tolist") else list(index)
    dense: dict = {}
    return torch.tensor([dense.setdefault(key, len(dense)) for key in keys], dtype=torch.long)


def group_normalized_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: Sequence | torch.Tensor,
    *,
    epsilon: float = 1e-6,
    normalize_by_std: bool = True,
) -> torch.Tensor:
    """Per-token advantages ``(batch, response_length)`` from outcome rewards; see the module docstring."""
    scores = token_level_rewards.sum(dim=-1)
    ids = group_ids(index).to(scores.device)
    num_groups = int(ids.max().item()) + 1 if ids.numel() else 0
    dtype = torch.promote_types(scores.dtype, torch.float32)
    s = scores.to(dtype)

    count = torch.zeros(num_groups, dtype=dtype, device=s.device).index_add_(0, ids, torch.ones_like(s))
    mean = torch.zeros(num_groups, dtype=dtype, device=s.device).index_add_(0, ids, s) / count
    centred = s - mean[ids]
    sq = torch.zeros(num_groups, dtype=dtype, device=s.device).index_add_(0, ids, centred * centred)
    std = torch.sqrt(sq / (count - 1).clamp(min=1))

    singleton = count[ids] == 1
    centred = torch.where(singleton, s, centred)
    if normalize_by_std:
        std_i = torch.where(singleton, torch.ones_like(s), std[ids])
        adv = centred / (std_i + epsilon)
    else:
        adv = centred
    return (adv.unsqueeze(-1) * response_mask).to(scores.dtype)
