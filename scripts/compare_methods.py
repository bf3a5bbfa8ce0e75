#!/usr/bin/env python
"""Compare DGPO with the baselines through verl's real trainer on CPU, from one supervised warm start.

    PYTHONPATH=. python scripts/compare_methods.py                                  # full study (7 methods x 3 seeds)
    PYTHONPATH=. python scripts/compare_methods.py --methods grpo dgpo --seeds 0 --steps 3   # reduced mode

Steps: (1) the warm start (``verl_dgpo.study.warm_start``: SFT of the tiny Qwen2 on the copy-digits task
until held-out sampled accuracy reaches ``--warm-accuracy``), saved once under ``<out>/warm_start``;
(2) one ``python -m verl_dgpo.main --config-name local_cpu ...`` per method x seed, one at a time, each
writing ``<out>/runs/<method>/seed<k>/metrics.csv`` — finished runs are skipped, so re-running the same
command resumes an interrupted study; (3) ``<out>/report.md`` (table) and ``<out>/curves.png``, computed
from the CSVs only. Runs that fail are reported and left out of the report; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from verl_dgpo.study.report import ReportSettings, write_report  # noqa: E402
from verl_dgpo.study.runs import METHODS, RunSpec, StudyError, StudySettings, run_one  # noqa: E402
from verl_dgpo.study.warm_start import WarmStartSpec, ensure_warm_start  # noqa: E402

DEFAULT_OUT = "results/method_comparison"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS), metavar="METHOD",
                   help=f"methods to run, from {list(METHODS)} (default: all)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=StudySettings.steps)
    p.add_argument("--digits", type=int, default=StudySettings.digits, help="copy-task length")
    p.add_argument("--mini-batches", type=int, default=StudySettings.mini_batches)
    p.add_argument("--ppo-epochs", type=int, default=StudySettings.ppo_epochs)
    p.add_argument("--lr", type=float, default=StudySettings.lr)
    p.add_argument("--warm-accuracy", type=float, default=WarmStartSpec.target_accuracy,
                   help="stop the SFT warm start at this held-out sampled accuracy (default: %(default)s)")
    p.add_argument("--threshold", type=float, default=ReportSettings.threshold, help="reward threshold for 'steps to'")
    p.add_argument("--threshold-window", type=int, default=ReportSettings.threshold_window,
                   help="steps in the trailing mean compared with --threshold")
    p.add_argument("--final-window", type=int, default=ReportSettings.final_window)
    p.add_argument("--run-timeout", type=float, default=1800.0, help="seconds before one run is abandoned")
    p.add_argument("--report-only", action="store_true", help="only rebuild the report from existing CSVs")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="extra Hydra override for every run (repeatable)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.time()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    warm_spec = WarmStartSpec(digits=args.digits, target_accuracy=args.warm_accuracy)
    warm_dir = os.path.join(out, "warm_start")
    warm = ensure_warm_start(warm_spec, warm_dir, log=lambda m: print(f"[study] {m}", flush=True))
    print(f"[study] warm start: {warm['steps']} SFT steps, held-out sampled accuracy {warm['heldout_accuracy']:.3f} "
          f"(re-measured {warm['heldout_accuracy_remeasured']:.3f}), greedy {warm['heldout_greedy_accuracy']:.3f}", flush=True)

    settings = StudySettings(steps=args.steps, digits=args.digits, mini_batches=args.mini_batches,
                             ppo_epochs=args.ppo_epochs, lr=args.lr, extra_overrides=tuple(args.override))
    failures = []
    if not args.report_only:
        for seed in args.seeds:  # seed-major: an interrupted study still covers every method
            for method in args.methods:
                spec = RunSpec(method, seed, settings, warm_dir)
                try:
                    run_one(spec, out, timeout_s=args.run_timeout, log=lambda m: print(f"[study] {m}", flush=True))
                except StudyError as err:
                    print(f"[study] FAILED: {err}", flush=True)
                    failures.append(str(err))
    elapsed = time.time() - started

    report_settings = ReportSettings(threshold=args.threshold, threshold_window=args.threshold_window,
                                     final_window=args.final_window)
    # the command that makes these results (a --report-only rebuild shows the study's own command)
    shown = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--report-only"]
    cmd = ("PYTHONPATH=. python scripts/compare_methods.py " + " ".join(shlex.quote(a) for a in shown)).rstrip()
    header = "\n".join([
        "# Method comparison on CPU (verl's real trainer, copy-digits task, supervised warm start)",
        "",
        f"Command: `{cmd}`",
        "",
        f"Warm start: {warm['steps']} SFT steps on {args.digits}-digit copy; held-out sampled accuracy (T=1) "
        f"{warm['heldout_accuracy']:.3f} (re-measured with another sampling seed: {warm['heldout_accuracy_remeasured']:.3f}; "
        f"greedy {warm['heldout_greedy_accuracy']:.3f}).",
        f"RL: {settings.prompts_per_step} prompts x {settings.responses_per_prompt} responses per step, "
        f"{settings.mini_batches} mini-batches x {settings.ppo_epochs} PPO epochs (= {settings.updates_per_step} "
        f"optimizer steps per step), lr {settings.lr:g}, {settings.steps} steps, seeds {args.seeds}.",
    ])
    md, png, summaries = write_report(out, args.methods, args.seeds, report_settings, header=header)
    print(f"[study] report: {md}\n[study] curves: {png}\n[study] this invocation took {elapsed:.0f} s", flush=True)
    if failures:
        print("[study] failed runs:\n  " + "\n  ".join(failures), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
