"""The default local run visibly learns: reward <= 0.3 over its first 3 steps and >= 0.8 over its last 3.

For DGPO and for GRPO's loss (``vanilla``), each with 2 seeds (model init, task data and data order).
Four default-length runs: several minutes on 2 cores, hence ``slow``.
"""

import pytest

try:  # tests/ is on sys.path under pytest's default import mode
    from test_e2e_local import train
except ImportError:  # tests/ imported as a package
    from tests.test_e2e_local import train


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("method", ["dgpo", "vanilla"])
def test_default_run_learns_the_task(tmp_path, method, seed):
    proc, steps, stdout = train(str(tmp_path / "run"), f"algorithm.policy_loss={method}", f"local_cpu.seed={seed}")
    rewards = [steps[s]["critic/score/mean"] for s in sorted(steps)]
    print(f"\n{method} seed {seed} rewards: " + " ".join(f"{r:.3f}" for r in rewards))
    print("\n".join(line for line in stdout.splitlines() if "wall time" in line or "peak memory" in line))
    assert len(rewards) == 30
    first, last = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert first <= 0.3 and last >= 0.8, (first, last, rewards)
