"""The only patches of verl internals in verl-dgpo: three small ones that verl 0.9.x needs to train on a CPU.

They are applied by :func:`apply_patches`, which only the local CPU preset calls (through
:mod:`verl_dgpo.local.boot`, in each of its own Ray processes). Importing this module, the plugin
(:mod:`verl_dgpo.registry`) or :mod:`verl_dgpo.local` changes nothing in verl.

Each patch is guarded by its target, not by a version string: :func:`check_patch_targets` must find
the exact code each patch works around (the function, its signature and the source line) in the
installed verl, whichever release it is. If verl moves, :func:`apply_patches` raises
:class:`VerlInternalsChanged` naming what moved, instead of silently doing something else; the same
function is the ``cpu preset patch targets`` row of ``verl-dgpo-check`` (:mod:`verl_dgpo.check`), and
:func:`require_cpu_preset` turns it into the entry point's one-line refusal.

1. **Process-group backend** (``verl.utils.distributed.initialize_global_process_group_ray``):
   verl builds the backend string ``f"cpu:gloo,{device}:{backend}"``, which on the CPU platform reads
   ``"cpu:gloo,cpu:gloo"`` and torch rejects it ("Duplicate device type cpu in backend string").
   The wrapper passes ``backend="gloo"``. Its caller, ``verl.workers.engine_workers``, imports the name
   at its own import: the wrapper is bound there too when that module is already loaded (otherwise it
   picks the wrapper up when it loads).
2. **Engine lookup** (``verl.workers.engine.base.EngineRegistry.get_engine_cls``): verl's FSDP engines are
   registered for devices ``cuda`` and ``npu`` only ("No engine registered for device='cpu'"). The wrapper
   falls back to the ``cuda`` entry (the same pure-torch FSDP2 engine) when, and only when, the device is ``cpu``.
3. **Pinned memory** (``verl.workers.engine.fsdp.transformer_impl.CPUOffloadPolicy``): the reference model is
   built with ``CPUOffloadPolicy(pin_memory=True)``; pinning needs an accelerator ("Cannot access accelerator
   device when none is available"). The replacement is a subclass that never pins.

Where verl has no torch fallback of its own (0.9.0), one more: **padding helpers**
(``verl.utils.attention_utils._get_attention_functions``) import ``flash_attn.bert_padding`` unconditionally,
and flash-attn has no CPU build ("No module named 'flash_attn'" when the trainer removes padding before
``compute_log_prob``); 0.9.1 catches the ImportError and falls back to torch itself. The replacement
returns pure-torch equivalents, only when flash-attn is not importable and verl's function has no fallback.
"""

from __future__ import annotations

import functools
import inspect
import sys
from dataclasses import dataclass
from typing import Callable

from verl_dgpo.version import CPU_MAIN_JOB_VERL, VERL_VERSION, VerlVersionError

_MARK = "__verl_dgpo_local_patch__"


class VerlInternalsChanged(RuntimeError):
    """verl's code at a patched location is not what the CPU patches were written for."""


@dataclass(frozen=True)
class PatchTarget:
    """Where a patch goes and the verl source line it works around."""

    module: str
    attribute: str  # "name" or "Class.method"
    expected_source: str  # a line of the function (or of its caller) that the patch replaces the effect of
    source_of: str  # the "module:attribute" whose source must contain expected_source


TARGETS: dict[str, PatchTarget] = {
    "process_group_backend": PatchTarget(
        module="verl.utils.distributed",
        attribute="initialize_global_process_group_ray",
        expected_source='backend = backend or f"cpu:gloo,{get_device_name()}:{get_nccl_backend()}"',
        source_of="verl.utils.distributed:initialize_global_process_group_ray",
    ),
    "engine_lookup": PatchTarget(
        module="verl.workers.engine.base",
        attribute="EngineRegistry.get_engine_cls",
        expected_source="if device in registry:",
        source_of="verl.workers.engine.base:EngineRegistry.get_engine_cls",
    ),
    "pinned_memory": PatchTarget(
        module="verl.workers.engine.fsdp.transformer_impl",
        attribute="CPUOffloadPolicy",
        expected_source="offload_policy = CPUOffloadPolicy(pin_memory=True)",
        source_of="verl.workers.engine.fsdp.transformer_impl:FSDPEngine._build_fsdp_module",
    ),
}


#: Modules that copy ``initialize_global_process_group_ray`` into their namespace, and the call they make.
PROCESS_GROUP_CALLERS = {"verl.workers.engine_workers": "initialize_global_process_group_ray(timeout_second=None)"}


def _module_source(module: str) -> str:
    """The source of ``module`` read from its file, without importing it."""
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        raise ImportError(f"no module {module}")
    with open(spec.origin, encoding="utf-8") as f:
        return f.read()


def _resolve(module: str, attribute: str):
    import importlib

    obj = importlib.import_module(module)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    return obj


def check_patch_targets() -> list[str]:
    """Problems found at the patched locations of the installed verl (empty when all is as expected)."""
    problems = []
    for name, target in TARGETS.items():
        try:
            _resolve(target.module, target.attribute)
        except (ImportError, AttributeError) as err:
            problems.append(f"{name}: {target.module}.{target.attribute} is gone ({err})")
            continue
        module, attribute = target.source_of.split(":")
        try:
            source = inspect.getsource(_original(_resolve(module, attribute)))
        except (ImportError, AttributeError, OSError, TypeError) as err:
            problems.append(f"{name}: cannot read the source of {target.source_of} ({err})")
            continue
        if target.expected_source not in source:
            problems.append(f"{name}: {target.source_of} no longer contains {target.expected_source!r}")
    try:
        from verl.utils.distributed import initialize_global_process_group_ray

        params = inspect.signature(_original(initialize_global_process_group_ray)).parameters
        if not {"timeout_second", "backend"} <= set(params):
            problems.append(
                f"process_group_backend: initialize_global_process_group_ray takes {list(params)}, "
                "expected (timeout_second, backend)"
            )
    except (ImportError, AttributeError, TypeError, ValueError):
        pass  # reported above as gone
    for caller, call in PROCESS_GROUP_CALLERS.items():
        try:
            if call not in _module_source(caller):
                problems.append(f"process_group_backend: {caller} no longer calls {call!r}")
        except (ImportError, OSError) as err:
            problems.append(f"process_group_backend: cannot read {caller} ({err})")
    try:
        from verl.workers.engine.base import EngineRegistry

        params = list(inspect.signature(_original(EngineRegistry.get_engine_cls)).parameters)
        if params != ["cls", "model_type", "backend"]:
            problems.append(f"engine_lookup: EngineRegistry.get_engine_cls takes {params}, expected (cls, model_type, backend)")
        fsdp = EngineRegistry._engines.get("language_model", {}).get("fsdp2", {})
        if "cuda" not in fsdp and ("cuda", "nvidia") not in fsdp:
            problems.append("engine_lookup: no FSDP2 language-model engine is registered for device 'cuda'")
    except Exception as err:  # noqa: BLE001 - report any shape change as a problem
        problems.append(f"engine_lookup: cannot inspect EngineRegistry ({err!r})")
    return problems


def require_cpu_preset(version: str) -> None:
    """Raise :class:`VerlVersionError` (one line) unless every patch target is found unchanged in this verl."""
    problems = check_patch_targets()
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise VerlVersionError(
            f"the local_cpu preset cannot run verl's trainer on CPU with verl=={version}: {problems[0]}{more}. "
            f"It runs where its patch targets are unchanged (tested on verl {' and '.join(CPU_MAIN_JOB_VERL)}); "
            f"`pip install 'verl=={VERL_VERSION}'`, or use a GPU config."
        )


def _original(fn):
    """The unpatched function behind one of our wrappers (or ``fn`` itself)."""
    fn = getattr(fn, "__func__", fn)
    return getattr(fn, "__wrapped__", fn) if getattr(fn, _MARK, False) else fn


def _patched_process_group_init(original: Callable) -> Callable:
    @functools.wraps(original)
    def initialize_global_process_group_ray(timeout_second=None, backend=None):
        # verl's default "cpu:gloo,{device}:{backend}" is "cpu:gloo,cpu:gloo" here: torch rejects duplicates.
        return original(timeout_second=timeout_second, backend=backend or "gloo")

    setattr(initialize_global_process_group_ray, _MARK, True)
    return initialize_global_process_group_ray


def _patched_get_engine_cls(original: Callable) -> classmethod:
    @functools.wraps(original)
    def get_engine_cls(cls, model_type: str, backend: str):
        from verl.utils.device import get_device_name

        try:
            return original(cls, model_type, backend)
        except ValueError:
            # FSDP engines are registered for cuda/npu only; on the CPU platform use the cuda entry.
            if get_device_name() != "cpu":
                raise
            registry = cls._engines[model_type][backend]
            for key in (("cuda", "nvidia"), "cuda"):
                if key in registry:
                    return registry[key]
            raise

    setattr(get_engine_cls, _MARK, True)
    return classmethod(get_engine_cls)


def _unpinned_offload_policy(original: type) -> type:
    class UnpinnedCPUOffloadPolicy(original):
        """``CPUOffloadPolicy`` that never pins memory: pinning needs an accelerator."""

        def __init__(self, pin_memory: bool = False):
            super().__init__(pin_memory=False)

    setattr(UnpinnedCPUOffloadPolicy, _MARK, True)
    UnpinnedCPUOffloadPolicy.__wrapped__ = original
    return UnpinnedCPUOffloadPolicy


ATTENTION_IMPORT = "from flash_attn.bert_padding import index_first_axis, pad_input, rearrange, unpad_input"
#: What verl's own torch fallback (0.9.1 on) looks like in ``_get_attention_functions``.
ATTENTION_OWN_FALLBACK = "except ImportError"


def _torch_index_first_axis(tensor, indices):
    """Rows ``indices`` of ``tensor`` along its first axis (flash-attn's ``index_first_axis``)."""
    return tensor[indices]


def _torch_pad_input(hidden_states, indices, batch, seqlen):
    """Scatter the unpadded rows back into a zero ``(batch, seqlen, ...)`` tensor (flash-attn's ``pad_input``)."""
    out = hidden_states.new_zeros((batch * seqlen, *hidden_states.shape[1:]))
    out[indices] = hidden_states
    return out.reshape(batch, seqlen, *hidden_states.shape[1:])


def _torch_unpad_input(hidden_states, attention_mask, unused_mask=None):
    """flash-attn's ``unpad_input``: (kept rows, their flat indices, cu_seqlens, max seqlen, used seqlens)."""
    import torch

    keep = attention_mask if unused_mask is None else attention_mask + unused_mask
    lengths = keep.sum(dim=-1, dtype=torch.int32)
    indices = keep.flatten().nonzero(as_tuple=True)[0]
    cu_seqlens = torch.zeros(lengths.numel() + 1, dtype=torch.int32, device=lengths.device)
    cu_seqlens[1:] = lengths.cumsum(0)
    flat = hidden_states.reshape(-1, *hidden_states.shape[2:])
    return flat[indices], indices, cu_seqlens, int(lengths.max()), attention_mask.sum(dim=-1, dtype=torch.int32)


def _torch_rearrange(*args, **kwargs):
    from einops import rearrange

    return rearrange(*args, **kwargs)


def _torch_attention_functions():
    return _torch_index_first_axis, _torch_pad_input, _torch_rearrange, _torch_unpad_input


setattr(_torch_attention_functions, _MARK, True)


def apply_attention_fallback() -> bool:
    """Without flash-attn, where verl has no torch fallback of its own, use ours; return whether applied."""
    import importlib.util

    if importlib.util.find_spec("flash_attn") is not None:
        return False
    import verl.utils.attention_utils as attention_utils

    current = attention_utils._get_attention_functions
    if getattr(current, _MARK, False):
        return True
    source = inspect.getsource(current)
    if ATTENTION_IMPORT in source and ATTENTION_OWN_FALLBACK in source:
        return False  # verl falls back to torch itself (0.9.1 on)
    if ATTENTION_IMPORT not in source:
        raise VerlInternalsChanged(
            f"verl-dgpo's CPU support: verl.utils.attention_utils._get_attention_functions no longer contains "
            f"{ATTENTION_IMPORT!r}"
        )
    _torch_attention_functions.__wrapped__ = current
    attention_utils._get_attention_functions = _torch_attention_functions
    return True


def applied_patches() -> list[str]:
    """Names of the patches currently in effect in this process."""
    applied = []
    for name, target in TARGETS.items():
        if target.module not in sys.modules:
            continue
        obj = _resolve(target.module, target.attribute)
        if getattr(getattr(obj, "__func__", obj), _MARK, False):
            applied.append(name)
    return applied


def apply_patches() -> list[str]:
    """Apply the three CPU patches (idempotent); return their names. Raises :class:`VerlInternalsChanged`."""
    problems = check_patch_targets()
    if problems:
        raise VerlInternalsChanged(
            "verl-dgpo's CPU support cannot patch this verl safely:\n  - " + "\n  - ".join(problems)
        )
    import verl.utils.distributed as distributed
    import verl.workers.engine.fsdp.transformer_impl as transformer_impl
    from verl.workers.engine.base import EngineRegistry

    done = set(applied_patches())
    if "process_group_backend" not in done:
        original = distributed.initialize_global_process_group_ray
        patched = _patched_process_group_init(original)
        distributed.initialize_global_process_group_ray = patched
        for caller in PROCESS_GROUP_CALLERS:
            loaded = sys.modules.get(caller)
            if loaded is not None and getattr(loaded, "initialize_global_process_group_ray", None) is original:
                loaded.initialize_global_process_group_ray = patched
    if "engine_lookup" not in done:
        EngineRegistry.get_engine_cls = _patched_get_engine_cls(EngineRegistry.__dict__["get_engine_cls"].__func__)
    if "pinned_memory" not in done:
        transformer_impl.CPUOffloadPolicy = _unpinned_offload_policy(transformer_impl.CPUOffloadPolicy)
    apply_attention_fallback()
    return applied_patches()


def remove_patches() -> None:
    """Undo :func:`apply_patches` in this process (used by tests)."""
    import verl.utils.distributed as distributed
    import verl.workers.engine.fsdp.transformer_impl as transformer_impl
    from verl.workers.engine.base import EngineRegistry

    fn = distributed.initialize_global_process_group_ray
    if getattr(fn, _MARK, False):
        distributed.initialize_global_process_group_ray = fn.__wrapped__
        for caller in PROCESS_GROUP_CALLERS:
            loaded = sys.modules.get(caller)
            if loaded is not None and getattr(loaded, "initialize_global_process_group_ray", None) is fn:
                loaded.initialize_global_process_group_ray = fn.__wrapped__
    fn = EngineRegistry.__dict__["get_engine_cls"].__func__
    if getattr(fn, _MARK, False):
        EngineRegistry.get_engine_cls = classmethod(fn.__wrapped__)
    cls = transformer_impl.CPUOffloadPolicy
    if getattr(cls, _MARK, False):
        transformer_impl.CPUOffloadPolicy = cls.__wrapped__
    attention_utils = sys.modules.get("verl.utils.attention_utils")
    if attention_utils is not None and getattr(attention_utils._get_attention_functions, _MARK, False):
        attention_utils._get_attention_functions = attention_utils._get_attention_functions.__wrapped__
