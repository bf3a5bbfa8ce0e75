#!/usr/bin/env python
"""The stress study's pilot: GRPO alone on the pilot seed, one run per candidate update schedule, then the rules.

    python experiments/method_comparison/pilot.py                   # every candidate still missing, in order,
                                                                    # stopping at the first that reaches the threshold
    python experiments/method_comparison/pilot.py --schedule 2x8    # exactly one candidate (one run per lock)
    python experiments/method_comparison/pilot.py --decide-only     # apply the rules to the pilots already made

The rules, the candidates, the seed and the step count are pre-registered in
``comparison_study/regime.py`` (and the experiment README). Each pilot run is one
``python -m verl_dgpo.main`` of the long study's configuration with the candidate's PPO epochs and
mini-batches, under ``results/stress/pilot/<schedule>/runs/grpo/seed<PILOT_SEED>/`` (resumable like a
study run: a finished pilot is skipped). Afterwards ``results/stress/pilot/regime.json`` holds the pilots'
values and the rules' output (the schedule and the study's step count, or "undetermined"), which
``--config stress`` reads. No other method runs here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys

EXPERIMENT_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(EXPERIMENT_DIR))
for path in (EXPERIMENT_DIR, REPO_ROOT):
    if path not in sys.path:
        sys.path.insert(0, path)

from comparison_study import regime  # noqa: E402
from comparison_study.configs import LONG, STRESS_DIR, PILOT_DIR  # noqa: E402
from comparison_study.runs import RUN_RECORD, RunSpec, StudyError, csv_path, read_csv, run_dir, run_one  # noqa: E402


def pilot_settings(schedule):
    """The long study's settings with the candidate's schedule and the pilot's step count."""
    epochs, mini_batches = schedule
    return dataclasses.replace(LONG.settings, steps=regime.PILOT_STEPS, ppo_epochs=epochs, mini_batches=mini_batches)


def pilot_folder(pilot_dir: str, schedule) -> str:
    return os.path.join(pilot_dir, regime.label(schedule))


def measured(pilot_dir: str, schedule):
    """``{"out_frac_mean", "wall_s", "step_times"}`` of a finished pilot run with the pilot's settings, else None."""
    folder = pilot_folder(pilot_dir, schedule)
    record_path = os.path.join(run_dir(folder, regime.PILOT_METHOD, regime.PILOT_SEED), RUN_RECORD)
    if not os.path.exists(record_path):
        return None
    with open(record_path) as f:
        record = json.load(f)
    settings = json.loads(json.dumps(dataclasses.asdict(pilot_settings(schedule))))
    if record.get("returncode") != 0 or record["identity"]["settings"] != settings \
            or record["identity"]["method"] != regime.PILOT_METHOD or record["identity"]["seed"] != regime.PILOT_SEED:
        return None
    rows = read_csv(csv_path(folder, regime.PILOT_METHOD, regime.PILOT_SEED))
    return {"out_frac_mean": statistics.fmean(r["out_frac"] for r in rows), "wall_s": record["wall_s"],
            "step_times": [r["step_time"] for r in rows]}


def all_measured(pilot_dir: str) -> dict:
    return {s: m for s in regime.CANDIDATES if (m := measured(pilot_dir, s)) is not None}


def write_regime(pilot_dir: str) -> dict:
    record = regime.decide(all_measured(pilot_dir))
    with open(os.path.join(pilot_dir, regime.REGIME_FILE), "w") as f:
        json.dump(record, f, indent=1)
        f.write("\n")
    return record


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--schedule", default=None, metavar="ExM",
                   help=f"pilot only this candidate, from {[regime.label(c) for c in regime.CANDIDATES]}")
    p.add_argument("--decide-only", action="store_true", help="run nothing; apply the rules to the finished pilots")
    p.add_argument("--run-timeout", type=float, default=1800.0)
    args = p.parse_args(argv)
    if args.schedule is not None:
        try:
            todo = [regime.parse_label(args.schedule)]
        except ValueError as err:
            print(f"error: --schedule: {err}", file=sys.stderr)
            return 2
    else:
        todo = list(regime.CANDIDATES)
    log = lambda message: print(f"[pilot] {message}", flush=True)  # noqa: E731
    os.makedirs(PILOT_DIR, exist_ok=True)
    if not args.decide_only:
        from comparison_study.warm_start import WarmStartError, ensure_warm_start

        try:
            warm = ensure_warm_start(LONG.warm_start, os.path.join(STRESS_DIR, "warm_start"), log=log)
        except WarmStartError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        for schedule in todo:
            if args.schedule is None:
                choice = regime.choose_schedule({s: m["out_frac_mean"] for s, m in all_measured(PILOT_DIR).items()})
                if choice.determined:
                    log(f"rule decided before piloting {regime.label(schedule)}: {choice.reason}")
                    break
            spec = RunSpec(regime.PILOT_METHOD, regime.PILOT_SEED, pilot_settings(schedule),
                           os.path.join(STRESS_DIR, "warm_start"), warm["weights_sha256"])
            try:
                run_one(spec, pilot_folder(PILOT_DIR, schedule), timeout_s=args.run_timeout, log=log)
            except StudyError as err:
                log(f"FAILED: {err}")
                return 1
            m = measured(PILOT_DIR, schedule)
            log(f"pilot {regime.label(schedule)}: mean out-of-trust-region fraction {m['out_frac_mean']:.4f}")
    record = write_regime(PILOT_DIR)
    log(f"{regime.REGIME_FILE}: {record['choice']['reason']}")
    if "study" in record:
        log(f"study: {record['study']['reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
