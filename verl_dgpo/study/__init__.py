"""A reproducible method comparison on CPU, through verl's real trainer (``scripts/compare_methods.py``).

Modules:

- :mod:`~verl_dgpo.study.warm_start` — supervised warm start of the tiny model on the copy-digits task,
  stopped at a documented held-out accuracy well below the ceiling, saved as the RL starting checkpoint;
- :mod:`~verl_dgpo.study.probe` — a study-only verl plugin (loaded through ``VERL_USE_EXTERNAL_MODULES``
  in study runs only) that adds the same ratio/region metrics to every policy loss;
- :mod:`~verl_dgpo.study.runs` — the run matrix (methods x seeds), one ``python -m verl_dgpo.main`` per
  run, resumable, and the per-step CSV of each run;
- :mod:`~verl_dgpo.study.report` — table (markdown) and curves (PNG) computed from the CSVs.

Importing this package changes nothing in verl.
"""
