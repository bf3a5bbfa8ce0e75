"""The local preset's copy-digits task: rows in verl's RL format and an exact 0/1 score."""

import pandas as pd
import pytest

from verl_dgpo.local.task import DATA_SOURCE, compute_score, make_rows, score_copy, write_task


@pytest.mark.parametrize(
    "response, target, expected",
    [
        ("7", "7", 1.0),
        ("  7<|im_end|>", "7", 1.0),
        ("\n381 and more", "381", 1.0),
        ("38", "381", 0.0),
        ("x7", "7", 0.0),
        ("", "7", 0.0),
        ("1 7", "7", 0.0),
    ],
)
def test_score_is_one_exactly_when_the_response_starts_with_the_target(response, target, expected):
    assert score_copy(response, target) == expected
    assert compute_score(DATA_SOURCE, response, target, extra_info={"index": 0}) == expected


@pytest.mark.parametrize("digits, alphabet", [(1, "7"), (1, "37"), (6, "0123456789")])
def test_rows_copy_their_ground_truth_into_the_prompt(digits, alphabet):
    rows = make_rows(50, digits=digits, alphabet=alphabet, seed=3)
    for index, row in enumerate(rows):
        target = row["reward_model"]["ground_truth"]
        assert len(target) == digits and set(target) <= set(alphabet)
        assert row["prompt"] == [{"role": "user", "content": f"Copy the digits: {target}"}]
        assert row["data_source"] == DATA_SOURCE and row["extra_info"] == {"split": "train", "index": index}
    if len(alphabet) > 1:
        assert len({r["reward_model"]["ground_truth"] for r in rows}) > 1


def test_rows_are_reproducible_per_seed_and_split():
    assert make_rows(20, digits=6, seed=1) == make_rows(20, digits=6, seed=1)
    assert make_rows(20, digits=6, seed=1) != make_rows(20, digits=6, seed=2)
    assert make_rows(20, digits=6, seed=1, split="val") != make_rows(20, digits=6, seed=1)


@pytest.mark.parametrize("bad", [{"digits": 0}, {"alphabet": ""}, {"alphabet": "7a"}])
def test_bad_task_settings_name_the_key(bad):
    with pytest.raises(ValueError, match="local_cpu.task." + next(iter(bad))):
        make_rows(4, **bad)


def test_parquet_files_have_verls_columns(tmp_path):
    train, val = write_task(str(tmp_path), train_size=12, val_size=5, digits=2, seed=0)
    for path, size in ((train, 12), (val, 5)):
        frame = pd.read_parquet(path)
        assert len(frame) == size
        assert {"prompt", "data_source", "reward_model", "extra_info"} <= set(frame.columns)
        first = frame.iloc[0]
        assert first["prompt"][0]["content"].endswith(first["reward_model"]["ground_truth"])
