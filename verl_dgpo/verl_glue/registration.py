"""The one module that registers verl-dgpo with verl.

verl imports it at ``import verl``, in every process (the driver and each Ray worker): through the
``verl.plugins`` entry point (verl >= 0.9.0) or because ``VERL_USE_EXTERNAL_MODULES`` names it (every
supported release; ``python -m verl_dgpo.main`` sets it). Importing it only *adds* names to verl's
registries; it changes nothing verl already has, and refuses to overwrite a name that another package
registered.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from verl.trainer.ppo import core_algos
from verl.trainer.ppo.core_algos import agg_loss

from verl_dgpo.maths.advantages import group_normalized_advantage
from verl_dgpo.maths.baseline_losses import aspo_token_loss, ce_gppo_token_loss, gppo_token_loss
from verl_dgpo.maths.loss_metrics import region_metrics
from verl_dgpo.maths.losses import TokenLoss, dgpo_token_loss
from verl_dgpo.maths.hyperparameters import ce_gppo_betas, dgpo_exponents, dual_clip_ratio, trust_region

#: name -> function, for everything this module registers (``check_installed`` verifies each).
REGISTERED_POLICY_LOSSES: dict[str, Callable] = {}
REGISTERED_ADV_ESTIMATORS: dict[str, Callable] = {}


class RegistryCollisionError(RuntimeError):
    """Another package already registered a verl name that verl-dgpo wants."""


def _is_ours(fn: Any) -> bool:
    # Compare by qualified name, so re-importing this module (a new function object) is not a collision.
    return getattr(fn, "__module__", None) == __name__


def register_policy_loss(name: str) -> Callable[[Callable], Callable]:
    """Like verl's ``register_policy_loss``, but it raises instead of silently replacing a foreign entry."""

    def decorator(fn: Callable) -> Callable:
        existing = core_algos.POLICY_LOSS_REGISTRY.get(name)
        if existing is not None and not _is_ours(existing):
            raise RegistryCollisionError(
                f"verl policy loss {name!r} is already registered by {existing.__module__}.{existing.__qualname__}; "
                f"verl-dgpo will not overwrite it. Uninstall the other plugin or rename its loss."
            )
        core_algos.register_policy_loss(name)(fn)
        REGISTERED_POLICY_LOSSES[name] = fn
        return fn

    return decorator


def register_adv_est(name: str) -> Callable[[Callable], Callable]:
    """verl's ``register_adv_est`` (which raises on a foreign duplicate), tolerant of re-importing this module."""

    def decorator(fn: Callable) -> Callable:
        existing = core_algos.ADV_ESTIMATOR_REGISTRY.get(name)
        if existing is not None and _is_ours(existing):
            core_algos.ADV_ESTIMATOR_REGISTRY[name] = fn
        else:
            core_algos.register_adv_est(name)(fn)
        REGISTERED_ADV_ESTIMATORS[name] = fn
        return fn

    return decorator


def _at_least_one(count):
    return count.clamp(min=1) if torch.is_tensor(count) else max(count, 1)


def aggregate(loss_mat: torch.Tensor, response_mask: torch.Tensor, loss_agg_mode: str, config: Any) -> torch.Tensor:
    """verl's ``agg_loss(..., **config.global_batch_info)``, except that an empty batch gives 0, not 0/0.

    The token and sequence counts verl divides by are floored at 1; every non-empty batch is aggregated
    exactly as verl's own losses aggregate it.
    """
    info = dict(getattr(config, "global_batch_info", None) or {})
    mask = response_mask.bool()
    if info.get("dp_size", 1) <= 1:
        if info.get("batch_num_tokens") is None:
            info["batch_num_tokens"] = mask.sum()
        if info.get("global_batch_size") is None:
            info["global_batch_size"] = mask.any(dim=-1).sum()
    for key in ("batch_num_tokens", "global_batch_size"):
        if info.get(key) is not None:
            info[key] = _at_least_one(info[key])
    return agg_loss(loss_mat=loss_mat, loss_mask=mask, loss_agg_mode=loss_agg_mode, **info)


def finish(
    out: TokenLoss,
    method: str,
    response_mask: torch.Tensor,
    loss_agg_mode: str,
    config: Any,
    rollout_is_weights: Optional[torch.Tensor],
) -> tuple[torch.Tensor, dict[str, float]]:
    """What every loss here returns to verl: ``agg(loss · is_weight)`` and :func:`region_metrics`."""
    loss_mat = out.loss if rollout_is_weights is None else out.loss * rollout_is_weights
    return aggregate(loss_mat, response_mask, loss_agg_mode, config), region_metrics(out, response_mask, method)


def _require_config(method: str, config: Any) -> Any:
    if config is None:
        raise ValueError(f"the {method} policy loss needs verl's actor config (config=None was passed)")
    return config


def make_policy_loss(
    method: str, token_loss: Callable[..., TokenLoss], hyper_parameters: Callable[[Any], dict[str, Any]], doc: str
) -> Callable:
    """verl's policy-loss function for ``method``, registered under that name.

    ``token_loss(log_prob, old_log_prob, advantages, response_mask, eps_low=, eps_high=, **hyper_parameters(config))``
    gives the per-token loss; ε_low/ε_high come from ``config.clip_ratio_low/high`` (falling back to
    ``clip_ratio``). The returned function has verl's signature (keyword names and defaults as in
    ``verl.trainer.ppo.core_algos``) and returns ``(agg(loss · is_weight), metrics)`` via :func:`finish`.
    """

    def policy_loss(
        old_log_prob: torch.Tensor,
        log_prob: torch.Tensor,
        advantages: torch.Tensor,
        response_mask: torch.Tensor,
        loss_agg_mode: str = "token-mean",
        config: Optional[Any] = None,
        rollout_is_weights: Optional[torch.Tensor] = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        eps_low, eps_high = trust_region(_require_config(method, config))
        out = token_loss(
            log_prob, old_log_prob, advantages, response_mask,
            eps_low=eps_low, eps_high=eps_high, **hyper_parameters(config),
        )  # fmt: skip
        return finish(out, method, response_mask, loss_agg_mode, config, rollout_is_weights)

    policy_loss.__name__ = policy_loss.__qualname__ = f"compute_policy_loss_{method}"
    policy_loss.__doc__ = doc
    return register_policy_loss(method)(policy_loss)


def _dgpo_exponents(config: Any) -> dict[str, float]:
    n, m = dgpo_exponents(config.get("policy_loss", None))
    return {"n": n, "m": m}


def _dual_clip(config: Any) -> dict[str, float]:
    return {"clip_ratio_c": dual_clip_ratio(config)}


def _ce_gppo_parameters(config: Any) -> dict[str, float]:
    beta1, beta2 = ce_gppo_betas(config.get("policy_loss", None))
    return {**_dual_clip(config), "beta1": beta1, "beta2": beta2}


compute_policy_loss_dgpo = make_policy_loss(
    "dgpo",
    dgpo_token_loss,
    _dgpo_exponents,
    """DGPO policy loss (arXiv 2603.14389): ``agg(-A · s · is_weight)``.

    Per token, the gradient with respect to ``log_prob`` before aggregation is ``-A · w · is_weight`` with

    - ``w = r^(n+1) / (1-ε_low)^n``            if A < 0 and r < 1 - ε_low   (LN)
    - ``w = (1+ε_high)^(1/m) · r^(1-1/m)``     if A > 0 and r > 1 + ε_high  (HP)
    - ``w = r``                                otherwise

    ε_low/ε_high are ``config.clip_ratio_low/high`` (falling back to ``clip_ratio``); n, m are
    ``config.policy_loss.dgpo_n/dgpo_m`` (defaults 1 and 2). Shapes are ``(batch, response_length)``.
    See :mod:`verl_dgpo.maths.losses` for the closed forms and the overflow-safe construction.
    """,
)

compute_policy_loss_gppo = make_policy_loss(
    "gppo",
    gppo_token_loss,
    _dual_clip,
    """GPPO (Klear-Reasoner, arXiv 2508.07629): PPO's loss value, gradient ``-A·w`` per token with
    ``w = 1-ε_low`` (LN), ``1+ε_high`` (HP), ``0`` for A<0 and r > c, ``r`` otherwise.

    ε from ``config.clip_ratio_low/high``, c from ``config.clip_ratio_c`` (verl's default 3; the authors'
    scripts use 10). See :func:`verl_dgpo.maths.baseline_losses.gppo_token_loss`.
    """,
)

compute_policy_loss_ce_gppo = make_policy_loss(
    "ce_gppo",
    ce_gppo_token_loss,
    _ce_gppo_parameters,
    """CE-GPPO (arXiv 2509.20712): gradient ``-A·w`` per token with ``w = β1·(1-ε_low)`` (LN),
    ``β2·(1+ε_high)`` (HP), ``0`` for A<0 and r > c, ``r`` otherwise.

    β1, β2 from ``config.policy_loss.ce_gppo_beta1/2`` (defaults 0.75, 1); ε and c as for ``gppo``.
    See :func:`verl_dgpo.maths.baseline_losses.ce_gppo_token_loss`.
    """,
)

compute_policy_loss_aspo = make_policy_loss(
    "aspo",
    aspo_token_loss,
    _dual_clip,
    """ASPO (Archer2.0, arXiv 2510.06062), fixed ε: gradient ``-A·w`` per token with, for A > 0,
    ``w = min(1/r, c)`` (0 on HP) and, for A < 0, ``w = r`` up to c, ``c`` beyond (0 on LN).

    ε from ``config.clip_ratio_low/high`` (the authors choose 0.2/0.4 per token by entropy, which verl's
    loss interface does not pass), c from ``config.clip_ratio_c``.
    See :func:`verl_dgpo.maths.baseline_losses.aspo_token_loss`.
    """,
)


@register_adv_est("dgpo")
def compute_dgpo_outcome_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index,
    config: Optional[Any] = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Group-relative outcome advantage of DGPO (``algorithm.adv_estimator=dgpo``); returns (advantages, returns).

    ``A_i = (R_i - mean_G R) / (std_G R + ε)`` per prompt group G (``index`` = verl's ``uid``), or
    ``R_i - mean_G R`` when ``algorithm.norm_adv_by_std_in_grpo=false``; ε is ``algorithm.epsilon`` if set,
    else 1e-6. Numerically identical to verl's ``grpo`` estimator. Not to be confused with verl's ``gdpo``.
    """
    get = config.get if config is not None else (lambda key, default=None: default)
    epsilon = get("epsilon", None)
    adv = group_normalized_advantage(
        token_level_rewards,
        response_mask,
        index,
        epsilon=1e-6 if epsilon is None else float(epsilon),
        normalize_by_std=bool(get("norm_adv_by_std_in_grpo", True)),
    )
    return adv, adv
