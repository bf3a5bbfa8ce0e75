"""``python -m verl_dgpo.eval --reward-path/--reward-name``: grading with a reward of the user's own, in verl's
custom-reward form (a .py file, ``pkg://module`` or a module name, and ``compute_score(data_source,
solution_str, ground_truth, extra_info)``), math-verify staying the default.

The reward file is written by the test; a scripted generator gives known responses, so every score is checked
against what the test's own rule says, not against the evaluator's output."""

import json
import textwrap

import pandas as pd
import pytest

from verl_dgpo.eval.generation import Generation, Sampling
from verl_dgpo.eval.runner import EvalError, evaluate, load_reward, main
from verl_dgpo.local.task import make_rows

K = 4
TARGETS_SEED = 5


class EchoGenerator:
    """Sample j of problem i answers the problem's digits when (i + j) % 3 == 0, else a wrong string; with a
    boxed copy of the digits in sample 1 (right for math-verify, wrong for an exact-prefix reward)."""

    name = "echo"

    def __init__(self, truths):
        self.truths = truths

    def generate_many(self, batch, sampling):
        out = []
        for index, _messages in batch:
            samples = []
            for j in range(sampling.k):
                if j == 1:
                    text = f"answer \\boxed{{{self.truths[index]}}}"
                elif (index + j) % 3 == 0:
                    text = self.truths[index]
                else:
                    text = "000000x"
                samples.append(Generation(text=text, tokens=7, finish_reason="stop"))
            out.append(samples)
        return out


@pytest.fixture
def task(tmp_path):
    rows = make_rows(6, digits=6, alphabet="0123456789", seed=TARGETS_SEED, split="heldout")
    path = tmp_path / "copy.parquet"
    pd.DataFrame(rows).to_parquet(path)
    return str(path), [r["reward_model"]["ground_truth"] for r in rows]


def write_reward(tmp_path, body: str, name="my_reward.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


EXACT = """
    CALLS = []

    def compute_score(data_source, solution_str, ground_truth, extra_info=None):
        CALLS.append(extra_info)
        return 1.0 if solution_str.startswith(ground_truth) else 0.0

    def as_dict(data_source, solution_str, ground_truth, extra_info=None):
        return {"score": 1.0 if solution_str.startswith(ground_truth) else 0.0, "acc": True}
"""


def expected_correct(truths):
    """Per problem, the number of samples the exact-prefix rule calls right (by the generator's construction)."""
    return [sum(1 for j in range(K) if j != 1 and (i + j) % 3 == 0) for i in range(len(truths))]


def run(task, out, reward):
    path, truths = task
    return evaluate("scripted", [path], str(out), Sampling(k=K, max_new_tokens=7), generator=EchoGenerator(truths),
                    progress=False, reward=reward)


def test_custom_reward_file_grades_every_sample(task, tmp_path):
    reward_path = write_reward(tmp_path, EXACT)
    summary = run(task, tmp_path / "out", {"path": reward_path, "name": "compute_score"})
    _, truths = task
    correct = expected_correct(truths)
    metrics = summary["benchmarks"]["verl_dgpo/copy_digits"]
    assert metrics[f"avg@{K}"] == pytest.approx(100 * sum(c / K for c in correct) / len(correct))
    # Pass@K: a problem counts when any of its K samples is right
    assert metrics[f"pass@{K}"] == pytest.approx(100 * sum(c > 0 for c in correct) / len(correct))
    lines = [json.loads(line) for line in open(tmp_path / "out" / "samples.jsonl")]
    for record in lines:
        right = record["response"].startswith(record["ground_truth"])
        assert record["score"] == (1.0 if right else 0.0)
    assert summary["reward"] == {"path": reward_path, "name": "compute_score"}


def test_a_dict_score_is_read_as_verl_reads_it(task, tmp_path):
    reward_path = write_reward(tmp_path, EXACT)
    summary = run(task, tmp_path / "out", {"path": reward_path, "name": "as_dict"})
    _, truths = task
    correct = expected_correct(truths)
    assert summary["benchmarks"]["verl_dgpo/copy_digits"][f"avg@{K}"] == pytest.approx(
        100 * sum(c / K for c in correct) / len(correct))


def test_extra_info_is_the_rows_own(task, tmp_path):
    reward_path = write_reward(tmp_path, """
        import json, os
        LOG = os.path.join(os.path.dirname(__file__), "extra.jsonl")

        def compute_score(data_source, solution_str, ground_truth, extra_info=None):
            with open(LOG, "a") as f:
                f.write(json.dumps([data_source, ground_truth, extra_info]) + "\\n")
            return 0.0
    """)
    run(task, tmp_path / "out", {"path": reward_path, "name": "compute_score"})
    _, truths = task
    seen = [json.loads(line) for line in open(tmp_path / "extra.jsonl")]
    assert len(seen) == K * len(truths)
    for source, truth, extra in seen:
        index = truths.index(truth)
        assert source == "verl_dgpo/copy_digits" and extra == {"split": "heldout", "index": index}


def test_module_forms_grade_like_the_file(task, tmp_path):
    """pkg://module, a dotted module name and the module's file give the same scores (the copy task's reward)."""
    import verl_dgpo.local.task as copy_task

    results = []
    for i, path in enumerate(("pkg://verl_dgpo.local.task", "verl_dgpo.local.task", copy_task.__file__)):
        summary = run(task, tmp_path / f"out{i}", {"path": path, "name": "compute_score"})
        results.append(summary["benchmarks"]["verl_dgpo/copy_digits"])
    _, truths = task
    correct = expected_correct(truths)
    assert results[0] == results[1] == results[2]
    assert results[0][f"avg@{K}"] == pytest.approx(100 * sum(c / K for c in correct) / len(correct))


def test_default_stays_math_verify(task, tmp_path):
    """Without the option the boxed sample (sample 1) is the one math-verify calls right, and only it."""
    summary = run(task, tmp_path / "out", None)
    metrics = summary["benchmarks"]["verl_dgpo/copy_digits"]
    assert metrics[f"avg@{K}"] == pytest.approx(100 / K)
    assert summary["reward"] == {"path": "pkg://verl_dgpo.reward", "name": "compute_score"}


def test_resume_with_another_reward_is_refused(task, tmp_path):
    reward_path = write_reward(tmp_path, EXACT)
    run(task, tmp_path / "out", {"path": reward_path, "name": "compute_score"})
    with pytest.raises(EvalError, match="reward"):
        run(task, tmp_path / "out", None)


@pytest.mark.parametrize("args, expect", [
    (["--reward-path", "/no/such/reward.py"], "--reward-path '/no/such/reward.py': no such file"),
    (["--reward-path", "no_such_module_xyz"], "--reward-path 'no_such_module_xyz': no module"),
    (["--reward-path", "pkg://verl_dgpo.local.task", "--reward-name", "grade_me"],
     "--reward-name 'grade_me': 'pkg://verl_dgpo.local.task' has no function 'grade_me' (its functions: compute_score"),
    (["--reward-name", "other"], "--reward-name needs --reward-path"),
])
def test_bad_reward_is_one_clear_line(tmp_path, capsys, args, expect):
    code = main(["--model", str(tmp_path / "no-model"), "--data", str(tmp_path / "none.parquet"),
                 "--out", str(tmp_path / "out"), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and expect in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # refused before anything was written or loaded


def test_reward_file_that_fails_at_import_is_one_line(tmp_path, capsys):
    bad = write_reward(tmp_path, "raise RuntimeError('boom')\n", name="broken.py")
    code = main(["--model", "m", "--data", "d", "--out", str(tmp_path / "out"), "--reward-path", bad])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "RuntimeError: boom" in err and bad in err
