"""``run.py --report-only`` rebuilds every committed study report byte for byte, from committed files only.

The experiment's tracked files (``git ls-files``) are copied into a fresh folder (nothing ignored or
generated comes along: no warm-start retraining, no verl output), the report is rebuilt there, and
``report.md`` and every figure must equal the committed bytes; the rebuild trains nothing and takes < 1 min.
Every study folder with a committed ``report.md`` is checked (the stress study's once its report is
committed; a committed report must be of a complete study, so partial studies commit their runs without one).
"""

import glob
import os
import re
import shutil
import subprocess
import sys
import time

import pytest


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENT = os.path.join("experiments", "method_comparison")
STUDIES = sorted(os.path.relpath(os.path.dirname(p), ROOT)
                 for p in glob.glob(os.path.join(ROOT, EXPERIMENT, "results", "*", "report.md")))


def _tracked_copy(dest: str) -> None:
    if shutil.which("git") is None or not os.path.isdir(os.path.join(ROOT, ".git")) and \
            not os.path.isfile(os.path.join(ROOT, ".git")):
        pytest.skip("needs a git checkout to know the committed files")
    files = subprocess.run(["git", "ls-files", "-z", EXPERIMENT], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        os.makedirs(os.path.join(dest, os.path.dirname(name)), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, name), os.path.join(dest, name))


@pytest.mark.parametrize("study", STUDIES)
def test_report_only_reproduces_committed_report(tmp_path, study):
    _tracked_copy(str(tmp_path))
    copy = tmp_path / study
    committed = {p: open(os.path.join(ROOT, study, p), "rb").read()
                 for p in ["report.md"] + [os.path.relpath(f, os.path.join(ROOT, study))
                                           for f in glob.glob(os.path.join(ROOT, study, "figures", "*.png"))]}
    embedded = set(re.findall(r"!\[[^\]]*\]\((figures/[^)]+\.png)\)", committed["report.md"].decode()))
    assert embedded and set(committed) == {"report.md"} | embedded  # the report and exactly the figures it shows
    assert b"(complete)." in committed["report.md"], "the committed report is of a partial study"
    for name in committed:
        os.remove(copy / name)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    started = time.time()
    proc = subprocess.run([sys.executable, os.path.join(str(tmp_path), EXPERIMENT, "run.py"), "--out", study,
                           "--report-only"], cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.time() - started
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert elapsed < 60, elapsed
    for name, data in committed.items():
        assert (copy / name).read_bytes() == data, name
    assert not glob.glob(str(copy / "runs" / "*" / "*" / "verl"))  # nothing was trained


def test_report_only_refuses_a_folder_without_study_record(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, EXPERIMENT, "run.py"), "--out", str(tmp_path),
                           "--report-only"], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 2 and "study.json" in proc.stderr
    assert "Traceback" not in proc.stderr
