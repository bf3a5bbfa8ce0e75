"""Data preparation: the training set and the paper's six benchmarks in verl's parquet format.

See :mod:`verl_dgpo.data.sources` (what is read, from where) and :mod:`verl_dgpo.data.prepare` (how it
is converted and checked). CLI: ``python scripts/prepare_data.py --out data/``.
"""

from verl_dgpo.data.prepare import DataPrepError, convert, load_records, prepare_all
from verl_dgpo.data.sources import BENCHMARKS, INSTRUCTION, LABELS, TRAIN, SourceSpec

__all__ = ["BENCHMARKS", "INSTRUCTION", "LABELS", "TRAIN", "SourceSpec", "DataPrepError", "convert", "load_records", "prepare_all"]
