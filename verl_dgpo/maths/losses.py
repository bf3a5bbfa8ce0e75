"""Per-token policy-gradient surrogates of DGPO (arXiv 2603.14389). Pure torch: no verl import.

Notation, per response token: ``r = π/π_old = exp(log_prob - old_log_prob)``, ``A`` the advantage,
``ε_l, ε_h`` the trust-region bounds (verl's ``clip_ratio_low`` / ``clip_ratio_high``).
The loss of a token is ``-A · s`` for a surrogate ``s`` whose value and gradient are chosen per region:

====== ======================== ===================================== ==========================
region condition                 gradient weight w on A·∇log π          weight on A·∇π (= w / π)
====== ======================== ===================================== ==========================
LN     A < 0 and r < 1 - ε_l    r^(n+1) / (1-ε_l)^n                    (1/π_old)·(r/(1-ε_l))^n
HP     A > 0 and r > 1 + ε_h    (1+ε_h)^(1/m) · r^(1-1/m)              (1/π_old)·((1+ε_h)/r)^(1/m)
LP     A > 0 and r < 1 - ε_l    r                                      1/π_old
HN     A < 0 and r > 1 + ε_h    r                                      1/π_old
inside otherwise                r                                      1/π_old
====== ======================== ===================================== ==========================

Both decays equal the plain ratio at their boundary, so w is continuous in r. The loss's gradient with
respect to ``log_prob`` is ``-A · w`` per token (before aggregation).

The surrogate is the stop-gradient expression ``s = exp(ρ + k·sg(ρ) + c)`` with ``ρ = log r``
(:func:`dgpo_surrogate`): ``k = n, c = -n·log(1-ε_l)`` on LN, ``k = -1/m, c = log(1+ε_h)/m`` on HP,
``k = c = 0`` elsewhere. Its value is ``exp((1+k)ρ + c) = w`` and its derivative in ``ρ`` is the same
number. :func:`dgpo_token_loss` evaluates it without autograd and attaches the per-token derivative
``-A·w`` to the loss with :func:`with_gradient`, so backward is one multiplication and the only tensor
kept for it is that derivative (no chain of saved intermediates). There is a single ``exp`` and it only
ever sees a log-ratio that was masked and clamped first (see :func:`log_ratio_and_validity`), so no branch
can overflow to ``inf`` and no ``0·inf`` can turn a gradient into NaN, even on tokens the mask drops; those
tokens, and tokens beyond the clamp, get an exactly zero gradient. The baselines in
:mod:`verl_dgpo.maths.baseline_losses` are built from the same pieces (:func:`log_ratio_and_validity`,
:func:`trust_region_regions`, :func:`closed_form_token_loss`).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch

#: Log-ratios are clamped to ±this before any ``exp`` (verl's own losses use the same bound).
LOG_RATIO_BOUND = 20.0


class Regions(NamedTuple):
    """Boolean masks (same shape as the tokens) of the four out-of-trust-region cases.

    A token is in at most one of them; a token in none is inside the trust region (or has A = 0).
    """

    ln: torch.Tensor  # A < 0, r < 1 - eps_low: "low-ratio negative" — DGPO's left decay
    hp: torch.Tensor  # A > 0, r > 1 + eps_high: "high-ratio positive" — DGPO's right decay
    lp: torch.Tensor  # A > 0, r < 1 - eps_low
    hn: torch.Tensor  # A < 0, r > 1 + eps_high


class TokenLoss(NamedTuple):
    """What a per-token loss returns: the loss matrix, its gradient weight and the region masks."""

    loss: torch.Tensor  # -A · surrogate, per token (masked tokens included; aggregation masks them)
    weight: torch.Tensor  # detached gradient weight w on A·∇log π, per token
    log_ratio: torch.Tensor  # detached masked, clamped log r
    regions: Regions
    #: tokens whose weight a dual clip changed (A<0 and r > c, ...), for methods that have one; else None
    dual_clipped: Optional[torch.Tensor] = None


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the surrogate is computed in: at least float32 (bf16/fp16 inputs are upcast)."""
    return torch.promote_types(dtype, torch.float32)


def log_ratio_and_validity(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    response_mask: torch.Tensor,
    bound: float = LOG_RATIO_BOUND,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The shared ratio set-up, without autograd: ``(log r, valid)``.

    ``log r = log(π/π_old)`` in at least float32, clamped to ``[-bound, bound]`` and exactly 0 on masked
    tokens; ``valid`` marks the tokens through which ``log r`` has derivative 1 in ``log_prob``: response
    tokens whose log-ratio is finite and within the bound (verl's losses clamp at the same ±20, where
    ``r > 4.8e8``). Garbage on padding (±1e4, ±inf, NaN) cannot produce ``inf`` downstream.
    """
    dtype = compute_dtype(log_prob.dtype)
    mask = response_mask.bool()
    with torch.no_grad():
        raw = log_prob.detach().to(dtype) - old_log_prob.to(dtype)
        log_ratio = raw.clamp(-bound, bound)
        valid = mask & (log_ratio == raw)  # false for NaN and beyond the bound
        log_ratio.masked_fill_(~mask, 0.0)
    return log_ratio, valid


class _ClosedFormGradient(torch.autograd.Function):
    """Returns a precomputed per-token value whose derivative in ``log_prob`` is the given ``grad``."""

    @staticmethod
    def forward(ctx, log_prob, value, grad):
        ctx.save_for_backward(grad)
        ctx.input_dtype = log_prob.dtype
        return value

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        return (grad_output * grad).to(ctx.input_dtype), None, None


def with_gradient(log_prob: torch.Tensor, value: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``value`` (computed without autograd), differentiable in ``log_prob`` with per-token derivative ``grad``.

    Equivalent to ``value + grad·(log_prob - sg(log_prob))`` but keeps only ``grad`` for backward.
    """
    return _ClosedFormGradient.apply(log_prob, value, grad)


def masked_log_ratio(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    response_mask: torch.Tensor,
    bound: float = LOG_RATIO_BOUND,
) -> torch.Tensor:
    """``log(π/π_old)`` in at least float32, clamped to ``[-bound, bound]``, and exactly 0 on masked tokens.

    Differentiable: derivative 1 in ``log_prob`` on response tokens within the bound, exactly 0 elsewhere
    (masked tokens, tokens beyond the bound), as ``torch.where(mask, lr.clamp(...), 0)`` has.
    """
    log_ratio, valid = log_ratio_and_validity(log_prob, old_log_prob, response_mask, bound)
    return with_gradient(log_prob, log_ratio, valid.to(log_ratio.dtype))


def trust_region_regions(
    log_ratio: torch.Tensor, advantages: torch.Tensor, eps_low: float, eps_high: float
) -> Regions:
    """Classify tokens into LN / HP / LP / HN (strict inequalities; boundaries count as inside).

    The comparison is done in log space, ``log r < log(1-ε_l)`` and ``log r > log(1+ε_h)``.
    """
    low = log_ratio < math.log1p(-eps_low)
    high = log_ratio > math.log1p(eps_high)
    pos = advantages > 0
    neg = advantages < 0
    return Regions(ln=neg & low, hp=pos & high, lp=pos & low, hn=neg & high)


def dgpo_surrogate(
    log_ratio: torch.Tensor,
    frozen_log_ratio: torch.Tensor,
    advantages: torch.Tensor,
    *,
    eps_low: float,
    eps_high: float,
    n: float = 1.0,
    m: float = 2.0,
) -> tuple[torch.Tensor, Regions]:
    """``s = exp(ρ + k·ρ_frozen + c)`` with the regions, k and c taken from ``ρ_frozen``.

    ``∂s/∂ρ = s``, and at ``ρ = ρ_frozen`` the value is the weight w of the module docstring.
    :func:`dgpo_token_loss` passes ``ρ_frozen = sg(ρ)``; taking the frozen operand as an argument makes the
    construction checkable by finite differences in ``ρ`` alone.
    """
    regions = trust_region_regions(frozen_log_ratio, advantages, eps_low, eps_high)
    zero = torch.zeros((), dtype=log_ratio.dtype, device=log_ratio.device)
    k = torch.where(regions.ln, n, torch.where(regions.hp, -1.0 / m, zero))
    c = torch.where(regions.ln, -n * math.log1p(-eps_low), torch.where(regions.hp, math.log1p(eps_high) / m, zero))
    return torch.exp(log_ratio + k * frozen_log_ratio + c), regions


def closed_form_token_loss(
    log_prob: torch.Tensor,
    log_ratio: torch.Tensor,
    valid: torch.Tensor,
    advantages: torch.Tensor,
    value: torch.Tensor,
    weight: torch.Tensor,
    regions: Regions,
    dual_clipped: Optional[torch.Tensor] = None,
) -> TokenLoss:
    """The per-token loss ``-A·v`` with derivative ``-A·w`` in ``log_prob`` on valid tokens, exactly 0 elsewhere.

    ``value`` (v) and ``weight`` (w) are detached closed forms of one method; pass the same tensor for both
    when the surrogate's value is its weight (DGPO). ``advantages`` must already be in ``log_ratio``'s dtype.
    """
    with torch.no_grad():
        neg_adv = advantages.neg()
        loss = neg_adv * value
        if value is weight:
            grad = torch.where(valid, loss, 0.0)
        else:
            grad = neg_adv.mul_(weight).masked_fill_(~valid, 0.0)  # in place: fewer temporaries at the peak
    return TokenLoss(with_gradient(log_prob, loss, grad), weight, log_ratio, regions, dual_clipped)


def dgpo_token_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    eps_low: float,
    eps_high: float,
    n: float = 1.0,
    m: float = 2.0,
    log_ratio_bound: float = LOG_RATIO_BOUND,
) -> TokenLoss:
    """DGPO's per-token loss ``-A · s`` (see the module docstring for ``s`` and its gradient per region).

    Args:
        log_prob, old_log_prob, advantages, response_mask: tensors of shape ``(batch, response_length)``.
        eps_low: ``ε_l`` in (0, 1); eps_high: ``ε_h`` > 0.
        n: decay exponent of the LN region (≥ 1; the paper uses 1, or 2 for 1.5B models).
        m: decay root of the HP region (≥ 1; the paper uses 2).
        log_ratio_bound: clamp of ``log r`` before the exponential.

    Returns:
        :class:`TokenLoss`; ``loss`` has the dtype the surrogate was computed in (≥ float32).
    """
    lr, valid = log_ratio_and_validity(log_prob, old_log_prob, response_mask, log_ratio_bound)
    adv = advantages.to(lr.dtype)
    with torch.no_grad():  # at ρ_frozen = ρ the surrogate's value is the weight w (module docstring)
        weight, regions = dgpo_surrogate(lr, lr, adv, eps_low=eps_low, eps_high=eps_high, n=n, m=m)
    return closed_form_token_loss(log_prob, lr, valid, adv, weight, weight, regions)
