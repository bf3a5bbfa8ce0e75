"""Progress lines, metrics reading, process-tree memory and the final summary of a local run."""

import io
import json
import os
import subprocess
import sys
import time

import pytest

from verl_dgpo.local import progress


def record(step, **data):
    return json.dumps({"step": step, "data": data}) + "\n"


def test_step_line_shows_step_reward_regions_and_time():
    data = {
        progress.REWARD_KEY: 0.125,
        progress.LN_KEY: 0.01,
        progress.HP_KEY: 0.0312,
        progress.LOSS_KEY: -0.0123,
        progress.GRAD_NORM_KEY: 0.5,
        progress.STEP_TIME_KEY: 1.234,
    }
    assert progress.format_step(3, 30, data) == (
        "step 3/30 | reward 0.125 | LN 0.010 HP 0.031 | loss -0.0123 | grad 0.500 | 1.23 s"
    )


def test_missing_region_metrics_print_as_dash():
    line = progress.format_step(1, None, {progress.REWARD_KEY: 0.5, progress.STEP_TIME_KEY: 2.0})
    assert line.startswith("step 1 | reward 0.500 | LN - HP - |")


def test_printer_follows_appended_records_and_skips_validation_only_ones(tmp_path):
    path = tmp_path / "m.jsonl"
    out = io.StringIO()
    printer = progress.ProgressPrinter(str(path), 2, out=out, prefix="")
    printer._poll()  # file absent: nothing
    with open(path, "w") as f:
        f.write(record(0, **{"val-core/x": 1.0}))
        f.write(record(1, **{progress.REWARD_KEY: 0.25, progress.STEP_TIME_KEY: 1.0}))
        f.write('{"step": 2, "da')  # a line still being written
    printer._poll()
    with open(path, "a") as f:
        f.write('ta": {"%s": 1.0, "%s": 0.5}}\n' % (progress.REWARD_KEY, progress.STEP_TIME_KEY))
    printer._poll()
    lines = out.getvalue().splitlines()
    assert [l.split(" |")[0] for l in lines] == ["step 1/2", "step 2/2"]
    assert sorted(printer.steps) == [1, 2]
    assert progress.read_metrics(str(path))[2]["data"][progress.REWARD_KEY] == 1.0


def test_tree_memory_counts_child_processes():
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; x = bytearray(200 * 2**20); time.sleep(30)"]
    )
    try:
        time.sleep(1.5)
        pids = progress.process_tree(os.getpid())
        assert child.pid in pids
        rss, pss, count = progress.tree_memory_kib(os.getpid())
        with open(f"/proc/{os.getpid()}/status") as f:  # the kernel's own figure, read apart from psutil
            own_rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        assert count >= 2 and rss >= own_rss + 200 * 1024 and 0 < pss <= rss
        assert progress.tree_memory_kib(os.getpid(), pss=False)[::2] == (pytest.approx(rss, rel=0.05), count)
    finally:
        child.kill()
        child.wait()


def test_sampler_reads_pss_every_few_samples_and_when_rss_has_grown_by_a_fifth(monkeypatch):
    # RSS totals of successive samples, KiB; PSS reads expected by hand, with pss_every=4 and pss_growth=0.2:
    # 0 (the first: RSS at PSS 100), 1? 115 <= 120 no, 2? 125 > 120 yes (now 125), 3? 140 <= 150 no,
    # 4 (every 4th; now 140), 5? 160 <= 168 no, 6? 170 > 168 yes, 7? 90 no
    trace = iter([100, 115, 125, 140, 140, 160, 170, 90])
    calls = []

    def fake_tree(root, pss=True):
        if pss:
            calls.append(len(calls))
            return last[0], last[0] // 2, 3
        last[0] = next(trace)
        return last[0], 0, 3

    last = [0]
    monkeypatch.setattr(progress, "tree_memory_kib", fake_tree)
    memory = progress.MemorySampler(pss_every=4, pss_growth=0.2)
    read = []
    for _ in range(8):
        before = len(calls)
        memory.sample()
        read.append(len(calls) > before)
    assert read == [True, False, True, False, True, False, True, False]
    # the RSS peak is every sample's (170); the PSS peak only the read samples' (170 // 2)
    assert (memory.peak_rss_kib, memory.peak_pss_kib, memory.peak_processes) == (170, 85, 3)


def test_summary_reports_reward_means_wall_and_peak_memory():
    steps = {i: {progress.REWARD_KEY: r, progress.STEP_TIME_KEY: t} for i, r, t in
             [(1, 0.0, 9.0), (2, 0.1, 1.0), (3, 0.2, 1.2), (4, 0.9, 1.1), (5, 1.0, 1.0), (6, 1.0, 1.3)]}
    memory = progress.MemorySampler()
    memory.peak_rss_kib, memory.peak_pss_kib, memory.peak_processes = 3 * 2**20, 2 * 2**20, 17
    lines = progress.summary_lines(steps, wall_s=95.04, memory=memory, checkpoint_dir="c", metrics_path="m", ok=True)
    text = "\n".join(lines)
    assert lines[0] == "finished: 6 training steps (1..6)"
    assert "first 3 steps 0.100, last 3 steps 0.967" in text
    assert "step time median 1.20 s" in text
    assert "wall time 95.0 s" in text
    assert "all 17 processes together: RSS 3.00 GiB, PSS 2.00 GiB" in text
    assert "checkpoints: c (no complete checkpoint)" in text


def test_process_start_time_is_before_now():
    start = progress.process_start_time()
    assert time.time() - 3600 * 24 < start <= time.time()
