"""Avg@n / Pass@k during training validation, equal to what the final evaluation reports.

verl 0.9.1 validates by sampling ``actor_rollout_ref.rollout.val_kwargs.n`` responses per prompt, scoring
them with the reward function, and (``RayPPOTrainer._val_metrics_update`` -> ``metric_utils.
process_validation_metrics``) grouping the per-sample ``acc`` (our reward's float; ``reward`` when a
reward function returns no ``acc``) by ``data_source`` and prompt ``uid``. It logs

* ``val-core/<data_source>/acc/mean@n``: the mean over prompts of the per-prompt mean, i.e. Avg@n
  (identical to :func:`verl_dgpo.eval.metrics.benchmark_metrics`'s ``avg@n`` for 0/1 scores);
* ``best@k/mean``: a *bootstrap* estimate (k draws with replacement) of the best-of-k score. With
  replacement it is about ``1 - (1 - c/n)^k`` per prompt, below the unbiased Pass@k of Chen et al.
  (at k = n it is not 1 when c > 0), so it is not the paper's Pass@k.

:class:`PassAtKValidationMixin` adds, next to verl's metrics, ``val-core/<data_source>/acc/avg@n`` and
``val-core/<data_source>/acc/pass@k`` (k = 1, 2, 4, ..., n; the unbiased estimator, as fractions like
verl's), and their unweighted means over data sources as ``val-core/average/acc/...`` (the paper's
"Average"). It works for verl's v1 trainer and the legacy ``RayPPOTrainer`` alike: both route every
validation through ``_val_metrics_update(data_sources, sample_uids, reward_extra_infos_dict,
sample_turns, **kw)``; prompts with fewer materialised sessions than expected (v1's
``expected_acc_counts``) get the missing sessions as failures, as verl's own ``acc`` does.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

from verl_dgpo.eval.metrics import group_scores, summarize

PREFIX = "val-core"


def pass_at_k_val_metrics(
    data_sources: Sequence[str],
    sample_uids: Sequence,
    reward_extra_infos_dict: Mapping[str, Sequence],
    expected_acc_counts: Optional[Mapping[tuple[str, str], int]] = None,
) -> dict[str, float]:
    """``{"val-core/<source>/acc/avg@n": ..., ".../pass@k": ..., "val-core/average/acc/...": ...}`` (fractions)."""
    var = "acc" if "acc" in reward_extra_infos_dict else "reward"
    scores = reward_extra_infos_dict.get(var)
    if scores is None or len(scores) == 0:
        return {}
    kept = [(s, u, v) for s, u, v in zip(data_sources, sample_uids, scores, strict=True) if v is not None]
    grouped = group_scores([s for s, _, _ in kept], [u for _, u, _ in kept], [v for _, _, v in kept])
    for (source, uid), expected in (expected_acc_counts or {}).items():
        if source in grouped:
            observed = grouped[source][uid]
            observed.extend([0.0] * max(expected - len(observed), 0))
    summary = summarize(grouped)
    metrics = {}
    for source, values in summary["benchmarks"].items():
        for key, value in values.items():
            if key.startswith(("avg@", "pass@")):
                metrics[f"{PREFIX}/{source}/{var}/{key}"] = value / 100.0
    for key, value in summary.get("average", {}).items():
        metrics[f"{PREFIX}/average/{var}/{key}"] = value / 100.0
    return metrics


class PassAtKValidationMixin:
    """Mix in before verl's trainer class: ``class Trainer(PassAtKValidationMixin, RayPPOTrainer)``."""

    def _val_metrics_update(self, data_sources, sample_uids, reward_extra_infos_dict, sample_turns, **kwargs):
        metrics = super()._val_metrics_update(data_sources, sample_uids, reward_extra_infos_dict, sample_turns, **kwargs)
        metrics.update(
            pass_at_k_val_metrics(data_sources, sample_uids, reward_extra_infos_dict, kwargs.get("expected_acc_counts"))
        )
        return metrics


def with_pass_at_k(trainer_cls: type) -> type:
    """``trainer_cls`` with :class:`PassAtKValidationMixin` in front (a new subclass; verl is not patched)."""
    return type(trainer_cls.__name__ + "WithPassAtK", (PassAtKValidationMixin, trainer_cls), {})


def use_pass_at_k_trainer(mode: str) -> None:
    """In this process, make verl's v1 trainer registry give :func:`with_pass_at_k` of mode ``mode``'s class.

    The mode's name stays what the user configured: verl's v1 trainer branches on it (``trainer_mode ==
    "sync"`` picks the synchronous replay buffer, parameter-sync schedule and refill rules), so a renamed
    mode would silently run another training schedule. Called only inside the TaskRunner actor that our
    entry point starts (:mod:`verl_dgpo.verl_glue.task_runners`); verl's classes are not modified, and an unknown mode
    is left to verl's own ``get_trainer_cls`` error, which lists the registered modes.
    """
    from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY

    cls = TRAINER_REGISTRY.get(mode)
    if cls is not None and not issubclass(cls, PassAtKValidationMixin):
        TRAINER_REGISTRY[mode] = with_pass_at_k(cls)
