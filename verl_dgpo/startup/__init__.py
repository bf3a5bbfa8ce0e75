"""A run's start-up, used by the entry point :mod:`verl_dgpo.main`: everything checked and prepared on the
driver before Ray starts, in the order a run needs it, and Ray's bounded start.

* :mod:`.sequence` — the start-up itself, step by step (its docstring lists them), each check once;
* :mod:`.errors` — which errors are the user's to fix (one line, exit status 2);
* :mod:`.trl_compat` — whether the installed TRL lets verl's trainer start;
* :mod:`.preflight` — batch sizes, devices, rollout engine, data files, model;
* :mod:`.run_identity` — which checkpoint folder a run may continue;
* :mod:`.ray_start` — a time limit on Ray's start-up.
"""
