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
from comparison_study.runs import (METHODS, RunSpec, StudyError, finished_record, metrics_jsonl,  # noqa: E402
                                   rows_from_jsonl, run_dir, run_one)
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
    p.add_argument("--max-runs", type=int, default=None,
                   help="the held-out study: train at most this many runs in this invocation (evaluations of "
                        "trained runs are always made); exit status 3 once every run is trained and evaluated")
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


#: how the held-out study's runs are launched (not what they train): at nice 19 on a machine shared with test
#: runs a run can wait minutes for CPU, longer than the preset's 120 s Ray start-up limit or Ray's 60 s for a
#: worker to reach its GCS (both ended runs on 2026-12-07); these give it 15 minutes for each, and the progress
#: watchdog (verl_dgpo/startup/watchdog.py; the preset's 60 s per stage, 600 s start-up) 30 and 60 minutes.
HELDOUT_LAUNCH_OVERRIDES = ("local_cpu.ray_start_timeout_s=900", "watchdog.timeout_s=1800",
                            "watchdog.startup_timeout_s=3600")
HELDOUT_LAUNCH_ENV = {"RAY_gcs_rpc_server_reconnect_timeout_s": "900", "RAY_raylet_start_wait_time_s": "900"}


def steps_logged(directory: str) -> int:
    """Training steps a failed attempt logged (0 where it ended before its first, or left no metrics file)."""
    try:
        return len(rows_from_jsonl(metrics_jsonl(directory)))
    except (StudyError, OSError, ValueError, KeyError):
        return 0


def run_heldout(config: StudyConfig, out: str, warm: dict, args, log, started: float) -> int:
    """The held-out study: train each run of the matrix in order (at most ``--max-runs`` in this invocation),
    evaluate every saved checkpoint of every trained run, and write the report once all are evaluated.
    Exit status 0: work remains; 3: the study is complete (report written); 1: a run or evaluation failed."""
    from comparison_study import heldout as H

    plan = config.heldout
    data = os.path.join(out, plan["heldout"]["file"])
    if not os.path.exists(data):
        fail(f"{data} is missing (the study's committed held-out prompts)")
    import pandas as pd

    expected = H.heldout_strings(config.settings.digits, config.warm_start.seed, config.seeds)
    found = [str(row["ground_truth"]) for row in pd.read_parquet(data)["reward_model"]]
    if found != expected:
        fail(f"{data} does not hold the pre-registered held-out strings ({len(found)} rows, {len(expected)} expected)")
    eval_env = dict(os.environ)
    eval_env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(
        [REPO_ROOT] + [p for p in eval_env.get("PYTHONPATH", "").split(os.pathsep) if p]))
    failures, trained = [], 0
    for method, seed in H.run_matrix(plan):
        directory = run_dir(out, method, seed)
        spec = RunSpec(method, seed, config.settings, os.path.join(out, "warm_start"), warm["weights_sha256"])
        if H.drop_unevaluable(directory, plan):
            log(f"{method} seed {seed}: trained earlier but its checkpoints are gone before every evaluation was "
                "made; it is trained again")
        if finished_record(directory, spec) is None:
            if H.missing(out, method, seed):
                log(f"{method} seed {seed}: failed twice, named as missing (preregistration.md; {H.FAILURES_FILE})")
                continue
            if args.max_runs is not None and trained >= args.max_runs:
                continue
            trained += 1  # an attempt counts, failed or not: the next turn retries this run before any later one
            try:
                run_one(spec, out, keep_verl_output=True, timeout_s=args.run_timeout, log=log,
                        launch_overrides=HELDOUT_LAUNCH_OVERRIDES, launch_env=HELDOUT_LAUNCH_ENV)
            except StudyError as err:
                log(f"FAILED: {err}")
                failures.append(str(err))
                H.record_failure(out, method, seed, str(err), steps_logged(directory))
                continue
        failures += H.evaluate_run(directory, out, plan, eval_env, log=log, timeout_s=args.run_timeout)
    pending = [f"{m} seed {s}" for m, s in H.run_matrix(plan)
               if not H.evaluated(run_dir(out, m, s), plan) and not H.missing(out, m, s)]
    if failures:
        log("failures:\n  " + "\n  ".join(failures))
        return 1
    if pending:
        log(f"{len(pending)} runs still to train or evaluate: {', '.join(pending)}; "
            f"this invocation took {time.time() - started:.0f} s")
        return 0
    heldout_report(config, out, warm, log, started)
    return 3


def heldout_report(config: StudyConfig, out: str, warm: dict, log, started: float) -> int:
    """The held-out study's report; into the study folder only once every run is trained and evaluated (a partial
    report there would be committed by the loop), else a preview in a temporary folder."""
    import tempfile

    from comparison_study import heldout as H
    from comparison_study.heldout_report import write_heldout_report

    complete = all(H.evaluated(run_dir(out, m, s), config.heldout) or H.missing(out, m, s)
                   for m, s in H.run_matrix(config.heldout))
    dest = out if complete else tempfile.mkdtemp(prefix="heldout-preview-")
    if not complete:
        log(f"the study is not complete: a preview of its report goes to {dest}, not into {out}")
    report = write_heldout_report(out, config, warm, dest_dir=dest)
    log(f"report: {report}; this invocation took {time.time() - started:.0f} s")
    return 0


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
        if config.heldout is not None:
            return run_heldout(config, out, warm, args, log, started)
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
    if config.heldout is not None:  # --report-only of the held-out study
        return heldout_report(config, out, warm, log, started)
    report = write_report(out, config.methods, config.seeds, config.report, config.settings.steps,
                          header=header(config, warm, out))
    log(f"report: {report}; this invocation took {time.time() - started:.0f} s")
    if failures:
        log("failed runs:\n  " + "\n  ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
