"""Run identity: a checkpoint folder is continued only by the run that wrote it.

A run is what decides its trajectory: the method and its parameters (loss, advantage estimator, DGPO's n
and m, CE-GPPO's betas, the trust region ε_low/ε_high, the dual-clip c, the KL β), the model, the
training data, the group size and batch size, the seeds, and the verl and verl-dgpo versions. How far it
trains (``trainer.total_training_steps``, epochs, save and test frequencies) is not part of it, so a run
can be continued to more steps.

Before Ray starts, :func:`guard` (called by ``verl_dgpo.main``) looks at ``trainer.default_local_dir``:

- it records the run's identity in ``<dir>/run_identity.json``;
- a resume (``trainer.resume_mode=auto`` or ``resume_path``) is refused, in one line naming each key that
  differs (old → new), when the checkpoint belongs to another run;
- a fresh run (``resume_mode=disable``) into a folder holding another run's checkpoints is refused the
  same way, so that it never overwrites them; restarting the *same* run there is allowed (with a note);
- ``run_identity.allow_mismatch=true`` continues anyway (the old identity is kept in the file's
  ``earlier`` list);
- ``resume_mode=auto`` resumes from the latest *complete* checkpoint (:mod:`verl_dgpo.verl_glue.checkpoints`), not
  from whatever verl's tracker file says: verl is handed that folder as ``resume_mode=resume_path``, and
  the step is printed.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Optional

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from verl_dgpo.verl_glue import checkpoints

IDENTITY_FILE = "run_identity.json"
ALLOW_KEY = "run_identity.allow_mismatch"

#: Config keys that make a run that run (skipped where the config has no such key).
IDENTITY_KEYS = (
    "algorithm.policy_loss",
    "actor_rollout_ref.actor.policy_loss.loss_mode",
    "algorithm.adv_estimator",
    "algorithm.dgpo.n",
    "algorithm.dgpo.m",
    "algorithm.ce_gppo.beta1",
    "algorithm.ce_gppo.beta2",
    "actor_rollout_ref.actor.clip_ratio_low",
    "actor_rollout_ref.actor.clip_ratio_high",
    "actor_rollout_ref.actor.clip_ratio_c",
    "actor_rollout_ref.actor.use_kl_loss",
    "actor_rollout_ref.actor.kl_loss_coef",
    "algorithm.use_kl_in_reward",
    "algorithm.kl_ctrl.kl_coef",
    "actor_rollout_ref.model.path",
    "data.train_files",
    "actor_rollout_ref.rollout.n",
    "data.train_batch_size",
    "data.seed",
    "actor_rollout_ref.rollout.seed",
    "local_cpu.seed",
    "local_cpu.model",
    "local_cpu.task",
)
#: Keys whose values are file-system paths: recorded absolute, so the folder a run is started from does not matter.
PATH_KEYS = ("actor_rollout_ref.model.path", "data.train_files")


class RunIdentityError(ValueError):
    """The checkpoint folder belongs to another run, or the requested checkpoint cannot be resumed from."""


def _plain(value: Any) -> Any:
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _absolute(value: Any) -> Any:
    """An existing local path made absolute; anything else (a Hugging Face hub id, a URL) as typed."""
    if isinstance(value, str) and value:
        expanded = os.path.expanduser(value)
        return os.path.abspath(expanded) if os.path.exists(expanded) else value
    if isinstance(value, list):
        return [_absolute(v) for v in value]
    return value


def _flatten(prefix: str, value: Any, out: dict) -> None:
    if isinstance(value, dict):
        for key in sorted(value):
            _flatten(f"{prefix}.{key}", value[key], out)
    else:
        out[prefix] = value


def identity_of(config: DictConfig) -> dict:
    """The run's identity: ``{key as typed on the command line: value}``, plus both versions."""
    import verl

    from verl_dgpo.version import __version__

    identity: dict = {}
    for key in IDENTITY_KEYS:
        value = OmegaConf.select(config, key, default="__absent__")
        if isinstance(value, str) and value == "__absent__":
            continue
        value = _plain(value)
        if key in PATH_KEYS:
            value = _absolute(value)
        _flatten(key, value, identity)
    identity["version.verl"] = getattr(verl, "__version__", None)
    identity["version.verl_dgpo"] = __version__
    return identity


def differences(old: dict, new: dict) -> list[tuple[str, Any, Any]]:
    """(key, old value, new value) for each key whose value differs (a key only one side has included)."""
    missing = object()
    keys = list(old) + [k for k in new if k not in old]
    diffs = []
    for key in keys:
        a, b = old.get(key, missing), new.get(key, missing)
        if a != b:
            diffs.append((key, None if a is missing else a, None if b is missing else b))
    return diffs


def format_differences(diffs: list[tuple[str, Any, Any]]) -> str:
    return ", ".join(f"{key} {json.dumps(a)} → {json.dumps(b)}" for key, a, b in diffs)


def read_identity(directory: str) -> Optional[dict]:
    try:
        with open(os.path.join(directory, IDENTITY_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_identity(directory: str, identity: dict, earlier: Optional[list] = None) -> str:
    """Write ``run_identity.json`` atomically (a temporary file renamed over the old one)."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, IDENTITY_FILE)
    record = {"identity": identity, "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if earlier:
        record["earlier"] = earlier
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=1, sort_keys=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def _ways_out(config: DictConfig) -> str:
    new_dir = (
        "a new local_cpu.output_dir=<dir>" if OmegaConf.select(config, "local_cpu.enabled", default=False)
        else "a new trainer.default_local_dir=<dir> (or trainer.experiment_name)"
    )
    return f"Use {new_dir}, or pass {ALLOW_KEY}=true to continue anyway."


def guard(config: DictConfig, say=print) -> Optional[int]:
    """Check ``trainer.default_local_dir`` against this run (see the module docstring), record the run's
    identity there, and point verl at the checkpoint to resume from. Returns that checkpoint's step
    (None: training starts at step 1). Raises :class:`RunIdentityError` with a one-line message."""
    trainer = config.trainer
    mode = str(trainer.get("resume_mode", "auto"))
    saves = int(trainer.get("save_freq", -1) or -1) > 0
    if mode == "disable" and not saves:
        return None  # writes no checkpoint, reads none
    target = os.path.abspath(os.path.expanduser(str(trainer.default_local_dir)))
    allow = bool(OmegaConf.select(config, ALLOW_KEY, default=False))
    current = identity_of(config)
    resume: Optional[checkpoints.StepFolder] = None

    if mode == "resume_path":
        path = trainer.get("resume_from_path", None)
        folder = os.path.abspath(os.path.expanduser(str(path))) if path else ""
        step = checkpoints.step_of(folder) if folder else None
        if step is None or not os.path.isdir(folder):
            raise RunIdentityError(
                f"trainer.resume_from_path={path!r} is not a checkpoint folder; allowed: an existing "
                f"<dir>/global_step_<N> folder (or trainer.resume_mode=auto)"
            )
        complete, _ = checkpoints.folder_state(folder)
        if not complete:
            raise RunIdentityError(
                f"trainer.resume_from_path={path!r} is an incomplete checkpoint (interrupted save or deleted "
                f"weights): {checkpoints.describe(os.path.dirname(folder))}"
            )
        resume = checkpoints.StepFolder(step, folder, True, False)
    elif mode == "auto":
        resume = checkpoints.latest_complete(target)
    elif mode != "disable":
        raise RunIdentityError(f"trainer.resume_mode={mode!r} is not valid; allowed: disable, auto, resume_path")

    total = trainer.get("total_training_steps", None)
    if resume is not None and total is not None and resume.step >= int(total):
        raise RunIdentityError(
            f"the checkpoint {resume.path} is at step {resume.step}, which already reaches "
            f"trainer.total_training_steps={total}; pass a larger trainer.total_training_steps to train further"
        )
    earlier: list = (read_identity(target) or {}).get("earlier", [])
    # 1. the run whose checkpoint is resumed must be this run
    if resume is not None:
        source = os.path.dirname(resume.path)
        recorded = read_identity(source)
        if recorded is None:
            if not allow:
                raise RunIdentityError(
                    f"the checkpoint {resume.path} has no {IDENTITY_FILE} (written by another program or an older "
                    f"verl-dgpo), so it is not known to be this run. {_ways_out(config)}"
                )
        else:
            diffs = differences(recorded.get("identity", {}), current)
            if diffs and not allow:
                raise RunIdentityError(
                    f"the checkpoint to resume ({resume.path}, step {resume.step}) is of a different run: "
                    f"{format_differences(diffs)}. {_ways_out(config)}"
                )
            if diffs:
                earlier = recorded.get("earlier", []) + [recorded.get("identity", {})]
    # 2. a run never writes over another run's checkpoints
    if (resume is None or os.path.dirname(resume.path) != target) and saves and checkpoints.holds_checkpoints(target):
        recorded = read_identity(target)
        diffs = differences(recorded.get("identity", {}), current) if recorded else None
        if (recorded is None or diffs) and not allow:
            what = (
                f"of a different run: {format_differences(diffs)}" if recorded
                else f"with no {IDENTITY_FILE}, so they are not known to be this run's"
            )
            raise RunIdentityError(
                f"trainer.default_local_dir={target} holds checkpoints ({checkpoints.describe(target)}) {what}; "
                f"this run would overwrite them. {_ways_out(config)}"
            )
        if recorded and not diffs and resume is None:
            say(
                f"verl-dgpo: note: {target} holds checkpoints of this same run ({checkpoints.describe(target)}); "
                f"this run starts at step 1 (trainer.resume_mode={mode}) and replaces each of them it reaches. "
                "trainer.resume_mode=auto continues from the latest instead."
            )
        if recorded and diffs:
            earlier = recorded.get("earlier", []) + [recorded.get("identity", {})]

    if saves or resume is not None:
        write_identity(target, current, earlier)
    if resume is None:
        if mode == "auto":
            say(f"verl-dgpo: no complete checkpoint in {target}; training from step 1")
        return None
    tracker = checkpoints.tracker_step(os.path.dirname(resume.path))
    note = ""
    if mode == "auto" and tracker != resume.step:
        said = "nothing readable" if tracker is None else f"step {tracker}"
        note = f" (the latest complete one; verl's {checkpoints.TRACKER} says {said})"
    with open_dict(config):
        trainer.resume_mode = "resume_path"
        trainer.resume_from_path = resume.path
    say(f"verl-dgpo: resuming from checkpoint step {resume.step} ({resume.path}){note}; training continues at step {resume.step + 1}")
    return resume.step
