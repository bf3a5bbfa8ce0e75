"""Turn math datasets into verl's RL parquet format, checking their answer keys on the way.

One row per problem::

    {"data_source": "aime24",
     "prompt": [{"role": "user", "content": "<problem>\\n<INSTRUCTION>"}],
     "ability": "math",
     "reward_model": {"style": "rule", "ground_truth": "<answer>"},
     "extra_info": {"split": "test", "index": 0, "id": "<id in the source>", "benchmark": "AIME24"}}

Answer-key checks (each finding is reported in ``data_report.json`` and on stdout, never silently passed):
``missing`` (no problem or no answer: row dropped), ``duplicate`` (same problem text twice; dropped only
where the spec says so, i.e. the training set), ``conflicting_keys`` (same problem, different answers),
``normalized_key`` (e.g. ``27.0`` -> ``27``, ``033`` -> ``33``, ``$x$`` -> ``x``), ``known_wrong_key``
(a key listed in :data:`KNOWN_KEY_FIXES`, corrected), ``not_an_integer`` (an AIME key outside 0..999),
``ungradable_key`` (the key does not grade as correct against itself: no answer could ever score),
``size`` (not the number of problems the benchmark has), and ``train_overlap`` (a training problem that
is also a benchmark problem; dropped from the training set with ``decontaminate``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Optional

from verl_dgpo.data.sources import BENCHMARKS, INSTRUCTION, KNOWN_KEY_FIXES, TRAIN, KeyFix, SourceSpec
from verl_dgpo.reward import compute_score, last_boxed_answer, normalize_answer

LOCAL_SUFFIXES = (".json", ".jsonl", ".parquet")
MAX_LOGGED_PER_KIND = 10
"""Findings printed per kind and dataset; ``data_report.json`` has all of them."""


class DataPrepError(ValueError):
    """A source that cannot be read or has none of the expected columns."""


@dataclass
class Finding:
    """One answer-key observation about one dataset."""

    kind: str
    dataset: str
    message: str
    row: Optional[int] = None
    id: Optional[str] = None


@dataclass
class Prepared:
    """The rows of one dataset in verl's format, and what the checks found."""

    spec: SourceSpec
    rows: list[dict] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def note(self, kind: str, message: str, row: Optional[int] = None, id: Optional[str] = None) -> None:
        self.findings.append(Finding(kind, self.spec.name, message, row, id))


def load_records(
    source: str, config: Optional[str] = None, split: Optional[str] = None, name: Optional[str] = None
) -> list[dict]:
    """Rows of a local ``.json``/``.jsonl``/``.parquet`` file, or of a Hugging Face dataset id.

    ``name`` (``train``, ``aime24``, ...) only words the error when the Hub cannot be reached.
    """
    if source.endswith(LOCAL_SUFFIXES) or os.path.exists(source):
        if not os.path.isfile(source):
            raise DataPrepError(f"local data file {source!r} does not exist (or is not a file)")
        if source.endswith(".parquet"):
            import pandas as pd

            return pd.read_parquet(source).to_dict(orient="records")
        with open(source, encoding="utf-8") as f:
            text = f.read()
        if source.endswith(".jsonl"):
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        data = json.loads(text)
        if isinstance(data, dict):
            lists = [v for v in data.values() if isinstance(v, list)]
            if len(lists) != 1:
                raise DataPrepError(f"{source}: a JSON object must hold exactly one list of rows, found {len(lists)}")
            data = lists[0]
        if not isinstance(data, list):
            raise DataPrepError(f"{source}: expected a JSON list of rows")
        return data
    try:
        import datasets
    except ImportError as err:  # pragma: no cover - datasets ships with verl
        raise DataPrepError(f"{source!r} is not a local file and the 'datasets' package is missing") from err
    try:
        return list(datasets.load_dataset(source, config, split=split or "train"))
    except Exception as err:  # noqa: BLE001 - offline, unknown id, bad config: one way out for all
        raise DataPrepError(unreachable_source_message(name or "NAME", source, config, split, err)) from None


def unreachable_source_message(name: str, source: str, config, split, err: BaseException) -> str:
    """One line: which source failed, why (first line of the error), and the two ways out."""
    reason = (str(err).strip().splitlines() or [""])[0][:200]
    where = source + (f" (config {config})" if config else "") + f" split={split or 'train'}"
    return (
        f"cannot load {name} from the Hugging Face Hub: {where}: {type(err).__name__}: {reason}. "
        f"Without network, pass a local copy with --source {name}=PATH (.json, .jsonl or .parquet), "
        f"or download it once where the Hub is reachable and rerun with HF_DATASETS_OFFLINE=1 to use the local cache"
    )


def _first(row: dict, keys: Iterable[str]) -> tuple[Optional[str], Any]:
    for key in keys:
        if key in row and row[key] is not None:
            return key, row[key]
    return None, None


def _as_text(value: Any) -> str:
    """A key as a string: list-like keys (OlympiadBench ``final_answer``) joined by ``", "``."""
    if hasattr(value, "tolist") and not isinstance(value, str):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return ", ".join(normalize_answer(v) for v in value if str(v).strip())
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return normalize_answer(value)


def _canonical_integer(answer: str) -> Optional[str]:
    match = re.fullmatch(r"\s*(-?\d+)(?:\.0+)?\s*", answer)
    return str(int(match.group(1))) if match else None


def problem_fingerprint(problem: str) -> str:
    """Whitespace- and case-insensitive form of a problem text, for duplicate and overlap checks."""
    return re.sub(r"\s+", " ", problem).strip().lower()


def _apply_key_fixes(prepared: Prepared, problem: str, answer: str, idx: int, rid: str, fixes: Iterable[KeyFix]) -> str:
    for fix in fixes:
        if fix.benchmark == prepared.spec.name and answer == fix.wrong and all(s in problem for s in fix.problem_contains):
            prepared.note("known_wrong_key", f"key {fix.wrong!r} corrected to {fix.right!r} ({fix.reference})", idx, rid)
            return fix.right
    return answer


def convert(
    records: list[dict],
    spec: SourceSpec,
    split: str,
    instruction: str = INSTRUCTION,
    key_fixes: Iterable[KeyFix] = KNOWN_KEY_FIXES,
    check_keys: bool = True,
) -> Prepared:
    """Rows of one dataset -> verl rows, with every answer-key finding recorded."""
    prepared = Prepared(spec)
    if records:
        columns = set().union(*(r.keys() for r in records[:50]))
        if not columns & set(spec.problem_keys):
            raise DataPrepError(f"{spec.name}: no problem column; looked for {list(spec.problem_keys)}, found {sorted(columns)}")
        if not columns & (set(spec.answer_keys) | {"solution"}):
            raise DataPrepError(f"{spec.name}: no answer column; looked for {list(spec.answer_keys)}, found {sorted(columns)}")
    from tqdm.auto import tqdm

    seen: dict[str, tuple[int, str]] = {}
    for idx, row in enumerate(tqdm(records, desc=f"check {spec.name}", disable=len(records) < 1000)):
        _, rid = _first(row, spec.id_keys)
        rid = str(rid if rid is not None else idx)
        _, problem = _first(row, spec.problem_keys)
        _, raw_answer = _first(row, spec.answer_keys)
        if raw_answer is None and row.get("solution") is not None:
            raw_answer = last_boxed_answer(str(row["solution"]))
            if raw_answer is not None:
                prepared.note("normalized_key", "key taken from the last \\boxed{} of the solution", idx, rid)
        problem = str(problem).strip() if problem is not None else ""
        answer = _as_text(raw_answer) if raw_answer is not None else ""
        if not problem or not answer:
            prepared.note("missing", f"row dropped: {'no problem' if not problem else 'no answer'}", idx, rid)
            continue
        if not isinstance(raw_answer, (list, tuple)) and not hasattr(raw_answer, "tolist") and answer != str(raw_answer).strip():
            prepared.note("normalized_key", f"key {str(raw_answer)!r} written as {answer!r}", idx, rid)
        if spec.integer_answers:
            integer = _canonical_integer(answer)
            if integer is None or not 0 <= int(integer) <= 999:
                prepared.note("not_an_integer", f"key {answer!r} is not an integer in 0..999", idx, rid)
            elif integer != answer:
                prepared.note("normalized_key", f"key {answer!r} written as {integer!r}", idx, rid)
                answer = integer
        answer = _apply_key_fixes(prepared, problem, answer, idx, rid, key_fixes)

        fingerprint = problem_fingerprint(problem)
        if fingerprint in seen:
            first_idx, first_answer = seen[fingerprint]
            if compute_score(spec.name, "\\boxed{" + answer + "}", first_answer) < 1.0:
                prepared.note("conflicting_keys", f"same problem as row {first_idx} with key {answer!r} vs {first_answer!r}", idx, rid)
            prepared.note("duplicate", f"same problem as row {first_idx}" + ("; dropped" if spec.drop_duplicates else ""), idx, rid)
            if spec.drop_duplicates:
                continue
        else:
            seen[fingerprint] = (idx, answer)
        if check_keys and compute_score(spec.name, "\\boxed{" + answer + "}", answer) < 1.0:
            prepared.note("ungradable_key", f"key {answer!r} does not grade as equal to itself", idx, rid)
        prepared.rows.append(
            {
                "data_source": spec.name,
                "prompt": [{"role": "user", "content": f"{problem}\n{instruction}" if instruction else problem}],
                "ability": "math",
                "reward_model": {"style": "rule", "ground_truth": answer},
                "extra_info": {
                    "split": split,
                    "index": len(prepared.rows),
                    "id": rid,
                    "benchmark": spec.label,
                    "problem": problem,
                },
            }
        )
    if spec.expected_size is not None and len(prepared.rows) != spec.expected_size:
        prepared.note("size", f"{len(prepared.rows)} problems, the benchmark has {spec.expected_size}")
    return prepared


def decontaminate(train: Prepared, benchmarks: Iterable[Prepared], drop: bool) -> None:
    """Record (and with ``drop`` remove) training problems whose text is also a benchmark problem."""
    test_prints = {}
    for bench in benchmarks:
        for row in bench.rows:
            test_prints.setdefault(problem_fingerprint(_problem_of(row)), bench.spec.name)
    kept = []
    for row in train.rows:
        hit = test_prints.get(problem_fingerprint(_problem_of(row)))
        if hit is None:
            kept.append(row)
            continue
        train.note("train_overlap", f"training problem also in {hit}" + ("; dropped" if drop else ""), id=row["extra_info"]["id"])
        if not drop:
            kept.append(row)
    for index, row in enumerate(kept):
        row["extra_info"]["index"] = index
    train.rows = kept


def _problem_of(row: dict) -> str:
    return row["extra_info"]["problem"]


def write_parquet(rows: list[dict], path: str) -> None:
    """Write verl rows to ``path`` (directories created)."""
    import pandas as pd

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    pd.DataFrame(rows).to_parquet(path, index=False)


def prepare_all(
    out_dir: str,
    only: Optional[Iterable[str]] = None,
    overrides: Optional[dict[str, dict]] = None,
    instruction: str = INSTRUCTION,
    use_known_fixes: bool = True,
    check_keys: bool = True,
    drop_train_overlap: bool = False,
    max_train: Optional[int] = None,
    log=print,
) -> dict:
    """Prepare the training set and the benchmarks into ``out_dir``; return (and write) the report.

    Writes ``train.parquet``, one ``<name>.parquet`` per benchmark, ``benchmarks.parquet`` (all chosen
    benchmarks, for validation during training and one-shot evaluation) and ``data_report.json``.
    ``overrides`` maps a dataset name (``train`` or a benchmark name) to ``{source, config, split}``.
    """
    overrides = overrides or {}
    specs = {"train": TRAIN, **BENCHMARKS}
    wanted = list(specs) if only is None else list(only)
    unknown = [name for name in [*wanted, *overrides] if name not in specs]
    if unknown:
        raise DataPrepError(f"unknown dataset name(s) {unknown}; allowed: {list(specs)}")
    fixes = KNOWN_KEY_FIXES if use_known_fixes else ()
    results: dict[str, Prepared] = {}
    for name in wanted:
        change = dict(overrides.get(name, {}))
        if "source" in change and "config" not in change:
            change["config"] = None  # the default config belongs to the default source
        spec = dataclasses.replace(specs[name], **change)
        log(f"[prepare] {name}: reading {spec.source}" + (f" ({spec.config})" if spec.config else "") + f" split={spec.split}")
        records = load_records(spec.source, spec.config, spec.split, name=name)
        if name == "train" and max_train is not None:
            records = records[:max_train]
        results[name] = convert(records, spec, "train" if name == "train" else "test", instruction, fixes, check_keys)
    benches = [p for n, p in results.items() if n != "train"]
    if "train" in results and benches:
        decontaminate(results["train"], benches, drop_train_overlap)

    os.makedirs(out_dir, exist_ok=True)
    report = {"out_dir": os.path.abspath(out_dir), "instruction": instruction, "datasets": {}}
    for name, prepared in results.items():
        path = os.path.join(out_dir, f"{name}.parquet")
        write_parquet(prepared.rows, path)
        counts: dict[str, int] = {}
        for finding in prepared.findings:
            counts[finding.kind] = counts.get(finding.kind, 0) + 1
        report["datasets"][name] = {
            "data_source": prepared.spec.name,
            "source": prepared.spec.source,
            "config": prepared.spec.config,
            "split": prepared.spec.split,
            "rows": len(prepared.rows),
            "path": path,
            "finding_counts": counts,
            "findings": [asdict(f) for f in prepared.findings],
        }
        log(f"[prepare] {name}: {len(prepared.rows)} rows -> {path}" + (f"; findings {counts}" if counts else ""))
        shown: dict[str, int] = {}
        for finding in prepared.findings:
            shown[finding.kind] = shown.get(finding.kind, 0) + 1
            if shown[finding.kind] <= MAX_LOGGED_PER_KIND:
                where = f" (row {finding.row}, id {finding.id})" if finding.row is not None else ""
                log(f"  - {finding.kind}: {finding.message}{where}")
    if benches:
        path = os.path.join(out_dir, "benchmarks.parquet")
        write_parquet([row for p in benches for row in p.rows], path)
        report["benchmarks_path"] = path
    with open(os.path.join(out_dir, "data_report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, default=str)
    return report
