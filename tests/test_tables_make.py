"""make_tables on synthetic summaries prints our figures, the paper's and their difference in the right cells."""

import os
import subprocess
import sys

import pytest

from shared_checkout import shared_path
from verl_dgpo.eval.tables import BENCHMARKS, PAPER_CSV, build_table, load_paper, markdown

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_CSV = shared_path("paper", "paper_results.csv")


def summary(values, k=32):
    """A summary.json as the evaluator writes it; values: {benchmark: (avg, pass)}."""
    return {
        "k": k,
        "benchmarks": {b: {"problems": 10, f"avg@{k}": a, f"pass@{k}": p, "pass@1": a} for b, (a, p) in values.items()},
        "average": {},
    }


DGPO_15 = {b: (40.0 + i, 70.0 + i) for i, b in enumerate(BENCHMARKS)}  # 40..45 and 70..75
GRPO_7 = {"AIME24": (50.0, 80.0), "MATH500": (85.4, 93.0)}


@pytest.fixture
def files(tmp_path):
    import json

    paths = {}
    for name, values in (("dgpo15", DGPO_15), ("grpo7", GRPO_7)):
        (tmp_path / name).mkdir()
        with open(tmp_path / name / "summary.json", "w") as f:
            json.dump(summary(values), f)
        paths[name] = str(tmp_path / name)
    return paths


def run_script(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "make_tables.py"), *args], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")), timeout=300)


def row_cells(md, title_part, method):
    block = md.split("### ")
    table = next(b for b in block if title_part in b)
    row = next(line for line in table.splitlines() if line.startswith(f"| {method} |"))
    return [c.strip() for c in row.strip("|").split("|")][1:]


def test_markdown_cells_hold_ours_paper_and_difference(files, tmp_path):
    result = run_script("--summary", f"DGPO:1.5B={files['dgpo15']}", "--summary", f"GRPO:7B={files['grpo7']}/summary.json",
                        "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    md = open(tmp_path / "out" / "tables.md").read()
    assert md.strip() in result.stdout
    # 1.5B DGPO Avg@32, paper: AIME24 43.3 ... Average 52.7; ours 40..45, mean 42.5
    assert row_cells(md, "1.5B: Avg@32", "DGPO") == [
        "40.0 / 43.3 (-3.3)", "41.0 / 32.8 (+8.2)", "42.0 / 86.0 (-44.0)", "43.0 / 77.9 (-34.9)",
        "44.0 / 28.2 (+15.8)", "45.0 / 48.0 (-3.0)", "42.5 / 52.7 (-10.2)",
    ]
    assert row_cells(md, "1.5B: Pass@32", "DGPO")[-1] == "72.5 / 73.0 (-0.5)"
    assert row_cells(md, "1.5B: Avg@32", "GRPO")[0] == "— / 33.2"  # paper only
    # 7B GRPO: two benchmarks only, so our Average (mean of 50 and 85.4) is marked partial
    cells = row_cells(md, "7B: Avg@32", "GRPO")
    assert cells[0] == "50.0 / 48.2 (+1.8)" and cells[3] == "85.4 / 84.8 (+0.6)" and cells[1] == "— / 37.4"
    assert cells[-1] == "67.7* / 58.9 (+8.8)"
    tex = open(tmp_path / "out" / "tables.tex").read()
    assert "DGPO & 40.0 / 43.3 (-3.3) & 41.0 / 32.8 (+8.2)" in tex and "67.7$^*$ / 58.9 (+8.8)" in tex and "-- / 33.2" in tex
    png = tmp_path / "out" / "averages.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_extra_methods_and_sizes_get_rows(files):

    paper = load_paper()
    ours = {("DGPO-n2", "1.5B"): summary(DGPO_15), ("DGPO", "14B"): summary(DGPO_15)}
    methods, rows = build_table("1.5B", "Avg@32", ours, paper)
    assert methods == ["GRPO", "CISPO", "GPPO", "CE-GPPO", "ASPO", "DGPO", "DGPO-n2"]
    assert rows[-1][0].paper is None and rows[-1][0].ours == 40.0
    methods14, rows14 = build_table("14B", "Pass@32", ours, paper)
    assert methods14 == ["GRPO", "DGPO"]
    assert rows14[1][-1].paper == 70.4 and rows14[1][-1].ours == pytest.approx(72.5) and rows14[1][0].paper is None
    assert "DeepSeek-R1-Distill-Qwen-14B: Pass@32" in markdown(ours, paper)


def test_other_k_is_flagged_in_the_title():
    md = markdown({("DGPO", "1.5B"): summary(DGPO_15, k=4)}, load_paper())
    assert "Avg@32 (ours at k=4)" in md


def test_shipped_paper_csv_is_the_shared_one():
    if not os.path.exists(SHARED_CSV):
        pytest.skip(f"no {SHARED_CSV} (set VERL_DGPO_SHARED to the shared/ folder)")
    assert open(PAPER_CSV).read() == open(SHARED_CSV).read()


def test_paper_csv_averages_are_the_mean_of_the_six():
    paper = load_paper()
    for (size, method, bench, metric), value in paper.items():
        if bench == "Average" and (size, method, "AIME24", metric) in paper:
            mean = sum(paper[(size, method, b, metric)] for b in BENCHMARKS) / 6
            assert abs(mean - value) <= 0.051


def test_bad_summary_argument_names_the_format(tmp_path):
    result = run_script("--summary", "DGPO=somewhere")
    assert result.returncode == 2 and "METHOD:SIZE=PATH" in result.stderr


def test_summary_says_its_unit_and_tables_flag_k_and_carry_a_title():
    from verl_dgpo.eval.runner import summarize_samples
    from verl_dgpo.eval.tables import latex, markdown

    records = {0: [{"data_source": "aime24", "score": s, "tokens": 1, "finish_reason": "stop"} for s in (1.0, 0.0)]}
    summary = {**summarize_samples(records, 2), "k": 2}
    assert "percent" in summary["unit"]
    assert summary["benchmarks"]["AIME24"]["avg@2"] == 50.0  # 1 of 2 correct, in percent
    ours = {("DGPO", "1.5B"): summary}
    md, tex = markdown(ours, {}, title="TOY SCALE"), latex(ours, {}, title="TOY SCALE")
    assert md.splitlines()[0] == "**TOY SCALE**"
    assert "Avg@32 (ours at k=2)" in md
    assert tex.count("\\caption{TOY SCALE DeepSeek-R1-Distill-Qwen-1.5B") == 2
    assert "Pass@32 (ours at k=2)" in tex
