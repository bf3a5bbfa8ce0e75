"""The comparison's verl plugin: one wrapper policy loss per method, registered in verl's own registry.

Loaded only in the comparison's runs, in every process, through ``VERL_USE_EXTERNAL_MODULES=comparison_study.plugin``
(set by :func:`comparison_study.runs.run_environment`; the experiment folder is put on ``PYTHONPATH``).
For every loss ``name`` in :data:`WRAPPED`, importing this module registers ``study_<name>`` with verl's
``register_policy_loss``: it calls verl's registered ``name`` unchanged and adds the metrics of
:mod:`comparison_study.probe` to the metrics that loss returns (among them the weight on ∇π, measured from
that loss's own gradient by :func:`comparison_study.probe.measured_weight`). No verl function or attribute is replaced;
importing :mod:`verl_dgpo` never imports this module.
"""

from __future__ import annotations

from typing import Callable

from verl.trainer.ppo import core_algos

from comparison_study import probe

#: verl policy-loss names that get a ``study_`` wrapper (``vanilla`` is what ``grpo`` names; ``sapo`` is verl's own).
WRAPPED = ("vanilla", "cispo", "gppo", "ce_gppo", "aspo", "dgpo", "sapo")
PREFIX = "study_"

_STEP = probe.StepExtremes(probe.updates_per_step_from_env() or 1)


def with_metrics(name: str) -> Callable:
    """A policy loss that returns ``name``'s loss unchanged, with the comparison's metrics added."""

    def study_loss(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean", config=None,
                   rollout_is_weights=None, **kwargs):
        inner = core_algos.get_policy_loss_fn(name)
        loss, metrics = inner(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config,
                              rollout_is_weights, **kwargs)
        eps_low, eps_high = probe.trust_region_bounds(config) if config is not None else (0.2, 0.2)
        stats = probe.ratio_stats(old_log_prob, log_prob, advantages, response_mask, eps_low, eps_high)
        weight = probe.measured_weight(inner, old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config,
                                       **kwargs)
        pi_stats = probe.pi_weight_stats(weight, old_log_prob, log_prob, advantages, response_mask, eps_low, eps_high)
        metrics = dict(metrics)
        metrics.update({key: stats[key] for key in probe.FRACTION_KEYS})
        if probe.updates_per_step_from_env() is None:
            metrics.update({key: stats[key] for key in probe.EXTREME_KEYS})
            metrics.update(pi_stats)
        else:
            metrics.update(_STEP.add(stats["study/ratio_max"], stats["study/ratio_min"], pi_stats))
        return loss, metrics

    study_loss.__name__ = study_loss.__qualname__ = PREFIX + name
    study_loss.wrapped_loss = name
    return study_loss


def register_all() -> None:
    """Register ``study_<name>`` for every name of :data:`WRAPPED` (idempotent)."""
    for name in WRAPPED:
        if PREFIX + name not in core_algos.POLICY_LOSS_REGISTRY:
            core_algos.register_policy_loss(PREFIX + name)(with_metrics(name))


register_all()
