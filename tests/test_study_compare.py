"""The comparison in reduced mode through verl's real trainer on CPU: one method x one seed x two steps.

One trainer launch in all (about 1-2 minutes on 2 idle cores), from the long study's committed warm start
(copied, so nothing is retrained). Checks that every CSV column the report reads is present and finite,
that the report is built from them, that the run record holds no checkout path, and that the same command
run again skips the finished run (no second launch). DGPO is the method: its CSV has the columns only DGPO
fills (the LN/HP fractions). The paired differences themselves are built from the committed studies' CSVs
in the default tier (tests/test_study_report_reproducible.py).
"""

import json
import math
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENT = os.path.join(ROOT, "experiments", "method_comparison")
sys.path.insert(0, EXPERIMENT)

from comparison_study import runs  # noqa: E402

METHODS = ["dgpo"]
STEPS = 2

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(sys.platform != "linux", reason="the local CPU trainer runs Ray on Linux")]


def _run(out):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, os.path.join(EXPERIMENT, "run.py"), "--config", "long", "--out", out,
           "--methods", *METHODS, "--seeds", "0", "--steps", str(STEPS)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("study"))
    shutil.copytree(os.path.join(EXPERIMENT, "results", "long", "warm_start"), os.path.join(out, "warm_start"))
    proc = _run(out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout


def test_reduced_study_writes_every_csv_column_the_report_reads(study):
    out, _ = study
    for method in METHODS:
        rows = runs.read_csv(runs.csv_path(out, method, 0))
        assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
        for row in rows:
            assert list(row) == runs.CSV_COLUMNS
            for column, value in row.items():
                assert math.isfinite(value), (method, row["step"], column)
            assert 0.0 <= row["reward"] <= 1.0
            assert row["entropy"] > 0.0 and row["step_time"] > 0.0 and row["grad_norm"] >= 0.0
            assert 0.0 <= row["ln_frac"] + row["hp_frac"] + row["lp_frac"] + row["hn_frac"] <= row["out_frac"] + 1e-9
            assert row["ratio_min"] <= 1.0 <= row["ratio_max"]  # several updates per step: π moves both ways
    text = open(os.path.join(out, "report.md")).read()
    assert all(f"| {m} | 1 |" in text for m in METHODS)
    assert "## Paired differences against grpo" in text and "## The paper's claims" in text
    assert "Runs: 1/1 of the study's 1 methods x 1 seeds (complete)." in text


def test_run_records_hold_no_checkout_path(study):
    out, _ = study
    for method in METHODS:
        text = open(os.path.join(runs.run_dir(out, method, 0), runs.RUN_RECORD)).read()
        assert ROOT not in text
        assert json.loads(text)["identity"]["warm_start_sha256"]


def test_rerun_skips_finished_runs(study):
    out, _ = study
    proc = _run(out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("[study] skip ") == len(METHODS)
    assert "[study] run " not in proc.stdout
