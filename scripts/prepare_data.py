#!/usr/bin/env python
"""Prepare the training set and AIME24/AIME25/AMC23/MATH500/Minerva/OlympiadBench as verl parquet files.

    python scripts/prepare_data.py --out data/
    python scripts/prepare_data.py --out data/ --only aime24,math500 --source aime24=my_aime.jsonl
    python scripts/prepare_data.py --out data/ --source train=BytedTsinghua-SIA/DAPO-Math-17k --split train=train

Defaults (Hugging Face ids, configs, splits) are listed by ``--list``. Answer-key findings go to stdout
and to ``<out>/data_report.json``.
"""

import argparse
import sys

from verl_dgpo.data.prepare import DataPrepError, prepare_all
from verl_dgpo.data.sources import BENCHMARKS, INSTRUCTION, TRAIN


def _pairs(values, flag):
    out = {}
    for value in values or []:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise SystemExit(f"{flag} expects NAME=VALUE (NAME one of {['train', *BENCHMARKS]}), got {value!r}")
        out[name] = rest
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=False, help="output directory")
    parser.add_argument("--only", help="comma-separated subset of: train," + ",".join(BENCHMARKS))
    parser.add_argument("--source", action="append", metavar="NAME=ID_OR_FILE", help="HF dataset id or local json/jsonl/parquet")
    parser.add_argument("--config", action="append", metavar="NAME=CONFIG", help="HF dataset config")
    parser.add_argument("--split", action="append", metavar="NAME=SPLIT", help="HF dataset split")
    parser.add_argument("--instruction", default=INSTRUCTION, help="text appended to each problem (default: %(default)r)")
    parser.add_argument("--no-known-fixes", action="store_true", help="keep known wrong answer keys as they are (still reported)")
    parser.add_argument("--no-check-keys", action="store_true", help="skip grading each key against itself (faster)")
    parser.add_argument("--decontaminate", action="store_true", help="drop training problems that are also benchmark problems")
    parser.add_argument("--max-train", type=int, help="keep only the first N training rows")
    parser.add_argument("--list", action="store_true", help="print the default sources and exit")
    args = parser.parse_args(argv)

    if args.list:
        for name, spec in {"train": TRAIN, **BENCHMARKS}.items():
            print(f"{name:14s} data_source={spec.name:14s} {spec.source} config={spec.config} split={spec.split} size={spec.expected_size}")
        return 0
    if not args.out:
        parser.error("--out is required")
    overrides: dict = {}
    for flag, key in (("--source", "source"), ("--config", "config"), ("--split", "split")):
        for name, value in _pairs(getattr(args, key), flag).items():
            overrides.setdefault(name, {})[key] = value
    only = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else None
    try:
        prepare_all(
            args.out,
            only=only,
            overrides=overrides,
            instruction=args.instruction,
            use_known_fixes=not args.no_known_fixes,
            check_keys=not args.no_check_keys,
            drop_train_overlap=args.decontaminate,
            max_train=args.max_train,
        )
    except DataPrepError as err:
        print(f"prepare_data: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
