#!/usr/bin/env python
"""Run the held-out study one run at a time and commit each run's files as they come.

    setsid nohup nice -n 19 python experiments/method_comparison/heldout_loop.py > /tmp/heldout-loop.log 2>&1 &

Each turn calls ``run.py --out experiments/method_comparison/results/heldout --max-runs 1 --run-timeout T`` (a fresh process, so
code changes in the checkout take effect from the next turn): it evaluates any trained run still lacking an
evaluation, trains the next run of the pre-registered order and evaluates its checkpoints. Then the study
folder's new files are committed (``git add`` respects the study's .gitignore: no checkpoints, no per-sample
lines), with a message naming the run, its wall time and how it ran (``--note``). The loop stops when
``run.py`` says the study is complete (exit status 3), on bad input (2), or after four failed turns in a row
(a failed turn is retried after two minutes: on the shared machine another user's ``ray stop`` kills every
Ray instance, the study's too).

It lowers its own scheduling group's priority (``/proc/self/autogroup``): ``setsid`` starts a new autogroup,
and Linux shares the CPU between autogroups whatever a process's nice value, so without this a niced study
would still take as much CPU as each interactive session beside it.

Pause (e.g. around a rebase): create the pause file (default /tmp/heldout-loop.pause); the loop finishes the turn
in progress, writes ``paused`` to the state file (default /tmp/heldout-loop.state) and waits until the pause
file is removed. Killed (e.g. at the end of a session), the same command resumes: a run without its record is
redone from scratch, finished runs and evaluations are skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

EXPERIMENT_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(EXPERIMENT_DIR))
STUDY = os.path.join("experiments", "method_comparison", "results", "heldout")


def git(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    for attempt in range(10):  # another git command of the checkout may hold index.lock for a moment
        proc = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True)
        if proc.returncode == 0 or "index.lock" not in proc.stderr:
            break
        time.sleep(3 + attempt)
    if check and proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def message(files: list[str], note: str) -> str:
    """A commit message naming each run's new record (with its wall time) and evaluations."""
    runs: dict[str, dict] = {}
    for name in files:
        parts = os.path.relpath(name, STUDY).split(os.sep)
        if len(parts) >= 3 and parts[0] == "runs":
            entry = runs.setdefault(f"{parts[1]} seed {parts[2].removeprefix('seed')}", {"trained": None, "evals": []})
            if parts[-1] == "run.json":
                with open(os.path.join(REPO_ROOT, name)) as f:
                    record = json.load(f)
                entry["trained"] = f"trained {record['identity']['settings']['steps']} steps in {record['wall_s']:.0f} s"
            elif parts[-1] == "summary.json" and len(parts) >= 5:
                entry["evals"].append(parts[4])
    pieces = []
    for run, entry in runs.items():
        what = [entry["trained"]] if entry["trained"] else []
        if entry["evals"]:
            what.append("evaluated " + ", ".join(sorted(entry["evals"])))
        pieces.append(f"{run} {' and '.join(what)}")
    head = "Held-out study: " + ("; ".join(pieces) if pieces else "files of the study")
    return f"{head}\n\nRan {note}; committed by experiments/method_comparison/heldout_loop.py."


def commit(note: str) -> None:
    git("add", "--", STUDY)
    staged = [f for f in git("diff", "--cached", "--name-only", "--", STUDY).stdout.splitlines() if f]
    if staged:
        git("commit", "-q", "-m", message(staged, note), "--", STUDY)
        print(f"[loop] committed {len(staged)} files", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pause-file", default="/tmp/heldout-loop.pause")
    p.add_argument("--state-file", default="/tmp/heldout-loop.state")
    p.add_argument("--autogroup-nice", type=int, default=19, choices=range(-20, 20), metavar="N",
                   help="nice value of the loop's autogroup (default 19, the house's practice for studies; at 19 the "
                        "first run got 7 s of CPU in its first 16 min beside others' test runs, 2026-12-07)")
    p.add_argument("--note", default=None, help="how the runs ran, for the commit messages")
    p.add_argument("--run-timeout", type=float, default=6 * 3600.0,
                   help="seconds before one training run or one evaluation is abandoned (default 6 h: at nice 19 "
                        "beside other work a run gets little CPU; the trainer's own watchdog ends a run that hangs)")
    args = p.parse_args(argv)
    if args.note is None:
        args.note = (f"at nice 19 (process) and autogroup nice {args.autogroup_nice} beside the lead's and other "
                     "helpers' work on the shared 2-core machine")
    try:
        with open("/proc/self/autogroup", "w") as f:
            f.write(str(args.autogroup_nice))
    except OSError as err:
        print(f"[loop] could not set the autogroup's nice value: {err}", flush=True)

    def state(text: str) -> None:
        with open(args.state_file, "w") as f:
            f.write(f"{text} {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} pid {os.getpid()}\n")

    failed = 0
    while True:
        while os.path.exists(args.pause_file):
            state("paused")
            time.sleep(15)
        state("running")
        started = time.time()
        code = subprocess.run([sys.executable, os.path.join(EXPERIMENT_DIR, "run.py"), "--out", STUDY,
                               "--max-runs", "1", "--run-timeout", str(args.run_timeout)], cwd=REPO_ROOT).returncode
        print(f"[loop] run.py exit status {code} after {time.time() - started:.0f} s", flush=True)
        try:
            commit(args.note)
        except RuntimeError as err:
            print(f"[loop] {err}", flush=True)
        if code == 3:
            state("complete")
            return 0
        if code == 2:
            state("stopped: bad input")
            return 2
        failed = failed + 1 if code != 0 else 0
        if failed >= 4:
            state("stopped: four failed turns in a row")
            return 1
        if failed:
            time.sleep(120)


if __name__ == "__main__":
    sys.exit(main())
