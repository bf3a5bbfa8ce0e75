"""GSM8K in verl's parquet format, for the Qwen2.5-0.5B example.

    python examples/dgpo_trainer/prepare_gsm8k.py --out ~/data/gsm8k            # from the HF hub (openai/gsm8k)
    python examples/dgpo_trainer/prepare_gsm8k.py --source train.jsonl --out DIR  # from local files

Rows get ``data_source="openai/gsm8k"``, so verl's built-in GSM8K scorer rewards them (1.0 when the
number after "####" in the response equals the reference).
"""

from __future__ import annotations

import argparse
import os
import re

import pandas as pd

INSTRUCTION = 'Let\'s think step by step and output the final answer after "####".'


def final_answer(solution: str) -> str:
    """The reference number after GSM8K's '####' marker, without thousands separators."""
    match = re.search(r"####\s*(-?[0-9.,]+)", solution)
    if match is None:
        raise ValueError(f"no '#### <number>' in GSM8K solution: {solution[-80:]!r}")
    return match.group(1).replace(",", "")


def to_verl_rows(records, split: str) -> list[dict]:
    return [
        {
            "data_source": "openai/gsm8k",
            "prompt": [{"role": "user", "content": f"{rec['question']} {INSTRUCTION}"}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": final_answer(rec["answer"])},
            "extra_info": {"split": split, "index": i},
        }
        for i, rec in enumerate(records)
    ]


def load_split(source: str | None, split: str) -> list[dict]:
    if source is None:
        import datasets

        return list(datasets.load_dataset("openai/gsm8k", "main", split=split))
    if source.endswith(".parquet"):
        return pd.read_parquet(source).to_dict("records")
    return pd.read_json(source, lines=source.endswith(".jsonl")).to_dict("records")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder for train.parquet and test.parquet")
    parser.add_argument("--source", help="local train file (json/jsonl/parquet) instead of the HF hub")
    parser.add_argument("--test-source", help="local test file; default: the HF test split, or --source")
    args = parser.parse_args(argv)
    out = os.path.expanduser(args.out)
    os.makedirs(out, exist_ok=True)
    for split, source in [("train", args.source), ("test", args.test_source or args.source)]:
        rows = to_verl_rows(load_split(source, split), split)
        pd.DataFrame(rows).to_parquet(os.path.join(out, f"{split}.parquet"))
        print(f"{split}: {len(rows)} rows -> {os.path.join(out, split + '.parquet')}")


if __name__ == "__main__":
    main()
