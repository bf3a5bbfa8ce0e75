"""Data preparation on fixture files in each benchmark's public schema: verl's RLHFDataset loads the
parquet, the prompt carries the \\boxed{} instruction, and every answer-key problem is reported."""

import json
import os

import pandas as pd
import pytest

from verl_dgpo.data.prepare import DataPrepError, convert, load_records, prepare_all
from verl_dgpo.data.sources import BENCHMARKS, INSTRUCTION, TRAIN

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "data")
NAMES = ["train", *BENCHMARKS]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prep")
    amc = tmp / "amc23.parquet"  # math-ai/amc23 ships parquet with float answers
    pd.DataFrame(json.load(open(os.path.join(FIX, "amc23_rows.json")))).to_parquet(amc)
    sources = {
        "train": os.path.join(FIX, "deepscaler.jsonl"),
        "aime24": os.path.join(FIX, "aime24.jsonl"),
        "aime25": os.path.join(FIX, "aime25.jsonl"),
        "amc23": str(amc),
        "math500": os.path.join(FIX, "math500.jsonl"),
        "minerva": os.path.join(FIX, "minerva.json"),
        "olympiadbench": os.path.join(FIX, "olympiadbench.json"),
    }
    out = tmp / "data"
    report = prepare_all(str(out), overrides={k: {"source": v} for k, v in sources.items()}, drop_train_overlap=True, log=lambda *_: None)
    return out, report


def findings(report, name, kind):
    return [f for f in report["datasets"][name]["findings"] if f["kind"] == kind]


def test_every_dataset_and_the_combined_benchmark_file_are_written(prepared):
    out, report = prepared
    for name in NAMES:
        assert os.path.exists(out / f"{name}.parquet")
    combined = pd.read_parquet(out / "benchmarks.parquet")
    assert sorted(set(combined["data_source"])) == sorted(BENCHMARKS)
    assert len(combined) == sum(report["datasets"][n]["rows"] for n in BENCHMARKS)
    assert json.load(open(out / "data_report.json"))["datasets"].keys() == report["datasets"].keys()


@pytest.mark.parametrize("name", NAMES)
def test_verl_rlhf_dataset_loads_the_parquet(prepared, name, tmp_path):
    from omegaconf import OmegaConf
    from verl.utils.dataset.rl_dataset import RLHFDataset

    from verl_dgpo.local.assets import make_tokenizer

    out, report = prepared
    tokenizer = make_tokenizer()
    config = OmegaConf.create(
        {"max_prompt_length": 2048, "filter_overlong_prompts": True, "truncation": "error", "cache_dir": str(tmp_path), "return_raw_chat": True}
    )
    dataset = RLHFDataset(data_files=[str(out / f"{name}.parquet")], tokenizer=tokenizer, config=config)
    assert len(dataset) == report["datasets"][name]["rows"] > 0
    item = dataset[0]
    frame = pd.read_parquet(out / f"{name}.parquet")
    assert item["data_source"] == frame["data_source"][0] == (TRAIN.name if name == "train" else name)
    assert item["reward_model"]["ground_truth"] == frame["reward_model"][0]["ground_truth"]
    chat = item["raw_prompt"]
    assert chat[0]["role"] == "user" and chat[0]["content"].endswith(INSTRUCTION)
    assert "\\boxed{}" in chat[0]["content"]


def test_keys_are_normalized_and_reported(prepared):
    out, report = prepared
    keys = {n: list(pd.read_parquet(out / f"{n}.parquet")["reward_model"].map(lambda r: r["ground_truth"])) for n in NAMES}
    assert keys["aime24"][0] == "24" and findings(report, "aime24", "normalized_key")  # "024"
    assert keys["amc23"] == ["27", "0.75"] and findings(report, "amc23", "normalized_key")  # 27.0 float
    assert keys["olympiadbench"] == ["2, -2", "\\frac{3}{2}"]  # list of $...$ keys
    assert keys["train"][-1] == "\\frac12"  # no answer column value: taken from the solution's \boxed{}


def test_known_wrong_key_is_corrected_and_reported(prepared):
    out, report = prepared
    aime = pd.read_parquet(out / "aime24.parquet")
    assert aime["reward_model"][1]["ground_truth"] == "385"
    [fix] = findings(report, "aime24", "known_wrong_key")
    assert "384" in fix["message"] and "385" in fix["message"] and fix["id"] == "71"


def test_conflicting_duplicate_keys_are_reported_not_dropped_in_a_benchmark(prepared):
    out, report = prepared
    [conflict] = findings(report, "aime25", "conflicting_keys")
    assert conflict["row"] == 2 and "'3' vs '2'" in conflict["message"]
    assert report["datasets"]["aime25"]["rows"] == 3


def test_training_duplicates_missing_and_benchmark_overlap_are_dropped_and_reported(prepared):
    _, report = prepared
    assert len(findings(report, "train", "duplicate")) == 1
    assert [f["id"] for f in findings(report, "train", "train_overlap")] == ["2"]  # "7 * 11" is in aime24
    assert findings(report, "math500", "missing")[0]["id"] == "test/algebra/2.json"
    assert report["datasets"]["train"]["rows"] == 3  # 5 rows - 1 duplicate - 1 overlap


@pytest.mark.parametrize("name, expected", [(n, s.expected_size) for n, s in BENCHMARKS.items()])
def test_size_against_the_published_benchmark_size_is_reported(prepared, name, expected):
    _, report = prepared
    [size] = findings(report, name, "size")
    assert f"has {expected}" in size["message"]


def test_ungradable_and_out_of_range_keys_are_reported():
    rows = [{"problem": "p1", "answer": "\\frac{1}{"}, {"problem": "p2", "answer": "1234"}, {"problem": "p3", "answer": "12"}]
    prepared = convert(rows, BENCHMARKS["aime25"], "test")
    kinds = [(f.kind, f.row) for f in prepared.findings]
    assert ("ungradable_key", 0) in kinds  # broken LaTeX: no response could ever match it
    assert ("not_an_integer", 0) in kinds and ("not_an_integer", 1) in kinds
    assert not any(row == 2 for _, row in kinds)
    assert len(prepared.rows) == 3  # reported, not dropped


def test_missing_columns_and_files_are_named():
    with pytest.raises(DataPrepError, match="no problem column.*'question'"):
        convert([{"text": "x", "answer": "1"}], BENCHMARKS["amc23"], "test")
    with pytest.raises(DataPrepError, match="does not exist"):
        load_records("/nonexistent/file.jsonl")
    with pytest.raises(DataPrepError, match="unknown dataset name.*'aime2024'"):
        prepare_all("/tmp/unused", only=["aime2024"])
