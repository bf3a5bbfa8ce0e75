#!/usr/bin/env python
"""CPU time of a test's fresh-interpreter command, cold (``subprocess.run``) and warm (``tests/warm_python.py``).

The command imports verl's trainer module and the package's entry point, as the default tier's
first-import tests do, and reports the CPU time of those imports; each run's wall time is printed too.
Cold and warm runs alternate (``--rounds`` of each) so that they share any drift of the machine; the
warm server's own start-up (its preloading, paid once per test process) is printed on its own line.

    python scripts/bench_warm_python.py
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
import warm_python  # noqa: E402  (tests/warm_python.py)

COMMAND = [sys.executable, "-c", "import time, resource\n"
           "import verl.trainer.main_ppo, verl_dgpo.main\n"
           "r = resource.getrusage(resource.RUSAGE_SELF)\n"
           "print(r.ru_utime + r.ru_stime)"]  # fmt: skip


def one(runner):
    started = time.monotonic()
    done = runner(COMMAND, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return float(done.stdout.split()[-1]), time.monotonic() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    started = time.monotonic()
    warm_python.run([sys.executable, "-c", "pass"])
    print(f"warm server start-up (once per test process): {time.monotonic() - started:.2f} s wall")
    runs = {"cold": [], "warm": []}
    for _ in range(args.rounds):
        runs["cold"].append(one(subprocess.run))
        runs["warm"].append(one(warm_python.run))
    for name, results in runs.items():
        cpu, wall = (statistics.median(values) for values in zip(*results))
        print(f"{name}: CPU {cpu:.2f} s, wall {wall:.2f} s (median of {args.rounds})")
    cold, warm = (statistics.median(cpu for cpu, _ in runs[name]) for name in ("cold", "warm"))
    print(f"warm / cold CPU: {warm / cold:.2f}")


if __name__ == "__main__":
    main()
