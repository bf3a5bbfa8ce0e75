"""Driver side of the local CPU preset: assets, environment, Ray start-up, progress and summary.

:func:`activate` runs in the driver (``verl_dgpo.startup.sequence.start``) before verl's ``run_ppo``. It

1. refuses configurations the CPU path cannot run (another rollout backend, a verl whose patched
   internals moved) with a message naming the key;
2. writes the embedded default — a tiny random Qwen2 model, its tokenizer and the copy-digits task —
   under ``local_cpu.output_dir`` (once; re-used on resume) and fills the config keys left ``null``;
3. exports what every Ray process needs (``VERL_USE_EXTERNAL_MODULES=verl_dgpo.local.boot``,
   ``VERL_PLATFORM=cpu``, the metrics file) and installs the same set-up in the driver;
4. checks free memory first, and starts Ray itself so that a failure or a hang becomes a clear message;
5. prints a progress line per step while verl trains, and a summary (wall time, peak memory) at exit.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Optional

from omegaconf import DictConfig, OmegaConf, open_dict

from verl_dgpo.verl_glue.external_modules import add_external_module

PREFIX = "[dgpo-local] "
BOOT_MODULE = "verl_dgpo.local.boot"


class LocalRunError(RuntimeError):
    """The local CPU run cannot start; the message says why and what to do."""


# --- configuration --------------------------------------------------------------------------------


def v0_trainer_available() -> bool:
    """Whether this verl still ships its deprecated v0 trainer (``verl.trainer.main_ppo_v0``); no ``import verl``."""
    from verl_dgpo.verl_glue.verl_files import has_module

    return has_module("verl.trainer.main_ppo_v0")


def choose_trainer(config: DictConfig, v0_available: Optional[bool] = None) -> str:
    """``"v1"`` or ``"v0"``: the trainer the run uses. Both run on CPU (verl_dgpo/local/README.md says
    what each guarantees). On a verl without the v0 trainer a ``trainer.use_v1=false`` run becomes a v1
    run, and says so in one line. Called before ``verl_dgpo.startup.sequence.check_with_verl``, so that its v1 hand-over of the
    ``dgpo`` estimator (``verl_dgpo.main.use_grpo_session_handling``) sees the trainer that runs."""
    if "use_v1" not in config.trainer:  # verl < 0.9: one trainer (require_cpu_preset refuses it first)
        return "v0"
    if config.trainer.use_v1:
        return "v1"
    if v0_available is None:
        v0_available = v0_trainer_available()
    if v0_available:
        return "v0"
    with open_dict(config):
        config.trainer.use_v1 = True
    print(
        f"{PREFIX}this verl has no v0 trainer (verl.trainer.main_ppo_v0); running verl's v1 trainer "
        "(trainer.use_v1=true) instead of the trainer.use_v1=false asked for",
        flush=True,
    )
    return "v1"


#: The rollout engines the CPU preset runs: our Hugging Face server, and verl's own vLLM rollout on a CPU vLLM.
ROLLOUTS = ("hf", "vllm")
#: CPU vLLM's attention (CPU_ATTN) runs head sizes 32, 64, 80 and up; the preset's default model has 16.
VLLM_MIN_HEAD_DIM = 32


def check_supported(config: DictConfig) -> None:
    """Reject settings the CPU path cannot run, naming the key and the allowed values."""
    name = config.actor_rollout_ref.rollout.name
    if name not in ROLLOUTS:
        raise LocalRunError(
            f"local_cpu.enabled=true needs actor_rollout_ref.rollout.name to be one of {', '.join(ROLLOUTS)}, got {name!r}"
        )
    if name == "vllm":
        check_vllm_supported(config)
    backend = config.actor_rollout_ref.rollout.checkpoint_engine.backend
    if backend != "naive":
        raise LocalRunError(
            f"local_cpu.enabled=true needs actor_rollout_ref.rollout.checkpoint_engine.backend=naive, got {backend!r}"
        )
    from verl_dgpo.local.patches import check_patch_targets

    problems = check_patch_targets()
    if problems:
        raise LocalRunError("the CPU support cannot run on this verl:\n  - " + "\n  - ".join(problems))


def check_vllm_supported(config: DictConfig) -> None:
    """``rollout.name=vllm`` on CPU: a CPU vLLM installed, its patch targets unchanged, a head size it runs."""
    from verl_dgpo.local import vllm_cpu

    if not vllm_cpu.engine_available():
        raise LocalRunError(
            "actor_rollout_ref.rollout.name=vllm on CPU needs a CPU build of vLLM: run `bash scripts/install_vllm_cpu.sh` "
            "(verl-dgpo's checkout), or use actor_rollout_ref.rollout.name=hf"
        )
    problems = vllm_cpu.check_targets()
    if problems:
        raise LocalRunError("the CPU vLLM support cannot run on this vLLM/verl: " + "; ".join(problems))
    head_dim = model_head_dim(config)
    if head_dim is not None and head_dim < VLLM_MIN_HEAD_DIM:
        raise LocalRunError(
            f"actor_rollout_ref.rollout.name=vllm on CPU needs an attention head size of at least {VLLM_MIN_HEAD_DIM} "
            f"(vLLM's CPU attention); the model's is {head_dim}: use actor_rollout_ref.rollout.name=hf"
        )


def model_head_dim(config: DictConfig):
    """The attention head size of ``actor_rollout_ref.model.path`` (its config.json), or None when unknown."""
    path = config.actor_rollout_ref.model.get("path")
    if not path or not os.path.isfile(os.path.join(path, "config.json")):
        return None
    with open(os.path.join(path, "config.json")) as f:
        cfg = json.load(f)
    if cfg.get("head_dim"):
        return int(cfg["head_dim"])
    if cfg.get("hidden_size") and cfg.get("num_attention_heads"):
        return int(cfg["hidden_size"]) // int(cfg["num_attention_heads"])
    return None


def prepare_vllm_rollout(config: DictConfig) -> list[str]:
    """On the vLLM path: what CPU vLLM cannot do turned off, and the generated model given a head size it runs.
    Returns a line per change, to print."""
    said = []
    with open_dict(config):
        rollout = config.actor_rollout_ref.rollout
        # "Sleep mode is not supported on current platform" (vLLM on CPU; verl's default is on)
        if rollout.get("enable_sleep_mode", True):
            rollout.enable_sleep_mode = False
            said.append("actor_rollout_ref.rollout.enable_sleep_mode=false (vLLM has no sleep mode on CPU)")
        # full_determinism turns on vLLM's batch-invariant Triton kernels, which fail on CPU
        if rollout.get("full_determinism", False):
            rollout.full_determinism = False
            said.append("actor_rollout_ref.rollout.full_determinism=false (vLLM's batch-invariant kernels need a GPU; "
                        "same seed, different samples on this path)")
        # vLLM compiles the model (torch.compile) at start-up unless eager; CUDA graphs, the other half of
        # what eager turns off, do not exist on CPU. Eager started the engine in 17 s against 34 s (vllm-cpu-facts).
        if not rollout.get("enforce_eager", False):
            rollout.enforce_eager = True
            said.append("actor_rollout_ref.rollout.enforce_eager=true (no CUDA graphs on CPU; vLLM's start-up compile skipped)")
        # The precision the actor trains in and the HF server generates in: bf16 (verl's default) costs these
        # ~100k-parameter models their answers (TOY=1's warm start scored 0 in bf16), and buys nothing on CPU.
        if rollout.get("dtype", "bfloat16") != "float32":
            said.append(f"actor_rollout_ref.rollout.dtype=float32 (was {rollout.get('dtype', None)}; the actor's "
                        "precision, as the HF server generates)")
            rollout.dtype = "float32"
        model = config.local_cpu.get("model", None)
        if config.actor_rollout_ref.model.path is None and model is not None:
            hidden, heads = int(model.hidden_size), int(model.num_attention_heads)
            if hidden // heads < VLLM_MIN_HEAD_DIM:
                model.num_attention_heads = max(1, hidden // VLLM_MIN_HEAD_DIM)
                model.num_key_value_heads = 1
                said.append(f"local_cpu.model.num_attention_heads={model.num_attention_heads} "
                            f"local_cpu.model.num_key_value_heads=1 (head size {hidden // model.num_attention_heads}; "
                            f"vLLM's CPU attention needs at least {VLLM_MIN_HEAD_DIM})")
    return said


def asset_spec(config: DictConfig) -> dict:
    lc = config.local_cpu
    return {
        "model": OmegaConf.to_container(lc.model, resolve=True),
        "task": OmegaConf.to_container(lc.task, resolve=True),
    }


def write_assets(assets_dir: str, spec: dict) -> dict[str, str]:
    """Create (or re-use, when ``spec`` is unchanged) the tiny model and task files; return their paths."""
    from verl_dgpo.local.assets import make_tiny_model
    from verl_dgpo.local.task import write_task

    paths = {
        "model": os.path.join(assets_dir, "model"),
        "train": os.path.join(assets_dir, "data", "train.parquet"),
        "val": os.path.join(assets_dir, "data", "val.parquet"),
    }
    stamp = os.path.join(assets_dir, "spec.json")
    try:
        with open(stamp) as f:
            if json.load(f) == spec and all(os.path.exists(p) for p in paths.values()):
                return paths
    except (OSError, ValueError):
        pass
    make_tiny_model(paths["model"], **spec["model"])
    write_task(os.path.dirname(paths["train"]), **spec["task"])
    os.makedirs(assets_dir, exist_ok=True)
    with open(stamp, "w") as f:
        json.dump(spec, f, indent=1, sort_keys=True)
    return paths


def fill_paths(config: DictConfig, paths: dict[str, str]) -> None:
    """Point every ``null`` path of the preset at the generated assets; make relative paths absolute."""
    from verl_dgpo.local import task

    with open_dict(config):
        model = config.actor_rollout_ref.model
        if model.path is None:
            model.path = paths["model"]
        if config.data.train_files is None:
            config.data.train_files = paths["train"]
        if config.data.val_files is None:
            config.data.val_files = paths["val"]
        reward_fn = config.reward.custom_reward_function
        if reward_fn.path is None:
            reward_fn.path = os.path.abspath(task.__file__)
            reward_fn.name = "compute_score"
        if not os.path.isabs(config.trainer.default_local_dir):
            config.trainer.default_local_dir = os.path.abspath(config.trainer.default_local_dir)


def apply_rollout_options(config: DictConfig) -> None:
    """Hand ``local_cpu.rollout.*`` to the ``hf`` rollout server (``rollout.engine_kwargs.hf``).

    ``seeded_sampling``: each response is sampled from a generator seeded by the rollout seed, the step,
    the prompt and the sample's index (see :mod:`verl_dgpo.local.hf_rollout`), so a rerun with the same
    seed, and a resumed run, sample the same responses.
    """
    options = config.local_cpu.get("rollout", None) or {}
    seeded = bool(options.get("seeded_sampling", False))
    with open_dict(config):
        rollout = config.actor_rollout_ref.rollout
        if rollout.get("engine_kwargs", None) is None:
            rollout.engine_kwargs = {}
        if rollout.engine_kwargs.get("hf", None) is None:
            rollout.engine_kwargs.hf = {}
        rollout.engine_kwargs.hf.seeded_sampling = seeded
        # Only v0's agent-loop manager numbers every sample (det-<i>); v1 sends det-0 for all of them,
        # and the server then tells a prompt's copies apart by counting them (hf_rollout.py).
        rollout.engine_kwargs.hf.unique_request_ids = bool(
            rollout.get("full_determinism", False) and not config.trainer.get("use_v1", False)
        )


# --- environment ----------------------------------------------------------------------------------


def export_environment(metrics_path: str, threads: int, quiet: bool = True, vllm_record: Optional[str] = None) -> None:
    """Environment variables every Ray process of the run inherits (Ray workers copy the driver's).

    ``vllm_record``: the run's rollout is verl's vLLM one; turns on verl-dgpo's CPU vLLM support in the run's
    processes (:mod:`verl_dgpo.local.vllm_cpu`), which records each vLLM process that loaded it in that file."""
    add_external_module(BOOT_MODULE)
    if vllm_record:
        from verl_dgpo.local import vllm_cpu

        os.environ[vllm_cpu.ENABLE_VARIABLE] = "1"
        os.environ[vllm_cpu.RECORD_VARIABLE] = vllm_record
        os.environ["VLLM_TARGET_DEVICE"] = "cpu"
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache: ample for the tiny models
    if quiet:
        from verl_dgpo.local.quiet import quiet_workers

        quiet_workers()
    os.environ["VERL_PLATFORM"] = "cpu"
    os.environ["VERL_FILE_LOGGER_PATH"] = metrics_path
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        # An empty list makes Ray refuse the logical GPU the preset asks for.
        del os.environ["CUDA_VISIBLE_DEVICES"]
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    # Ray's raylet starts idle Python workers for the first driver, as many as the logical CPUs the preset
    # declares (16), a few at a time; verl's actors start workers of their own, so on 2 cores those are CPU
    # spent for nothing (about 2.6 of a 2-step run's 61 CPU-s: scripts/profile_launch_cpu.py, 2026-12-08).
    os.environ.setdefault("RAY_prestart_worker_first_driver", "0")


def available_memory_gib() -> Optional[float]:
    """Memory available to new processes without swapping (the kernel's MemAvailable), in GiB."""
    import psutil

    try:
        return psutil.virtual_memory().available / 2.0**30
    except (OSError, RuntimeError):
        return None


def check_memory(min_free_gib: float, available: Optional[float] = None) -> None:
    available = available_memory_gib() if available is None else available
    if available is not None and available < min_free_gib:
        raise LocalRunError(
            f"only {available:.1f} GiB of memory is available, and the local CPU run needs about "
            f"{min_free_gib:.1f} GiB (Ray plus six worker processes). Close other programs, or lower the check with "
            f"local_cpu.min_free_memory_gib=<GiB> if you know the run fits."
        )


#: What :func:`export_environment` (and a TOY=1 recipe's logger set-up) gives the run's processes. Workers of
#: a cluster started beforehand (``ray start``) copy their raylet's environment, not the driver's: a run
#: attached to one carries these in its job's ``runtime_env`` instead.
RUN_ENVIRONMENT = ("VERL_USE_EXTERNAL_MODULES", "VERL_PLATFORM", "VERL_FILE_LOGGER_PATH", "TOKENIZERS_PARALLELISM",
                   "OMP_NUM_THREADS", "RAY_DEDUP_LOGS", "PYTHONWARNINGS", "WANDB_MODE", "WANDB_DIR",
                   "TENSORBOARD_DIR", "VERL_DGPO_VLLM_CPU", "VERL_DGPO_VLLM_CPU_RECORD", "VLLM_TARGET_DEVICE",
                   "VLLM_CPU_KVCACHE_SPACE", "VERL_DGPO_VLLM_SYNC_TIMEOUT_S")  # fmt: skip


def ray_init_kwargs(config: DictConfig, env: Optional[dict] = None) -> dict:
    """What verl's ``run_ppo`` would pass to ``ray.init``, plus ``address='local'`` (a new cluster) unless
    ``ray_kwargs.ray_init.address`` names a running one; then the run's environment travels in ``runtime_env``."""
    from verl.trainer.constants_ppo import get_ppo_ray_runtime_env

    env = os.environ if env is None else env
    ray_init = OmegaConf.to_container(config.ray_kwargs.get("ray_init", {}), resolve=True) or {}
    runtime_env = OmegaConf.merge(get_ppo_ray_runtime_env(config), ray_init.pop("runtime_env", None) or {})
    kwargs = {**ray_init, "runtime_env": OmegaConf.to_container(runtime_env, resolve=True)}
    kwargs.setdefault("address", "local")
    if kwargs["address"] != "local":
        carried = {name: env[name] for name in RUN_ENVIRONMENT if name in env}
        kwargs["runtime_env"]["env_vars"] = {**carried, **kwargs["runtime_env"].get("env_vars", {})}
    return kwargs


class _RayStartTimeout(Exception):
    pass


def start_ray(kwargs: dict, timeout_s: float, init=None) -> None:
    """``ray.init(**kwargs)``; a failure, or no answer within ``timeout_s``, is a :class:`LocalRunError`.

    It must run in the main thread: Ray ties its GCS and raylet processes to the life of the thread that
    started them. The time limit is a ``SIGALRM`` (main thread only; elsewhere there is no limit).
    """
    import signal

    import ray

    init = init or ray.init
    hints = (
        "Check that no other program holds Ray's ports (`ray stop` ends a Ray cluster you started; "
        "`ss -ltnp` lists ports in use), that /tmp is writable and has free space, and that memory is free; "
        "Ray's own logs are under /tmp/ray/session_latest/logs."
    )

    def on_alarm(signum, frame):
        raise _RayStartTimeout()

    use_alarm = threading.current_thread() is threading.main_thread() and timeout_s > 0
    previous = signal.signal(signal.SIGALRM, on_alarm) if use_alarm else None
    if use_alarm:
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        init(**kwargs)
    except _RayStartTimeout:
        raise LocalRunError(
            f"Ray did not start within {timeout_s:g} s (local_cpu.ray_start_timeout_s). {hints}"
        ) from None
    except Exception as err:  # noqa: BLE001 - every start-up failure gets the same clear message
        raise LocalRunError(f"Ray could not start: {type(err).__name__}: {err}. {hints}") from err
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


# --- progress and summary -------------------------------------------------------------------------


class _Session:
    """The driver-side watchers of one local run, finished (summary printed) exactly once."""

    def __init__(self, config: DictConfig, metrics_path: str, started: float, vllm_record: Optional[str] = None):
        from verl_dgpo.local.progress import MemorySampler, ProgressPrinter

        self.total = config.trainer.total_training_steps
        self.checkpoint_dir = config.trainer.default_local_dir
        self.metrics_path = metrics_path
        self.vllm_record = vllm_record
        self.started = started
        self.printer = ProgressPrinter(metrics_path, self.total, prefix=PREFIX).start()
        self.memory = MemorySampler(interval=0.5).start()
        self._done = False

    def finish(self) -> None:
        if self._done:
            return
        self._done = True
        from verl_dgpo.local.progress import print_summary, summary_lines

        self.printer.stop()
        try:
            import ray

            if ray.is_initialized():
                ray.shutdown()
        finally:
            self.memory.stop()
        steps = self.printer.steps
        ok = bool(steps) and (self.total is None or max(steps) >= self.total)
        lines = summary_lines(
            steps,
            wall_s=time.time() - self.started,
            memory=self.memory,
            checkpoint_dir=self.checkpoint_dir,
            metrics_path=self.metrics_path,
            ok=ok,
        )
        if self.vllm_record is not None:
            from verl_dgpo.local import vllm_cpu

            lines.append(vllm_cpu.describe_record(self.vllm_record))
        print_summary(lines, prefix=PREFIX)


SESSION: Optional[_Session] = None


def activate(config: DictConfig):
    """Prepare and start a local CPU run (see the module docstring); the entry point then runs its TaskRunner."""
    global SESSION
    from verl_dgpo.local.progress import at_exit, process_start_time

    started = process_start_time()
    lc = config.local_cpu
    check_supported(config)  # (the memory check ran before verl's import: verl_dgpo.local.check_memory)
    output_dir = os.path.abspath(os.path.expanduser(lc.output_dir))
    engine = config.actor_rollout_ref.rollout.name
    for line in prepare_vllm_rollout(config) if engine == "vllm" else []:
        print(f"{PREFIX}vLLM on CPU: {line}", flush=True)
    model, data = config.actor_rollout_ref.model, config.data
    needs_assets = None in (model.path, data.train_files, data.val_files)  # all set (TOY=1 recipes): none written
    paths = write_assets(os.path.join(output_dir, "assets"), asset_spec(config)) if needs_assets else {}
    fill_paths(config, paths)
    apply_rollout_options(config)
    logs = os.path.join(output_dir, "logs")
    os.makedirs(logs, exist_ok=True)
    metrics_path = os.path.join(logs, time.strftime("metrics-%Y%m%d-%H%M%S") + f"-{os.getpid()}.jsonl")
    vllm_record = metrics_path.replace("metrics-", "vllm-engines-") if engine == "vllm" else None
    export_environment(metrics_path, threads=int(lc.threads_per_process), quiet=bool(lc.get("quiet", True)),
                       vllm_record=vllm_record)

    import importlib

    importlib.import_module(BOOT_MODULE)  # the same set-up in the driver as in every worker

    print(f"{PREFIX}assets in {output_dir}/assets; starting Ray (worker logs: /tmp/ray/session_latest/logs)", flush=True)
    start_ray(ray_init_kwargs(config), timeout_s=float(lc.ray_start_timeout_s))
    SESSION = _Session(config, metrics_path, started, vllm_record)
    at_exit(SESSION.finish)
    trainer = "v1" if config.trainer.get("use_v1", False) else "v0"
    print(f"{PREFIX}Ray started in {time.time() - started:.1f} s since launch; training (verl's {trainer} trainer, "
          f"rollout: {describe_rollout(engine)})", flush=True)


def describe_rollout(engine: str) -> str:
    if engine == "vllm":
        from verl_dgpo.local import vllm_cpu

        return f"verl's vLLM rollout on vllm-cpu {vllm_cpu.installed_version()}"
    return "verl-dgpo's Hugging Face generate server"


