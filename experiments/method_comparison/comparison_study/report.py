"""The comparison's report, computed from the per-run CSVs only: ``report.md`` and one PNG per curve.

Statistics (each is defined in the report's legend too):

- per method, over its seeds: reward at step 1, **final reward** (per seed, the mean ``reward`` of the last
  ``final_window`` steps), **mean reward** over all steps (the area under the reward curve divided by the
  number of steps), **steps to threshold** (per seed, the first step whose trailing mean reward over
  ``threshold_window`` steps is >= ``threshold``; a seed that never gets there counts as the step budget,
  so the mean is a lower bound whenever k < n), **final entropy**, the largest and the median per-step
  ``ratio_max``, the mean ``out_frac`` and ``grad_norm``, and the median step time against the reference;
- per method and seed, the **paired difference against the reference method** (GRPO) of final reward,
  mean reward and final entropy, with the 95% t-interval over seeds (:mod:`comparison_study.stats`);
- the paper's three claims, each marked by the rule written next to it in the report.

Figures: one PNG per column of :data:`FIGURES`, one panel per method; each seed's curve smoothed over the
trailing ``threshold_window`` steps, then per step the mean over seeds (line) and the band from the seeds'
min to max, the reference method's mean dashed in the other panels; rendered with matplotlib's Agg backend
and without time or version metadata, so the same CSVs give the same bytes.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from dataclasses import dataclass
from typing import Optional

from comparison_study.runs import REFERENCE_METHOD, RUN_RECORD, csv_path, read_csv, run_dir
from comparison_study.stats import PairedDifference, first_step_reaching, paired_difference, steps_to_threshold

HARD_CLIP = "grpo"
SOFT_CLIPS = ("cispo", "gppo", "ce_gppo")
DGPO = "dgpo"

#: CSV column -> (figure file stem, title, how a seed's curve is smoothed over the trailing window).
#: The max ratio keeps the window's largest value, so a spike stays visible at its height.
FIGURES = {
    "reward": ("reward", "reward (batch mean)", "mean"),
    "entropy": ("entropy", "token entropy", "mean"),
    "ratio_max": ("ratio_max", "max ratio π/π_old over the step's updates (log scale)", "max"),
    "grad_norm": ("grad_norm", "gradient norm", "mean"),
    "out_frac": ("out_frac", "out-of-trust-region fraction of tokens", "mean"),
}
FIGURE_DIR = "figures"
PNG_METADATA = {"Software": None}


@dataclass(frozen=True)
class ReportSettings:
    threshold: float = 0.65
    threshold_window: int = 3
    final_window: int = 5
    #: below this many steps the claims are marked "cannot tell at this scale" whatever the rule reads.
    claims_min_steps: int = 150


def load_runs(out_dir: str, methods, seeds) -> dict[str, dict[int, list[dict]]]:
    """``{method: {seed: rows}}`` for every finished run: its CSV and, written last, its ``run.json`` exist
    (missing and unfinished runs are left out, and :func:`completeness` names them)."""
    runs: dict[str, dict[int, list[dict]]] = {}
    for method in methods:
        for seed in seeds:
            path = csv_path(out_dir, method, seed)
            if os.path.exists(path) and os.path.exists(os.path.join(run_dir(out_dir, method, seed), RUN_RECORD)):
                runs.setdefault(method, {})[seed] = read_csv(path)
    return runs


def run_wall_times(out_dir: str, runs) -> dict[tuple[str, int], float]:
    """``{(method, seed): wall_s}`` from the ``run.json`` of each run that :func:`load_runs` holds."""
    out = {}
    for method, by_seed in runs.items():
        for seed in by_seed:
            with open(os.path.join(run_dir(out_dir, method, seed), RUN_RECORD)) as f:
                out[(method, seed)] = float(json.load(f)["wall_s"])
    return out


def completeness(runs, wall_times: dict, methods, seeds, steps: int) -> str:
    """Which runs of the study matrix the report holds, and the wall time they took (from ``run.json``)."""
    expected = [(m, s) for s in seeds for m in methods]
    missing = [f"{m} seed {s}" for m, s in expected if s not in runs.get(m, {})]
    short = [f"{m} seed {s} ({len(rows)} steps)" for m, s in expected
             if s in runs.get(m, {}) and len(rows := runs[m][s]) != steps]
    lines = [f"Runs: {len(expected) - len(missing)}/{len(expected)} of the study's {len(methods)} methods x "
             f"{len(seeds)} seeds" + (" (complete)." if not missing and not short else ".")]
    if missing:
        lines.append(f"**Partial study** — missing: {', '.join(missing)}.")
    if short:
        lines.append(f"**Runs with fewer than {steps} steps**: {', '.join(short)}.")
    if wall_times:
        walls = sorted(wall_times.values())
        total = sum(walls)
        lines.append(
            f"Wall time of the runs (each run's `wall_s` in its run.json, one run at a time on the machine that made "
            f"them): {total:.0f} s = {total / 3600:.2f} h in all; per run min {walls[0]:.0f} s, median "
            f"{statistics.median(walls):.0f} s, max {walls[-1]:.0f} s.")
    return "\n".join(lines)


def _finite(values):
    return [v for v in values if not math.isnan(v)]


def per_seed(by_seed: dict[int, list[dict]], settings: ReportSettings) -> dict[str, dict[int, float]]:
    """Per-seed scalars: final reward, mean reward, final entropy, max ratio."""
    w = settings.final_window
    out = {"final_reward": {}, "mean_reward": {}, "final_entropy": {}, "max_ratio": {}}
    for seed, rows in by_seed.items():
        rewards = [r["reward"] for r in rows]
        out["final_reward"][seed] = statistics.fmean(rewards[-w:])
        out["mean_reward"][seed] = statistics.fmean(rewards)
        out["final_entropy"][seed] = statistics.fmean([r["entropy"] for r in rows][-w:])
        ratios = _finite([r["ratio_max"] for r in rows])
        out["max_ratio"][seed] = max(ratios) if ratios else math.nan
    return out


def _mean_std(values) -> str:
    values = list(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {std:.3f}"


def summary_table(runs, settings: ReportSettings, budget: int, reference: str = REFERENCE_METHOD) -> str:
    head = ("| method | seeds | reward step 1 | final reward | mean reward (all steps) "
            f"| steps to reward ≥ {settings.threshold:g} (reached) | final entropy | max ratio (median per step) "
            f"| out-of-region frac | grad norm | step time vs {reference} |")
    lines = [head, "|" + "---|" * 11]
    ref_time = None
    if reference in runs:
        ref_time = statistics.median(r["step_time"] for rows in runs[reference].values() for r in rows[1:] or rows)
    for method, by_seed in runs.items():
        scalars = per_seed(by_seed, settings)
        reached = [first_step_reaching([r["step"] for r in rows], [r["reward"] for r in rows],
                                       settings.threshold, settings.threshold_window) for rows in by_seed.values()]
        mean_steps, k = steps_to_threshold(reached, budget)
        all_rows = [r for rows in by_seed.values() for r in rows]
        ratios = _finite([r["ratio_max"] for r in all_rows])
        time_ratio = statistics.median(r["step_time"] for rows in by_seed.values() for r in rows[1:] or rows)
        time_cell = f"{time_ratio / ref_time:.2f}" if ref_time else "-"
        lines.append(
            f"| {method} | {len(by_seed)} | {statistics.fmean(rows[0]['reward'] for rows in by_seed.values()):.3f} "
            f"| {_mean_std(scalars['final_reward'].values())} | {_mean_std(scalars['mean_reward'].values())} "
            f"| {mean_steps:.1f} ({k}/{len(by_seed)}) | {_mean_std(scalars['final_entropy'].values())} "
            f"| {max(ratios):.3g} ({statistics.median(ratios):.3g}) "
            f"| {statistics.fmean(_finite([r['out_frac'] for r in all_rows])):.4f} "
            f"| {statistics.fmean(_finite([r['grad_norm'] for r in all_rows])):.3f} | {time_cell} |"
        )
    return "\n".join(lines)


PAIRED_METRICS = (("final_reward", "final reward"), ("mean_reward", "mean reward (area)"), ("final_entropy", "final entropy"))


def paired_differences(runs, settings: ReportSettings, reference: str = REFERENCE_METHOD) -> dict:
    """``{method: {metric: PairedDifference}}`` against ``reference`` for every other method."""
    if reference not in runs:
        return {}
    ref = per_seed(runs[reference], settings)
    out = {}
    for method, by_seed in runs.items():
        if method == reference:
            continue
        mine = per_seed(by_seed, settings)
        out[method] = {key: paired_difference(mine[key], ref[key]) for key, _ in PAIRED_METRICS}
    return out


def _interval(d: Optional[PairedDifference]) -> str:
    if d is None:
        return "-"
    seeds = ", ".join(f"{x:+.3f}" for x in d.differences)
    if math.isnan(d.low):
        return f"{d.mean:+.3f} (n=1: {seeds})"
    return f"{d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}] ({seeds})"


def paired_table(diffs: dict, reference: str = REFERENCE_METHOD) -> str:
    head = f"| method − {reference} | " + " | ".join(label for _, label in PAIRED_METRICS) + " |"
    lines = [head, "|" + "---|" * (len(PAIRED_METRICS) + 1)]
    for method, by_metric in diffs.items():
        lines.append(f"| {method} | " + " | ".join(_interval(by_metric[key]) for key, _ in PAIRED_METRICS) + " |")
    return "\n".join(lines)


HOLDS, NOT, CANNOT = "holds", "does not hold", "cannot tell"


def claims(runs, settings: ReportSettings, steps: int, diffs: dict) -> list[tuple[str, str, str, str, str]]:
    """(claim, rule, reading of the rule, verdict, figures) for the paper's three claims."""
    rows = []
    scalars = {m: per_seed(by_seed, settings) for m, by_seed in runs.items()}

    def verdict(reading: str) -> str:
        if steps < settings.claims_min_steps:
            return f"cannot tell at this scale ({steps} < {settings.claims_min_steps} steps)"
        return reading

    # 1. hard clipping loses exploration: GRPO's final entropy below DGPO's
    d = diffs.get(DGPO, {}).get("final_entropy")
    sign = d.sign() if d is not None else 0
    reading = HOLDS if sign > 0 else NOT if sign < 0 else CANNOT
    rows.append((
        "Hard clipping discards gradients and loses exploration (entropy).",
        f"{DGPO} − {HARD_CLIP} final entropy: interval above 0 → holds, below 0 → does not hold, else cannot tell.",
        f"{reading}: {_interval(d)}", verdict(reading), "[entropy](figures/entropy.png)"))

    # 2. soft clipping's weights diverge and destabilise
    per_method = []
    for method in SOFT_CLIPS:
        if method not in runs or HARD_CLIP not in runs:
            continue
        seeds = sorted(set(scalars[method]["max_ratio"]) & set(scalars[HARD_CLIP]["max_ratio"]))
        higher = sum(scalars[method]["max_ratio"][s] > scalars[HARD_CLIP]["max_ratio"][s] for s in seeds)
        reward = diffs[method]["final_reward"]
        diverge = higher == len(seeds)
        if diverge and reward.sign() < 0:
            m_reading = HOLDS
        elif higher == 0 or reward.sign() > 0:
            m_reading = NOT
        else:
            m_reading = CANNOT
        per_method.append((method, m_reading, f"{method}: max ratio above {HARD_CLIP}'s in {higher}/{len(seeds)} seeds, "
                                               f"final reward {_interval(reward)} → {m_reading}"))
    readings = {r for _, r, _ in per_method}
    reading = HOLDS if readings == {HOLDS} else NOT if readings == {NOT} else CANNOT
    rows.append((
        "Soft clipping's weights diverge as probabilities vanish and destabilise training.",
        f"per soft clip ({', '.join(SOFT_CLIPS)}): max ratio above {HARD_CLIP}'s in every seed and final-reward "
        f"interval below {HARD_CLIP}'s → holds; above in no seed or reward interval above 0 → does not hold; "
        "holds overall when it holds for every one, does not hold when for none, else cannot tell.",
        f"{reading}: " + "; ".join(text for _, _, text in per_method), verdict(reading),
        "[ratio](figures/ratio_max.png), [reward](figures/reward.png), [grad norm](figures/grad_norm.png)"))

    # 3. DGPO explores without diverging
    entropy = diffs.get(DGPO, {}).get("final_entropy")
    reward = diffs.get(DGPO, {}).get("final_reward")
    soft_max = {}
    for method in SOFT_CLIPS:
        for seed, value in scalars.get(method, {}).get("max_ratio", {}).items():
            soft_max[seed] = max(soft_max.get(seed, -math.inf), value)
    dgpo_max = scalars.get(DGPO, {}).get("max_ratio", {})
    seeds = sorted(set(dgpo_max) & set(soft_max))
    bounded = sum(dgpo_max[s] < soft_max[s] for s in seeds)
    if entropy is None or reward is None:
        reading = CANNOT
    elif entropy.sign() > 0 and reward.sign() >= 0 and bounded == len(seeds):
        reading = HOLDS
    elif entropy.sign() < 0 or reward.sign() < 0:
        reading = NOT
    else:
        reading = CANNOT
    rows.append((
        "DGPO keeps exploring without diverging.",
        f"{DGPO} − {HARD_CLIP} final entropy interval above 0, final-reward interval not below 0, and {DGPO}'s max "
        "ratio below the largest soft clip's in every seed → holds; entropy or reward interval below 0 → does "
        "not hold; else cannot tell.",
        f"{reading}: entropy {_interval(entropy)}; reward {_interval(reward)}; max ratio below the soft clips' in "
        f"{bounded}/{len(seeds)} seeds", verdict(reading),
        "[entropy](figures/entropy.png), [ratio](figures/ratio_max.png), [reward](figures/reward.png)"))
    return rows


def claims_table(rows) -> str:
    lines = ["| claim (paper) | verdict | rule | what the rule reads here | figure |", "|---|---|---|---|---|"]
    for claim, rule, reading, verdict, figure in rows:
        lines.append(f"| {claim} | **{verdict}** | {rule} | {reading} | {figure} |")
    return "\n".join(lines)


DIAGNOSTIC_COLUMNS = (("ln_frac", "LN frac"), ("hp_frac", "HP frac"), ("lp_frac", "LP frac"), ("hn_frac", "HN frac"))


def diagnostics_table(runs) -> str:
    """Per method, the mean over all steps and seeds of each region fraction."""
    head = "| method | " + " | ".join(label for _, label in DIAGNOSTIC_COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(DIAGNOSTIC_COLUMNS) + 1)]
    for method, by_seed in runs.items():
        cells = [f"{statistics.fmean(_finite([r[c] for rows in by_seed.values() for r in rows])):.4f}"
                 for c, _ in DIAGNOSTIC_COLUMNS]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def legend(settings: ReportSettings, budget: int, reference: str = REFERENCE_METHOD) -> str:
    w = settings.final_window
    return "\n".join([
        f"- final reward: per seed the mean reward (critic/score/mean) of the last {w} steps; mean ± sample std (ddof=1) over seeds.",
        "- mean reward (all steps): per seed the mean reward over every step (area under the reward curve / steps).",
        f"- steps to reward ≥ {settings.threshold:g}: per seed the first step whose mean reward over the last "
        f"{settings.threshold_window} steps reaches it; a seed that never does counts as {budget} (the budget), so the "
        "mean is a lower bound when not all seeds reached it; (k/n) seeds reached it.",
        f"- final entropy: per seed the mean token entropy (actor/entropy) of the last {w} steps.",
        "- max ratio: the largest π/π_old of any token in any update of any step and seed; in brackets the median "
        "over steps and seeds of the per-step max.",
        "- out-of-region frac, grad norm: means over all steps and seeds (r outside [1-ε_low, 1+ε_high] at update time).",
        f"- step time: median timing_s/step over steps 2..end of all seeds, divided by {reference}'s.",
        f"- paired differences: per seed, method − {reference}; mean [95% t-interval over seeds: mean ± "
        "t(0.975, n-1)·sd/√n, sample sd] (the per-seed differences).",
    ])


def curves_legend(settings: ReportSettings, reference: str = REFERENCE_METHOD) -> str:
    return (f"One panel per method. Each seed's per-step values are first smoothed over the trailing "
            f"{settings.threshold_window} steps (the window of 'steps to threshold'; for the max ratio the window's "
            f"largest value, for the others its mean); the line is the mean of the smoothed curves over seeds, the "
            f"band their min..max over seeds, and the dashed line {reference}'s mean, for reference.")


def trailing(values: list[float], window: int, how: str = "mean") -> list[float]:
    """Per position i, the mean (or max) of the finite values among ``values[max(0, i-window+1) : i+1]``."""
    reduce = statistics.fmean if how == "mean" else max
    out = []
    for i in range(len(values)):
        part = _finite(values[max(0, i - window + 1) : i + 1])
        out.append(reduce(part) if part else math.nan)
    return out


def curves(runs, column: str, window: int = 1, how: str = "mean"):
    """Per method: (steps, mean over seeds, min over seeds, max over seeds) of ``column``, nan-aware; each
    seed's curve is first smoothed by :func:`trailing` over ``window`` steps."""
    out = {}
    for method, by_seed in runs.items():
        steps = sorted({r["step"] for rows in by_seed.values() for r in rows})
        smoothed = []
        for rows in by_seed.values():
            by_step = {r["step"]: r[column] for r in rows}
            values = trailing([by_step.get(step, math.nan) for step in steps], window, how)
            smoothed.append({step: v for step, v in zip(steps, values) if step in by_step})
        means, lows, highs = [], [], []
        for step in steps:
            values = _finite([seed[step] for seed in smoothed if step in seed])
            means.append(statistics.fmean(values) if values else math.nan)
            lows.append(min(values) if values else math.nan)
            highs.append(max(values) if values else math.nan)
        out[method] = (steps, means, lows, highs)
    return out


def plot(runs, out_dir: str, window: int = 1, reference: str = REFERENCE_METHOD) -> list[str]:
    """One PNG per :data:`FIGURES` entry under ``out_dir/figures``, one panel per method with the
    ``reference`` method's mean as a dashed line in the others; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(os.path.join(out_dir, FIGURE_DIR), exist_ok=True)
    methods = list(runs)
    cols = min(4, len(methods))
    rows_ = math.ceil(len(methods) / cols)
    paths = []
    for column, (stem, title, how) in FIGURES.items():
        data = curves(runs, column, window, how)
        fig, axes = plt.subplots(rows_, cols, figsize=(3.2 * cols, 2.6 * rows_ + 0.6), sharex=True, sharey=True,
                                 squeeze=False)
        for ax, method in zip(axes.flat, methods):
            steps, mean, low, high = data[method]
            if method != reference and reference in data:
                ax.plot(data[reference][0], data[reference][1], color="0.45", ls="--", lw=1.0, label=f"{reference} mean")
            ax.plot(steps, mean, color="C0", lw=1.3, label="mean over seeds")
            ax.fill_between(steps, low, high, color="C0", alpha=0.25, lw=0, label="min..max over seeds")
            ax.set_title(f"{method} (n={len(runs[method])})", fontsize=9)
            ax.grid(alpha=0.3)
            if column == "ratio_max":
                ax.set_yscale("log")
        for ax in list(axes.flat)[len(methods):]:
            ax.axis("off")
        for ax in axes[-1]:
            ax.set_xlabel("training step", fontsize=8)
        handles, labels = axes.flat[min(1, len(methods) - 1)].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower right", fontsize=8, frameon=False)
        smoothing = f"; each seed's trailing {how} over {window} steps" if window > 1 else ""
        fig.suptitle(f"{title}{smoothing}", fontsize=10)
        fig.tight_layout()
        path = os.path.join(out_dir, FIGURE_DIR, f"{stem}.png")
        fig.savefig(path, dpi=100, metadata=PNG_METADATA)
        plt.close(fig)
        paths.append(path)
    return paths


def write_report(out_dir: str, methods, seeds, settings: ReportSettings, steps: int, *, header: str = "") -> str:
    """Write ``report.md`` and the figures into ``out_dir``; return the report's path."""
    runs = load_runs(out_dir, methods, seeds)
    if not runs:
        raise FileNotFoundError(f"no run CSV under {out_dir}/runs for methods {list(methods)} and seeds {list(seeds)}")
    plot(runs, out_dir, settings.threshold_window)
    diffs = paired_differences(runs, settings)
    parts = [
        header.rstrip(),
        completeness(runs, run_wall_times(out_dir, runs), methods, seeds, steps),
        "## Per method\n\n" + summary_table(runs, settings, steps),
        legend(settings, steps),
        f"## Paired differences against {REFERENCE_METHOD} (per seed)\n\n" + paired_table(diffs),
        "## The paper's claims\n\n" + claims_table(claims(runs, settings, steps, diffs)),
        "## Curves\n\n" + curves_legend(settings) + "\n\n"
        + "\n".join(f"![{title}]({FIGURE_DIR}/{stem}.png)" for stem, title, _ in FIGURES.values()),
        "## Trust-region regions (means over steps and seeds; LN: A<0, r<1-ε_low; HP: A>0, r>1+ε_high; "
        "LP: A>0, r<1-ε_low; HN: A<0, r>1+ε_high)\n\n" + diagnostics_table(runs),
    ]
    path = os.path.join(out_dir, "report.md")
    with open(path, "w") as f:
        f.write("\n\n".join(p for p in parts if p) + "\n")
    return path
