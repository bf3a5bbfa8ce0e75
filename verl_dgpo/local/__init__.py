"""CPU support for verl 0.9.1: ``python -m verl_dgpo.main --config-name local_cpu`` trains on a laptop.

Selected by the preset ``verl_dgpo/config/local_cpu.yaml`` (``local_cpu.enabled: true``), which makes
``verl_dgpo.startup.sequence.start`` call :func:`activate` on the driver before Ray starts. Modules:

- :mod:`~verl_dgpo.local.launch` — driver side: assets, environment, Ray start-up, progress, summary;
- :mod:`~verl_dgpo.local.boot` — imported in every Ray process of a local run; the only import that
  changes verl (registers the platform and rollout backend below, applies the patches);
- :mod:`~verl_dgpo.local.platform` — verl platform ``cpu`` (device ``cpu``, backend ``gloo``);
- :mod:`~verl_dgpo.local.patches` — the three patches of verl internals, each guarded by its target (not a version string);
- :mod:`~verl_dgpo.local.hf_rollout` — rollout backend ``hf`` (Hugging Face ``generate`` + weight sync);
- :mod:`~verl_dgpo.local.assets`, :mod:`~verl_dgpo.local.task` — tiny model and copy-digits task;
- :mod:`~verl_dgpo.local.progress` — per-step progress line, peak memory, summary.

Importing this package (or any module above except ``boot``) changes nothing in verl.
"""

from __future__ import annotations


def _exit_3_on_local_run_error(step, *args) -> None:
    """``step(*args)``; a :class:`~verl_dgpo.local.launch.LocalRunError` it raises is printed as one message
    and the process exits with status 3."""
    import sys

    from verl_dgpo.local.launch import LocalRunError

    try:
        step(*args)
    except LocalRunError as err:
        print(f"verl-dgpo local run: error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(3) from None


def check_memory(config):
    """The preset's memory check (``local_cpu.min_free_memory_gib``), before verl is imported: one message and
    exit status 3 when too little memory is available."""
    from verl_dgpo.local.launch import check_memory as _check_memory

    _exit_3_on_local_run_error(_check_memory, float(config.local_cpu.min_free_memory_gib))


def activate(config):
    """Set up and start a local CPU run on the driver (assets, environment, Ray); ``verl_dgpo.main`` then runs
    verl's trainer.

    A problem that stops the run (unsupported setting, Ray cannot start) is printed as one clear message and
    the process exits with status 3 (the memory check ran earlier, before verl's import: :func:`check_memory`).
    """
    from verl_dgpo.local.launch import activate as _activate

    _exit_3_on_local_run_error(_activate, config)
