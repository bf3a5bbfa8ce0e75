"""The uninterrupted v0 reference run that tests/test_e2e_local.py and tests/test_e2e_local_resume.py share.

One launch of ``python -m verl_dgpo.main --config-name local_cpu`` (DGPO, seed 0) for STEPS steps with a
checkpoint after every step, the reference model built (KL loss), the HF weights in every checkpoint, the
rollouts dumped by verl (``trainer.rollout_data_dir``) and the rollout engine's weights by the preset
(``VERL_DGPO_ROLLOUT_DUMP_DIR``). The crash test's killed and resumed launches take the same arguments, so
their metrics can be compared with this run's exactly. tests/conftest.py runs it once per session
(``v0_reference``), in the worker that holds every test asking for it.
"""

import glob
import json
import os
import sys
import time

import launches  # tests/launches.py (tests/ is on sys.path under pytest)
import stalled_runs  # tests/stalled_runs.py

STEPS = 4
ARGUMENTS = [
    "local_cpu.task.alphabet='0123456789'",  # 1-digit copy over all ten digits: every row's target shows in
    "local_cpu.task.digits=1",  # the rollout dump, and the random model still scores now and then (non-zero advantages)
    f"trainer.total_training_steps={STEPS}",
    "trainer.save_freq=1",
    "actor_rollout_ref.actor.use_kl_loss=true",  # builds the reference model too (pinned-memory patch)
    "actor_rollout_ref.actor.kl_loss_coef=0.001",
    "actor_rollout_ref.actor.checkpoint.save_contents=[model,optimizer,extra,hf_model]",
]


def start(out, *overrides, stall=None):
    """A launch in ``out`` with the reference's arguments (then ``overrides``), its dumps under ``out``;
    ``stall`` (``<stage>@<step>``, tests/stalled_runs.py) freezes that stage of that step."""
    os.makedirs(out, exist_ok=True)
    cmd = [sys.executable, "-m", "verl_dgpo.main", "--config-name", "local_cpu", f"local_cpu.output_dir={out}",
           *ARGUMENTS, f"trainer.rollout_data_dir={os.path.join(out, 'rollouts')}", *overrides]
    env = launches.user_env(VERL_DGPO_ROLLOUT_DUMP_DIR=os.path.join(out, "rollout_weights"))
    if stall:
        env = stalled_runs.stall_env(env, stall)
    return launches.start(cmd, out, os.path.join(out, f"launch-{time.time_ns()}.log"), env)


def finish(proc) -> str:
    return launches.finish(proc, timeout=400)


def metrics_by_step(out) -> dict:
    """Every training step logged in ``out``, across launches (a later launch's record of a step wins)."""
    steps = {}
    for path in sorted(glob.glob(os.path.join(out, "logs", "metrics-*.jsonl")), key=os.path.getmtime):
        with open(path, "rb") as f:
            for line in f:
                if line.endswith(b"\n"):
                    record = json.loads(line)
                    if "timing_s/step" in record["data"]:
                        steps[record["step"]] = record["data"]
    return steps


def run(out) -> dict:
    """The reference: {"out", "text" (the launch's output), "steps" ({step: metrics})}."""
    text = finish(start(out))
    return {"out": out, "text": text, "steps": metrics_by_step(out)}
