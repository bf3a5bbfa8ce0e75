"""verl platform ``cpu``: lets verl 0.9.1's trainer run on a machine without an accelerator.

verl resolves its device through ``verl.plugin.platform`` (``get_platform()``), which knows only
``nvidia``, ``huawei`` and ``amd``. :class:`CPUPlatform` is a ``PlatformBase`` whose device is ``"cpu"``
and whose process-group backend is ``gloo``. Two choices keep verl's own code paths working unchanged:

- ``current_device()`` is the string ``"cpu"``, not ``0``: verl moves models with ``.to(get_device_id())``
  and torch reads a bare ``0`` as "accelerator 0", which does not exist here.
- ``ray_resource_name()`` is ``"GPU"``: verl places its workers in Ray placement groups that ask for GPUs, so
  the local preset starts Ray with one *logical* GPU (``ray_init.num_gpus=1``) that maps onto the CPU.

:func:`register_cpu_platform` adds the platform to verl's registry. Nothing here runs on import.
"""

from __future__ import annotations

import types
from contextlib import contextmanager
from typing import Any, Optional

import torch

PLATFORM_NAME = "cpu"


def _cpu_device_module() -> types.ModuleType:
    """A stand-in for ``torch.cuda``: ``torch.cpu``'s functions, plus no-op memory and seed helpers.

    verl calls ``get_torch_device().<fn>()`` for memory statistics, cache flushes, RNG state and the device
    name (the FLOPs table); on a CPU each of these is either a no-op, zero, or the CPU RNG.
    """
    mod = types.ModuleType("verl_dgpo_cpu_device")
    for name in dir(torch.cpu):
        if not name.startswith("_"):
            setattr(mod, name, getattr(torch.cpu, name))

    def _zero(*args, **kwargs) -> int:
        return 0

    def _noop(*args, **kwargs) -> None:
        return None

    def mem_get_info(*args, **kwargs) -> tuple[int, int]:
        pages, page_size = _phys_pages()
        return pages * page_size, pages * page_size

    mod.is_available = lambda: True
    mod.device_count = lambda: 1
    mod.current_device = lambda: PLATFORM_NAME
    mod.set_device = _noop
    mod.synchronize = _noop
    mod.empty_cache = _noop
    mod.reset_peak_memory_stats = _noop
    mod.memory_allocated = _zero
    mod.max_memory_allocated = _zero
    mod.memory_reserved = _zero
    mod.max_memory_reserved = _zero
    mod.mem_get_info = mem_get_info
    mod.memory_stats = lambda *a, **k: {}
    mod.get_device_name = lambda *a, **k: "CPU"
    mod.get_device_capability = lambda *a, **k: (None, None)
    mod.manual_seed = torch.manual_seed
    mod.manual_seed_all = torch.manual_seed
    mod.get_rng_state = lambda *a, **k: torch.get_rng_state()
    mod.set_rng_state = lambda state, *a, **k: torch.set_rng_state(state)
    mod.Stream = getattr(torch.cpu, "Stream", object)
    mod.Event = getattr(torch.cpu, "Event", object)
    return mod


def _phys_pages() -> tuple[int, int]:
    import os

    try:
        return os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 0, 1


def make_platform_class():
    """Build :class:`CPUPlatform` (deferred so that importing this module does not import verl)."""
    from verl.plugin.platform.platform_base import PlatformBase

    class CPUPlatform(PlatformBase):
        """verl platform for a CPU-only host: device ``cpu``, backend ``gloo``, Ray resource ``GPU`` (logical)."""

        _device_module = None

        @property
        def device_name(self) -> str:
            return PLATFORM_NAME

        @property
        def vendor_name(self) -> str:
            return PLATFORM_NAME

        @property
        def device_module(self) -> types.ModuleType:
            if CPUPlatform._device_module is None:
                CPUPlatform._device_module = _cpu_device_module()
            return CPUPlatform._device_module

        def is_available(self) -> bool:
            return True

        def is_platform_available(self, use_smi_check: bool = False) -> bool:
            return True

        def current_device(self) -> str:  # verl's signature says int; "cpu" is what `.to()` needs here
            return PLATFORM_NAME

        def device_count(self) -> int:
            return 1

        def set_device(self, device_index: int) -> None:
            return None

        def synchronize(self, device_index: Optional[int] = None) -> None:
            return None

        def manual_seed(self, seed: int) -> None:
            torch.manual_seed(seed)

        def manual_seed_all(self, seed: int) -> None:
            torch.manual_seed(seed)

        def set_allocator_settings(self, settings: str) -> None:
            return None

        def empty_cache(self) -> None:
            return None

        def get_device_capability(self, device_index: int = 0) -> tuple[Optional[int], Optional[int]]:
            return None, None

        def communication_backend_name(self) -> str:
            return "gloo"

        def visible_devices_envvar(self) -> str:
            return "CUDA_VISIBLE_DEVICES"

        @contextmanager
        def nvtx_range(self, msg: str):
            yield

        def profiler_start(self) -> None:
            return None

        def profiler_stop(self) -> None:
            return None

        def ray_resource_name(self) -> str:
            return "GPU"

        def ray_noset_envvars(self) -> list[str]:
            return []

        def is_ipc_supported(self) -> bool:
            return False

        def cudart(self) -> Any:
            return None

    return CPUPlatform


def register_cpu_platform():
    """Register platform ``cpu`` with verl's ``PlatformRegistry`` (idempotent); return its class."""
    from verl.plugin.platform.platform_manager import PlatformRegistry

    existing = PlatformRegistry.get(PLATFORM_NAME)
    if existing is not None and getattr(existing, "__module__", None) == __name__:
        return existing
    return PlatformRegistry.register(platform=PLATFORM_NAME)(make_platform_class())
