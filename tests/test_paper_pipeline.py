"""The toy reproduction runs end to end, and validation's Pass@k equals the estimator computed by hand.

One run of ``examples/dgpo_trainer/run_paper_pipeline_cpu.sh`` (two trainer launches: dgpo, grpo) carries
every assertion here. Its trainings get a test-only validation reward (``tests/fixtures/
digit_first_reward.py``) so that the scores Pass@k is checked on are not all zero; the scripts chain is
otherwise the one a user runs (evaluation keeps the paper's math grader).
"""

import csv
import glob
import json
import os
import re
import subprocess
from math import comb

import pytest
from shared_checkout import shared_path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "examples", "dgpo_trainer", "run_paper_pipeline_cpu.sh")
SHARED_PAPER_CSV = shared_path("paper", "paper_results.csv")
VAL_N = 4
BENCHMARKS = ("AIME24", "AIME25", "AMC23", "MATH500", "Minerva", "OlympiadBench")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]), "PIPELINE_VAL_N": str(VAL_N),
           "PIPELINE_STEPS": "1"}  # one step each (the script's default is 2): the chain is what is checked
    reward = os.path.join(REPO, "tests", "fixtures", "digit_first_reward.py")
    done = subprocess.run(
        ["bash", SCRIPT, str(out), f"reward.custom_reward_function.path={reward}"],
        cwd=str(tmp_path_factory.mktemp("cwd")), env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return out


def paper_values():
    from verl_dgpo.eval.tables import PAPER_CSV

    with open(PAPER_CSV, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if os.path.exists(SHARED_PAPER_CSV):  # the shipped copy is the published one
        with open(SHARED_PAPER_CSV, newline="", encoding="utf-8") as f:
            assert list(csv.DictReader(f)) == rows
    return {(r["model_size"], r["method"], r["benchmark"], r["metric"]): float(r["value"]) for r in rows}


def table_rows(markdown: str, metric: str) -> dict[str, list[str]]:
    """``{method: [cell per column]}`` of the 1.5B table for ``metric`` in tables.md."""
    section = markdown.split(f"DeepSeek-R1-Distill-Qwen-1.5B: {metric}")[1].split("###")[0]
    rows = {}
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith("| Method"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def test_tables_hold_our_toy_numbers_beside_the_published_ones(pipeline):
    text = (pipeline / "tables.md").read_text(encoding="utf-8")
    assert "TOY SCALE" in text.splitlines()[0]
    paper = paper_values()
    for metric, key in (("Avg@32", f"avg@{VAL_N}"), ("Pass@32", f"pass@{VAL_N}")):
        assert f"{metric} (ours at k={VAL_N})" in text
        rows = table_rows(text, metric)
        for method in ("DGPO", "GRPO"):
            summary = json.loads((pipeline / "eval" / method.lower() / "summary.json").read_text())
            for column, cell in zip((*BENCHMARKS, "Average"), rows[method]):
                match = re.fullmatch(r"(-?\d+\.\d) / (\d+\.\d) \(([+-]\d+\.\d)\)", cell)
                assert match, (method, column, cell)
                ours = summary["average"][key] if column == "Average" else summary["benchmarks"][column][key]
                assert float(match.group(1)) == pytest.approx(round(ours, 1))
                assert float(match.group(2)) == paper[("1.5B", method, column, metric)]


def unbiased_pass_at_k(n: int, c: int, k: int) -> float:
    return 1.0 - comb(n - c, k) / comb(n, k)


def test_validation_logs_pass_at_k_equal_to_the_estimator_on_the_dumped_samples(pipeline):
    import pandas as pd

    run = pipeline / "runs" / "dgpo"
    (metrics_file,) = glob.glob(str(run / "logs" / "metrics-*.jsonl"))
    with open(metrics_file, encoding="utf-8") as f:
        logged = [json.loads(line) for line in f if line.strip()]
    val = [entry for entry in logged if any(k.startswith("val-core/") for k in entry["data"])]
    assert val, "no validation was logged"
    step, metrics = val[-1]["step"], val[-1]["data"]

    with open(run / "validation" / f"{step}.jsonl", encoding="utf-8") as f:
        samples = [json.loads(line) for line in f]
    problems = pd.read_parquet(pipeline / "data" / "benchmarks.parquet")
    assert len(samples) == VAL_N * len(problems)
    scores_by_source: dict[str, list[list[float]]] = {}
    for i, problem in enumerate(problems.to_dict(orient="records")):  # validation_shuffle=false: file order
        block = samples[i * VAL_N : (i + 1) * VAL_N]
        assert all(str(s["gts"]) == str(problem["reward_model"]["ground_truth"]) for s in block)
        assert all(s["acc"] == s["score"] for s in block)  # verl's per-sample `acc`, which it groups
        scores_by_source.setdefault(problem["data_source"], []).append([float(s["acc"]) for s in block])

    all_scores = [s for groups in scores_by_source.values() for g in groups for s in g]
    assert 0 < sum(all_scores) < len(all_scores), "degenerate scores: the check would compare constants"
    assert len(scores_by_source) == 6
    ks = [1, 2, 4]
    for source, groups in scores_by_source.items():
        for k in ks:
            expected = sum(unbiased_pass_at_k(VAL_N, int(sum(g)), k) for g in groups) / len(groups)
            assert metrics[f"val-core/{source}/acc/pass@{k}"] == pytest.approx(expected, abs=1e-9), (source, k)
        avg = sum(sum(g) for g in groups) / (VAL_N * len(groups))
        assert metrics[f"val-core/{source}/acc/avg@{VAL_N}"] == pytest.approx(avg, abs=1e-9)
        assert metrics[f"val-core/{source}/acc/mean@{VAL_N}"] == pytest.approx(avg, abs=1e-9)  # verl's own
    per_source = [sum(unbiased_pass_at_k(VAL_N, int(sum(g)), VAL_N) for g in groups) / len(groups) for groups in scores_by_source.values()]
    assert metrics[f"val-core/average/acc/pass@{VAL_N}"] == pytest.approx(sum(per_source) / len(per_source), abs=1e-9)


def test_grpo_trains_with_verls_own_vanilla_loss_through_the_same_path(pipeline):
    """``algorithm.policy_loss=grpo`` is verl's ``vanilla`` loss, run by the preset exactly as DGPO is."""
    import math

    steps = {}
    for path in glob.glob(str(pipeline / "runs" / "grpo" / "logs" / "metrics-*.jsonl")):
        with open(path) as f:
            steps.update({r["step"]: r["data"] for r in map(json.loads, f) if "timing_s/step" in r["data"]})
    assert steps
    for data in steps.values():
        assert math.isfinite(data["actor/pg_loss"]) and math.isfinite(data["actor/grad_norm"])
        assert "actor/pg_clipfrac" in data and "actor/dgpo_ln_frac" not in data  # verl's own vanilla loss ran


def test_both_trainings_validated_and_saved_hf_weights(pipeline):
    for method in ("dgpo", "grpo"):
        assert glob.glob(str(pipeline / "runs" / method / "checkpoints" / method / "global_step_*" / "actor" / "huggingface" / "model.safetensors"))
        assert (pipeline / "eval" / method / "summary.json").exists()
