"""Math reward: 1.0 when the last ``\\boxed{}`` answer of a response equals the ground truth, else 0.0.

``compute_score(data_source, solution_str, ground_truth, extra_info=None)`` has verl's custom-reward
signature, so verl uses it through ``reward.custom_reward_function.path=<this file>`` and
``reward.custom_reward_function.name=compute_score``; the evaluator (:mod:`verl_dgpo.eval`) grades with
the same function, so training rewards, validation metrics and final scores agree.

Grading (our choice, the paper does not name its verifier):
1. take the content of the *last* ``\\boxed{...}`` (or ``\\fbox{...}``) of the response, braces matched;
   no boxed answer, or an unclosed one (a truncated response), scores 0;
2. strip surrounding ``$``/``\\(\\)``, a trailing percent sign, and whitespace on both answers;
3. ``math_verify.parse`` both (LaTeX, then plain expressions for the gold) and ``math_verify.verify``
   them: equal numbers in any notation (``\\frac{1}{2}``, ``0.5``, ``\\dfrac12``), equivalent symbolic
   expressions, sets and intervals, with ``\\text{cm}``-style units dropped.

Never hangs: math-verify bounds its own parse/verify time with ``signal.alarm``, which Python allows only
in a process's main thread. There we call it directly. From any other thread (verl's reward workers
call reward functions through ``loop.run_in_executor``, i.e. a thread pool; Ray actors; user thread pools)
the grading runs in a spawned helper process that is killed after a hard wall-clock limit; where no child
process can be started (a daemonic process) it runs in a watchdog thread that is abandoned on timeout.
A timeout, a parse failure or any grader error scores 0.0 and never raises.
"""

from __future__ import annotations

import atexit
import logging
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


def _serve(conn) -> None:
    """Helper-process loop: receive (predicted, gold), send the score; runs in the child's main thread."""
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        conn.send(_grade_in_this_thread(*request))


class _GraderProcess:
    """One spawned child that grades in its main thread, so math-verify's signal timeouts work there."""

    def __init__(self) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.conn, child_conn = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child_conn,), daemon=True, name="verl-dgpo-grader")
        self.process.start()
        child_conn.close()

    def grade(self, predicted: str, gold: str, timeout_s: float) -> Optional[float]:
        """The score, or ``None`` if the child did not answer in ``timeout_s`` (it is then killed)."""
        self.conn.send((predicted, gold))
        if self.conn.poll(timeout_s):
            return float(self.conn.recv())
        self.close(kill=True)
        return None

    def close(self, kill: bool = False) -> None:
        try:
            if kill:
                self.process.kill()
            else:
                self.conn.send(None)
            self.process.join(timeout=5)
        except Exception:  # already dead
            pass
        finally:
            self.conn.close()


class _GraderPool:
    """Idle helper processes shared by all threads; each grading borrows one and gives it back."""

    def __init__(self) -> None:
        self._idle: "queue.SimpleQueue[_GraderProcess]" = queue.SimpleQueue()
        self._all: list[_GraderProcess] = []
        self._lock = threading.Lock()
        self.can_spawn = True

    def grade(self, predicted: str, gold: str, timeout_s: float) -> Optional[float]:
        try:
            worker = self._idle.get_nowait()
        except queue.Empty:
            worker = _GraderProcess()
            with self._lock:
                self._all.append(worker)
        try:
            score = worker.grade(predicted, gold, timeout_s)
        except (EOFError, OSError, BrokenPipeError):
            worker.close(kill=True)
            score = None
        if score is not None:
            self._idle.put(worker)
        else:
            with self._lock:
                self._all.remove(worker)
        return score

    def shutdown(self) -> None:
        with self._lock:
            workers, self._all = self._all, []
        for worker in workers:
            worker.close()


_POOL = _GraderPool()
atexit.register(_POOL.shutdown)


def _grade_in_watchdog_thread(predicted: str, gold: str, timeout_s: float) -> float:
    """Last resort where no child process can be started: a daemon thread, abandoned after ``timeout_s``."""
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
    if threading.current_thread() is threading.main_thread():
        return _grade_in_this_thread(predicted, gold)
    if _POOL.can_spawn:
        try:
            score = _POOL.grade(predicted, gold, timeout_s)
            return 0.0 if score is None else score
        except (AssertionError, OSError, RuntimeError) as err:  # e.g. "daemonic processes are not allowed to have children"
            logger.warning("verl-dgpo reward: cannot start a grader process (%r); grading in watchdog threads", err)
            _POOL.can_spawn = False
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
