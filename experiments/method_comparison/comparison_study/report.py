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

Studies with ``ReportSettings.pi_weight`` (the stress study) add, from the ``pi_weight_*`` columns: a table of
the weight on ∇π in units of 1/π_old (``w / r``; definitions in :mod:`verl_dgpo.maths.loss_metrics`), its figure,
the paired difference of the peak grad norm, the regime the pilot chose with the pilot's values, and judge
claim 2 by :func:`claim2_by_pi_weight` instead of by the max ratio. The other studies' reports are unchanged.

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

#: CSV column -> (figure file stem, title, how the seeds are summarised per step: "mean" on a linear axis, "median"
#: on a log axis, where one seed's 1e8 would make a mean meaningless).
FIGURES = {
    "reward": ("reward", "reward (batch mean)", "mean"),
    "entropy": ("entropy", "token entropy", "mean"),
    "ratio_max": ("ratio_max", "max ratio π/π_old over the step's updates (log scale)", "median"),
    "grad_norm": ("grad_norm", "gradient norm", "mean"),
    "out_frac": ("out_frac", "out-of-trust-region fraction of tokens", "mean"),
}
#: the stress study's extra figure (studies with ``ReportSettings.pi_weight``).
PI_WEIGHT_FIGURE = {"pi_weight_max": ("pi_weight_max", "largest weight on ∇π (w/r, units of 1/π_old) over "
                                                       "out-of-trust-region tokens, per step (0 drawn at 0, log above 1)", "median")}
#: CSV column -> (y-axis label with its unit, y scale). "symlog" is linear below 1 and logarithmic above, so a
#: step that logs 0 (no out-of-region token with A ≠ 0) is drawn at 0 instead of leaving a gap.
AXES = {
    "reward": ("reward: fraction of responses correct", "linear"),
    "entropy": ("token entropy (nats)", "linear"),
    "ratio_max": ("max π/π_old (ratio, log)", "log"),
    "grad_norm": ("actor grad norm (L2, before clipping)", "linear"),
    "out_frac": ("fraction of response tokens", "linear"),
    "pi_weight_max": ("w/r (units of 1/π_old; 0 drawn at 0)", "symlog"),
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
    #: the stress study: report the weight on ∇π and judge claim 2 by it (:func:`claim2_by_pi_weight`).
    pi_weight: bool = False
    #: claim 2's divergence bound on a run's largest ``pi_weight_max`` (10 x the on-policy weight 1/π_old).
    pi_weight_diverge: float = 10.0
    #: the pilot's ``regime.json``, relative to the study folder ("" when the study has none).
    regime_file: str = ""


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
    out = {"final_reward": {}, "mean_reward": {}, "final_entropy": {}, "max_ratio": {}, "peak_grad_norm": {},
           "max_pi_weight": {}}
    for seed, rows in by_seed.items():
        rewards = [r["reward"] for r in rows]
        out["final_reward"][seed] = statistics.fmean(rewards[-w:])
        out["mean_reward"][seed] = statistics.fmean(rewards)
        out["final_entropy"][seed] = statistics.fmean([r["entropy"] for r in rows][-w:])
        ratios = _finite([r["ratio_max"] for r in rows])
        out["max_ratio"][seed] = max(ratios) if ratios else math.nan
        grads = _finite([r["grad_norm"] for r in rows])
        out["peak_grad_norm"][seed] = max(grads) if grads else math.nan
        pi = _finite([r.get("pi_weight_max", math.nan) for r in rows])
        out["max_pi_weight"][seed] = max(pi) if pi else math.nan
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
PEAK_GRAD_NORM = ("peak_grad_norm", "peak grad norm")


def paired_metrics(settings: ReportSettings) -> tuple:
    return PAIRED_METRICS + ((PEAK_GRAD_NORM,) if settings.pi_weight else ())


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
        out[method] = {key: paired_difference(mine[key], ref[key]) for key, _ in paired_metrics(settings)}
    return out


def _interval(d: Optional[PairedDifference]) -> str:
    if d is None:
        return "-"
    seeds = ", ".join(f"{x:+.3f}" for x in d.differences)
    if math.isnan(d.low):
        return f"{d.mean:+.3f} (n=1: {seeds})"
    return f"{d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}] ({seeds})"


def paired_table(diffs: dict, reference: str = REFERENCE_METHOD, metrics=PAIRED_METRICS) -> str:
    head = f"| method − {reference} | " + " | ".join(label for _, label in metrics) + " |"
    lines = [head, "|" + "---|" * (len(metrics) + 1)]
    for method, by_metric in diffs.items():
        lines.append(f"| {method} | " + " | ".join(_interval(by_metric[key]) for key, _ in metrics) + " |")
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
    if settings.pi_weight:
        claim, rule, reading_text, reading = claim2_by_pi_weight(runs, settings, diffs)
        rows.append((claim, rule, reading_text, verdict(reading),
                     "[∇π weight](figures/pi_weight_max.png), [reward](figures/reward.png), "
                     "[grad norm](figures/grad_norm.png)"))
    else:
        rows.append(claim2_by_max_ratio(runs, scalars, diffs, verdict))

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
    # multiplicity sensitivity (issue 37): the rule reads two intervals; Bonferroni for the two (97.5% each)
    ref_scalars = scalars.get(HARD_CLIP, {})
    bonf = {key: paired_difference(scalars.get(DGPO, {}).get(key, {}), ref_scalars.get(key, {}), confidence=0.975)
            for key in ("final_entropy", "final_reward")}
    if bonf["final_entropy"] is None or bonf["final_reward"] is None:
        b_reading = CANNOT
    elif bonf["final_entropy"].sign() > 0 and bonf["final_reward"].sign() >= 0 and bounded == len(seeds):
        b_reading = HOLDS
    elif bonf["final_entropy"].sign() < 0 or bonf["final_reward"].sign() < 0:
        b_reading = NOT
    else:
        b_reading = CANNOT
    sensitivity = (f" Multiplicity sensitivity (not the pre-registered rule): with Bonferroni for its two intervals "
                   f"(97.5% each), entropy {_interval(bonf['final_entropy'])}, reward {_interval(bonf['final_reward'])}"
                   f" → {b_reading}.")
    rows.append((
        "DGPO keeps exploring without diverging.",
        f"{DGPO} − {HARD_CLIP} final entropy interval above 0, final-reward interval not below 0, and {DGPO}'s max "
        "ratio below the largest soft clip's in every seed → holds; entropy or reward interval below 0 → does "
        "not hold; else cannot tell.",
        f"{reading}: entropy {_interval(entropy)}; reward {_interval(reward)}; max ratio below the soft clips' in "
        f"{bounded}/{len(seeds)} seeds.{sensitivity}", verdict(reading),
        "[entropy](figures/entropy.png), [ratio](figures/ratio_max.png), [reward](figures/reward.png)"))
    return rows


def claim2_by_max_ratio(runs, scalars, diffs, verdict) -> tuple[str, str, str, str, str]:
    """Claim 2 as the short and long studies judge it: by the max ratio and the final reward."""
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
    return (
        "Soft clipping's weights diverge as probabilities vanish and destabilise training.",
        f"per soft clip ({', '.join(SOFT_CLIPS)}): max ratio above {HARD_CLIP}'s in every seed and final-reward "
        f"interval below {HARD_CLIP}'s → holds; above in no seed or reward interval above 0 → does not hold; "
        "holds overall when it holds for every one, does not hold when for none, else cannot tell.",
        f"{reading}: " + "; ".join(text for _, _, text in per_method), verdict(reading),
        "[ratio](figures/ratio_max.png), [reward](figures/reward.png), [grad norm](figures/grad_norm.png)")


def claim2_by_pi_weight(runs, settings: ReportSettings, diffs: dict) -> tuple[str, str, str, str]:
    """Claim 2 by the paper's own quantity, the weight on ∇π, and by training stability (pre-registered).

    Per soft clip S (cispo, gppo, ce_gppo), against GRPO over the seeds both ran:

    - **weights**: per seed, S's largest per-step ``pi_weight_max`` of the run (the largest ``w / r`` of any
      out-of-trust-region token in any update). *Diverge* when it is >= ``pi_weight_diverge`` (10: ten times
      the on-policy weight 1/π_old, which GRPO's and DGPO's weights never exceed) in every seed; *bounded*
      when it is below in every seed;
    - **stability**: the paired S − GRPO final reward and peak grad norm (per seed the largest per-step
      ``grad_norm``), 95% t-intervals. *Destabilised* when the final-reward interval lies below 0 or the
      peak-grad-norm interval above 0;
    - S: **does not hold** when its weights stay bounded or its final-reward interval lies above 0 (checked
      first: a soft clip that trains better than GRPO is not destabilised, whatever its grad norm); else
      **holds** when its weights diverge and training is destabilised; else **cannot tell**.

    Overall: holds when it holds for every soft clip, does not hold when it does not hold for every one,
    else cannot tell. Returns (claim, rule, reading, verdict before the scale check).
    """
    bound = settings.pi_weight_diverge
    scalars = {m: per_seed(by_seed, settings) for m, by_seed in runs.items()}
    per_method = []
    for method in SOFT_CLIPS:
        if method not in runs or HARD_CLIP not in runs:
            continue
        seeds = sorted(set(scalars[method]["max_pi_weight"]) & set(scalars[HARD_CLIP]["max_pi_weight"]))
        values = [scalars[method]["max_pi_weight"][s] for s in seeds]
        over = sum(v >= bound for v in values)  # nan (no pi-weight logged) counts as neither over nor under
        under = sum(v < bound for v in values)
        reward, grad = diffs[method]["final_reward"], diffs[method]["peak_grad_norm"]
        destabilised = reward.sign() < 0 or grad.sign() > 0
        if (seeds and under == len(seeds)) or reward.sign() > 0:
            m_reading = NOT
        elif seeds and over == len(seeds) and destabilised:
            m_reading = HOLDS
        else:
            m_reading = CANNOT
        largest = ", ".join(f"{v:.3g}" for v in values)
        per_method.append((m_reading, f"{method}: largest ∇π weight ≥ {bound:g} in {over}/{len(seeds)} seeds "
                                      f"({largest}), final reward {_interval(reward)}, peak grad norm "
                                      f"{_interval(grad)} → {m_reading}"))
    readings = {r for r, _ in per_method}
    reading = HOLDS if readings == {HOLDS} else NOT if readings == {NOT} else CANNOT
    rule = (f"per soft clip ({', '.join(SOFT_CLIPS)}), against {HARD_CLIP}: its run's largest ∇π weight (w/r over "
            f"out-of-trust-region tokens, units of 1/π_old) < {bound:g} in every seed, or final-reward interval "
            f"above 0 → does not hold; otherwise largest ∇π weight ≥ {bound:g} in every seed and (final-reward "
            "interval below 0 or peak-grad-norm interval above 0) → holds; else cannot tell. Holds overall when it "
            "holds for every soft clip, does not hold overall when it does not hold for every one, else cannot tell.")
    return ("Soft clipping's weights diverge as probabilities vanish and destabilise training.", rule,
            f"{reading}: " + "; ".join(text for _, text in per_method), reading)


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


PI_WEIGHT_COLUMNS = ("pi_weight_max", "pi_weight_p99", "pi_weight_low_decile_max", "pi_weight_low_decile_p99")


def pi_weight_section(runs) -> str:
    """Per method, the weight on ∇π (units of 1/π_old): largest and median per-step value of each statistic."""
    head = ("| method | out-of-region max: largest (median per step) | out-of-region p99: largest (median) "
            "| lowest-π_old decile max: largest (median) | decile p99: largest (median) |")
    lines = [head, "|" + "---|" * 5]
    for method, by_seed in runs.items():
        cells = []
        for column in PI_WEIGHT_COLUMNS:
            values = _finite([r.get(column, math.nan) for rows in by_seed.values() for r in rows])
            cells.append(f"{max(values):.3g} ({statistics.median(values):.3g})" if values else "-")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join([
        "## The weight on ∇π (w / r, in units of 1/π_old)", "",
        "Per update, w is the weight the method's loss puts on A·∇log π, measured from the loss's own gradient; "
        "w / r is its weight on A·∇π in units of 1/π_old (1 on-policy). Out-of-region: tokens with A ≠ 0 and r "
        "outside [1-ε_low, 1+ε_high]; decile: the tenth of tokens with A ≠ 0 whose π_old is lowest (definitions: "
        "verl_dgpo/maths/loss_metrics.py). Each step logs the largest value over its updates; the table gives the "
        "largest over all steps and seeds and, in brackets, the median over steps and seeds (0: no such token). "
        "Being measured in the trainer's own precision, a value whose closed form is 1 (GRPO, DGPO inside the "
        "region, on LP/HN) can read a few parts in a thousand above it.",
        "", *lines])


def regime_section(out_dir: str, settings: ReportSettings) -> str:
    """The update schedule the pre-registered pilot rule chose, with the pilot's values and the step rule."""
    path = os.path.join(out_dir, settings.regime_file)
    if not os.path.exists(path):  # a reduced study in another folder: the pilot lives with the study's results
        return (f"## The regime (pre-registered pilot rule)\n\nNo pilot record in this folder ({settings.regime_file}); "
                "the stress study's is experiments/method_comparison/results/stress/pilot/regime.json.")
    with open(path) as f:
        record = json.load(f)
    rules = record["rules"]
    lines = ["## The regime (pre-registered pilot rule)", "",
             f"Candidates (PPO epochs x mini-batches per step) {', '.join(rules['candidates'])}, each piloted with "
             f"{rules['pilot_method']} alone on seed {rules['pilot_seed']} (not a study seed) for {rules['pilot_steps']} "
             f"steps; the study uses the smallest whose mean out-of-trust-region fraction is ≥ "
             f"{rules['out_frac_threshold']:.0%} ([{settings.regime_file}]({settings.regime_file}); CSVs under "
             f"[pilot/](pilot/)).", "",
             "| schedule | pilot mean out-of-region frac | steps | wall s |", "|---|---|---|---|"]
    for pilot in record["pilots"]:
        lines.append(f"| {pilot['schedule']} | {pilot['out_frac_mean']:.4f} | {pilot['steps']} | {pilot['wall_s']:.0f} |")
    lines += ["", f"Choice: {record['choice']['reason']}."]
    if not record["choice"]["reached"]:
        lines.append("**The threshold was not reached**: this study is less off-policy than the rule asked for.")
    if "study" in record:
        lines.append(f"Steps (step rule, from the chosen pilot's timing): {record['study']['reason']}.")
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
    return ("One panel per method, each step's raw value (no smoothing, so a one-step event shows as one step): "
            "the line is the mean over seeds (the median on the log-scale figures, where one seed's extreme would "
            f"set a mean), the band the seeds' min..max, the dashed line {reference}'s, for reference. On the weight "
            "figure the axis is linear below 1 and logarithmic above, and a step without out-of-region tokens "
            "(logged as 0) is drawn at 0.")


def trailing(values: list[float], window: int, how: str = "mean") -> list[float]:
    """Per position i, the mean (or max) of the finite values among ``values[max(0, i-window+1) : i+1]``."""
    reduce = statistics.fmean if how == "mean" else max
    out = []
    for i in range(len(values)):
        part = _finite(values[max(0, i - window + 1) : i + 1])
        out.append(reduce(part) if part else math.nan)
    return out


def curves(runs, column: str, window: int = 1, how: str = "mean"):
    """Per method: (steps, centre over seeds, min over seeds, max over seeds) of ``column``, nan-aware; the centre
    is the mean (``how`` "mean") or the median ("median", log axes). With ``window`` > 1 each seed's curve is
    first smoothed by :func:`trailing` (the reports draw raw per-step values: window 1)."""
    centre = statistics.median if how == "median" else statistics.fmean
    out = {}
    for method, by_seed in runs.items():
        steps = sorted({r["step"] for rows in by_seed.values() for r in rows})
        smoothed = []
        for rows in by_seed.values():
            by_step = {r["step"]: r[column] for r in rows}
            values = [by_step.get(step, math.nan) for step in steps]
            if window > 1:
                values = trailing(values, window, "max" if how == "median" else "mean")
            smoothed.append({step: v for step, v in zip(steps, values) if step in by_step})
        means, lows, highs = [], [], []
        for step in steps:
            values = _finite([seed[step] for seed in smoothed if step in seed])
            means.append(centre(values) if values else math.nan)
            lows.append(min(values) if values else math.nan)
            highs.append(max(values) if values else math.nan)
        out[method] = (steps, means, lows, highs)
    return out


def figures_of(settings: ReportSettings) -> dict:
    return {**FIGURES, **PI_WEIGHT_FIGURE} if settings.pi_weight else FIGURES


def plot(runs, out_dir: str, window: int = 1, reference: str = REFERENCE_METHOD, figures: dict = FIGURES) -> list[str]:
    """One PNG per :data:`FIGURES` entry under ``out_dir/figures``, one panel per method with the
    ``reference`` method's centre line dashed in the others; returns the paths.

    Each step's raw values are drawn, not smoothed (a trailing window would turn a one-step collapse into a
    ten-step decline); ``window`` is kept for callers but the reports pass none. Axes carry their quantity
    and unit (:data:`AXES`); the legend sits in its own strip above the panels; zeros on the weight figure
    are drawn at 0 (symlog axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(os.path.join(out_dir, FIGURE_DIR), exist_ok=True)
    methods = list(runs)
    cols = min(4, len(methods))
    rows_ = math.ceil(len(methods) / cols)
    paths = []
    for column, (stem, title, how) in figures.items():
        data = curves(runs, column, 1, how)
        ylabel, scale = AXES.get(column, (column, "linear"))
        centre = "median" if how == "median" else "mean"
        fig, axes = plt.subplots(rows_, cols, figsize=(3.2 * cols, 2.6 * rows_ + 1.2), sharex=True, sharey=True,
                                 squeeze=False)
        for ax, method in zip(axes.flat, methods):
            steps, mean, low, high = data[method]
            if method != reference and reference in data:
                ax.plot(data[reference][0], data[reference][1], color="0.45", ls="--", lw=1.0,
                        label=f"{reference}: {centre} over seeds")
            ax.plot(steps, mean, color="C0", lw=1.1, label=f"{centre} over seeds")
            ax.fill_between(steps, low, high, color="C0", alpha=0.25, lw=0, label="min..max over seeds")
            ax.set_title(f"{method} (n={len(runs[method])})", fontsize=9)
            ax.grid(alpha=0.3)
            if scale == "log":
                ax.set_yscale("log")
            elif scale == "symlog":
                ax.set_yscale("symlog", linthresh=1.0)
        if scale == "symlog":  # shared axes: from 0 to above the largest value of any panel
            top = max([v for steps, _, _, high in data.values() for v in _finite(high)] or [1.0])
            axes.flat[0].set_ylim(0, max(top, 1.0) * 3)
        for ax in list(axes.flat)[len(methods):]:
            ax.axis("off")
        for ax in axes[-1]:
            ax.set_xlabel("training step", fontsize=8)
        for ax in axes[:, 0]:
            ax.set_ylabel(ylabel, fontsize=8)
        handles, labels = axes.flat[min(1, len(methods) - 1)].get_legend_handles_labels()
        fig.suptitle(f"{title}; each step's value per seed, no smoothing", fontsize=10, y=0.995)
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.955), ncol=len(labels), fontsize=8,
                   frameon=False)
        fig.tight_layout(rect=(0, 0, 1, 0.92))
        path = os.path.join(out_dir, FIGURE_DIR, f"{stem}.png")
        fig.savefig(path, dpi=100, metadata=PNG_METADATA)
        plt.close(fig)
        paths.append(path)
    return paths


def question_and_limits(out_dir: str, runs, settings: ReportSettings, steps: int) -> tuple[str, str]:
    """The report's question and its limits (the stress study's own, from issue 37's reading, computed here)."""
    question = ("**Question.** On this task, at this scale, do the paper's three claims about training dynamics hold, "
                "each judged by the rule written beside it (the rules were fixed before the runs)?")
    if settings.pi_weight:
        question += (" The regime is further off policy than the long study's, by a schedule a pre-registered pilot "
                     "rule chose blind to the methods (below).")
    limits = ["One tiny model (~100k parameters), one synthetic task (digit copy), a few seeds, one learning rate and "
              "ε for every method, every method at this package's defaults. A verdict says what its rule read on "
              "this task at this scale, nothing about LLM reasoning training.",
              "Every claim is judged from training-batch statistics (reward at T = 1, entropy, ratios, weights); no "
              "checkpoint was evaluated on held-out prompts here. The held-out study "
              "([../heldout/preregistration.md](../heldout/preregistration.md)) judges DGPO against GRPO by "
              "held-out Avg@32."]
    if settings.pi_weight:
        limits.append("GPPO and CE-GPPO ran with this package's dual clip c = 3; their authors' scripts use c = 10. "
                      "The held-out study reruns both at c = 10.")
        grpo = runs.get(HARD_CLIP, {})
        path = os.path.join(out_dir, settings.regime_file)
        if grpo and settings.regime_file and os.path.exists(path):
            with open(path) as f:
                record = json.load(f)
            chosen = next(p for p in record["pilots"] if p["schedule"] == record["choice"]["schedule"])
            every = statistics.fmean(_finite([r["out_frac"] for rows in grpo.values() for r in rows]))
            last = statistics.fmean(_finite([r["out_frac"] for rows in grpo.values()
                                             for r in rows[-settings.final_window:]]))
            limits.append(f"The regime drifted from the pilot's: the pilot chose {chosen['schedule']} from GRPO's "
                          f"mean out-of-region fraction {chosen['out_frac_mean']:.4f} (one seed, "
                          f"{chosen['steps']} steps); over this study GRPO's was {every:.4f} over all steps and "
                          f"{last:.4f} over the last {settings.final_window}.")
        limits.append("Runs made beside other work on the shared machine: their wall times include that contention "
                      "(a seeded run's metrics do not depend on it).")
    return question, "**Limits.**\n\n" + "\n".join(f"- {line}" for line in limits)


def write_report(out_dir: str, methods, seeds, settings: ReportSettings, steps: int, *, header: str = "") -> str:
    """Write ``report.md`` and the figures into ``out_dir``; return the report's path."""
    runs = load_runs(out_dir, methods, seeds)
    if not runs:
        raise FileNotFoundError(f"no run CSV under {out_dir}/runs for methods {list(methods)} and seeds {list(seeds)}")
    figures = figures_of(settings)
    plot(runs, out_dir, settings.threshold_window, figures=figures)
    diffs = paired_differences(runs, settings)
    question, limits = question_and_limits(out_dir, runs, settings, steps)
    title, _, setup = header.strip().partition("\n")
    parts = [
        title,
        "## The paper's claims",
        question,
        "**Verdicts** (the paper's claims, each by the rule beside it; the numbers it reads are defined below):\n\n"
        + claims_table(claims(runs, settings, steps, diffs)),
        limits,
        "## Set-up\n\n" + setup.strip() if setup.strip() else "",
        regime_section(out_dir, settings) if settings.regime_file else "",
        completeness(runs, run_wall_times(out_dir, runs), methods, seeds, steps),
        "## Per method\n\n" + summary_table(runs, settings, steps),
        legend(settings, steps),
        pi_weight_section(runs) if settings.pi_weight else "",
        f"## Paired differences against {REFERENCE_METHOD} (per seed)\n\n"
        + paired_table(diffs, metrics=paired_metrics(settings))
        + ("\n\n- peak grad norm: per seed the largest per-step actor/grad_norm of the run." if settings.pi_weight else ""),
        "## Curves\n\n" + curves_legend(settings) + "\n\n"
        + "\n".join(f"![{title}]({FIGURE_DIR}/{stem}.png)" for stem, title, _ in figures.values()),
        "## Trust-region regions (means over steps and seeds; LN: A<0, r<1-ε_low; HP: A>0, r>1+ε_high; "
        "LP: A>0, r<1-ε_low; HN: A<0, r>1+ε_high)\n\n" + diagnostics_table(runs),
    ]
    path = os.path.join(out_dir, "report.md")
    with open(path, "w") as f:
        f.write("\n\n".join(p for p in parts if p) + "\n")
    return path
