"""scripts/bench_losses.py --quick runs (as in CI) and prints one ratio line per registered loss."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RATIO_LINE = re.compile(r"^ratio (\S+) (\d+)x(\d+) (fp32|bf16): time=([0-9.]+)x memory=([0-9.]+)x$")


@pytest.fixture(scope="module")
def quick_output():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_losses.py"), "--quick"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_quick_prints_one_ratio_line_per_registered_loss(quick_output):
    import verl  # noqa: F401

    from verl_dgpo.registry import REGISTERED_POLICY_LOSSES

    lines = [RATIO_LINE.match(line) for line in quick_output.splitlines() if line.startswith("ratio ")]
    assert all(lines), quick_output
    names = [m.group(1) for m in lines]
    assert sorted(names) == sorted(["vanilla", "cispo", *REGISTERED_POLICY_LOSSES])
    for m in lines:
        time_ratio, memory_ratio = float(m.group(5)), float(m.group(6))
        assert time_ratio > 0 and memory_ratio > 0
        if m.group(1) == "vanilla":
            assert time_ratio == 1.0 and memory_ratio == 1.0


def test_cpu_peak_memory_method_measures_a_known_allocation(quick_output):
    """The calibration line: a 64 MiB tensor allocated in a forked child must measure about 64 MiB."""
    match = re.search(r"a 64 MiB tensor measures ([0-9.]+) MiB", quick_output)
    assert match, quick_output
    assert 60.0 <= float(match.group(1)) <= 70.0


def test_quick_states_the_target_verdict(quick_output):
    assert re.search(r"target dgpo <= 0.8x vanilla time and <= 1.0x vanilla peak memory: (met|MISSED)", quick_output)
