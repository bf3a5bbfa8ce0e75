"""Per-token surrogates of the paper's soft-clipping baselines: GPPO, CE-GPPO and ASPO. Pure torch: no verl import.

GRPO (verl's ``vanilla``) and CISPO (verl's ``cispo``) are verl's own losses and are not repeated here.
Notation as in :mod:`verl_dgpo.maths.losses`: ``r = π/π_old``, ``A`` the advantage, ``ε_l, ε_h`` the trust-region
bounds, ``c`` the dual-clip constant (verl's ``clip_ratio_c``). The regions are those of
:func:`~verl_dgpo.maths.losses.trust_region_regions` (LN: A<0, r<1-ε_l; HP: A>0, r>1+ε_h; LP: A>0, r<1-ε_l;
HN: A<0, r>1+ε_h; "inside" otherwise). ``w`` is the gradient weight on ``A·∇log π``, read from each
method's own loss function:

========= ============== ============== ============== ==================== ===========================
method    LN             HP             LP             HN                   inside
========= ============== ============== ============== ==================== ===========================
GPPO      1-ε_l          1+ε_h          r              r; 0 once r > c      r
CE-GPPO   β1·(1-ε_l)     β2·(1+ε_h)     r              r; 0 once r > c      r
ASPO      0              0              min(1/r, c)    r; c once r > c      A>0: 1/r; A<0: r
========= ============== ============== ============== ==================== ===========================

Every loss here is ``-A · v`` per token, ``v`` the value the authors' loss reports (see each function), with
derivative ``-A · w`` in ``log_prob``; both are closed forms computed without autograd and joined by
:func:`~verl_dgpo.maths.losses.closed_form_token_loss`, on the log-ratio of
:func:`~verl_dgpo.maths.losses.log_ratio_and_validity` (masked, clamped to ±20 like verl's losses), so no weight
can overflow and masked tokens get an exactly zero gradient.
"""

from __future__ import annotations

import torch

from verl_dgpo.maths.losses import TokenLoss, closed_form_token_loss, log_ratio_and_validity, trust_region_regions


def ce_gppo_token_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    eps_low: float,
    eps_high: float,
    clip_ratio_c: float,
    beta1: float = 0.75,
    beta2: float = 1.0,
) -> TokenLoss:
    """CE-GPPO (Su et al., arXiv 2509.20712; authors' ``compute_gppo_loss_general_beta``), per token.

    Gradient weight ``w`` on ``A·∇log π``: ``β1·(1-ε_l)`` on LN, ``β2·(1+ε_h)`` on HP, ``r`` elsewhere; then
    the dual clip of the authors' code on every A<0 token: where that value exceeds ``c`` (HN with r > c),
    the value becomes ``c`` and ``w = 0``. The value ``v`` equals ``w`` before the dual clip (the authors'
    ``-β·(1∓ε)·r/sg(r)·A``). ``β1 = β2 = 1`` is GPPO (:func:`gppo_token_loss`).
    Tensors are ``(batch, response_length)``; ``clip_ratio_c > 1``.
    """
    lr, valid = log_ratio_and_validity(log_prob, old_log_prob, response_mask)
    adv = advantages.to(lr.dtype)
    regions = trust_region_regions(lr, adv, eps_low, eps_high)
    with torch.no_grad():
        clipped = lr.exp().masked_fill_(regions.hp, beta2 * (1 + eps_high))
        clipped.masked_fill_(regions.ln, beta1 * (1 - eps_low))
        dual_clipped = (adv < 0) & (clipped > clip_ratio_c)
        value = clipped.masked_fill(dual_clipped, clip_ratio_c)
        weight = clipped.masked_fill_(dual_clipped, 0.0)
    return closed_form_token_loss(log_prob, lr, valid, adv, value, weight, regions, dual_clipped)


def gppo_token_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    eps_low: float,
    eps_high: float,
    clip_ratio_c: float,
) -> TokenLoss:
    """GPPO (Su et al., Klear-Reasoner, arXiv 2508.07629; authors' ``compute_gppo_loss``), per token.

    ``w = 1-ε_l`` on LN, ``1+ε_h`` on HP, ``r`` on LP, HN and inside, and ``0`` on A<0 tokens with ``r > c``
    (dual clip). The value is verl's ``vanilla`` one (PPO's clipped ratio with dual clip): GPPO changes only
    the gradient. It is CE-GPPO with ``β1 = β2 = 1``.
    """
    return ce_gppo_token_loss(
        log_prob, old_log_prob, advantages, response_mask,
        eps_low=eps_low, eps_high=eps_high, clip_ratio_c=clip_ratio_c, beta1=1.0, beta2=1.0,
    )  # fmt: skip


def aspo_token_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    eps_low: float,
    eps_high: float,
    clip_ratio_c: float,
) -> TokenLoss:
    """ASPO (Archer2.0, arXiv 2510.06062; authors' ``compute_policy_loss_archer``), per token, fixed ε.

    Positive tokens (A > 0) get the inverted ratio: ``w = min(1/r, c)`` for ``r ≤ 1+ε_h`` (inside and LP),
    ``0`` on HP; value ``min(1/min(r, 1+ε_h), c)``. Other tokens (A ≤ 0) get PPO's one-sided clip with a
    soft dual clip: ``w = 0`` on LN, ``r`` up to ``c``, and ``c`` once ``r > c``; value ``min(max(r, 1-ε_l), c)``.

    Differences from the authors' code, on purpose: (1) ε is fixed (``ε_l``/``ε_h`` from the config), whereas
    the authors pick ε per token by entropy (0.2 for the 80% lowest-entropy tokens of a response, 0.4 for the
    rest), because verl's policy-loss interface does not receive the entropy; (2) ``c`` is verl's
    ``clip_ratio_c`` for both signs (the authors hard-code 3, verl's default); (3) where the authors' dual
    clip uses the surrogate ``c·log π`` (value ``c·log π``, weight ``c``), the value here is ``c``: same
    gradient, a loss value on the same scale as the other tokens'.
    """
    lr, valid = log_ratio_and_validity(log_prob, old_log_prob, response_mask)
    adv = advantages.to(lr.dtype)
    regions = trust_region_regions(lr, adv, eps_low, eps_high)
    with torch.no_grad():
        positive = adv > 0
        # The ratio itself for A <= 0, its inverse for A > 0: one exp, bounded because |log r| <= 20.
        base = torch.where(positive, lr.neg(), lr).exp_()
        dual_clipped = (base > clip_ratio_c) & (adv != 0)  # A<0: r > c; A>0: r < 1/c
        capped = base.clamp_(max=clip_ratio_c)
        value = capped.masked_fill(regions.hp, 1 / (1 + eps_high)).masked_fill_(regions.ln, 1 - eps_low)
        weight = capped.masked_fill_(regions.ln | regions.hp, 0.0)
    return closed_form_token_loss(log_prob, lr, valid, adv, value, weight, regions, dual_clipped)
