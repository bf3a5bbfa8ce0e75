"""End to end on the tiny random Qwen2 (CPU, HF generate): `python -m verl_dgpo.eval` writes the summary;
a run killed with SIGKILL mid-way and rerun skips the finished problems and ends with the same samples
and summary as an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from math import comb

import pandas as pd
import pytest


from verl_dgpo.data.prepare import convert
from verl_dgpo.data.sources import BENCHMARKS


K = 4
PROBLEMS = 12


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from verl_dgpo.local.assets import make_tiny_model

    tmp = tmp_path_factory.mktemp("e2e")
    model = make_tiny_model(str(tmp / "model"))
    rows = []
    for name in ("aime24", "amc23", "math500"):
        records = [{"problem": f"Compute {i} + {i * 7}.", "answer": str(8 * i)} for i in range(PROBLEMS // 3)]
        rows += convert(records, BENCHMARKS[name], "test").rows
    pd.DataFrame(rows).to_parquet(tmp / "bench.parquet")
    return tmp, model, str(tmp / "bench.parquet")


def command(model, data, out):
    return [sys.executable, "-m", "verl_dgpo.eval", "--model", model, "--data", data, "--k", str(K),
            "--max-new-tokens", "48", "--out", str(out), "--backend", "hf", "--no-progress"]


def env():
    return dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")


def lines(path):
    return open(path).read().splitlines() if os.path.exists(path) else []


def test_killed_evaluation_resumes_to_the_uninterrupted_result(setup):
    tmp, model, data = setup
    ref = subprocess.run(command(model, data, tmp / "ref"), env=env(), capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-2000:]
    summary = json.load(open(tmp / "ref" / "summary.json"))
    assert summary["complete"] and summary["backend"] == "hf" and summary["k"] == K
    assert set(summary["benchmarks"]) == {"AIME24", "AMC23", "MATH500"}
    assert sum(b["problems"] for b in summary["benchmarks"].values()) == PROBLEMS

    # the summary is what the JSONL says (computed here from the lines)
    records = [json.loads(x) for x in lines(tmp / "ref" / "samples.jsonl")]
    assert len(records) == PROBLEMS * K
    for label, bench in summary["benchmarks"].items():
        mine = [r for r in records if r["data_source"] == label.lower()]
        per = {}
        for r in mine:
            per.setdefault(r["problem"], []).append(r["score"])
        assert bench["problems"] == len(per) and bench["samples"] == len(mine)
        assert bench[f"avg@{K}"] == pytest.approx(100 * sum(r["score"] for r in mine) / len(mine))
        assert bench[f"pass@{K}"] == pytest.approx(100 * sum(1 - comb(K - int(sum(s)), K) / comb(K, K) for s in per.values()) / len(per))
        assert bench["mean_response_tokens"] == pytest.approx(sum(r["tokens"] for r in mine) / len(mine))

    # kill -9 once some problems are written
    proc = subprocess.Popen(command(model, data, tmp / "cut"), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples = tmp / "cut" / "samples.jsonl"
    deadline = time.monotonic() + 300
    while len(lines(samples)) < 2 * K and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = lines(samples)
    assert 0 < len(written) < PROBLEMS * K, "the run finished before it could be killed"
    finished = len({json.loads(x)["problem"] for x in written[: len(written) // K * K]})
    with open(samples, "a") as f:
        f.write(f'{{"problem": {PROBLEMS - 1}, "sam')  # a line cut by the kill

    again = subprocess.run(command(model, data, tmp / "cut"), env=env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"{finished} already done" in again.stdout
    resumed = json.load(open(tmp / "cut" / "summary.json"))
    assert {k: resumed[k] for k in ("benchmarks", "average", "complete")} == {k: summary[k] for k in ("benchmarks", "average", "complete")}
    key = lambda r: (r["problem"], r["sample"])  # noqa: E731
    ref_records = sorted(records, key=key)
    cut_records = sorted((json.loads(x) for x in lines(samples)), key=key)
    assert [r["response"] for r in cut_records] == [r["response"] for r in ref_records]


def test_bad_input_is_a_clear_error(setup, tmp_path):
    _, model, _ = setup
    bad = subprocess.run(command(model, str(tmp_path / "missing.parquet"), tmp_path / "o"), env=env(), capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "does not exist" in bad.stderr
    neg = subprocess.run(command(model, "x.parquet", tmp_path / "o")[:-1] + ["--top-p", "0", "--no-progress"], env=env(),
                         capture_output=True, text=True, timeout=300)
    assert neg.returncode == 2 and "top_p" in neg.stderr
