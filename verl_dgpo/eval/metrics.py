"""Avg@k and the unbiased Pass@k of Chen et al. (2021), per benchmark and averaged over benchmarks.

For one problem with ``n`` graded samples of which ``c`` are correct:

* Avg@n  = c / n                                   (mean accuracy over the samples)
* Pass@k = 1 - C(n-c, k) / C(n, k),  1 <= k <= n   (probability that a random k-subset holds a correct one)

A benchmark's figure is the mean over its problems; the paper's "Average" is the unweighted mean of the
benchmarks' figures. Pure Python: no torch, no verl.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Mapping, Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased Pass@k estimate ``1 - C(n-c, k) / C(n, k)`` for ``c`` correct out of ``n`` samples.

    Computed as the product ``prod_{i=n-c+1}^{n} (1 - k / i)`` (Chen et al. 2021), which equals the
    closed form without forming large binomials. Raises ``ValueError`` unless ``0 <= c <= n`` and
    ``1 <= k <= n``.
    """
    for name, value in (("n", n), ("c", c), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"pass_at_k: {name} must be an int, got {value!r}")
    if n < 1 or not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs n >= 1, 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    miss = 1.0
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def report_ks(n: int) -> list[int]:
    """The k at which Pass@k is reported for ``n`` samples: 1, 2, 4, ... below ``n``, then ``n`` itself."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return ks + [n]


def problem_counts(scores: Sequence[float]) -> tuple[int, int]:
    """``(n, c)``: number of samples and number of correct ones (score > 0.5) of one problem."""
    return len(scores), sum(1 for s in scores if float(s) > 0.5)


def benchmark_metrics(per_problem_scores: Iterable[Sequence[float]], k: int | None = None) -> dict[str, float]:
    """``{"problems", "samples", "avg@k", "pass@j" for j in report_ks(k)}`` in percent over the problems.

    ``k`` defaults to the smallest number of samples any problem has; every problem must have at least k.
    Avg@k averages each problem's accuracy over its samples, then over problems.
    """
    counts = [problem_counts(s) for s in per_problem_scores]
    if not counts:
        raise ValueError("benchmark_metrics: no problems")
    k = min(n for n, _ in counts) if k is None else k
    if any(n < k for n, _ in counts) or k < 1:
        raise ValueError(f"benchmark_metrics: every problem needs at least k={k} samples, got {sorted({n for n, _ in counts})}")
    out: dict[str, float] = {"problems": len(counts), "samples": sum(n for n, _ in counts)}
    out[f"avg@{k}"] = 100.0 * sum(c / n for n, c in counts) / len(counts)
    for j in report_ks(k):
        out[f"pass@{j}"] = 100.0 * sum(pass_at_k(n, c, j) for n, c in counts) / len(counts)
    return out


def group_scores(data_sources: Sequence[str], uids: Sequence, scores: Sequence[float]) -> dict[str, dict]:
    """``{data_source: {uid: [scores...]}}``, keeping first-seen order."""
    grouped: dict[str, dict] = defaultdict(lambda: defaultdict(list))
    for source, uid, score in zip(data_sources, uids, scores, strict=True):
        grouped[str(source)][uid].append(float(score))
    return grouped


def summarize(grouped: Mapping[str, Mapping[object, Sequence[float]]], k: int | None = None) -> dict:
    """Per-benchmark metrics and their unweighted mean over benchmarks (key ``"average"``)."""
    per_benchmark = {name: benchmark_metrics(problems.values(), k) for name, problems in grouped.items()}
    result = {"benchmarks": per_benchmark}
    if per_benchmark:
        shared = set.intersection(*(set(m) for m in per_benchmark.values())) - {"problems", "samples"}
        result["average"] = {
            key: sum(m[key] for m in per_benchmark.values()) / len(per_benchmark) for key in sorted(shared)
        }
    return result
