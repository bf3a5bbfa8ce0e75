"""Wall time and peak memory of the local CPU preset against its targets (3 min, 6 GiB for all processes).

    python scripts/bench_local_cpu.py [hydra overrides...]

Runs ``python -m verl_dgpo.main --config-name local_cpu`` in a temporary directory, reads the run's own
summary and prints each measurement as a ratio of its target (below 1.0 meets it), and the first step whose
mean reward reaches 0.9.
"""

import re
import subprocess
import sys
import tempfile
import time

TARGET_WALL_S = 180.0
TARGET_MEMORY_GIB = 6.0
#: "Has learnt the task": the step reward (mean over the step's responses) first reaches this.
LEARNT_REWARD = 0.9


def main(overrides: list[str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "verl_dgpo.main", "--config-name", "local_cpu", f"local_cpu.output_dir={tmp}/run"]
        started = time.time()
        proc = subprocess.run(cmd + overrides, cwd=tmp, capture_output=True, text=True)
        outer_wall = time.time() - started
    if proc.returncode != 0:
        print(proc.stdout[-2000:], proc.stderr[-4000:], sep="\n")
        return proc.returncode
    out = proc.stdout
    wall = float(re.search(r"wall time ([\d.]+) s", out).group(1))
    rss, pss = map(float, re.search(r"RSS ([\d.]+) GiB, PSS ([\d.]+) GiB", out).group(1, 2))
    step = float(re.search(r"step time median ([\d.]+) s", out).group(1))
    print(f"wall (run's own clock)  {wall:7.1f} s   / {TARGET_WALL_S:.0f} s  = {wall / TARGET_WALL_S:.2f}")
    print(f"wall (outside clock)    {outer_wall:7.1f} s   / {TARGET_WALL_S:.0f} s  = {outer_wall / TARGET_WALL_S:.2f}")
    print(f"peak RSS, all processes {rss:7.2f} GiB / {TARGET_MEMORY_GIB:.0f} GiB = {rss / TARGET_MEMORY_GIB:.2f}")
    print(f"peak PSS, all processes {pss:7.2f} GiB / {TARGET_MEMORY_GIB:.0f} GiB = {pss / TARGET_MEMORY_GIB:.2f}")
    print(f"median step time        {step:7.2f} s")
    rewards = [float(r) for r in re.search(r"reward per step: ([\d. ]*)", out).group(1).split()]
    learnt = next((i + 1 for i, r in enumerate(rewards) if r >= LEARNT_REWARD), None)
    print(f"first step with reward >= {LEARNT_REWARD} {learnt if learnt is not None else 'none'} (of {len(rewards)})")
    print("reward per step         " + " ".join(f"{r:.2f}" for r in rewards))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
