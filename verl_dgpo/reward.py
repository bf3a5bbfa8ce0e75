"""Math reward: 1.0 when the last ``\\boxed{}`` answer of a response equals the ground truth, else 0.0.

``compute_score(data_source, solution_str, ground_truth, extra_info=None)`` has verl's custom-reward
signature, so verl uses it through ``reward.custom_reward_function.path=pkg://verl_dgpo.reward`` (or
this file's path) and ``reward.custom_reward_function.name=compute_score``; the evaluator (:mod:`verl_dgpo.eval`) grades with
the same function, so training rewards, validation metrics and final scores agree.

Grading (our choice, the paper does not name its verifier):
1. take the content of the *last* ``\\boxed{...}`` (or ``\\fbox{...}``) of the response, braces matched;
   no boxed answer, or an unclosed one (a truncated response), scores 0;
2. strip surrounding ``$``/``\\(\\)``, a trailing percent sign, and whitespace on both answers;
3. ``math_verify.parse`` both (LaTeX, then plain expressions for the gold) and ``math_verify.verify``
   them: equal numbers in any notation (``\\frac{1}{2}``, ``0.5``, ``\\dfrac12``), equivalent symbolic
   expressions, sets and intervals, with ``\\text{cm}``-style units dropped.

Never hangs: math-verify bounds its own parse/verify time with ``signal.alarm``, which Python allows only
in a process's main thread, and even there a signal cannot interrupt a long C-level operation (sympy
evaluating ``9^{9^{9^9}}`` holds the interpreter for good). So every grading runs in a small pool of
helper interpreters (``python -c ...serve_stdio()``, started on first use, shared by all threads): the
helper grades in its main thread with math-verify's timeouts on, and the caller kills it after a hard
wall-clock limit (:data:`HARD_TIMEOUT_S`) and starts a fresh one. This works the same from the main
thread, verl's reward workers (which call reward functions through ``loop.run_in_executor``, a thread
pool), Ray actors and daemonic processes. Where no child process can be started at all (or with
``VERL_DGPO_GRADER_PROCESSES=0``) grading falls back to this process: math-verify's timeouts in the main
thread, a watchdog thread elsewhere. A timeout, a parse failure or any grader error scores 0.0 and never
raises.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import re
import threading
from typing import Any, Optional

logger = logging.getLogger(__name__)

PARSE_TIMEOUT_S = 5
"""math-verify's per-parse budget (signal based, main thread only)."""
VERIFY_TIMEOUT_S = 5
"""math-verify's per-comparison budget (signal based, main thread only)."""
HARD_TIMEOUT_S = 30.0
"""Wall-clock limit of one grading outside the main thread (helper process killed, or thread abandoned)."""

STARTUP_TIMEOUT_S = 120.0
"""How long a new grader process may take to import math-verify and say it is ready."""
GRADER_CODE = "from verl_dgpo.reward import serve_stdio; serve_stdio()"
"""What a grader process runs (``python -c``)."""
_READY = "verl-dgpo-grader-ready"

_BOXED_COMMANDS = ("\\boxed", "\\fbox")


def last_boxed_answer(text: str) -> Optional[str]:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` in ``text`` (nested braces matched).

    ``\\boxed 5`` (no braces) yields ``"5"``. Returns ``None`` when there is no such command or its
    braces never close (a response cut at the length limit).
    """
    if not isinstance(text, str):
        return None
    start = max(text.rfind(cmd) for cmd in _BOXED_COMMANDS)
    if start < 0:
        return None
    cmd = next(c for c in _BOXED_COMMANDS if text.startswith(c, start))
    rest = text[start + len(cmd) :]
    if rest.startswith(" ") and not rest.lstrip().startswith("{"):
        match = re.match(r"\s+([^\s$]+)", rest)
        return match.group(1).rstrip(".,;") if match else None
    rest = rest.lstrip()
    if not rest.startswith("{"):
        return None
    depth = 0
    for i, ch in enumerate(rest):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return rest[1:i]
    return None


_WRAPPERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_TRAILING_PERCENT = re.compile(r"(\\?%|\\text\{\s*\\?%\s*\})\s*$")


def normalize_answer(answer: Any) -> str:
    """An answer string ready for math-verify: outer ``$``/``\\(\\)`` and a trailing percent sign removed."""
    text = str(answer).strip()
    changed = True
    while changed and text:
        changed = False
        for left, right in _WRAPPERS:
            if len(text) > len(left) + len(right) - 1 and text.startswith(left) and text.endswith(right):
                text = text[len(left) : len(text) - len(right)].strip()
                changed = True
    return _TRAILING_PERCENT.sub("", text).strip()


def _verify_answers(predicted: str, gold: str, timeouts: bool) -> float:
    """math-verify on two bare answers; ``timeouts`` turns math-verify's signal alarms on (main thread only)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    parse_timeout = PARSE_TIMEOUT_S if timeouts else None
    verify_timeout = VERIFY_TIMEOUT_S if timeouts else None
    gold_parsed = parse(
        "\\boxed{" + gold + "}",
        extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()],
        parsing_timeout=parse_timeout,
    )
    pred_parsed = parse("\\boxed{" + predicted + "}", extraction_config=[LatexExtractionConfig()], parsing_timeout=parse_timeout)
    if not gold_parsed or not pred_parsed:
        return 0.0
    return 1.0 if verify(gold_parsed, pred_parsed, timeout_seconds=verify_timeout) else 0.0


def _grade_in_this_thread(predicted: str, gold: str) -> float:
    try:
        return _verify_answers(predicted, gold, timeouts=True)
    except Exception as err:  # math-verify's own TimeoutException included
        logger.debug("grading failed (%r): scored 0", err)
        return 0.0


def serve_stdio() -> None:
    """Grader-process loop: a JSON ``[predicted, gold]`` per stdin line -> the score on a stdout line.

    Runs as ``python -c "from verl_dgpo.reward import serve_stdio; serve_stdio()"`` in the child's main
    thread, where math-verify's signal timeouts work; the parent's hard limit covers what they cannot
    interrupt (a long C-level big-integer operation holds the interpreter until it returns).
    """
    import json
    import sys

    import math_verify  # noqa: F401  (fail here, before the handshake, if it is missing)

    sys.stdout.write(_READY + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        predicted, gold = json.loads(line)
        sys.stdout.write(f"{_grade_in_this_thread(predicted, gold)}\n")
        sys.stdout.flush()


class _GraderProcess:
    """One child interpreter (``subprocess``, so it also starts from daemonic processes) serving gradings."""

    def __init__(self) -> None:
        import subprocess
        import sys

        self.process = subprocess.Popen(
            [sys.executable, "-c", GRADER_CODE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        if self._read_line(STARTUP_TIMEOUT_S) != _READY:  # e.g. verl_dgpo or math_verify not importable there
            self.close(kill=True)
            raise OSError(f"grader process did not start ({sys.executable} -c {GRADER_CODE!r})")

    def _read_line(self, timeout_s: float) -> str:
        import select

        ready, _, _ = select.select([self.process.stdout], [], [], timeout_s)
        return self.process.stdout.readline().strip() if ready else ""

    def grade(self, predicted: str, gold: str, timeout_s: float) -> Optional[float]:
        """The score, or ``None`` if the child did not answer in ``timeout_s`` (it is then killed)."""
        import json

        self.process.stdin.write(json.dumps([predicted, gold]) + "\n")
        self.process.stdin.flush()
        line = self._read_line(timeout_s)
        if not line:
            self.close(kill=True)
            return None
        return float(line)

    def close(self, kill: bool = False) -> None:
        try:
            if kill:
                self.process.kill()
            else:
                self.process.stdin.close()
            self.process.wait(timeout=5)
        except Exception:  # already gone, or stuck: make sure
            self.process.kill()


class _GraderPool:
    """Grader processes shared by all threads: each grading borrows an idle one (at most ``size`` live)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._idle: "queue.SimpleQueue[_GraderProcess]" = queue.SimpleQueue()
        self._live = 0
        self._lock = threading.Lock()
        self.usable = os.environ.get("VERL_DGPO_GRADER_PROCESSES", "1") != "0"

    def _borrow(self) -> _GraderProcess:
        wait = 0.0
        while True:  # an idle grader, or room for a new one (a killed grader frees its place)
            try:
                return self._idle.get(timeout=wait) if wait else self._idle.get_nowait()
            except queue.Empty:
                pass
            with self._lock:
                spawn = self._live < self.size
                if spawn:
                    self._live += 1
            if spawn:
                break
            wait = 0.1
        try:
            return _GraderProcess()
        except BaseException:
            with self._lock:
                self._live -= 1
            raise

    def grade(self, predicted: str, gold: str, timeout_s: float) -> Optional[float]:
        worker = self._borrow()
        try:
            score = worker.grade(predicted, gold, timeout_s)
        except (OSError, ValueError):  # the child died: broken pipe, garbled line
            worker.close(kill=True)
            score = None
        if score is None:
            with self._lock:
                self._live -= 1
        else:
            self._idle.put(worker)
        return score

    def shutdown(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


_POOL = _GraderPool(size=max(2, os.cpu_count() or 2))
atexit.register(_POOL.shutdown)


def _grade_in_watchdog_thread(predicted: str, gold: str, timeout_s: float) -> float:
    """Fallback where no child process can be started: a daemon thread, abandoned after ``timeout_s``.

    Weaker than a process: the wait ends on time only if the grading thread lets the interpreter go
    (a C-level big-integer operation does not); math-verify's signal timeouts are off in threads.
    """
    result: list[float] = []

    def work() -> None:
        try:
            result.append(_verify_answers(predicted, gold, timeouts=False))
        except Exception:
            result.append(0.0)

    thread = threading.Thread(target=work, daemon=True, name="verl-dgpo-grader")
    thread.start()
    thread.join(timeout_s)
    return result[0] if result else 0.0


def grade_answer(predicted: str, gold: str, timeout_s: float = HARD_TIMEOUT_S) -> float:
    """1.0 if the bare answer ``predicted`` is mathematically equal to ``gold`` (math-verify), else 0.0.

    Safe in any thread or process; never raises; returns 0.0 after at most about ``timeout_s`` seconds.
    """
    predicted, gold = normalize_answer(predicted), normalize_answer(gold)
    if not predicted or not gold:
        return 0.0
    if _POOL.usable:
        try:
            score = _POOL.grade(predicted, gold, timeout_s)
            return 0.0 if score is None else score
        except OSError as err:  # cannot start a child interpreter here
            logger.warning("verl-dgpo reward: no grader process (%s); grading in this process from now on", err)
            _POOL.usable = False
    if threading.current_thread() is threading.main_thread():
        return _grade_in_this_thread(predicted, gold)
    return _grade_in_watchdog_thread(predicted, gold, timeout_s)


def compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: Optional[dict] = None, **kwargs) -> float:
    """verl custom reward: 1.0 if the last ``\\boxed{}`` of ``solution_str`` equals ``ground_truth``, else 0.0.

    ``data_source`` and ``extra_info`` are accepted for verl's signature and not used: every benchmark is
    graded the same way. Extra keyword arguments verl may pass (reward-model router) are ignored.
    """
    answer = last_boxed_answer(solution_str)
    if answer is None:
        return 0.0
    if not isinstance(ground_truth, str) and hasattr(ground_truth, "__iter__"):  # list / numpy array of keys
        return max((grade_answer(answer, str(g)) for g in ground_truth), default=0.0)
    return grade_answer(answer, str(ground_truth))
