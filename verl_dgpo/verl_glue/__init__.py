"""verl's glue: what connects the maths (:mod:`verl_dgpo.maths`) to verl. Nothing here runs on import.

* :mod:`.registration` — adds the losses and the ``dgpo`` estimator to verl's registries (face:
  :mod:`verl_dgpo.registry`);
* :mod:`.loss_config` — ``DGPOPolicyLossConfig``, verl's policy-loss config plus our keys (face:
  :mod:`verl_dgpo.config`);
* :mod:`.task_runners` — verl's task runners whose validation also logs Avg@k and Pass@k;
* :mod:`.contracts` — every contract with verl, checked on the installed release (face: :mod:`verl_dgpo.check`);
* :mod:`.external_modules`, :mod:`.verl_files` — ``VERL_USE_EXTERNAL_MODULES`` and verl's files, without
  importing verl.
"""
