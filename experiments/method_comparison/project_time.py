#!/usr/bin/env python
"""Project a study's wall time from a measured short run of the same configuration.

    python experiments/method_comparison/project_time.py --measured /tmp/mc-time --config long

For each finished run under ``--measured`` (``run.json`` + ``metrics.csv``): the fixed cost of a launch
(its wall time minus the sum of its steps' times: Ray start-up, worker set-up, shutdown), step 1's time
(it carries the rollout warm-up) and the median time of the later steps. The projection for ``--config``
is methods x seeds x (fixed cost + step 1 + (steps - 1) x median step), with the measured run's values
(the mean over measured runs when there are several). Prints markdown.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys

EXPERIMENT_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, EXPERIMENT_DIR)

from comparison_study.configs import CONFIGS  # noqa: E402
from comparison_study.runs import read_csv  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--measured", required=True, help="a study folder holding one or more finished short runs")
    p.add_argument("--config", choices=sorted(CONFIGS), required=True)
    args = p.parse_args(argv)
    config = CONFIGS[args.config]
    if config is None:
        print(f"error: --config {args.config}: its regime is not chosen yet (run pilot.py first)", file=sys.stderr)
        return 2
    measured = []
    for record_path in sorted(glob.glob(os.path.join(args.measured, "runs", "*", "*", "run.json"))):
        with open(record_path) as f:
            record = json.load(f)
        rows = read_csv(os.path.join(os.path.dirname(record_path), "metrics.csv"))
        times = [r["step_time"] for r in rows]
        measured.append({"run": os.path.relpath(os.path.dirname(record_path), args.measured), "steps": len(rows),
                         "wall": record["wall_s"], "fixed": record["wall_s"] - sum(times), "first": times[0],
                         "step": statistics.median(times[1:])})
    if not measured:
        print(f"error: no finished run under {args.measured}/runs", file=sys.stderr)
        return 2
    fixed = statistics.fmean(m["fixed"] for m in measured)
    first = statistics.fmean(m["first"] for m in measured)
    step = statistics.fmean(m["step"] for m in measured)
    steps = config.settings.steps
    per_run = fixed + first + (steps - 1) * step
    runs = len(config.methods) * len(config.seeds)
    print(f"Measured ({len(measured)} run(s) of the '{config.name}' configuration):\n")
    print("| run | steps | wall s | fixed cost s | step 1 s | median later step s |\n|---|---|---|---|---|---|")
    for m in measured:
        print(f"| {m['run']} | {m['steps']} | {m['wall']:.0f} | {m['fixed']:.0f} | {m['first']:.1f} | {m['step']:.2f} |")
    print(f"\nProjected: {runs} runs ({len(config.methods)} methods x {len(config.seeds)} seeds) x "
          f"({fixed:.0f} s + {first:.1f} s + {steps - 1} x {step:.2f} s) = {runs * per_run:.0f} s "
          f"= {runs * per_run / 3600:.2f} h (the warm start is committed, so none is trained).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
