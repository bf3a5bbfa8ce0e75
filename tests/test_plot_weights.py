"""scripts/plot_weights.py runs headless and writes a PNG and a CSV whose weights are the table's closed forms."""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from verl_dgpo import reference

ROOT = Path(__file__).resolve().parents[1]
EPS_LOW, EPS_HIGH, C, BETA1, BETA2 = 0.2, 0.28, 3.0, 0.6, 1.1
DGPO_SETTINGS = [(1.0, 2.0), (2.0, 3.0)]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    out = tmp_path_factory.mktemp("figure")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MPLBACKEND")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    args = [sys.executable, str(ROOT / "scripts" / "plot_weights.py"), "--out-dir", str(out), "--points", "57",
            "--eps-low", str(EPS_LOW), "--eps-high", str(EPS_HIGH), "--clip-ratio-c", str(C),
            "--beta1", str(BETA1), "--beta2", str(BETA2), "--r-min", "0.05", "--r-max", "5"]  # fmt: skip
    for n, m in DGPO_SETTINGS:
        args += ["--dgpo", f"{n:g},{m:g}"]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(out / "weights.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return out / "weights.png", rows


def test_png_is_written_headless_and_not_empty(outputs):
    png, _ = outputs
    data = png.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 20_000


def test_csv_has_every_method_both_signs_and_the_whole_grid(outputs):
    _, rows = outputs
    methods = {row["method"] for row in rows}
    assert methods == {"grpo", "cispo", "gppo", "ce_gppo", "aspo", "dgpo_n1_m2", "dgpo_n2_m3"}
    for method in methods:
        for sign in ("1.0", "-1.0"):
            assert sum(row["method"] == method and row["advantage"] == sign for row in rows) == 57


LOSS_MODE = {"grpo": "vanilla", "cispo": "cispo", "gppo": "gppo", "ce_gppo": "ce_gppo", "aspo": "aspo"}


def expected(row) -> float:
    method, r, a = row["method"], float(row["r"]), float(row["advantage"])
    params = dict(eps_low=EPS_LOW, eps_high=EPS_HIGH, clip_ratio_c=C, beta1=BETA1, beta2=BETA2)
    if method.startswith("dgpo_n"):
        n, m = DGPO_SETTINGS[["dgpo_n1_m2", "dgpo_n2_m3"].index(method)]
        return reference.weight("dgpo", r, a, n=n, m=m, **params)
    return reference.weight(LOSS_MODE[method], r, a, **params)


@pytest.mark.parametrize("r_target", [0.1, 0.3, 0.5, 1.0, 1.2, 2.0, 4.0, 4.9])
def test_csv_weights_match_closed_forms_at_chosen_points(outputs, r_target):
    _, rows = outputs
    grid = sorted({float(row["r"]) for row in rows})
    r = min(grid, key=lambda x: abs(x - r_target))  # nearest grid point, away from every region boundary
    assert all(abs(r - edge) > 1e-3 for edge in (1 - EPS_LOW, 1 + EPS_HIGH, C, 1 / C))
    chosen = [row for row in rows if float(row["r"]) == r]
    assert len(chosen) == 14
    for row in chosen:
        w = expected(row)
        assert float(row["weight_log_pi"]) == pytest.approx(w, rel=1e-9, abs=1e-12), row
        assert float(row["weight_pi"]) == pytest.approx(w / r, rel=1e-9, abs=1e-12), row


def test_bad_hyper_parameter_is_a_clear_error_not_a_traceback(tmp_path, capsys, monkeypatch):
    spec = importlib.util.spec_from_file_location("plot_weights", ROOT / "scripts" / "plot_weights.py")
    script = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, script)  # its dataclasses look their module up
    spec.loader.exec_module(script)
    assert script.main(["--out-dir", str(tmp_path), "--beta1", "-1", "--points", "3"]) == 2
    assert "actor_rollout_ref.actor.policy_loss.ce_gppo_beta1=-1" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_rerun_with_readme_arguments_leaves_the_committed_csv_byte_identical(tmp_path):
    """``python scripts/plot_weights.py --out-dir figures`` must not dirty the tracked CSV, and the PNG is
    the same bytes on a rerun (no version or date stamp)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    for out in ("a", "b"):
        done = subprocess.run([sys.executable, str(ROOT / "scripts" / "plot_weights.py"), "--out-dir", str(tmp_path / out)],
                              env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "a" / "weights.csv").read_bytes() == (ROOT / "figures" / "weights.csv").read_bytes()
    assert (tmp_path / "a" / "weights.png").read_bytes() == (tmp_path / "b" / "weights.png").read_bytes()
