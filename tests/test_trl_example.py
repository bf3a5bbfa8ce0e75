"""The TRL example a user runs first (slow tier: about a minute of training on 2 cores)."""

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "trl" / "train_dgpo_trl_cpu.py"


@pytest.mark.slow
def test_example_reward_rises(tmp_path):
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--output-dir", str(tmp_path)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("mean reward, first 5 steps:"))
    first, last = (float(part.rsplit(" ", 1)[-1].rstrip(";")) for part in line.split(";"))
    assert last > first, line
    assert "dgpo/weight_mean" in done.stdout  # TRL's own logs carry the policy loss's metrics
