#!/usr/bin/env python
"""Compare DGPO with the baselines through verl's real trainer on CPU, from one supervised warm start.

    python experiments/method_comparison/run.py --config long --out experiments/method_comparison/results/long
    python experiments/method_comparison/run.py --out experiments/method_comparison/results/short --report-only
    python experiments/method_comparison/run.py --config stress --out experiments/method_comparison/results/stress
    python experiments/method_comparison/run.py --config short --out /tmp/mc --methods grpo dgpo --seeds 0 --steps 3

Steps: (1) the study's configuration is recorded in ``<out>/study.json`` (a folder that already holds one
keeps it: the same command resumes it, and options that would change it are refused); (2) the warm start
(``comparison_study.warm_start``), under ``<out>/warm_start``, checked against its recorded sha256;
(3) one ``python -m verl_dgpo.main --config-name local_cpu ...`` per method x seed, one at a time, each
writing ``<out>/runs/<method>/seed<k>/metrics.csv``; finished runs are skipped, so re-running the command
resumes an interrupted study; (4) ``<out>/report.md`` and ``<out>/figures/*.png`` from the CSVs only.
``--report-only`` does step 4 alone, with the settings recorded in ``<out>/study.json``, and reads only
files that are committed with a study's results. Runs that fail are reported and left out; exit status 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

EXPERIMENT_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(EXPERIMENT_DIR))
for path in (EXPERIMENT_DIR, REPO_ROOT):
    if path not in sys.path:
        sys.path.insert(0, path)

from comparison_study.configs import CONFIGS, PILOT_DIR, StudyConfig, read_record, write_record  # noqa: E402
from comparison_study.report import write_report  # noqa: E402
from comparison_study.runs import METHODS, RunSpec, StudyError, run_one  # noqa: E402
from comparison_study.warm_start import SPEC_FILE, WarmStartError, ensure_warm_start, load_record  # noqa: E402


def fail(message: str) -> None:
    """One line on stderr and exit status 2 (bad input), before anything runs."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="the study's folder (created, or resumed when it holds study.json)")
    p.add_argument("--config", choices=sorted(CONFIGS), default=None,
                   help="configuration of a new study (default: the one recorded in --out, else 'short')")
    p.add_argument("--methods", nargs="+", choices=list(METHODS), metavar="METHOD", default=None,
                   help=f"reduced mode: only these methods, from {list(METHODS)}")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="reduced mode: only these seeds")
    p.add_argument("--steps", type=int, default=None, help="reduced mode: fewer steps per run")
    p.add_argument("--run-timeout", type=float, default=3600.0, help="seconds before one run is abandoned")
    p.add_argument("--report-only", action="store_true", help="only rebuild the report from the CSVs in --out")
    return p.parse_args(argv)


def resolve_config(args) -> StudyConfig:
    """The study's configuration: the one recorded in ``--out``, else ``--config`` with the reduced-mode options."""
    recorded = read_record(args.out)
    if recorded is not None:
        if args.config not in (None, recorded.name):
            fail(f"--config {args.config} but {args.out}/study.json records the '{recorded.name}' "
                             "study; use another --out")
        if not args.report_only and any(v is not None for v in (args.methods, args.seeds, args.steps)):
            asked = dataclasses.replace(recorded.settings, steps=args.steps or recorded.settings.steps)
            if asked != recorded.settings or not set(args.methods or ()) <= set(recorded.methods) \
                    or not set(args.seeds or ()) <= set(recorded.seeds):
                fail(f"{args.out}/study.json records another study; use another --out")
        return recorded
    if args.report_only:
        fail(f"--report-only needs {args.out}/study.json (the study's recorded settings)")
    config = CONFIGS[args.config or "short"]
    if config is None:
        fail(f"--config {args.config}: its regime is not chosen yet (no {os.path.relpath(PILOT_DIR, REPO_ROOT)}/regime.json "
             "with a decided schedule); run the pilot first: python experiments/method_comparison/pilot.py")
    if args.steps is not None:
        if args.steps < 1:
            fail(f"--steps must be >= 1, got {args.steps}")
        config = dataclasses.replace(config, settings=dataclasses.replace(config.settings, steps=args.steps))
    return dataclasses.replace(config, methods=tuple(args.methods or config.methods),
                               seeds=tuple(args.seeds if args.seeds is not None else config.seeds),
                               out=os.path.relpath(os.path.abspath(args.out), REPO_ROOT))


def header(config: StudyConfig, warm: dict, out: str) -> str:
    s = config.settings
    command = f"python experiments/method_comparison/run.py --config {config.name} --out {config.out or out}"
    return "\n".join([
        f"# Method comparison on CPU: the '{config.name}' study (verl's real trainer, copy-digits task)",
        "",
        f"Study command: `{command}` (settings: [study.json](study.json)); this report is rebuilt from the committed "
        "CSVs by the same command with `--report-only`.",
        "",
        f"{config.description}",
        "",
        f"Warm start: {warm['steps']} SFT steps on {config.warm_start.digits}-digit copy; held-out sampled accuracy (T=1) "
        f"{warm['heldout_accuracy']:.3f} (re-measured with another sampling seed: {warm['heldout_accuracy_remeasured']:.3f}; "
        f"greedy {warm['heldout_greedy_accuracy']:.3f}); record: [warm_start/{SPEC_FILE}](warm_start/{SPEC_FILE}).",
        f"RL: {s.prompts_per_step} prompts x {s.responses_per_prompt} responses per step, {s.mini_batches} mini-batches x "
        f"{s.ppo_epochs} PPO epochs (= {s.updates_per_step} optimizer steps per step), lr {s.lr:g}, {s.steps} steps, "
        f"responses ≤ {s.max_response_length} tokens, seeds {list(config.seeds)}, methods {list(config.methods)}.",
    ])


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.time()
    out = os.path.abspath(args.out)
    config = resolve_config(args)
    log = lambda message: print(f"[study] {message}", flush=True)  # noqa: E731
    warm_dir = os.path.join(out, "warm_start")
    failures = []
    if args.report_only:
        warm = load_record(warm_dir)
        if warm is None:
            fail(f"--report-only needs {warm_dir}/{SPEC_FILE}")
    else:
        os.makedirs(out, exist_ok=True)
        if read_record(out) is None:
            write_record(out, config)
        try:
            warm = ensure_warm_start(config.warm_start, warm_dir, log=log)
        except WarmStartError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        log(f"warm start: {warm['steps']} SFT steps, held-out sampled accuracy {warm['heldout_accuracy']:.3f}, "
            f"greedy {warm['heldout_greedy_accuracy']:.3f}, sha256 {warm['weights_sha256'][:12]}")
        methods = args.methods or config.methods
        seeds = args.seeds if args.seeds is not None else config.seeds
        settings = dataclasses.replace(config.settings, steps=args.steps or config.settings.steps)
        for seed in seeds:  # seed-major: an interrupted study still covers every method
            for method in methods:
                spec = RunSpec(method, seed, settings, warm_dir, warm["weights_sha256"])
                try:
                    run_one(spec, out, timeout_s=args.run_timeout, log=log)
                except StudyError as err:
                    log(f"FAILED: {err}")
                    failures.append(str(err))
    report = write_report(out, config.methods, config.seeds, config.report, config.settings.steps,
                          header=header(config, warm, out))
    log(f"report: {report}; this invocation took {time.time() - started:.0f} s")
    if failures:
        log("failed runs:\n  " + "\n  ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
