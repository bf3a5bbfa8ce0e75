"""The math reward gives the hand-written verdicts of tests/fixtures/math_outputs.jsonl everywhere it runs:
the main thread, a worker thread, a spawned worker process (its main thread and a thread in it), and
through verl's custom-reward-function loader. Inside verl's own reward workers (Ray actors, in a real
training step) it gives the verdicts it gives here: tests/test_recipes_toy.py (slow tier)."""

import concurrent.futures
import json
import multiprocessing
import os
import threading
import time

import pytest

from verl_dgpo import reward
from verl_dgpo.reward import compute_score, grade_answer, last_boxed_answer

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "math_outputs.jsonl")
CASES = [json.loads(line) for line in open(FIXTURE, encoding="utf-8")]
TOWER = r"\boxed{9^{9^{9^{9}}}}"  # sympy needs far longer than any timeout to decide this


def _score_all(cases):
    return [compute_score("fixture", c["response"], c["ground_truth"]) for c in cases]


def _score_all_in_a_thread(cases):
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda c: compute_score("fixture", c["response"], c["ground_truth"]), cases))


EXPECTED = [float(c["expected"]) for c in CASES]


def test_fixture_is_large_and_mixed():
    assert len(CASES) >= 30
    assert 10 <= sum(EXPECTED) <= len(CASES) - 10


@pytest.mark.parametrize("case", CASES, ids=[c["why"] for c in CASES])
def test_verdict_in_main_thread(case):
    assert threading.current_thread() is threading.main_thread()
    assert compute_score("fixture", case["response"], case["ground_truth"]) == float(case["expected"])


def test_verdicts_in_worker_threads():
    assert _score_all_in_a_thread(CASES) == EXPECTED


def test_hopeless_answer_in_main_thread_returns_zero_within_the_hard_limit():
    grade_answer("1", "1", timeout_s=60)  # warm a grader process so its start-up is not timed
    start = time.monotonic()
    assert grade_answer(last_boxed_answer(TOWER), "1", timeout_s=1.0) == 0.0
    assert time.monotonic() - start < 3.0


@pytest.mark.parametrize("runner", [_score_all, _score_all_in_a_thread], ids=["child-main-thread", "child-thread"])
def test_verdicts_in_spawned_worker_process(runner):
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        assert pool.submit(runner, CASES).result(timeout=300) == EXPECTED


def test_verl_loader_by_file_path_scores_in_a_thread():
    """verl loads a file path under a made-up module name; the grader process must still start."""
    from omegaconf import OmegaConf
    from verl.trainer.ppo.reward import get_custom_reward_fn

    fn = get_custom_reward_fn(OmegaConf.create({"reward": {"custom_reward_function": {"path": reward.__file__, "name": "compute_score"}}}))
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        got = list(pool.map(lambda c: fn(data_source="x", solution_str=c["response"], ground_truth=c["ground_truth"]), CASES[:8]))
    assert got == EXPECTED[:8]


@pytest.mark.parametrize("timeout_s", [1.0, 3.0])
def test_hopeless_answer_in_a_thread_returns_zero_within_the_hard_limit(timeout_s):
    grade_answer("1", "1", timeout_s=60)  # warm a grader process so its start-up is not timed
    result = {}

    def work():
        start = time.monotonic()
        result["score"] = grade_answer(last_boxed_answer(TOWER), "1", timeout_s=timeout_s)
        result["seconds"] = time.monotonic() - start

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout_s + 30)
    assert not thread.is_alive()
    assert result["score"] == 0.0
    assert result["seconds"] < timeout_s + 2.0
    assert grade_answer("2", "2", timeout_s=60) == 1.0  # the pool recovers after killing a grader


def test_in_process_fallback_gives_the_same_verdicts(monkeypatch):
    """Without grader processes: math-verify's signal timeouts in the main thread, a watchdog elsewhere."""
    monkeypatch.setattr(reward._POOL, "usable", False)
    easy = [c for c in CASES if "tower" not in c["why"]]  # in-process, nothing can stop a C-level power
    assert _score_all(easy) == [float(c["expected"]) for c in easy]
    assert _score_all_in_a_thread(easy) == [float(c["expected"]) for c in easy]


def test_grader_that_cannot_start_falls_back_to_this_process(monkeypatch):
    monkeypatch.setattr(reward, "_POOL", reward._GraderPool(size=2))
    monkeypatch.setattr(reward, "GRADER_CODE", "import sys; sys.exit(3)")
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        assert pool.submit(grade_answer, "\\dfrac12", "0.5").result(timeout=60) == 1.0
        assert pool.submit(grade_answer, "2", "0.5").result(timeout=60) == 0.0
    assert reward._POOL.usable is False
    assert grade_answer("0.5", "\\frac{1}{2}") == 1.0  # main thread: in-process with signal timeouts


def test_watchdog_abandons_a_slow_grading(monkeypatch):
    monkeypatch.setattr(reward._POOL, "usable", False)
    monkeypatch.setattr(reward, "_verify_answers", lambda p, g, timeouts: time.sleep(30) or 1.0)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        start = time.monotonic()
        assert pool.submit(grade_answer, "1", "1", 0.5).result(timeout=10) == 0.0
        assert time.monotonic() - start < 3.0


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"a \boxed{1} b \boxed{\frac{a}{b}} c", r"\frac{a}{b}"),
        (r"\boxed{\left\{1,2\right\}}", r"\left\{1,2\right\}"),
        (r"\fbox{3} then \boxed{4}", "4"),
        (r"\boxed{4} then \fbox{3}", "3"),
        (r"\boxed 12.", "12"),
        (r"\boxed{unclosed", None),
        ("no box", None),
        (None, None),
    ],
)
def test_last_boxed_answer_matches_braces(text, expected):
    assert last_boxed_answer(text) == expected


@pytest.mark.parametrize("truth", [["2", "-2"], ("7", "2"), "2"])
def test_list_ground_truth_accepts_any_key(truth):
    assert compute_score("x", r"\boxed{2}", truth) == 1.0
    assert compute_score("x", r"\boxed{5}", truth) == 0.0
