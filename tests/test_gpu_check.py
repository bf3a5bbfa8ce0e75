"""scripts/gpu_check.py on the CPU with tiny shapes: its table, its finiteness gate, and its list of losses."""

import importlib.util
import sys
from pathlib import Path

import torch

import warm_python  # tests/warm_python.py


ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_cpu_run_prints_a_row_per_loss_and_passes_without_verl():
    """A fresh process that cannot import verl or Ray (both blocked): the script needs neither."""
    block = "import sys; sys.modules['verl'] = None; sys.modules['ray'] = None; import runpy; "
    code = block + f"sys.argv = ['gpu_check', '--device', 'cpu', '--tiny']; runpy.run_path({str(SCRIPT)!r}, run_name='__main__')"
    proc = warm_python.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    rows = {line.split()[0] for line in lines[2:] if line and not line.startswith(("finite", " "))}
    assert rows == {"ppo_clip", "dgpo", "gppo", "ce_gppo", "aspo"}
    assert "finite at log-ratio ±100 in bfloat16: every loss" in lines
    assert "finite at log-ratio ±100 in float16: every loss" in lines


def test_a_planted_non_finite_loss_fails_the_check(monkeypatch, capsys):
    gpu_check = load_script()

    def naive(log_prob, old_log_prob, advantages, response_mask):  # exp before any clamp: inf at +100
        return -advantages * torch.exp((log_prob - old_log_prob).float() * 10)

    monkeypatch.setitem(gpu_check.LOSSES, "naive", naive)
    assert gpu_check.main(["--device", "cpu", "--tiny"]) == 1
    captured = capsys.readouterr()
    assert "NO: naive" in captured.out and "non-finite naive (bfloat16), naive (float16)" in captured.err


def test_the_script_times_every_loss_verl_dgpo_registers():
    import verl_dgpo.registry

    assert set(load_script().LOSSES) - {"ppo_clip"} == set(verl_dgpo.registry.REGISTERED_POLICY_LOSSES)
