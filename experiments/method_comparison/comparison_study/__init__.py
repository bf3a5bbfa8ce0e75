"""The method comparison on CPU, through verl's real trainer (``experiments/method_comparison/run.py``).

Not part of the ``verl_dgpo`` package and never imported by it. Modules:

- :mod:`~comparison_study.configs` — the ``short``, ``long`` and ``stress`` configurations and the ``study.json`` record;
- :mod:`~comparison_study.regime` — the stress study's pre-registered rules: which update schedule (pilot
  rule) and how many steps (step rule);
- :mod:`~comparison_study.warm_start` — supervised warm start of the tiny model on the copy-digits task,
  stopped in a held-out accuracy band, its weights checked against a recorded sha256;
- :mod:`~comparison_study.plugin` — the verl plugin of the runs (``study_<loss>`` wrapper losses that add
  :mod:`~comparison_study.probe`'s metrics), loaded through
  ``VERL_USE_EXTERNAL_MODULES`` in the comparison's runs only;
- :mod:`~comparison_study.runs` — the run matrix (methods x seeds), one ``python -m verl_dgpo.main`` per
  run, resumable, and the per-step CSV of each run;
- :mod:`~comparison_study.stats` and :mod:`~comparison_study.report` — paired statistics, ``report.md``
  and the figures, from the CSVs only.
"""
