"""The run's configuration: the yaml files beside this file and the loss's config class.

* ``dgpo_trainer.yaml`` — what ``python -m verl_dgpo.main`` composes (verl's ``ppo_trainer`` plus ours);
  ``dgpo.yaml`` — DGPO's keys alone, for a user's own verl run (``hydra.searchpath=[pkg://verl_dgpo.config]``);
  ``local_cpu.yaml`` — the CPU preset.
* ``verl_dgpo.config.DGPOPolicyLossConfig`` — the ``_target_`` of ``actor_rollout_ref.actor.policy_loss``,
  defined in :mod:`verl_dgpo.verl_glue.loss_config`. It subclasses verl's config, so it is imported on first
  use only: hydra reading this folder as a search path imports no verl.
"""


def __getattr__(name):
    from verl_dgpo.verl_glue import loss_config

    try:
        return getattr(loss_config, name)
    except AttributeError:
        raise AttributeError(f"module 'verl_dgpo.config' has no attribute {name!r}") from None
