"""Checks on the driver before Ray starts: a mistake costs seconds, not a cluster start-up.

:func:`preflight` runs in ``verl_dgpo.startup.sequence.start`` (so for ``python -m verl_dgpo.main`` and every recipe)
after the DGPO keys are validated and before anything starts Ray. In order, it checks

1. batch sizes;
2. resources: the GPUs this machine sees against ``trainer.nnodes × trainer.n_gpus_per_node`` (not for the
   local CPU preset, whose memory check is in :mod:`verl_dgpo.local.launch`);
3. inputs: ``data.train_files`` / ``data.val_files`` exist and are parquet with the columns verl reads
   (only the schema is read), and the model is a local directory or in the local Hugging Face cache;
4. verl's own config relations (verl's ``validate_config``, run here on the driver instead of in the
   first Ray actor);
5. back-ends: the rollout engine's package is installed (found, not imported: importing vLLM takes
   seconds and touches the GPU).

1-3 need no ``import verl`` (:func:`checks_without_verl`), so the entry point runs them before it imports
verl, and a mistake there is refused without the seconds that import takes; 4-5 (:func:`checks_with_verl`) come after.

The first problem raises :class:`PreflightError`: one line naming the key as typed on the command line
and the allowed values; ``main`` prints it and exits with status 2. What is not an error but worth a
line (a model that will be downloaded, a multi-node run whose other nodes cannot be seen) is returned
as notes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import warnings
from collections.abc import Mapping
from numbers import Integral

from omegaconf import DictConfig, ListConfig

#: The package each of verl's server rollouts imports (verl/workers/rollout/base.py ``_ROLLOUT_REGISTRY``).
ROLLOUT_PACKAGES = {"vllm": "vllm", "sglang": "sglang", "trtllm": "tensorrt_llm"}

#: Environment variables that forbid Hugging Face downloads.
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


class PreflightError(ValueError):
    """The run cannot work as configured; the one-line message names the key and the allowed values."""


def preflight(config: DictConfig, *, visible_gpus: int | None = None, environ: Mapping[str, str] | None = None):
    """Run every check on a resolved config; return notes (strings) to print, or raise :class:`PreflightError`.

    ``visible_gpus`` and ``environ`` default to this machine's (tests pass their own). The entry point runs
    the two halves apart, :func:`checks_without_verl` before it imports verl, :func:`checks_with_verl` after.
    """
    notes = checks_without_verl(config, visible_gpus=visible_gpus, environ=environ)
    checks_with_verl(config)
    return notes


def checks_without_verl(config: DictConfig, *, visible_gpus: int | None = None,
                        environ: Mapping[str, str] | None = None) -> list[str]:
    """Batch sizes, GPUs, data files and model: the checks that need no ``import verl``; returns notes."""
    environ = os.environ if environ is None else environ
    notes = []
    check_batch_sizes(config)
    if not is_local_cpu(config):
        notes += check_gpus(config, count_visible_gpus() if visible_gpus is None else visible_gpus, environ)
    check_data_files(config)
    notes += check_model(config, environ)
    return notes


def checks_with_verl(config: DictConfig) -> None:
    """verl's own config relations (``validate_config``) and, off the local preset, the rollout engine."""
    check_verl_config(config)
    if not is_local_cpu(config):
        check_rollout_backend(config)


def is_local_cpu(config: DictConfig) -> bool:
    return bool((config.get("local_cpu") or {}).get("enabled", False))


# --- 1. config -------------------------------------------------------------------------------------


def _positive_int(key: str, value, meaning: str) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise PreflightError(f"{key}={value!r} is not allowed: it must be an integer >= 1 ({meaning}).")
    return int(value)


def check_batch_sizes(config: DictConfig) -> None:
    """The sizes verl divides by, and verl's ``train_batch_size >= ppo_mini_batch_size`` under the key names."""
    actor = config.actor_rollout_ref.actor
    prompts = _positive_int("data.train_batch_size", config.data.train_batch_size, "prompts per training step")
    mini = _positive_int(
        "actor_rollout_ref.actor.ppo_mini_batch_size", actor.ppo_mini_batch_size, "prompts per optimizer step"
    )
    _positive_int("actor_rollout_ref.rollout.n", config.actor_rollout_ref.rollout.n, "responses per prompt")
    _positive_int("trainer.nnodes", config.trainer.nnodes, "machines")
    _positive_int("trainer.n_gpus_per_node", config.trainer.n_gpus_per_node, "GPUs per machine")
    # verl checks this only without dynamic batch sizes (verl/workers/config/actor.py ActorConfig.validate).
    if not actor.get("use_dynamic_bsz", False) and prompts < mini:
        raise PreflightError(
            f"data.train_batch_size={prompts} is not allowed: it must be >= "
            f"actor_rollout_ref.actor.ppo_mini_batch_size ({mini}); raise data.train_batch_size or lower actor_rollout_ref.actor.ppo_mini_batch_size."
        )


def check_verl_config(config: DictConfig) -> None:
    """verl's own driver-side validation (``verl.utils.config.validate_config``), before Ray instead of after."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    printed = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(printed):
            warnings.simplefilter("ignore")  # "Disabled critic ...": verl's worker says it again, where it applies
            validate_config(config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    except (AssertionError, ValueError, TypeError, KeyError) as err:
        if type(err).__module__.startswith("verl_dgpo"):
            raise
        reason = " ".join(str(err).split()) or type(err).__name__
        raise PreflightError(
            f"verl's config check (verl.utils.config.validate_config) refused the config: {reason}"
        ) from err
    finally:  # pass verl's notices on; its "All configuration checks passed" line says nothing on success
        for line in printed.getvalue().splitlines():
            if line.strip() and "All configuration checks passed" not in line:
                print(line)


# --- 2. resources ----------------------------------------------------------------------------------


def count_visible_gpus() -> int:
    """Accelerators this process can use (CUDA_VISIBLE_DEVICES respected); no CUDA context is created."""
    import torch

    count = torch.cuda.device_count()
    npu = getattr(torch, "npu", None)  # Ascend, when torch_npu is installed
    if not count and npu is not None and hasattr(npu, "device_count"):
        count = npu.device_count()
    return int(count)


def ray_cluster_address(config: DictConfig, environ: Mapping[str, str]) -> str | None:
    """The existing Ray cluster verl's ``ray.init`` will join, or None when it starts a new local one."""
    address = (config.get("ray_kwargs") or {}).get("ray_init", {}).get("address") or environ.get("RAY_ADDRESS")
    return None if address in (None, "", "local") else str(address)


def check_gpus(config: DictConfig, visible: int, environ: Mapping[str, str]) -> list[str]:
    """GPUs seen here against what the trainer places; on a cluster only this node's share can be checked."""
    nodes, per_node = int(config.trainer.nnodes), int(config.trainer.n_gpus_per_node)
    if visible >= per_node:
        return []
    cluster = ray_cluster_address(config, environ)
    if nodes > 1 or cluster:
        where = f"the Ray cluster at {cluster}" if cluster else "the Ray cluster"
        return [
            f"this machine sees {visible} GPU(s); trainer.nnodes={nodes} x trainer.n_gpus_per_node={per_node} = "
            f"{nodes * per_node} GPUs must come from {where}, and only this node's share can be checked before "
            f"Ray starts (verl stops if the cluster has fewer)."
        ]
    shown = environ.get("CUDA_VISIBLE_DEVICES")
    seen = f"{visible} GPU(s)" + (f" (CUDA_VISIBLE_DEVICES={shown!r})" if shown is not None else "")
    allowed = f"trainer.n_gpus_per_node <= {visible}" if visible else "a machine with GPUs"
    raise PreflightError(
        f"trainer.n_gpus_per_node={per_node} (x trainer.nnodes={nodes}) needs {per_node} GPUs, but this machine "
        f"has {seen}. Allowed: {allowed}, or `--config-name local_cpu` to train on the CPU."
    )


# --- 3. back-ends ----------------------------------------------------------------------------------


def package_installed(package: str) -> bool:
    """Whether ``import package`` would find it (without importing it)."""
    return importlib.util.find_spec(package) is not None


def check_rollout_backend(config: DictConfig) -> None:
    """``actor_rollout_ref.rollout.name`` is a rollout verl registers, and its engine package is installed."""
    from verl.workers.rollout.base import _ROLLOUT_REGISTRY

    name = config.actor_rollout_ref.rollout.name
    names = sorted({registered for registered, _mode in _ROLLOUT_REGISTRY})
    if name not in names:
        raise PreflightError(
            f"actor_rollout_ref.rollout.name={name!r} is not a rollout verl knows. Allowed: {', '.join(names)} "
            f"(hf only with `--config-name local_cpu`)."
        )
    package = ROLLOUT_PACKAGES.get(name)
    if package and not package_installed(package):
        others = [other for other in names if other != name and package_installed(ROLLOUT_PACKAGES.get(other, other))]
        instead = f", or actor_rollout_ref.rollout.name={others[0]} (installed)" if others else ""
        raise PreflightError(
            f"actor_rollout_ref.rollout.name={name} needs the Python package {package!r}, which is not installed "
            f"here. Allowed: install it (the version verl's docs pair with verl 0.9.1){instead}."
        )


# --- 4. inputs -------------------------------------------------------------------------------------

DATA_KEYS = ("data.train_files", "data.val_files")


def _paths(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple, ListConfig)):
        return [str(item) for item in value]
    return [str(value)]


def required_columns(config: DictConfig) -> dict[str, str]:
    """Column -> why verl needs it, for verl's ``RLHFDataset`` and reward managers."""
    data = config.data
    columns = {
        data.get("prompt_key", "prompt"): "the chat prompt (data.prompt_key)",
        "data_source": "which reward function scores the row",
        "reward_model": "a struct whose ground_truth the reward compares with",
    }
    columns.setdefault(data.get("reward_fn_key", "data_source"), "data.reward_fn_key")
    return columns


def check_data_files(config: DictConfig) -> None:
    """Each train/val file exists and is a parquet whose schema has the columns verl reads."""
    custom_dataset = bool((config.data.get("custom_cls") or {}).get("path"))
    for key in DATA_KEYS:
        value = config.data.get(key.split(".", 1)[1])
        if value is None:
            if is_local_cpu(config):
                continue  # the local preset fills it with the generated task
            raise PreflightError(f"{key} is not set. Allowed: one parquet file or a list of them.")
        for path in _paths(value):
            check_data_file(key, path, config, check_columns=not custom_dataset)


def check_data_file(key: str, path: str, config: DictConfig, *, check_columns: bool = True) -> None:
    if "://" in path:
        return  # hdfs:// and the like: copied by verl's workers, not visible from here
    if not os.path.exists(path):
        tilde = " (verl does not expand '~': write $HOME)" if path.startswith("~") and os.path.exists(
            os.path.expanduser(path)) else ""  # fmt: skip
        raise PreflightError(
            f"{key}: {path!r} does not exist{tilde}. Allowed: existing .parquet files "
            f"(the paper's data: `python scripts/prepare_data.py --out <dir>`)."
        )
    if path.endswith((".json", ".jsonl")):
        return  # verl reads these too; their columns are only known after reading every row
    if not path.endswith(".parquet"):
        raise PreflightError(
            f"{key}: {path!r} is not a .parquet file. Allowed: .parquet (or .json/.jsonl, which verl also reads)."
        )
    if not check_columns:
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same message
        raise PreflightError(f"{key}: {path!r} is not a readable parquet file ({type(err).__name__}: {err}).") from None
    needed = required_columns(config)
    missing = [column for column in needed if column not in schema.names]
    if not missing and "reward_model" in needed:
        reward = schema.field("reward_model").type
        if not (pa.types.is_struct(reward) and reward.get_field_index("ground_truth") >= 0):
            missing = ["reward_model.ground_truth"]
    if missing:
        wanted = "; ".join(f"{column}: {why}" for column, why in needed.items())
        raise PreflightError(
            f"{key}: {path!r} lacks the column(s) {', '.join(missing)} that verl reads. "
            f"Allowed: a parquet with {wanted}."
        )


def _truthy(value: str | None) -> bool:
    return str(value or "").strip().lower() in ("1", "true", "yes", "on")


def check_model(config: DictConfig, environ: Mapping[str, str]) -> list[str]:
    """``actor_rollout_ref.model.path`` is a model directory, or a Hub id in the local cache.

    A Hub id that is not cached is an error only when offline mode forbids the download; otherwise it is
    a note (verl's workers download it, as transformers does).
    """
    key = "actor_rollout_ref.model.path"
    path = config.actor_rollout_ref.model.get("path")
    if path is None:
        if is_local_cpu(config):
            return []  # the local preset fills it with the generated tiny model
        raise PreflightError(f"{key} is not set. Allowed: a model directory or a Hugging Face model id.")
    path = str(path)
    if "://" in path:
        return []
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise PreflightError(f"{key}: {path!r} has no config.json. Allowed: a Hugging Face model directory.")
        return []
    looks_like_a_path = os.path.exists(path) or path.startswith(("/", ".", "~")) or path.count("/") != 1
    if looks_like_a_path:
        raise PreflightError(
            f"{key}: {path!r} is not a model directory. Allowed: a directory holding config.json and weights, "
            f"or a Hugging Face model id such as deepseek-ai/DeepSeek-R1-Distill-Qwen-7B."
        )
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(path, "config.json"), str):
        return []
    offline = [name for name in OFFLINE_VARIABLES if _truthy(environ.get(name))]
    if offline:
        raise PreflightError(
            f"{key}={path} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}), and {offline[0]}=1 "
            f"forbids downloading it. Allowed: a local model directory, a model id already in the cache "
            f"(`hf download {path}` while online), or unset {offline[0]}."
        )
    return [f"{key}={path} is not in the local Hugging Face cache; verl's workers will download it."]
