"""Where the training set and the six benchmarks come from, and how their columns are named.

Each :class:`SourceSpec` names a Hugging Face dataset id (with config and split) as the documented
default; every field can be overridden (``scripts/prepare_data.py --source aime24=path/or/id``), and a
local ``.json``/``.jsonl``/``.parquet`` file is accepted in place of an id. The column lists are tried in
order, so copies with ``problem`` or ``question`` (``answer`` or ``final_answer``) load alike.

Our choices (the paper names neither its training set nor its benchmark copies):
- training set: DeepScaleR-Preview (40k AIME<=2023 / AMC<=2022 / Omni-MATH / STILL problems with
  answers), the usual RL set for DeepSeek-R1-Distill-Qwen models, disjoint by year from AIME24/25 and AMC23;
- benchmarks: the copies most used in R1-distill RL papers, with the sizes the literature reports
  (30, 30, 40, 500, 272, 675).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
"""Appended to every problem (DeepSeek's recommended prompt for R1-distilled models; the paper's exact
wording is not published, only that the final answer goes in \\boxed{})."""


@dataclass(frozen=True)
class SourceSpec:
    """One dataset: its ``data_source`` name in the parquet, its table label and where to read it."""

    name: str
    label: str
    source: str
    config: Optional[str] = None
    split: str = "train"
    problem_keys: tuple[str, ...] = ("problem", "question", "Problem", "Question")
    answer_keys: tuple[str, ...] = ("answer", "final_answer", "Answer", "ground_truth")
    id_keys: tuple[str, ...] = ("id", "unique_id", "ID", "problem_idx")
    expected_size: Optional[int] = None
    integer_answers: bool = False
    drop_duplicates: bool = False


TRAIN = SourceSpec(
    name="deepscaler",
    label="DeepScaleR",
    source="agentica-org/DeepScaleR-Preview-Dataset",
    split="train",
    drop_duplicates=True,
)

BENCHMARKS: dict[str, SourceSpec] = {
    spec.name: spec
    for spec in (
        SourceSpec("aime24", "AIME24", "HuggingFaceH4/aime_2024", split="train", expected_size=30, integer_answers=True),
        SourceSpec("aime25", "AIME25", "math-ai/aime25", split="test", expected_size=30, integer_answers=True),
        SourceSpec("amc23", "AMC23", "math-ai/amc23", split="test", expected_size=40),
        SourceSpec("math500", "MATH500", "HuggingFaceH4/MATH-500", split="test", expected_size=500),
        SourceSpec("minerva", "Minerva", "math-ai/minervamath", split="test", expected_size=272),
        SourceSpec(
            "olympiadbench", "OlympiadBench", "Hothan/OlympiadBench", config="OE_TO_maths_en_COMP", split="train", expected_size=675
        ),
    )
}
"""The paper's six benchmarks in its table order."""

LABELS: dict[str, str] = {spec.name: spec.label for spec in (TRAIN, *BENCHMARKS.values())}
"""``data_source`` name -> table label (``"aime24"`` -> ``"AIME24"``)."""


@dataclass(frozen=True)
class KeyFix:
    """A wrong answer key known in some public copy: applied when the copy still has ``wrong``."""

    benchmark: str
    problem_contains: tuple[str, ...]
    wrong: str
    right: str
    reference: str


KNOWN_KEY_FIXES: tuple[KeyFix, ...] = (
    KeyFix(
        benchmark="aime24",
        problem_contains=("intersections of the graphs", "g(f("),
        wrong="384",
        right="385",
        reference="2024 AIME I Problem 12: the official answer is 385; some copies carry 384",
    ),
)
