"""Worker-side set-up of the local CPU preset, run on import in every process of a local run.

:func:`verl_dgpo.local.activate` puts this module into ``VERL_USE_EXTERNAL_MODULES``, so ``import verl``
imports it in the driver's Ray workers (TaskRunner, training worker, agent-loop and reward workers,
rollout server). It is the only module whose import changes verl, and nothing else imports it:
importing the plugin or :mod:`verl_dgpo.local` leaves verl untouched.
"""

from __future__ import annotations

import importlib
import os

ROLLOUT_NAME = "hf"
ROLLOUT_MODULE = "verl_dgpo.local.hf_rollout"


def _load_hf_replica() -> type:
    return importlib.import_module(ROLLOUT_MODULE).HFReplica


def register_hf_rollout() -> None:
    """Register rollout backend ``hf`` in verl's two rollout registries, by name (idempotent).

    The training worker resolves ``_ROLLOUT_REGISTRY[("hf", "async")]`` to the weight-sync adapter; the
    trainer's ``LLMServerManager`` resolves ``RolloutReplicaRegistry["hf"]`` to the server replica.
    """
    from verl.workers.rollout import base, replica

    base._ROLLOUT_REGISTRY[(ROLLOUT_NAME, "async")] = f"{ROLLOUT_MODULE}.HFServerAdapter"
    replica.RolloutReplicaRegistry.register(ROLLOUT_NAME, _load_hf_replica)


def install() -> list[str]:
    """Register platform ``cpu`` and rollout ``hf``, apply the CPU patches (and, on a run whose rollout is
    vLLM, the weight-sync timeout of :mod:`verl_dgpo.local.vllm_cpu`); return the patch names."""
    from verl.plugin.platform import platform_manager

    from verl_dgpo.local.patches import apply_patches
    from verl_dgpo.local.platform import PLATFORM_NAME, register_cpu_platform

    platform_cls = register_cpu_platform()
    os.environ.setdefault("VERL_PLATFORM", PLATFORM_NAME)
    current = platform_manager._current_platform
    if current is not None and current.device_name != PLATFORM_NAME:
        platform_manager.set_platform(platform_cls())  # verl resolved a platform before we registered ours
    register_hf_rollout()
    patches = apply_patches()
    from verl_dgpo.local import vllm_cpu

    if vllm_cpu.enabled():  # the run's rollout is verl's vLLM one (launch.export_environment)
        vllm_cpu.apply_sender_timeout()
        patches.append("weight_sync_timeout")
    return patches


PATCHES = install()
