"""A run's start-up, used by the entry point :mod:`verl_dgpo.main`: everything checked and prepared on the
driver before Ray starts, in the order a run needs it, and Ray's bounded start.

* :mod:`.methods` — ``algorithm.policy_loss`` (a method name) to verl's ``loss_mode``;
* :mod:`.trl_compat` — whether the installed TRL lets verl's trainer start;
* :mod:`.preflight` — batch sizes, devices, rollout engine, data files, model;
* :mod:`.run_identity`, :mod:`.checkpoints` — which checkpoint folder a run may continue, and which are complete;
* :mod:`.ray_start` — a time limit on Ray's start-up.
"""
