"""The held-out study's report, from committed files only: each evaluation's ``summary.json`` (written by
``python -m verl_dgpo.eval``), each run's ``metrics.csv`` and ``run.json``, ``study.json``.

The top of the report answers the pre-registered question in the order the issue asks: the question, the
rule, the per-seed numbers, the interval, the verdict, the limits. The verdict is :func:`primary_verdict` of
the numbers, the rule of ``preregistration.md``; ``tests/test_study_heldout.py`` recomputes it independently.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from typing import Optional

from comparison_study import heldout as H
from comparison_study.report import FIGURE_DIR, figures_of, load_runs, per_seed, plot, run_wall_times, summary_table
from comparison_study.stats import PairedDifference, paired_difference, two_sided_t

HOLDS, REVERSED, NO_GAIN, CANNOT, TOO_FEW = ("holds", "reversed", "no gain of the paper's size", "cannot tell",
                                             "cannot tell: too few seeds")
MIN_SEEDS = 5
PASSK_FIGURE = "passk.png"

MEANINGS = {
    HOLDS: "at this scale and on this task DGPO's update gives a better held-out policy than GRPO's, the direction "
           "the paper reports (the interval gives its size).",
    REVERSED: "DGPO's held-out policy is worse than GRPO's here, the opposite of the paper's direction.",
    NO_GAIN: "the paper's gain does not appear here: the interval excludes a gain as large as the paper's smallest, "
             "though a smaller one may exist.",
    CANNOT: "the seeds do not separate the two methods, and a gain of the paper's size is not excluded.",
    TOO_FEW: "fewer than 5 seeds have both methods evaluated; no verdict.",
}


def load_summaries(out_dir: str, plan: dict) -> dict:
    """``{(method, seed, step, setting): metrics}`` (``summary.json``'s ``average``, percent) of every complete
    evaluation of the study's matrix."""
    found = {}
    for method, seed in H.run_matrix(plan):
        directory = os.path.join(out_dir, "runs", method, f"seed{seed}")
        for step, name in H.evaluations_of(plan):
            summary = H.summary_of(directory, step, name)
            if summary is not None:
                found[(method, seed, step, name)] = summary["average"]
    return found


def values(summaries: dict, method: str, step: int, setting: str, metric: str) -> dict[int, float]:
    """``{seed: value}`` of one metric over the seeds with that evaluation."""
    return {seed: m[metric] for (me, seed, st, se), m in summaries.items()
            if me == method and st == step and se == setting and metric in m}


def primary_verdict(d: Optional[PairedDifference], reference_mean: float, gain: float) -> str:
    """The pre-registered rule (preregistration.md, "The primary comparison and its rule"), first that applies."""
    if d is None or d.n < MIN_SEEDS or math.isnan(d.low):
        return TOO_FEW
    if d.low > 0:
        return HOLDS
    if d.high < 0:
        return REVERSED
    if d.high < gain and reference_mean <= 100.0 - gain:
        return NO_GAIN
    return CANNOT


def reads(d: Optional[PairedDifference]) -> str:
    if d is None or math.isnan(d.low):
        return "no interval"
    return "above 0" if d.low > 0 else "below 0" if d.high < 0 else "contains 0"


def _fmt(d: Optional[PairedDifference], digits: int = 2) -> str:
    if d is None:
        return "-"
    if math.isnan(d.low):
        return f"{d.mean:+.{digits}f} (n={d.n}, no interval)"
    return f"{d.mean:+.{digits}f} [{d.low:+.{digits}f}, {d.high:+.{digits}f}]"


def _seeds(d: Optional[PairedDifference], digits: int = 2) -> str:
    return ", ".join(f"{x:+.{digits}f}" for x in d.differences) if d is not None else "-"


def training_scalars(runs: dict, settings) -> dict:
    return {method: per_seed(by_seed, settings) for method, by_seed in runs.items()}


def secondary(plan: dict, summaries: dict, scalars: dict) -> list[tuple[dict, Optional[PairedDifference]]]:
    """Every pre-registered secondary comparison with its Bonferroni interval (1 - alpha / m, two-sided)."""
    confidence = 1.0 - plan["secondary_alpha"] / len(plan["secondary"])
    reference = plan["primary"]["reference"]
    out = []
    for comparison in plan["secondary"]:
        method = comparison["method"]
        if comparison["evaluation"] is None:  # a training metric from the CSVs
            mine = scalars.get(method, {}).get(comparison["metric"], {})
            ref = scalars.get(reference, {}).get(comparison["metric"], {})
        else:
            mine = values(summaries, method, comparison["step"], comparison["evaluation"], comparison["metric"])
            ref = values(summaries, reference, comparison["step"], comparison["evaluation"], comparison["metric"])
        out.append((comparison, paired_difference(mine, ref, confidence=confidence)))
    return out


def claim2_c10(plan: dict, scalars: dict, diffs: dict, bound: float) -> tuple[str, list[str]]:
    """Claim 2 for the soft-clip arm, the stress study's rule with the Bonferroni intervals (S7-S10)."""
    reference = plan["primary"]["reference"]
    readings, texts = [], []
    for method in plan["arms"]["soft_clip"]["methods"]:
        if method not in scalars or reference not in scalars:
            continue
        seeds = sorted(set(scalars[method]["max_pi_weight"]) & set(scalars[reference]["max_pi_weight"]))
        weights = [scalars[method]["max_pi_weight"][s] for s in seeds]
        over, under = sum(v >= bound for v in weights), sum(v < bound for v in weights)
        reward, grad = diffs.get((method, "final_reward")), diffs.get((method, "peak_grad_norm"))
        reward_sign = 0 if reward is None else reward.sign()
        grad_sign = 0 if grad is None else grad.sign()
        if (seeds and under == len(seeds)) or reward_sign > 0:
            reading = "does not hold"
        elif seeds and over == len(seeds) and (reward_sign < 0 or grad_sign > 0):
            reading = "holds"
        else:
            reading = "cannot tell"
        readings.append(reading)
        texts.append(f"{method}: largest ∇π weight ≥ {bound:g} in {over}/{len(seeds)} seeds "
                     f"({', '.join(f'{v:.3g}' for v in weights)}), final reward {_fmt(reward, 3)}, peak grad norm "
                     f"{_fmt(grad, 3)} → {reading}")
    overall = ("holds" if readings and set(readings) == {"holds"} else
               "does not hold" if readings and set(readings) == {"does not hold"} else "cannot tell")
    return overall, texts


def plot_passk(summaries: dict, plan: dict, out_dir: str, step: int, setting: str) -> str:
    """Pass@k against k (log2 axis) per method: mean over seeds, min..max band; percent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = plan["evaluations"][setting]["k"]
    ks = [1]
    while ks[-1] < k:
        ks.append(min(ks[-1] * 2, k))
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    methods = list(dict.fromkeys(m for m, _ in H.run_matrix(plan)))
    for i, method in enumerate(methods):
        per_k = [values(summaries, method, step, setting, f"pass@{j}") for j in ks]
        if not per_k[0]:
            continue
        mean = [statistics.fmean(v.values()) for v in per_k]
        ax.plot(ks, mean, marker="o", ms=3, color=f"C{i}", label=f"{method} (n={len(per_k[0])})")
        ax.fill_between(ks, [min(v.values()) for v in per_k], [max(v.values()) for v in per_k], color=f"C{i}",
                        alpha=0.15, lw=0)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(j) for j in ks])
    ax.set_xlabel("k (samples per prompt)")
    ax.set_ylabel("held-out Pass@k (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, frameon=True)
    ax.set_title(f"Pass@k on the {plan['heldout']['prompts']} held-out prompts, step {step}, temperature "
                 f"{plan['evaluations'][setting]['temperature']:g}\nline: mean over seeds; band: min..max over seeds",
                 fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.join(out_dir, FIGURE_DIR), exist_ok=True)
    path = os.path.join(out_dir, FIGURE_DIR, PASSK_FIGURE)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path


def method_table(summaries: dict, plan: dict, step: int, setting: str) -> str:
    k = plan["evaluations"][setting]["k"]
    ks = [1]
    while ks[-1] < k:
        ks.append(min(ks[-1] * 2, k))
    metrics = [f"avg@{k}"] + ([f"pass@{j}" for j in ks] if k > 1 else [])
    lines = ["| method | seeds | " + " | ".join(m.replace("avg", "Avg").replace("pass", "Pass") for m in metrics) + " |",
             "|" + "---|" * (len(metrics) + 2)]
    for method in dict.fromkeys(m for m, _ in H.run_matrix(plan)):
        cells = []
        seeds = values(summaries, method, step, setting, metrics[0])
        if not seeds:
            continue
        for metric in metrics:
            v = list(values(summaries, method, step, setting, metric).values())
            sd = statistics.stdev(v) if len(v) > 1 else 0.0
            cells.append(f"{statistics.fmean(v):.2f} ± {sd:.2f}")
        lines.append(f"| {method} | {len(seeds)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_heldout_report(out_dir: str, config, warm: dict, figures_too: bool = True,
                         dest_dir: Optional[str] = None) -> str:
    """Write ``report.md`` (and, unless ``figures_too`` is False, its figures) into ``dest_dir`` (default
    ``out_dir``, the study folder the results are read from)."""
    dest = dest_dir or out_dir
    plan = config.heldout
    primary = plan["primary"]
    matrix = H.run_matrix(plan)
    summaries = load_summaries(out_dir, plan)
    method_seeds: dict[str, list[int]] = {}
    for method, seed in matrix:
        method_seeds.setdefault(method, []).append(seed)
    runs = {}
    for method, seeds in method_seeds.items():
        runs.update(load_runs(out_dir, [method], seeds))
    scalars = training_scalars(runs, config.report)
    evaluated = [(m, s) for m, s in matrix if H.evaluated(os.path.join(out_dir, "runs", m, f"seed{s}"), plan)]
    failed_twice = [(m, s) for m, s in matrix if (m, s) not in evaluated and H.missing(out_dir, m, s)]
    complete = len(evaluated) + len(failed_twice) == len(matrix)

    # ---- the primary comparison
    step, setting, metric = primary["step"], primary["evaluation"], primary["metric"]
    mine = values(summaries, primary["method"], step, setting, metric)
    ref = values(summaries, primary["reference"], step, setting, metric)
    d = paired_difference(mine, ref, confidence=primary["confidence"])
    paired_seeds = sorted(set(mine) & set(ref))
    ref_mean = statistics.fmean(ref[s] for s in paired_seeds) if paired_seeds else math.nan
    verdict = primary_verdict(d, ref_mean, primary["paper_gain"])
    gain = primary["paper_gain"]
    t_value = two_sided_t(primary["confidence"], d.n - 1) if d is not None and d.n > 1 else math.nan
    s = config.settings
    seed_rows = ["| seed | grpo Avg@32 (%) | dgpo Avg@32 (%) | dgpo − grpo (points) |", "|---|---|---|---|"]
    for seed in paired_seeds:
        seed_rows.append(f"| {seed} | {ref[seed]:.2f} | {mine[seed]:.2f} | {mine[seed] - ref[seed]:+.2f} |")
    top = [
        "# The held-out study: DGPO against GRPO by held-out Avg@32",
        "",
        "**Question.** On the stress study's task and schedule, does a policy trained with DGPO (n = 1, m = 2) score "
        "higher than one trained with GRPO on prompts it never trained on, by the paper's own metric (Avg@32, "
        "Pass@k beside it), measured on saved checkpoints with `python -m verl_dgpo.eval`? "
        "Pre-registered: [preregistration.md](preregistration.md) (committed before any run).",
        "",
        f"**Rule.** Per seed, d = Avg@32(dgpo) − Avg@32(grpo) of the step-{step} checkpoints on the "
        f"{plan['heldout']['prompts']} held-out prompts (k = {plan['evaluations'][setting]['k']}, temperature "
        f"{plan['evaluations'][setting]['temperature']:g}, top-p {plan['evaluations'][setting]['top_p']:g}), in "
        f"percentage points; the {primary['confidence']:.0%} t-interval [lo, hi] of its mean over seeds. Verdict, the "
        f"first that applies: lo > 0 → **{HOLDS}**; hi < 0 → **{REVERSED}**; hi < {gain:g} (the paper's smallest "
        f"DGPO − GRPO gain in Average Avg@32) and GRPO's mean ≤ {100 - gain:g} → **{NO_GAIN}**; else **{CANNOT}** "
        f"(fewer than {MIN_SEEDS} paired seeds: **{TOO_FEW}**).",
        "",
        "**Per seed** (each number from that run's `eval/step"
        f"{step}_{setting}/summary.json`, written by `python -m verl_dgpo.eval`):",
        "",
        *seed_rows,
        "",
        f"**Interval.** mean d = {_fmt(d)} points ({primary['confidence']:.0%} t-interval, n = "
        f"{d.n if d else 0}, t = {t_value:.4f}); GRPO's mean Avg@32 {ref_mean:.2f}%.",
        "",
        f"**Verdict: {verdict}** — {MEANINGS[verdict]}",
        "",
        "**Limits.** One tiny model (~100k parameters) and one synthetic task (6-digit copy, held-out prompts that "
        "differ from the training ones only in their digits), one learning rate, one ε, one update schedule "
        "(chosen by the stress study's pilot for GRPO's out-of-region fraction), "
        f"{len(plan['arms']['primary']['seeds'])} seeds for the primary and "
        f"{len(plan['arms']['soft_clip']['seeds'])} for the soft-clip arm, one evaluation seed per checkpoint; the "
        "baselines lack their authors' NLL term. The verdict says what the pre-registered rule read on this task at "
        "this scale, nothing about LLM reasoning training.",
    ]

    # ---- secondary comparisons
    sec = secondary(plan, summaries, scalars)
    m = len(plan["secondary"])
    conf = 1.0 - plan["secondary_alpha"] / m
    sec_rows = [f"| id | method − {primary['reference']} | metric | checkpoint | per seed | mean [{conf:.1%} interval] "
                "| reads |", "|---|---|---|---|---|---|---|"]
    diffs = {}
    for comparison, diff in sec:
        diffs[(comparison["method"], comparison["metric"])] = diff
        where = (f"{comparison['evaluation']}, step {comparison['step']}" if comparison["evaluation"]
                 else "training CSV")
        digits = 3 if comparison["evaluation"] is None else 2
        sec_rows.append(f"| {comparison['id']} | {comparison['method']} | {comparison['metric']} | {where} | "
                        f"{_seeds(diff, digits)} | {_fmt(diff, digits)} | {reads(diff)} |")
    c2, c2_texts = claim2_c10(plan, scalars, diffs, config.report.pi_weight_diverge)
    parts = [
        "\n".join(top),
        "## Secondary comparisons (Bonferroni over all ten)",
        f"Each a seed-paired difference against {primary['reference']} with a {conf:.1%} two-sided t-interval "
        f"(α = {plan['secondary_alpha']:g} / {m}); none changes the verdict above. Held-out metrics in percentage "
        "points; final reward (mean training-batch reward of the last 20 steps, T = 1) as a fraction; peak grad norm "
        "the largest per-step `actor/grad_norm`.",
        "\n".join(sec_rows),
        f"**Claim 2 at the baselines' own c = 10** (the stress study's rule with these intervals): **{c2}**. "
        + "; ".join(c2_texts) + ". The stress study's verdict (c = 3, CISPO included) is in "
        "[its report](../stress/report.md); this one does not change it.",
        "## Held-out metrics per method (mean ± sd over seeds, percent)",
    ]
    for step_, names in plan["checkpoint_evaluations"].items():
        for name in names:
            e = plan["evaluations"][name]
            label = ("greedy" if e["temperature"] == 0 else
                     f"k = {e['k']}, temperature {e['temperature']:g}, top-p {e['top_p']:g}")
            parts.append(f"Step {step_}, `{name}` ({label}):\n\n" + method_table(summaries, plan, int(step_), name))
    figures = figures_of(config.report)
    if figures_too:
        plot_passk(summaries, plan, dest, step, setting)
        if runs:
            plot(runs, dest, config.report.threshold_window, figures=figures)
    parts.append(f"![Pass@k on the held-out prompts against k, step {step}]({FIGURE_DIR}/{PASSK_FIGURE})")

    # ---- the runs
    walls = run_wall_times(out_dir, runs)
    missing = [f"{m_} seed {s_}" for m_, s_ in matrix if (m_, s_) not in evaluated and (m_, s_) not in failed_twice]
    lines = [f"Runs: {len(evaluated)}/{len(matrix)} trained and evaluated" + (" (complete)." if complete else ".")]
    if failed_twice:
        lines.append("Missing, their training failed twice (preregistration.md; the failures: "
                     f"[{H.FAILURES_FILE}]({H.FAILURES_FILE})): "
                     + ", ".join(f"{m_} seed {s_}" for m_, s_ in failed_twice) + ".")
    if missing:
        lines.append(f"**Partial study** — not yet trained and evaluated: {', '.join(missing)}.")
    if walls:
        w = sorted(walls.values())
        lines.append(f"Training wall time (each run's `wall_s` in its run.json, one run at a time at nice 19 beside "
                     f"other work on a 2-core machine): {sum(w):.0f} s = {sum(w) / 3600:.2f} h in all; per run min "
                     f"{w[0]:.0f} s, median {statistics.median(w):.0f} s, max {w[-1]:.0f} s.")
    parts += [
        "## The runs",
        "\n".join(lines),
        f"Warm start: the stress study's ({warm['steps']} SFT steps, held-out sampled accuracy "
        f"{warm['heldout_accuracy']:.3f}, sha256 {warm['weights_sha256'][:12]}…). RL: {s.prompts_per_step} prompts x "
        f"{s.responses_per_prompt} responses per step, {s.ppo_epochs} PPO epochs x {s.mini_batches} mini-batches, lr "
        f"{s.lr:g}, {s.steps} steps, responses ≤ {s.max_response_length} tokens, checkpoints at steps "
        f"{', '.join(str(x) for x in plan['checkpoint_steps'])}. Study command: `python "
        f"experiments/method_comparison/heldout_loop.py` (one `run.py --out {config.out} --max-runs 1` per turn); "
        "this report is rebuilt from the committed files by `python experiments/method_comparison/run.py --out "
        f"{config.out} --report-only`.",
    ]
    if "grpo" in runs:
        out_all = statistics.fmean(r["out_frac"] for rows in runs["grpo"].values() for r in rows)
        out_last = statistics.fmean(r["out_frac"] for rows in runs["grpo"].values()
                                    for r in rows[-config.report.final_window:])
        parts.append(f"GRPO's out-of-trust-region fraction over this study: {out_all:.4f} over all steps, "
                     f"{out_last:.4f} over the last {config.report.final_window} (the pilot that chose the schedule: "
                     "0.0855 over 20 steps of one seed, [../stress/pilot/regime.json](../stress/pilot/regime.json)).")
    parts += [
        "## Training (per method, from the CSVs)",
        summary_table(runs, config.report, s.steps),
        "## Curves",
        "One panel per method, each step's raw value (no smoothing): the line is the mean over seeds (the median on "
        "the log-scale figures), the band the seeds' min..max, the dashed line grpo's; on the weight figure a step "
        "without out-of-region tokens (logged as 0) is drawn at 0.",
        "\n".join(f"![{title}]({FIGURE_DIR}/{stem}.png)" for stem, title, _ in figures.values()),
    ]
    path = os.path.join(dest, "report.md")
    with open(path, "w") as f:
        f.write("\n\n".join(p for p in parts if p) + "\n")
    return path
