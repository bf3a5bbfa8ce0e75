"""Per-update metrics of a per-token loss: region fractions and gradient weights. Pure torch: no host import.

Every host (verl's registry, TRL's trainer) logs these from the :class:`~verl_dgpo.maths.losses.TokenLoss` the
loss already computed, so no host recomputes the maths.

**The weight on ∇π** (the paper's quantity, "From log π to π"). A token's loss gradient is
``-A · w · ∇log π`` with ``w`` the weight on ``∇log π`` (:attr:`TokenLoss.weight`). Since
``∇log π = ∇π / π = ∇π / (r · π_old)``, the same gradient is ``-A · (w / r) · (1/π_old) · ∇π``: ``w / r``
is the weight on ``∇π`` in units of ``1/π_old`` (:func:`pi_weight`). It is 1 on-policy (``r = 1``,
``w = 1``) and inside the trust region for every method but ASPO (whose positive tokens get ``w = 1/r``).
Outside the region it is where the methods differ: GRPO's hard clip gives 0 on LN/HP; CISPO gives
``(1-ε_low)/r`` on LN, growing without bound as ``r → 0``; GPPO ``(1-ε_low)/r``; CE-GPPO ``β1(1-ε_low)/r``;
DGPO ``(r/(1-ε_low))^n ≤ 1`` on LN and ``((1+ε_high)/r)^(1/m) < 1`` on HP.

Definitions (per loss call, i.e. per update; ``r`` from the masked log-ratio clamped like the losses):

- **out-of-trust-region tokens**: response tokens in LN ∪ HP ∪ LP ∪ HN, i.e. ``A ≠ 0`` and ``r`` outside
  ``[1-ε_low, 1+ε_high]`` (a token with ``A = 0`` gets no gradient whatever its weight, so it has no
  weight on ∇π to measure);
- ``pi_weight_max``: the largest ``w / r`` over them; ``pi_weight_p99``: their nearest-rank 99th
  percentile (the ``⌈0.99·K⌉``-th smallest of the K values); both 0 when there is no such token (the
  out-of-region tokens then put no weight on ∇π);
- ``pi_weight_low_decile_max`` / ``_p99``: the same two over the **lowest-probability decile by π_old**:
  the ``⌈K'/10⌉`` response tokens with ``A ≠ 0`` whose ``π_old`` is smallest (ties by position), in any
  region. By ``π_old`` and not by ``π``: ``π_old`` is fixed when the step's responses are sampled, so the
  decile is the same set of tokens whatever the loss then does, whereas ``π = r·π_old`` would pick tokens
  partly *because* their ``r`` is small, which is exactly where a soft clip's ``w / r`` is large by
  construction (a selection that manufactures the effect it measures). It also makes the decile's values
  the largest absolute weights: the weight on ∇π itself is ``(w / r) / π_old``.

:func:`region_metrics` logs ``actor/<method>_pi_weight_max`` with the region fractions (an ``exp``, a
product and an ``amax`` more: no sort, no extra device-to-host copy). The percentiles and the decile need
sorts, which cost more than the loss itself on long batches; :func:`pi_weight_distribution` computes all
four for studies that want them, also with a single copy to the host.
"""

from __future__ import annotations

import torch

from verl_dgpo.maths.losses import TokenLoss, trust_region_regions

PI_WEIGHT_KEYS = ("pi_weight_max", "pi_weight_p99", "pi_weight_low_decile_max", "pi_weight_low_decile_p99")


def pi_weight(weight: torch.Tensor, log_ratio: torch.Tensor) -> torch.Tensor:
    """``w / r = w · exp(-log r)``: the weight on ``A·∇π`` in units of ``1/π_old``, per token (no grad).

    ``log_ratio`` is the masked, clamped log-ratio of :func:`~verl_dgpo.maths.losses.log_ratio_and_validity`
    (so ``exp(-log r) ≤ e^20``: finite).
    """
    with torch.no_grad():
        return weight * torch.exp(-log_ratio)


def region_metrics(out: TokenLoss, response_mask: torch.Tensor, method: str = "dgpo") -> dict[str, float]:
    """Fractions of response tokens per region, the gradient weight's mean and max, ``pi_weight_max`` and ``ppo_kl``.

    Keys ``actor/{method}_{ln,hp,lp,hn}_frac``, ``actor/{method}_weight_{mean,max}`` (``w``, on ∇log π),
    ``actor/{method}_pi_weight_max`` (the largest ``w / r`` over out-of-trust-region tokens, 0 when there
    are none; see the module docstring), plus verl's own ``actor/ppo_kl``, ``actor/pg_clipfrac`` (LN + HP:
    the tokens PPO's clip would stop, as in verl's ``vanilla``, so every method has a comparable curve)
    and, for methods with a dual clip, ``actor/pg_clipfrac_lower`` (the fraction of tokens the dual clip
    changed). Computed without grad from tensors the loss already has, with a single device-to-host copy.
    """
    with torch.no_grad():
        mask = response_mask.bool()
        count = torch.count_nonzero(mask).clamp(min=1).to(out.weight.dtype)  # count_nonzero: 3x faster than sum
        ln, hp, lp, hn = (torch.count_nonzero(region & mask) / count for region in out.regions)
        masked_weight = torch.where(mask, out.weight, 0.0)
        # masked tokens have log r = 0, so they are in no region: the regions need no "& mask"
        outside = out.regions.ln | out.regions.hp | out.regions.lp | out.regions.hn
        outside_pi_weight = torch.where(outside, pi_weight(out.weight, out.log_ratio), 0.0)
        if masked_weight.numel():
            weight_max, pi_weight_max = masked_weight.amax(), outside_pi_weight.amax()
        else:
            weight_max = pi_weight_max = masked_weight.new_zeros(())
        stats = [ln, hp, lp, hn, ln + hp, masked_weight.sum() / count, weight_max, pi_weight_max,
                 -out.log_ratio.sum() / count]
        names = [f"actor/{method}_{key}" for key in ("ln_frac", "hp_frac", "lp_frac", "hn_frac")]
        names += ["actor/pg_clipfrac", f"actor/{method}_weight_mean", f"actor/{method}_weight_max",
                  f"actor/{method}_pi_weight_max", "actor/ppo_kl"]
        if out.dual_clipped is not None:
            stats.append(torch.count_nonzero(out.dual_clipped & mask) / count)
            names.append("actor/pg_clipfrac_lower")
        values = torch.stack(stats).tolist()
    return dict(zip(names, values))


def _max_and_p99(values: torch.Tensor, selected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Max and nearest-rank 99th percentile of the non-negative ``values[selected]`` (0, 0 when none), sync-free.

    Unselected entries become -1 and sort first, so the K selected ones are the last K of the ascending
    sort; the ``⌈0.99·K⌉``-th of them sits at index ``numel - K + ⌈0.99·K⌉ - 1`` (integer arithmetic, so
    no float rounding moves the rank). With K = 0 that index holds a -1, clamped to 0.
    """
    flat = torch.where(selected, values, -1.0).flatten()
    ordered = torch.sort(flat).values
    k = torch.count_nonzero(selected)
    rank = (99 * k + 99) // 100  # ⌈0.99·k⌉
    index = (flat.numel() - k + rank - 1).clamp(min=0, max=flat.numel() - 1)
    return ordered[-1].clamp(min=0.0), ordered[index].clamp(min=0.0)


def pi_weight_distribution(
    weight: torch.Tensor,
    log_ratio: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    eps_low: float,
    eps_high: float,
) -> dict[str, float]:
    """:data:`PI_WEIGHT_KEYS` (module docstring) from the per-token weight ``w`` on ∇log π of any loss.

    ``log_ratio``: the masked, clamped ``log r`` (:func:`~verl_dgpo.maths.losses.log_ratio_and_validity`);
    ``old_log_prob`` picks the lowest-probability decile. Three sorts of the batch, one copy to the host.
    """
    with torch.no_grad():
        if weight.numel() == 0:
            return dict.fromkeys(PI_WEIGHT_KEYS, 0.0)
        mask = response_mask.bool()
        adv = advantages.to(log_ratio.dtype)
        regions = trust_region_regions(log_ratio, adv, eps_low, eps_high)
        outside = (regions.ln | regions.hp | regions.lp | regions.hn) & mask
        pi = pi_weight(weight.to(log_ratio.dtype), log_ratio)
        graded = mask & (adv != 0)
        keys = torch.where(graded, old_log_prob.to(log_ratio.dtype), torch.inf).flatten()
        order = torch.sort(keys, stable=True).indices  # lowest π_old first; ties by position
        decile_size = (torch.count_nonzero(graded) + 9) // 10  # ⌈K'/10⌉
        in_decile = torch.arange(keys.numel(), device=keys.device) < decile_size
        stats = [*_max_and_p99(pi, outside), *_max_and_p99(pi.flatten()[order], in_decile)]
        values = torch.stack(stats).tolist()
    return dict(zip(PI_WEIGHT_KEYS, values))
