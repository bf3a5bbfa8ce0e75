"""The paper's result tables with our numbers beside the published ones.

Inputs: evaluator summaries (``summary.json`` of :mod:`verl_dgpo.eval.runner`), each tagged with a
method and a model size, and the published figures (``paper_results.csv``, a copy of
``shared/paper/paper_results.csv``: ``model_size,method,benchmark,metric,value`` in percent).

For every model size we have results for, and each metric (Avg@32, Pass@32), one table: a row per method
(the paper's six in its order, then any others), a column per benchmark and ``Average``; a cell reads
``ours / paper (ours - paper)``, or ``— / paper`` / ``ours / —`` where one side is missing. Our
``Average`` is the mean over the benchmarks our summary has; if that is not all six it carries a ``*``.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from typing import Iterable, Optional

BENCHMARKS = ("AIME24", "AIME25", "AMC23", "MATH500", "Minerva", "OlympiadBench")
COLUMNS = (*BENCHMARKS, "Average")
PAPER_METHODS = ("GRPO", "CISPO", "GPPO", "CE-GPPO", "ASPO", "DGPO")
METRICS = ("Avg@32", "Pass@32")
PAPER_CSV = os.path.join(os.path.dirname(__file__), "paper_results.csv")
MISSING = "—"


@dataclass(frozen=True)
class Cell:
    ours: Optional[float]
    paper: Optional[float]
    partial: bool = False  # our Average covers fewer than the six benchmarks

    @property
    def diff(self) -> Optional[float]:
        return None if self.ours is None or self.paper is None else self.ours - self.paper

    def text(self) -> str:
        ours = MISSING if self.ours is None else f"{self.ours:.1f}" + ("*" if self.partial else "")
        paper = MISSING if self.paper is None else f"{self.paper:.1f}"
        return f"{ours} / {paper}" + ("" if self.diff is None else f" ({self.diff:+.1f})")


def load_paper(path: str = PAPER_CSV) -> dict[tuple[str, str, str, str], float]:
    """``{(size, method, benchmark, metric): value}`` from the published-results CSV."""
    with open(path, newline="", encoding="utf-8") as f:
        return {(r["model_size"], r["method"], r["benchmark"], r["metric"]): float(r["value"]) for r in csv.DictReader(f)}


def our_metric_key(metric: str, k: int) -> str:
    """Summary key for a paper metric: ``Avg@32`` -> ``avg@k``, ``Pass@32`` -> ``pass@k``."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    return f"{metric.split('@')[0].lower()}@{k}"


def our_values(summary: dict, metric: str) -> dict[str, tuple[float, bool]]:
    """``{column: (value, partial)}`` of one summary for one paper metric."""
    key = our_metric_key(metric, int(summary["k"]))
    values = {name: (float(m[key]), False) for name, m in summary["benchmarks"].items() if name in BENCHMARKS and key in m}
    if values:
        covered = [values[b][0] for b in BENCHMARKS if b in values]
        values["Average"] = (sum(covered) / len(covered), len(covered) < len(BENCHMARKS))
    return values


def build_table(
    size: str, metric: str, ours: dict[tuple[str, str], dict], paper: dict[tuple[str, str, str, str], float]
) -> tuple[list[str], list[list[Cell]]]:
    """Rows (method names) and cells for one (size, metric); ``ours`` maps (method, size) -> summary."""
    extra = [m for (m, s) in ours if s == size and m not in PAPER_METHODS]
    methods = [m for m in PAPER_METHODS if (m, size) in ours or any((size, m, c, metric) in paper for c in COLUMNS)]
    methods += sorted(set(extra))
    rows = []
    for method in methods:
        mine = our_values(ours[(method, size)], metric) if (method, size) in ours else {}
        rows.append(
            [
                Cell(mine.get(col, (None, False))[0], paper.get((size, method, col, metric)), mine.get(col, (None, False))[1])
                for col in COLUMNS
            ]
        )
    return methods, rows


def sizes_of(ours: dict[tuple[str, str], dict]) -> list[str]:
    order = {"1.5B": 0, "7B": 1, "14B": 2}
    return sorted({s for _, s in ours}, key=lambda s: (order.get(s, 99), s))


def _ks(ours: dict, size: str) -> list[int]:
    return sorted({int(v["k"]) for (m, s), v in ours.items() if s == size})


def k_note(ours: dict, size: str) -> str:
    """`` (ours at k=4)`` where our summaries for ``size`` were not sampled at the paper's k=32, else ``""``."""
    ks = _ks(ours, size)
    return "" if ks == [32] else f" (ours at k={', '.join(map(str, ks))})"


def markdown(ours: dict[tuple[str, str], dict], paper: dict, title: Optional[str] = None) -> str:
    """All tables as GitHub markdown; ``title`` (e.g. a scale warning) goes first, in bold."""
    out = [f"**{title}**\n"] if title else []
    for size in sizes_of(ours):
        for metric in METRICS:
            methods, rows = build_table(size, metric, ours, paper)
            note = k_note(ours, size)
            out.append(f"### DeepSeek-R1-Distill-Qwen-{size}: {metric}{note}, ours / paper (difference)\n")
            out.append("| Method | " + " | ".join(COLUMNS) + " |")
            out.append("|---|" + "---|" * len(COLUMNS))
            for method, cells in zip(methods, rows):
                out.append(f"| {method} | " + " | ".join(c.text() for c in cells) + " |")
            out.append("")
    if any(c.partial for size in sizes_of(ours) for m in METRICS for row in build_table(size, m, ours, paper)[1] for c in row):
        out.append("\\* our Average over fewer than the six benchmarks.\n")
    return "\n".join(out)


def _latex_escape(text: str) -> str:
    return text.replace("\\", "\\textbackslash{}").replace("%", "\\%").replace("_", "\\_").replace("&", "\\&").replace("#", "\\#")


def latex(ours: dict[tuple[str, str], dict], paper: dict, title: Optional[str] = None) -> str:
    """All tables as LaTeX ``table`` environments (booktabs); ``title`` starts every caption."""
    out = []
    lead = f"{_latex_escape(title)} " if title else ""
    for size in sizes_of(ours):
        for metric in METRICS:
            methods, rows = build_table(size, metric, ours, paper)
            note = _latex_escape(k_note(ours, size))
            out.append("\\begin{table}[t]\n\\centering\\small")
            out.append(f"\\caption{{{lead}DeepSeek-R1-Distill-Qwen-{size}, {metric}{note}: ours / paper (difference).}}")
            out.append("\\begin{tabular}{l" + "c" * len(COLUMNS) + "}\n\\toprule")
            out.append("Method & " + " & ".join(COLUMNS) + " \\\\\n\\midrule")
            for method, cells in zip(methods, rows):
                text = [c.text().replace(MISSING, "--").replace("*", "$^*$") for c in cells]
                out.append(_latex_escape(method) + " & " + " & ".join(text) + " \\\\")
            out.append("\\bottomrule\n\\end{tabular}\n\\end{table}\n")
    return "\n".join(out)


def bar_chart(ours: dict[tuple[str, str], dict], paper: dict, path: str) -> str:
    """PNG of the Average per method: ours and the paper's, Avg@32 and Pass@32, one panel per size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sizes_of(ours)
    fig, axes = plt.subplots(1, len(sizes), figsize=(7.5 * len(sizes), 4), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        methods = build_table(size, "Avg@32", ours, paper)[0]
        width = 0.2
        for offset, (metric, who) in enumerate([(m, w) for m in METRICS for w in ("ours", "paper")]):
            cells = build_table(size, metric, ours, paper)[1]
            values = [getattr(row[-1], who) for row in cells]
            xs = [i + (offset - 1.5) * width for i in range(len(methods))]
            ax.bar(xs, [v if v is not None else 0.0 for v in values], width, label=f"{metric} {who}", hatch="" if who == "ours" else "//")
        ax.set_xticks(range(len(methods)), methods, rotation=30)
        ax.set_title(f"DeepSeek-R1-Distill-Qwen-{size}: Average of the six benchmarks")
        ax.set_ylabel("percent")
        ax.set_ylim(0, 100)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def parse_summary_args(items: Iterable[str]) -> dict[tuple[str, str], dict]:
    """``["DGPO:1.5B=runs/x/summary.json", ...]`` -> ``{("DGPO", "1.5B"): summary}``."""
    import json

    ours = {}
    for item in items:
        tag, sep, path = item.partition("=")
        method, colon, size = tag.partition(":")
        if not sep or not colon or not method or not size or not path:
            raise ValueError(f"--summary expects METHOD:SIZE=PATH (e.g. DGPO:1.5B=runs/dgpo/summary.json), got {item!r}")
        if os.path.isdir(path):
            path = os.path.join(path, "summary.json")
        with open(path, encoding="utf-8") as f:
            summary = json.load(f)
        for key in ("k", "benchmarks"):
            if key not in summary:
                raise ValueError(f"{path}: not an evaluator summary (no {key!r})")
        ours[(method, size)] = summary
    return ours
