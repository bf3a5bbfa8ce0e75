"""CPU seconds of every process one command starts, summed by role (Ray actor class, Ray daemon, program).

    python scripts/profile_launch_cpu.py --log run.log -- python -m verl_dgpo.main --config-name local_cpu \
        trainer.total_training_steps=1 local_cpu.output_dir=/tmp/profile-run

The command runs in a session of its own, its output to ``--log``. Every ``--interval`` seconds each process of
that session, or whose parent was seen, is read (psutil: user + system CPU time, the largest value seen);
Ray's workers keep the session of the raylet that the command started. A process that lives shorter than the
interval can be missed, and CPU used after the last read of a process is not counted: the totals are lower
bounds. Prints the wall time, the exit status, the number of processes and one line per role, largest first.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import time

import psutil

DAEMONS = ("gcs_server", "raylet", "log_monitor", "dashboard", "runtime_env", "monitor.py", "client_server")


def role(cmdline: list[str]) -> str:
    """A Ray actor's ``ray::Class`` name (without the method it runs), a Ray daemon's name, else the program's
    file name."""
    if cmdline and cmdline[0].startswith("ray::"):
        return cmdline[0].split()[0].split(".")[0]
    # the program and its script (``python -u .../log_monitor.py``): a driver's arguments may name a daemon too
    program = " ".join(a for a in cmdline[:3] if not a.startswith("-"))
    for daemon in DAEMONS:
        if daemon in program:
            return daemon
    if "-m" in cmdline[:-1]:
        return "python -m " + cmdline[cmdline.index("-m") + 1]
    return os.path.basename(cmdline[0]) if cmdline else "?"


def profile(command: list[str], log_path: str, interval: float) -> tuple[float, int, dict[int, tuple[str, float]]]:
    started = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    session, seen = os.getsid(proc.pid), {}
    while proc.poll() is None:
        for candidate in psutil.process_iter():
            try:
                if candidate.pid in seen or candidate.ppid() in seen or os.getsid(candidate.pid) == session:
                    times = candidate.cpu_times()
                    name = role(candidate.cmdline())
                    old_name, old_cpu = seen.get(candidate.pid, (name, 0.0))
                    seen[candidate.pid] = (old_name if name == "?" else name, max(old_cpu, times.user + times.system))
            except (psutil.Error, ProcessLookupError):
                continue
        time.sleep(interval)
    return time.monotonic() - started, proc.returncode, seen


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log", default="profile_launch.log", help="where the command's output goes")
    parser.add_argument("--interval", type=float, default=0.3, help="seconds between two reads of the processes")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to profile after --")
    wall, status, seen = profile(command, args.log, args.interval)
    by_role = collections.defaultdict(lambda: [0, 0.0])
    for name, cpu in seen.values():
        by_role[name][0] += 1
        by_role[name][1] += cpu
    print(f"wall {wall:.1f} s, exit status {status}, {len(seen)} processes, {sum(c for _, c in seen.values()):.1f} CPU-s")
    for name, (count, cpu) in sorted(by_role.items(), key=lambda item: -item[1][1]):
        print(f"{cpu:8.1f} CPU-s  {count:3d}  {name}")
    return 0 if status == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
