"""The comparison's report, computed from the per-run CSVs only: a markdown table and a PNG of curves.

Per method, over its seeds (each statistic below is documented in the table's legend too):

- **final reward**: per seed, the mean of ``reward`` over the last ``final_window`` steps; then mean ± std
  (population std, ``ddof=0``) over seeds;
- **steps to threshold**: per seed, the first step whose trailing mean ``reward`` over ``threshold_window``
  steps is >= ``threshold`` (one step's batch reward of 64 samples is noisy); reported as the mean over the
  seeds that reached it, with ``k/N`` seeds that did (``-`` if none);
- **entropy collapse**: the number of seeds whose mean ``entropy`` over the last ``final_window`` steps is
  below ``collapse_fraction`` x their step-1 entropy;
- **max ratio**: the largest ``ratio_max`` of any step of any seed (the probe's max of π/π_old over the
  step's updates);
- **out-of-region**: mean ``out_frac`` over all steps and seeds (fraction of tokens with r outside
  [1-ε_low, 1+ε_high] at update time);
- **step time vs reference**: median ``step_time`` of the method over all steps but the first of each
  seed (step 1 carries the rollout warm-up), divided by the same median of the reference method.

The curves are, per method, the mean over seeds at each step with a band from the seeds' min to max.
"""

from __future__ import annotations

import math
import os
import statistics
from dataclasses import dataclass
from typing import Optional

from verl_dgpo.study.runs import REFERENCE_METHOD, csv_path, read_csv


@dataclass(frozen=True)
class ReportSettings:
    threshold: float = 0.65
    threshold_window: int = 3
    final_window: int = 5
    collapse_fraction: float = 0.1


@dataclass
class MethodSummary:
    method: str
    seeds: list[int]
    final_rewards: list[float]
    steps_to_threshold: list[Optional[int]]
    collapsed: int
    max_ratio: float
    out_frac_mean: float
    median_step_time: float
    first_reward_mean: float
    final_entropy_mean: float
    step_time_ratio: Optional[float] = None

    @property
    def final_reward_mean(self) -> float:
        return statistics.fmean(self.final_rewards)

    @property
    def final_reward_std(self) -> float:
        return statistics.pstdev(self.final_rewards) if len(self.final_rewards) > 1 else 0.0

    @property
    def reached(self) -> list[int]:
        return [s for s in self.steps_to_threshold if s is not None]


def load_runs(out_dir: str, methods: list[str], seeds: list[int]) -> dict[str, dict[int, list[dict]]]:
    """``{method: {seed: rows}}`` for every run whose CSV exists (missing runs are left out)."""
    runs: dict[str, dict[int, list[dict]]] = {}
    for method in methods:
        for seed in seeds:
            path = csv_path(out_dir, method, seed)
            if os.path.exists(path):
                runs.setdefault(method, {})[seed] = read_csv(path)
    return runs


def _finite(values):
    return [v for v in values if not math.isnan(v)]


def first_step_reaching(rows: list[dict], threshold: float, window: int) -> Optional[int]:
    """The first step whose trailing mean reward over ``window`` steps (fewer at the start) is >= ``threshold``."""
    for i, row in enumerate(rows):
        recent = [r["reward"] for r in rows[max(0, i - window + 1) : i + 1]]
        if statistics.fmean(recent) >= threshold:
            return row["step"]
    return None


def summarize(method: str, by_seed: dict[int, list[dict]], settings: ReportSettings) -> MethodSummary:
    w = settings.final_window
    final_rewards, to_threshold, collapsed, step_times = [], [], 0, []
    for seed, rows in sorted(by_seed.items()):
        rewards = [r["reward"] for r in rows]
        entropies = [r["entropy"] for r in rows]
        final_rewards.append(statistics.fmean(rewards[-w:]))
        to_threshold.append(first_step_reaching(rows, settings.threshold, settings.threshold_window))
        if statistics.fmean(entropies[-w:]) < settings.collapse_fraction * entropies[0]:
            collapsed += 1
        step_times.extend(r["step_time"] for r in rows[1:] or rows)
    all_rows = [r for rows in by_seed.values() for r in rows]
    ratio_max = _finite([r["ratio_max"] for r in all_rows])
    out_frac = _finite([r["out_frac"] for r in all_rows])
    return MethodSummary(
        method=method,
        seeds=sorted(by_seed),
        final_rewards=final_rewards,
        steps_to_threshold=to_threshold,
        collapsed=collapsed,
        max_ratio=max(ratio_max) if ratio_max else math.nan,
        out_frac_mean=statistics.fmean(out_frac) if out_frac else math.nan,
        median_step_time=statistics.median(step_times),
        first_reward_mean=statistics.fmean(rows[0]["reward"] for rows in by_seed.values()),
        final_entropy_mean=statistics.fmean(statistics.fmean([r["entropy"] for r in rows][-w:]) for rows in by_seed.values()),
    )


def summarize_all(runs: dict[str, dict[int, list[dict]]], settings: ReportSettings,
                  reference: str = REFERENCE_METHOD) -> list[MethodSummary]:
    summaries = [summarize(m, by_seed, settings) for m, by_seed in runs.items() if by_seed]
    ref = next((s for s in summaries if s.method == reference), None)
    for s in summaries:
        s.step_time_ratio = s.median_step_time / ref.median_step_time if ref is not None else None
    return summaries


def markdown_table(summaries: list[MethodSummary], settings: ReportSettings, reference: str = REFERENCE_METHOD) -> str:
    w = settings.final_window
    header = (
        f"| method | seeds | reward step 1 | final reward (last {w} steps, mean ± std) "
        f"| steps to reward ≥ {settings.threshold:g} ({settings.threshold_window}-step mean) "
        f"| seeds with entropy collapse | final entropy | max ratio π/π_old | out-of-region frac | step time vs {reference} |"
    )
    lines = [header, "|" + "---|" * 10]
    for s in summaries:
        reached = s.reached
        steps = f"{statistics.fmean(reached):.1f} ({len(reached)}/{len(s.seeds)})" if reached else f"- (0/{len(s.seeds)})"
        ratio = f"{s.step_time_ratio:.2f}" if s.step_time_ratio is not None else "-"
        lines.append(
            f"| {s.method} | {len(s.seeds)} | {s.first_reward_mean:.3f} | {s.final_reward_mean:.3f} ± {s.final_reward_std:.3f} "
            f"| {steps} | {s.collapsed}/{len(s.seeds)} | {s.final_entropy_mean:.3f} | {s.max_ratio:.3g} "
            f"| {s.out_frac_mean:.4f} | {ratio} |"
        )
    return "\n".join(lines)


DIAGNOSTIC_COLUMNS = (
    ("ln_frac", "LN frac"), ("hp_frac", "HP frac"), ("lp_frac", "LP frac"), ("hn_frac", "HN frac"),
    ("out_frac", "out-of-region frac"), ("ratio_max", "per-step max ratio (median)"), ("grad_norm", "grad norm"),
    ("entropy", "entropy"),
)


def diagnostics_table(runs: dict[str, dict[int, list[dict]]]) -> str:
    """Per method, over all steps and seeds: mean of each region fraction, grad norm and entropy, and the
    median of the per-step max ratio (where the methods differ in how far the policy moves per step)."""
    head = "| method | " + " | ".join(label for _, label in DIAGNOSTIC_COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(DIAGNOSTIC_COLUMNS) + 1)]
    for method, by_seed in runs.items():
        cells = []
        for column, _ in DIAGNOSTIC_COLUMNS:
            values = _finite([r[column] for rows in by_seed.values() for r in rows])
            value = statistics.median(values) if column == "ratio_max" else statistics.fmean(values)
            cells.append(f"{value:.3g}" if column == "ratio_max" else f"{value:.4f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def legend(settings: ReportSettings, reference: str = REFERENCE_METHOD) -> str:
    w = settings.final_window
    return "\n".join([
        f"- final reward: per seed the mean reward (critic/score/mean) of the last {w} steps; mean ± population std over seeds.",
        f"- steps to reward ≥ {settings.threshold:g}: first step whose mean reward over the last {settings.threshold_window} steps "
        "reaches it; mean over the seeds that did (k/N reached).",
        f"- entropy collapse: mean entropy (actor/entropy) of the last {w} steps < {settings.collapse_fraction:g} × step-1 entropy.",
        "- max ratio: largest π/π_old of any token in any update of any step and seed (study probe, exact max per step).",
        "- out-of-region frac: mean over steps and seeds of the fraction of tokens with r outside [1-ε_low, 1+ε_high] at update time.",
        f"- step time: median timing_s/step over steps 2..end of all seeds, divided by {reference}'s.",
    ])


def curves(runs: dict[str, dict[int, list[dict]]], column: str) -> dict[str, tuple[list[int], list[float], list[float], list[float]]]:
    """Per method: (steps, mean over seeds, min over seeds, max over seeds) of ``column``, nan-aware."""
    out = {}
    for method, by_seed in runs.items():
        steps = sorted({r["step"] for rows in by_seed.values() for r in rows})
        means, lows, highs = [], [], []
        for step in steps:
            values = _finite([r[column] for rows in by_seed.values() for r in rows if r["step"] == step])
            means.append(statistics.fmean(values) if values else math.nan)
            lows.append(min(values) if values else math.nan)
            highs.append(max(values) if values else math.nan)
        out[method] = (steps, means, lows, highs)
    return out


PANELS = (("reward", "reward (mean over batch)"), ("entropy", "token entropy"), ("out_frac", "out-of-trust-region fraction"))


def plot(runs: dict[str, dict[int, list[dict]]], path: str, title: str = "") -> None:
    """PNG with one panel per :data:`PANELS` entry: mean over seeds (line) and min–max band."""
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError("the study's curves need matplotlib: `pip install matplotlib` (or the [test] extra)") from err

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(6 * len(PANELS), 4.5))
    for ax, (column, label) in zip(axes, PANELS):
        for method, (steps, mean, low, high) in curves(runs, column).items():
            (line,) = ax.plot(steps, mean, label=f"{method} (n={len(runs[method])})", lw=1.6)
            ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.15, lw=0)
        ax.set_xlabel("training step")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(out_dir: str, methods: list[str], seeds: list[int], settings: ReportSettings, *,
                 header: str = "", footer: str = "") -> tuple[str, str, list[MethodSummary]]:
    """Write ``report.md`` (table + legend) and ``curves.png`` into ``out_dir``; return their paths and the summaries."""
    runs = load_runs(out_dir, methods, seeds)
    if not runs:
        raise FileNotFoundError(f"no run CSV under {out_dir}/runs for methods {methods} and seeds {seeds}")
    summaries = summarize_all(runs, settings)
    png = os.path.join(out_dir, "curves.png")
    plot(runs, png, title="mean over seeds, band = min..max over seeds")
    md = os.path.join(out_dir, "report.md")
    with open(md, "w") as f:
        if header:
            f.write(header.rstrip() + "\n\n")
        f.write(markdown_table(summaries, settings) + "\n\n" + legend(settings) + "\n\n![curves](curves.png)\n")
        f.write("\nWhere the methods differ (means over all steps and seeds; region fractions of tokens at update time, "
                "LN: A<0, r<1-ε_low; HP: A>0, r>1+ε_high; LP: A>0, r<1-ε_low; HN: A<0, r>1+ε_high):\n\n")
        f.write(diagnostics_table(runs) + "\n")
        if footer:
            f.write("\n" + footer.rstrip() + "\n")
    return md, png, summaries
