"""The evaluator's summary is what its per-sample JSONL says, and an interrupted evaluation resumes
without regenerating finished problems and ends with the summary of an uninterrupted one.
A scripted generator gives known, mixed verdicts (the tiny random model's answers are all wrong)."""

import json
import random
from math import comb

import pandas as pd
import pytest

from verl_dgpo.data.prepare import convert
from verl_dgpo.data.sources import BENCHMARKS
from verl_dgpo.eval.generation import Generation, Sampling
from verl_dgpo.eval.runner import EvalError, evaluate

K = 4


def write_benchmark(path, per_benchmark=3):
    rows = []
    for name in ("aime24", "math500", "minerva"):
        records = [{"problem": f"{name} problem {i}: what is {i}+{i}?", "answer": str(2 * i)} for i in range(per_benchmark)]
        rows += convert(records, BENCHMARKS[name], "test").rows
    pd.DataFrame(rows).to_parquet(path)
    return rows


class ScriptedGenerator:
    """Sample j of problem i is right with a per-problem probability; seeded by (seed, i, j) only."""

    name = "scripted"

    def __init__(self, truths, fail_after_calls=None):
        self.truths, self.fail_after_calls, self.calls, self.asked = truths, fail_after_calls, 0, []

    def generate_many(self, batch, sampling):
        if self.fail_after_calls is not None and self.calls >= self.fail_after_calls:
            raise KeyboardInterrupt("killed")
        self.calls += 1
        out = []
        for index, _messages in batch:
            self.asked.append(index)
            rate = random.Random(index).random()
            samples = []
            for j in range(sampling.k):
                right = random.Random(f"{sampling.seed}-{index}-{j}").random() < rate
                answer = self.truths[index] if right else "-1"
                samples.append(Generation(text=f"so \\boxed{{{answer}}}", tokens=3 + j, finish_reason="stop"))
            out.append(samples)
        return out


def independent_summary(samples_path):
    """Avg@K and Pass@k per data source and their mean, straight from the JSONL with math.comb."""
    per = {}
    for line in open(samples_path):
        r = json.loads(line)
        per.setdefault(r["data_source"], {}).setdefault(r["problem"], []).append(r["score"])
    result = {}
    for source, problems in per.items():
        cs = [int(sum(s)) for s in problems.values()]
        assert all(len(s) == K for s in problems.values())
        result[source] = {
            f"avg@{K}": 100 * sum(c / K for c in cs) / len(cs),
            **{f"pass@{k}": 100 * sum(1 - comb(K - c, k) / comb(K, k) for c in cs) / len(cs) for k in (1, 2, K)},
        }
    return result


@pytest.fixture
def bench(tmp_path):
    rows = write_benchmark(tmp_path / "bench.parquet")
    return str(tmp_path / "bench.parquet"), [r["reward_model"]["ground_truth"] for r in rows]


def run(bench, out, generator, chunk_size=2):
    path, _ = bench
    return evaluate("scripted-model", [path], str(out), Sampling(k=K, max_new_tokens=8), chunk_size=chunk_size, generator=generator, progress=False)


def test_summary_equals_the_jsonl(bench, tmp_path):
    summary = run(bench, tmp_path / "full", ScriptedGenerator(bench[1]))
    expected = independent_summary(tmp_path / "full" / "samples.jsonl")
    labels = {"aime24": "AIME24", "math500": "MATH500", "minerva": "Minerva"}
    assert 0 < summary["average"][f"avg@{K}"] < 100  # mixed verdicts, not a trivial all-zero check
    for source, values in expected.items():
        for key, value in values.items():
            assert summary["benchmarks"][labels[source]][key] == pytest.approx(value)
    for key in (f"avg@{K}", f"pass@{K}"):
        assert summary["average"][key] == pytest.approx(sum(v[key] for v in expected.values()) / len(expected))
    assert summary["complete"] and summary["k"] == K
    assert json.load(open(tmp_path / "full" / "summary.json")) == summary


def test_interrupted_run_resumes_without_regenerating(bench, tmp_path):
    full = run(bench, tmp_path / "full", ScriptedGenerator(bench[1]))
    with pytest.raises(KeyboardInterrupt):
        run(bench, tmp_path / "cut", ScriptedGenerator(bench[1], fail_after_calls=2))
    lines = open(tmp_path / "cut" / "samples.jsonl").read().splitlines()
    assert len(lines) == 2 * 2 * K  # two chunks of two problems
    with open(tmp_path / "cut" / "samples.jsonl", "a") as f:
        f.write(lines[0][:10] + "\n" + json.dumps(json.loads(lines[0]) | {"problem": 7}) + "\n")  # a cut line, a partial problem
    second = ScriptedGenerator(bench[1])
    resumed = run(bench, tmp_path / "cut", second)
    assert sorted(second.asked) == list(range(4, 9))  # problems 0-3 were not generated again
    assert {k: resumed[k] for k in ("benchmarks", "average")} == {k: full[k] for k in ("benchmarks", "average")}
    assert sorted(open(tmp_path / "cut" / "samples.jsonl").read().splitlines()) == sorted(
        open(tmp_path / "full" / "samples.jsonl").read().splitlines()
    )


def test_rerun_with_other_settings_is_refused(bench, tmp_path):
    run(bench, tmp_path / "a", ScriptedGenerator(bench[1]))
    with pytest.raises(EvalError, match="different 'sampling'"):
        evaluate("scripted-model", [bench[0]], str(tmp_path / "a"), Sampling(k=K, temperature=1.0, max_new_tokens=8),
                 generator=ScriptedGenerator(bench[1]), progress=False)
