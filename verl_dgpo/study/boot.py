"""Loaded only in study runs, in every process, via ``VERL_USE_EXTERNAL_MODULES=verl_dgpo.study.boot``.

Importing it installs the study probe and the seeded rollout sampling (:func:`verl_dgpo.study.probe.install_all`).
Kept apart from :mod:`verl_dgpo.study.probe` so that importing the probe (tests, reports) changes nothing.
"""

from verl_dgpo.study.probe import install_all

install_all()
