"""The run matrix of the method comparison: one ``python -m verl_dgpo.main --config-name local_cpu`` per run.

Each run (method x seed) is verl's real PPO trainer on CPU (the ``local_cpu`` preset) with the study's
overrides: the copy-digits task at :attr:`StudySettings.digits` digits, the supervised warm start as the
starting checkpoint (the same for every run), an off-policy update (several mini-batches and PPO epochs
per step), and the method's ``study_*`` loss (:mod:`comparison_study.plugin`, loaded in every process of
the run only) so every method logs the same ratio / region metrics.

A seed sets the task data and the data order (``local_cpu.seed``, which the preset forwards to the
task writer and ``data.seed``) and the rollout sampling (``actor_rollout_ref.rollout.seed``); the model
initialisation is the warm start, common to all runs.

A run writes into ``<out>/runs/<method>/seed<k>/``: verl's own output (``local_cpu.output_dir``), the
console log, ``metrics.csv`` (:data:`CSV_COLUMNS`, one row per training step) and, last, ``run.json``
(identity, command with checkout-relative paths, wall time, exit status). The identity holds the method,
the seed, the shared settings and the sha256 of the warm-start weights — no path — so a finished run is
recognised, and skipped, in any checkout: an interrupted study resumes where it stopped.
"""

from __future__ import annotations

import csv
import glob
import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

from verl_dgpo.verl_glue.external_modules import add_external_module

#: the folder holding ``comparison_study`` (put on the runs' ``PYTHONPATH``) and the repository root.
EXPERIMENT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO_ROOT = os.path.dirname(os.path.dirname(EXPERIMENT_DIR))

#: method label -> overrides selecting it (every label also names the method in the report).
METHODS: dict[str, list[str]] = {
#: ``study_<loss>`` is verl's registered ``<loss>`` plus the comparison's metrics (comparison_study.plugin).
    "grpo": ["algorithm.policy_loss=study_vanilla"],
    "cispo": ["algorithm.policy_loss=study_cispo"],
    "gppo": ["algorithm.policy_loss=study_gppo"],
    "ce_gppo": ["algorithm.policy_loss=study_ce_gppo"],
    "aspo": ["algorithm.policy_loss=study_aspo"],
    "dgpo": ["algorithm.policy_loss=study_dgpo", "algorithm.dgpo.n=1", "algorithm.dgpo.m=2"],
    "dgpo_n2": ["algorithm.policy_loss=study_dgpo", "algorithm.dgpo.n=2", "algorithm.dgpo.m=2"],
    # verl's own SAPO soft gate at verl's defaults (actor.tau_pos=1.0, tau_neg=1.05; verl's loss aggregates it
    # seq-mean-token-mean whatever loss_agg_mode says); a method of the stress study only
    "sapo": ["algorithm.policy_loss=study_sapo"],
    # the held-out study's soft-clip arm: GPPO and CE-GPPO as their authors' training scripts set them where the
    # stress study did not (dual-clip c = 10; GPPO's KlearReasoner scripts: eps_high = 0.28; CE-GPPO: beta1 = 0.75,
    # beta2 = 1, eps 0.2 / 0.2); the scripts' extra 0.1 x NLL on correct responses is not a policy loss, left out
    "gppo_c10": ["algorithm.policy_loss=study_gppo", "actor_rollout_ref.actor.clip_ratio_c=10",
                 "actor_rollout_ref.actor.clip_ratio_high=0.28"],
    "ce_gppo_c10": ["algorithm.policy_loss=study_ce_gppo", "actor_rollout_ref.actor.clip_ratio_c=10",
                    "algorithm.ce_gppo.beta1=0.75", "algorithm.ce_gppo.beta2=1.0"],
}
#: the seven methods of the short and long studies (``sapo`` came with the stress study).
SEVEN_METHODS = ("grpo", "cispo", "gppo", "ce_gppo", "aspo", "dgpo", "dgpo_n2")
#: the reference method of the step-time ratio.
REFERENCE_METHOD = "grpo"

#: per-step CSV column -> verl metric key it is read from (verl prefixes the probe's ``study/*`` keys with ``actor/``).
METRIC_COLUMNS = {
    "reward": "critic/score/mean",
    "entropy": "actor/entropy",
    "ln_frac": "actor/study/ln_frac",
    "hp_frac": "actor/study/hp_frac",
    "lp_frac": "actor/study/lp_frac",
    "hn_frac": "actor/study/hn_frac",
    "out_frac": "actor/study/out_frac",
    "ratio_max": "actor/study/ratio_max",
    "ratio_min": "actor/study/ratio_min",
    "grad_norm": "actor/grad_norm",
    # the weight on ∇π in units of 1/π_old (w/r), each the step's largest over its updates (comparison_study.probe);
    # absent (nan) in the CSVs of runs made before the stress study
    "pi_weight_max": "actor/study/pi_weight_max",
    "pi_weight_p99": "actor/study/pi_weight_p99",
    "pi_weight_low_decile_max": "actor/study/pi_weight_low_decile_max",
    "pi_weight_low_decile_p99": "actor/study/pi_weight_low_decile_p99",
    "pg_loss": "actor/pg_loss",
    "response_length": "response_length/mean",
    "step_time": "timing_s/step",
}
CSV_COLUMNS = ["step"] + list(METRIC_COLUMNS)

PLUGIN_MODULE = "comparison_study.plugin"
RUN_RECORD = "run.json"


class StudyError(RuntimeError):
    """A study run could not be set up or failed; the message names the run and where its log is."""


@dataclass(frozen=True)
class StudySettings:
    """The training settings shared by every run of a study (part of each run's identity)."""

    steps: int = 20
    digits: int = 3
    prompts_per_step: int = 8
    responses_per_prompt: int = 8
    mini_batches: int = 4  # optimizer steps per PPO epoch
    ppo_epochs: int = 2
    lr: float = 3e-4
    max_response_length: int = 4
    # verl's balance_batch reorders a step's samples by length, ties broken by rollout arrival order, so the
    # mini-batches' contents would depend on timing; with one rank it balances nothing. Off for reproducibility.
    balance_batch: bool = False
    extra_overrides: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self):
        if self.steps < 1:
            raise StudyError(f"steps must be >= 1, got {self.steps}")
        if self.prompts_per_step % self.mini_batches:
            raise StudyError(
                f"prompts_per_step={self.prompts_per_step} must be a multiple of mini_batches={self.mini_batches}"
            )

    @property
    def updates_per_step(self) -> int:
        """Policy-loss calls per training step: PPO epochs x mini-batches (one micro-batch per mini-batch)."""
        return self.ppo_epochs * self.mini_batches

    def overrides(self) -> list[str]:
        mini = self.prompts_per_step // self.mini_batches
        micro = mini * self.responses_per_prompt  # one micro-batch per mini-batch
        return [
            f"local_cpu.task.digits={self.digits}",
            "local_cpu.task.alphabet='0123456789'",  # quoted: Hydra would read the digits as an int
            f"data.train_batch_size={self.prompts_per_step}",
            f"data.max_response_length={self.max_response_length}",
            f"actor_rollout_ref.rollout.n={self.responses_per_prompt}",
            f"actor_rollout_ref.actor.ppo_mini_batch_size={mini}",
            f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={micro}",
            f"actor_rollout_ref.actor.ppo_epochs={self.ppo_epochs}",
            f"actor_rollout_ref.actor.optim.lr={self.lr}",
            f"trainer.total_training_steps={self.steps}",
            # no checkpoints unless the study's own overrides ask for them (the held-out study saves some)
            *(() if any(o.startswith("trainer.save_freq=") for o in self.extra_overrides) else ("trainer.save_freq=-1",)),
            f"trainer.balance_batch={self.balance_batch}",
            # seeded per-request sampling of the local hf rollout (verl_dgpo.local.sampling); verl's agent loop
            # names each request after its sample index under full_determinism, and the sampler seeds from it
            "local_cpu.rollout.seeded_sampling=true",
            "actor_rollout_ref.rollout.full_determinism=True",
            "trainer.resume_mode=disable",
            *self.extra_overrides,
        ]


@dataclass(frozen=True)
class RunSpec:
    method: str
    seed: int
    settings: StudySettings
    model_path: str
    warm_start_sha256: Optional[str]

    def overrides(self) -> list[str]:
        if self.method not in METHODS:
            raise StudyError(f"unknown study method {self.method!r}; allowed: {sorted(METHODS)}")
        return [
            *METHODS[self.method],
            *self.settings.overrides(),
            f"actor_rollout_ref.model.path={self.model_path}",
            f"local_cpu.seed={self.seed}",
            f"actor_rollout_ref.rollout.seed={self.seed}",
        ]

    def identity(self) -> dict:
        """JSON-normalised (tuples become lists), so it compares equal to its copy read back from run.json."""
        return json.loads(json.dumps({"method": self.method, "seed": self.seed, "settings": asdict(self.settings),
                                      "warm_start_sha256": self.warm_start_sha256}))


def run_dir(out_dir: str, method: str, seed: int) -> str:
    return os.path.join(out_dir, "runs", method, f"seed{seed}")


def csv_path(out_dir: str, method: str, seed: int) -> str:
    return os.path.join(run_dir(out_dir, method, seed), "metrics.csv")


def command(spec: RunSpec, directory: str) -> list[str]:
    """The trainer command of one run (``python -m verl_dgpo.main --config-name local_cpu ...``)."""
    return [sys.executable, "-m", "verl_dgpo.main", "--config-name", "local_cpu",
            *spec.overrides(), f"local_cpu.output_dir={os.path.join(directory, 'verl')}"]


def run_environment(settings: StudySettings, base: Optional[dict] = None) -> dict:
    """The run's environment: this checkout and the experiment on ``PYTHONPATH``, the plugin in every
    process, and the probe's updates-per-step count."""
    from comparison_study.probe import UPDATES_ENV  # here, so that reading results never imports torch

    env = dict(os.environ if base is None else base)
    paths = [REPO_ROOT, EXPERIMENT_DIR] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    add_external_module(PLUGIN_MODULE, env)
    env[UPDATES_ENV] = str(settings.updates_per_step)
    env.setdefault("HYDRA_FULL_ERROR", "1")
    return env


def portable_command(cmd: list[str]) -> list[str]:
    """``cmd`` as recorded: ``python`` for the interpreter, paths inside the checkout relative to its root."""
    root = REPO_ROOT + os.sep
    return ["python"] + [part.replace(root, "") for part in cmd[1:]]


def finished_record(directory: str, spec: RunSpec) -> Optional[dict]:
    """The run's record if it finished with exactly ``spec``'s settings (then it is not redone)."""
    try:
        with open(os.path.join(directory, RUN_RECORD)) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    if record.get("identity") != spec.identity() or record.get("returncode") != 0:
        return None
    if not os.path.exists(os.path.join(directory, "metrics.csv")):
        return None
    return record


def metrics_jsonl(directory: str) -> str:
    files = sorted(glob.glob(os.path.join(directory, "verl", "logs", "metrics-*.jsonl")), key=os.path.getmtime)
    if not files:
        raise StudyError(f"no verl metrics file under {directory}/verl/logs (see {directory}/train.log)")
    return files[-1]


def rows_from_jsonl(path: str) -> list[dict]:
    """One CSV row per training step of a verl file-logger JSONL; a metric a step lacks is ``nan``."""
    by_step: dict[int, dict] = {}
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            record = json.loads(line)
            data = record.get("data", {})
            if METRIC_COLUMNS["step_time"] not in data:
                continue  # validation-only record
            by_step[int(record["step"])] = data
    rows = []
    for step in sorted(by_step):
        data = by_step[step]
        row = {"step": step}
        for column, key in METRIC_COLUMNS.items():
            value = data.get(key)
            row[column] = float(value) if value is not None else math.nan
        rows.append(row)
    return rows


def write_csv(path: str, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(row)


def read_csv(path: str) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: (int(v) if k == "step" else float(v)) for k, v in row.items()} for row in csv.DictReader(f)]


def run_one(spec: RunSpec, out_dir: str, *, keep_verl_output: bool = False, timeout_s: Optional[float] = None,
            log: Callable[[str], None] = print, launch_overrides: tuple[str, ...] = (),
            launch_env: Optional[dict] = None) -> dict:
    """Run (or skip, if already finished) one method x seed; return its ``run.json`` record.

    ``launch_overrides`` / ``launch_env``: how the run is launched, not what it trains (e.g. a longer Ray
    start-up limit on a crowded machine); they go on the command (recorded in ``run.json``) and in its
    environment, not in the run's identity."""
    directory = run_dir(out_dir, spec.method, spec.seed)
    record = finished_record(directory, spec)
    if record is not None:
        log(f"skip {spec.method} seed {spec.seed}: finished earlier ({record['wall_s']:.0f} s)")
        return record
    if os.path.exists(directory):
        shutil.rmtree(directory)  # an unfinished or different run is redone from scratch
    os.makedirs(directory)
    cmd = command(spec, directory) + list(launch_overrides)
    log(f"run {spec.method} seed {spec.seed}: {' '.join(cmd[1:])}")
    started = time.time()
    with open(os.path.join(directory, "train.log"), "w") as console:
        try:
            proc = subprocess.run(cmd, stdout=console, stderr=subprocess.STDOUT,
                                  env={**run_environment(spec.settings), **(launch_env or {})}, timeout=timeout_s)
            returncode = proc.returncode
        except subprocess.TimeoutExpired:
            returncode = -9
    wall = time.time() - started
    if returncode != 0:
        raise StudyError(
            f"run {spec.method} seed {spec.seed} failed (exit status {returncode}) after {wall:.0f} s; "
            f"log: {directory}/train.log"
        )
    rows = rows_from_jsonl(metrics_jsonl(directory))
    if len(rows) < spec.settings.steps:
        raise StudyError(f"run {spec.method} seed {spec.seed} logged {len(rows)} of {spec.settings.steps} steps; "
                         f"log: {directory}/train.log")
    write_csv(os.path.join(directory, "metrics.csv"), rows)
    if not keep_verl_output:
        for sub in ("assets", "checkpoints"):
            shutil.rmtree(os.path.join(directory, "verl", sub), ignore_errors=True)
    record = {"identity": spec.identity(), "command": portable_command(cmd), "returncode": returncode, "wall_s": wall,
              "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with open(os.path.join(directory, RUN_RECORD), "w") as f:
        json.dump(record, f, indent=1)
    last = rows[-1]
    log(f"done {spec.method} seed {spec.seed}: {wall:.0f} s, final reward {last['reward']:.3f}, "
        f"entropy {last['entropy']:.3f}")
    return record
