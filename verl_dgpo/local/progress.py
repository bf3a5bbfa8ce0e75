"""What the local run prints: one line per training step and a final summary.

verl's trainer runs in a Ray actor and writes each step's metrics through its ``file`` logger (one JSON
object per line, ``{"step": N, "data": {...}}``). On the driver, :class:`ProgressPrinter` follows that
file and prints a short line per step; :class:`MemorySampler` samples the resident memory of the
driver's whole process tree (Ray's GCS, raylet and every worker are its descendants; read with psutil)
so the summary can report the peak of all processes together.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
from typing import Callable, Optional, TextIO

from verl_dgpo.verl_glue.checkpoints import describe as describe_checkpoints

REWARD_KEY = "critic/score/mean"
STEP_TIME_KEY = "timing_s/step"
LN_KEY = "actor/dgpo_ln_frac"
HP_KEY = "actor/dgpo_hp_frac"
LOSS_KEY = "actor/pg_loss"
GRAD_NORM_KEY = "actor/grad_norm"


def read_metrics(path: str) -> list[dict]:
    """All complete ``{"step", "data"}`` records of a verl file-logger JSONL (missing file: empty list)."""
    records = []
    try:
        with open(path, "rb") as f:
            for line in f:
                if line.endswith(b"\n"):
                    records.append(json.loads(line))
    except FileNotFoundError:
        pass
    return records


def _fmt(value: Optional[float], spec: str = ".3f") -> str:
    if value is None:
        return "-"
    return format(value, spec) if math.isfinite(value) else str(value)


def format_step(step: int, total: Optional[int], data: dict) -> str:
    """``step 3/30 | reward 0.125 | LN 0.010 HP 0.031 | loss -0.012 | grad 0.53 | 1.02 s``."""
    head = f"step {step}/{total}" if total else f"step {step}"
    return " | ".join(
        [
            head,
            f"reward {_fmt(data.get(REWARD_KEY))}",
            f"LN {_fmt(data.get(LN_KEY))} HP {_fmt(data.get(HP_KEY))}",
            f"loss {_fmt(data.get(LOSS_KEY), '.4f')}",
            f"grad {_fmt(data.get(GRAD_NORM_KEY), '.3f')}",
            f"{_fmt(data.get(STEP_TIME_KEY), '.2f')} s",
        ]
    )


class ProgressPrinter:
    """Follows a metrics JSONL in a thread and prints :func:`format_step` for each new training step."""

    def __init__(self, path: str, total_steps: Optional[int], out: TextIO = sys.stdout, prefix: str = "[dgpo-local] "):
        self.path, self.total, self.out, self.prefix = path, total_steps, out, prefix
        self.steps: dict[int, dict] = {}
        self._offset = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dgpo-progress", daemon=True)

    def start(self) -> "ProgressPrinter":
        self._thread.start()
        return self

    def _poll(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return
        lines = chunk.split(b"\n")
        for line in lines[:-1]:  # the last piece is an incomplete line (or empty)
            self._offset += len(line) + 1
            if not line.strip():
                continue
            record = json.loads(line)
            data = record.get("data", {})
            if STEP_TIME_KEY not in data:  # validation-only records
                continue
            step = int(record["step"])
            self.steps[step] = data
            print(self.prefix + format_step(step, self.total, data), file=self.out, flush=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self._poll()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        self._poll()


def process_tree(root: int) -> list[int]:
    """``root`` and all its living descendants."""
    import psutil

    try:
        parent = psutil.Process(root)
        return [root] + [child.pid for child in parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_memory_kib(root: int, pss: bool = True) -> tuple[int, int, int]:
    """(sum of RSS, sum of PSS, process count) over ``root``'s process tree, in KiB (psutil).

    RSS is cheap to read (``/proc/<pid>/statm``); PSS walks every process's memory map (about 0.1 s of
    CPU for a run's 20 processes), so ``pss=False`` skips it and reports 0. A process that exits, or
    whose memory map may not be read, while it is sampled counts zero."""
    import psutil

    rss_kib = pss_kib = count = 0
    for pid in process_tree(root):
        try:
            process = psutil.Process(pid)
            info = process.memory_full_info() if pss else process.memory_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        rss_kib += info.rss // 1024
        pss_kib += getattr(info, "pss", 0) // 1024
        count += 1
    return rss_kib, pss_kib, count


class MemorySampler:
    """Samples :func:`tree_memory_kib` of this process's tree every ``interval`` seconds; keeps the peaks.

    RSS every sample; PSS, which costs a walk of every process's memory map, every ``pss_every``-th sample
    and whenever the RSS total has grown by ``pss_growth`` (a fraction) since PSS was last read, so a rise
    to the peak is read a bounded number of times. Read at every new RSS peak, PSS took half the driver's
    CPU (a fifth of a core) during a one-step run's start-up, when RSS rises at nearly every sample."""

    def __init__(self, interval: float = 0.5, root: Optional[int] = None, pss_every: int = 8,
                 pss_growth: float = 0.2):
        self.interval, self.root, self.pss_every, self.pss_growth = interval, root or os.getpid(), pss_every, pss_growth
        self.peak_rss_kib = self.peak_pss_kib = self.peak_processes = 0
        self._samples = 0
        self._rss_at_pss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dgpo-memory", daemon=True)

    def start(self) -> "MemorySampler":
        self._thread.start()
        return self

    def sample(self) -> None:
        rss, _, count = tree_memory_kib(self.root, pss=False)
        if self._samples % self.pss_every == 0 or rss > self._rss_at_pss * (1 + self.pss_growth):
            rss, pss, count = tree_memory_kib(self.root)
            self.peak_pss_kib = max(self.peak_pss_kib, pss)
            self._rss_at_pss = rss
        self._samples += 1
        self.peak_rss_kib = max(self.peak_rss_kib, rss)
        self.peak_processes = max(self.peak_processes, count)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


def process_start_time() -> float:
    """Wall-clock time (epoch seconds) at which this process started."""
    import psutil

    return psutil.Process().create_time()


def mean(values: list[float]) -> Optional[float]:
    return sum(values) / len(values) if values else None


def summary_lines(
    steps: dict[int, dict],
    *,
    wall_s: float,
    memory: MemorySampler,
    checkpoint_dir: str,
    metrics_path: str,
    ok: bool,
) -> list[str]:
    """The final summary: outcome, steps, reward curve, median step time, wall time and peak memory."""
    ordered = [steps[k] for k in sorted(steps)]
    rewards = [d[REWARD_KEY] for d in ordered if REWARD_KEY in d]
    times = sorted(d[STEP_TIME_KEY] for d in ordered if STEP_TIME_KEY in d)
    gib = 1024.0 * 1024.0
    lines = [
        f"{'finished' if ok else 'FAILED'}: {len(ordered)} training steps"
        + (f" ({min(steps)}..{max(steps)})" if steps else ""),
        "reward per step: " + " ".join(f"{r:.2f}" for r in rewards),
        f"reward mean, first 3 steps {_fmt(mean(rewards[:3]))}, last 3 steps {_fmt(mean(rewards[-3:]))}",
        f"step time median {_fmt(times[len(times) // 2] if times else None, '.2f')} s",
        f"wall time {wall_s:.1f} s (including Ray start-up and shutdown)",
        f"peak memory, all {memory.peak_processes} processes together: RSS {memory.peak_rss_kib / gib:.2f} GiB, "
        f"PSS {memory.peak_pss_kib / gib:.2f} GiB (RSS counts shared libraries once per process)",
        f"checkpoints: {checkpoint_dir} ({describe_checkpoints(checkpoint_dir)})",
        f"metrics: {metrics_path}",
    ]
    return lines


def print_summary(lines: list[str], out: TextIO = sys.stdout, prefix: str = "[dgpo-local] ") -> None:
    print(prefix + "=" * 60, file=out)
    for line in lines:
        print(prefix + line, file=out)
    out.flush()


def at_exit(callback: Callable[[], None]) -> None:
    import atexit

    atexit.register(callback)
