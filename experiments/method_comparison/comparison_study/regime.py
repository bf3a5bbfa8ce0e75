"""The stress study's regime, chosen by rules fixed before any of its runs (pre-registered).

The long study updates so close to on-policy (1 PPO epoch x 4 mini-batches per step) that only ~1% of
tokens leave the trust region at update time, and every method differs from GRPO only there. The stress
study keeps everything of the long study (task, warm start, lr, group size, lengths) but its update
schedule, chosen by the **pilot rule**, blind to the methods:

1. Candidates, in this order (PPO epochs x mini-batches per step, increasing optimizer steps per
   rollout): :data:`CANDIDATES` = 1x4 (the long study's), 2x8, 4x8, 8x8.
2. Each is piloted with GRPO alone (:data:`PILOT_METHOD`) on seed :data:`PILOT_SEED`, which is not a study
   seed, for :data:`PILOT_STEPS` steps, everything else as in the study.
3. A pilot's value is the mean over its steps of ``out_frac`` (per step verl's mean over the step's
   updates of the fraction of response tokens with r outside [1-ε_low, 1+ε_high]).
4. The study uses the **smallest** candidate (first in the order) whose value is >= :data:`OUT_FRAC_THRESHOLD`
   (5%). Candidates are piloted in order, so piloting may stop at the first one that reaches it. If none
   does, the rule says so and the study uses the largest candidate, its report marking that the
   threshold was not reached.

The **step rule** then fixes the study's length from the chosen pilot's own timing (its ``run.json`` wall
time and per-step times, measured as ``project_time.py`` measures them): per run
``T(s) = fixed + step_1 + (s - 1) x later_step``; the study has ``len(STUDY_METHODS) x len(STUDY_SEEDS)``
runs; ``steps`` is the largest multiple of :data:`STEP_MULTIPLE` with ``runs x T(steps) x MARGIN <= BUDGET_S``
(3.5 h, with a 10% margin for the other methods' step times and machine load), and at least
:data:`MIN_STEPS` (if the minimum does not fit, the projection says by how much it overruns).

Nothing here reads another method's run. ``pilot.py`` applies both rules to the committed pilot CSVs and
writes the result to ``results/stress/pilot/regime.json``; ``configs.STRESS`` reads it.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from dataclasses import asdict, dataclass
from typing import Mapping, Optional

#: (PPO epochs, mini-batches per step), in the order the rule walks them.
CANDIDATES: tuple[tuple[int, int], ...] = ((1, 4), (2, 8), (4, 8), (8, 8))
PILOT_METHOD = "grpo"
PILOT_SEED = 100
PILOT_STEPS = 20
OUT_FRAC_THRESHOLD = 0.05
STUDY_METHODS = ("grpo", "cispo", "gppo", "ce_gppo", "aspo", "dgpo", "dgpo_n2", "sapo")
STUDY_SEEDS = (0, 1, 2, 3, 4)
BUDGET_S = 3.5 * 3600
MARGIN = 1.1
MIN_STEPS = 60
STEP_MULTIPLE = 10
REGIME_FILE = "regime.json"


def label(schedule: tuple[int, int]) -> str:
    """``"2x8"``: PPO epochs x mini-batches per step."""
    return f"{schedule[0]}x{schedule[1]}"


def parse_label(text: str) -> tuple[int, int]:
    allowed = [label(c) for c in CANDIDATES]
    if text not in allowed:
        raise ValueError(f"unknown schedule {text!r}; allowed: {allowed}")
    return CANDIDATES[allowed.index(text)]


@dataclass(frozen=True)
class Choice:
    """The pilot rule's output: the schedule (None while undetermined), whether it reached the threshold, why."""

    schedule: Optional[tuple[int, int]]
    reached: bool
    determined: bool
    reason: str


def choose_schedule(pilot_values: Mapping[tuple[int, int], float], candidates=CANDIDATES,
                    threshold: float = OUT_FRAC_THRESHOLD) -> Choice:
    """The smallest candidate whose pilot value is >= ``threshold``; candidates without a pilot value are
    "not piloted": the choice is undetermined when one comes before any candidate that reaches it."""
    below = []
    for schedule in candidates:
        if schedule not in pilot_values:
            return Choice(None, False, False,
                          f"undetermined: {label(schedule)} is not piloted yet and no smaller candidate reached "
                          f"{threshold:.0%}" + (f" ({', '.join(below)})" if below else ""))
        value = pilot_values[schedule]
        if value >= threshold:
            return Choice(schedule, True, True,
                          f"{label(schedule)} is the smallest candidate whose pilot mean out-of-trust-region "
                          f"fraction {value:.4f} is >= {threshold:.0%}" + (f" ({', '.join(below)} below)" if below else ""))
        below.append(f"{label(schedule)}: {value:.4f}")
    largest = candidates[-1]
    return Choice(largest, False, True,
                  f"no candidate reached {threshold:.0%} ({', '.join(below)}); the study runs the largest, "
                  f"{label(largest)}, and its report says the threshold was not reached")


@dataclass(frozen=True)
class Timing:
    """One run's cost, as ``project_time.py`` measures it."""

    fixed_s: float  # wall time minus the sum of the steps' times (Ray start, set-up, shutdown)
    first_step_s: float  # step 1 (rollout warm-up)
    later_step_s: float  # median of steps 2..end

    @classmethod
    def of_run(cls, wall_s: float, step_times: list[float]) -> "Timing":
        return cls(wall_s - sum(step_times), step_times[0], statistics.median(step_times[1:]))

    def run_s(self, steps: int) -> float:
        return self.fixed_s + self.first_step_s + (steps - 1) * self.later_step_s


@dataclass(frozen=True)
class StepCount:
    steps: int
    projected_s: float  # runs x T(steps), without the margin
    fits: bool  # runs x T(steps) x margin <= budget
    reason: str


def study_steps(timing: Timing, runs: int, budget_s: float = BUDGET_S, margin: float = MARGIN,
                minimum: int = MIN_STEPS, multiple: int = STEP_MULTIPLE) -> StepCount:
    """The step rule (module docstring)."""
    if timing.later_step_s <= 0:
        raise ValueError(f"later step time must be > 0, got {timing.later_step_s}")
    # runs * margin * (fixed + first + (s - 1) * step) <= budget  <=>  s <= 1 + (budget/(runs*margin) - fixed - first)/step
    most = 1 + (budget_s / (runs * margin) - timing.fixed_s - timing.first_step_s) / timing.later_step_s
    steps = max(minimum, math.floor(most / multiple) * multiple)
    projected = runs * timing.run_s(steps)
    fits = projected * margin <= budget_s + 1e-9
    if fits:
        reason = (f"{steps} steps: the largest multiple of {multiple} with {runs} runs x T(steps) x {margin:g} <= "
                  f"{budget_s / 3600:g} h (T(s) = {timing.fixed_s:.0f} s + {timing.first_step_s:.1f} s + (s-1) x "
                  f"{timing.later_step_s:.2f} s); projected {projected:.0f} s = {projected / 3600:.2f} h")
    else:
        reason = (f"{steps} steps, the minimum: even these overrun {budget_s / 3600:g} h with the {margin:g} margin "
                  f"(T(s) = {timing.fixed_s:.0f} s + {timing.first_step_s:.1f} s + (s-1) x {timing.later_step_s:.2f} s); "
                  f"projected {projected:.0f} s = {projected / 3600:.2f} h")
    return StepCount(steps, projected, fits, reason)


def rules() -> dict:
    """The pre-registered constants, as recorded in ``regime.json``."""
    return {"candidates": [label(c) for c in CANDIDATES], "pilot_method": PILOT_METHOD, "pilot_seed": PILOT_SEED,
            "pilot_steps": PILOT_STEPS, "out_frac_threshold": OUT_FRAC_THRESHOLD, "study_methods": list(STUDY_METHODS),
            "study_seeds": list(STUDY_SEEDS), "budget_s": BUDGET_S, "margin": MARGIN, "min_steps": MIN_STEPS,
            "step_multiple": STEP_MULTIPLE}


def decide(pilots: Mapping[tuple[int, int], dict]) -> dict:
    """Both rules on the pilots' measurements ``{schedule: {"out_frac_mean", "wall_s", "step_times"}}``."""
    choice = choose_schedule({s: p["out_frac_mean"] for s, p in pilots.items()})
    record = {"rules": rules(),
              "pilots": [{"schedule": label(s), "out_frac_mean": pilots[s]["out_frac_mean"], "steps": len(pilots[s]["step_times"]),
                          "wall_s": pilots[s]["wall_s"]} for s in CANDIDATES if s in pilots],
              "choice": {**asdict(choice), "schedule": label(choice.schedule) if choice.schedule else None}}
    if choice.determined:
        pilot = pilots.get(choice.schedule)
        if pilot is None:  # none reached and the largest was piloted: it is in pilots; kept for safety
            raise ValueError(f"no pilot of the chosen schedule {label(choice.schedule)}")
        timing = Timing.of_run(pilot["wall_s"], pilot["step_times"])
        count = study_steps(timing, len(STUDY_METHODS) * len(STUDY_SEEDS))
        record["timing"] = asdict(timing)
        record["study"] = {"ppo_epochs": choice.schedule[0], "mini_batches": choice.schedule[1], **asdict(count)}
    return record


def read_regime(folder: str) -> Optional[dict]:
    path = os.path.join(folder, REGIME_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)
