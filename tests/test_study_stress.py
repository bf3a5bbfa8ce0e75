"""The stress study's pre-registered rules, on hand-made tables and runs: the pilot rule (which update
schedule), the step rule (how many steps fit the budget), claim 2 judged by the weight on ∇π and training
stability, the report's stress sections, and the committed pilot's choice recomputed from its CSVs.

Expected values are worked out by hand here, never taken from the study code's output.
"""

import json
import math
import os
import shutil
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENT = os.path.join(ROOT, "experiments", "method_comparison")
sys.path.insert(0, EXPERIMENT)

from comparison_study import configs, regime, report, runs  # noqa: E402

S14, S28, S48, S88 = (1, 4), (2, 8), (4, 8), (8, 8)


# --- the pilot rule ----------------------------------------------------------------------------------


def test_candidates_grow_from_the_long_studys_schedule_and_the_pilot_seed_is_no_study_seed():
    assert regime.CANDIDATES[0] == (configs.LONG.settings.ppo_epochs, configs.LONG.settings.mini_batches) == S14
    updates = [e * m for e, m in regime.CANDIDATES]
    assert updates == sorted(updates) and len(set(updates)) == len(updates)
    assert regime.PILOT_SEED not in regime.STUDY_SEEDS and len(regime.STUDY_SEEDS) >= 5
    assert regime.PILOT_METHOD == "grpo" and regime.OUT_FRAC_THRESHOLD == 0.05
    assert set(runs.SEVEN_METHODS) | {"sapo"} == set(regime.STUDY_METHODS)
    for epochs, mini in regime.CANDIDATES:  # every candidate is a valid study setting
        runs.StudySettings(steps=1, digits=6, mini_batches=mini, ppo_epochs=epochs)


@pytest.mark.parametrize("table,schedule,reached,determined", [
    ({S14: 0.01, S28: 0.03, S48: 0.06, S88: 0.20}, S48, True, True),  # the smallest reaching 5%, not the largest
    ({S14: 0.01, S28: 0.05}, S28, True, True),  # exactly 5% reaches it; the larger ones need no pilot
    ({S14: 0.07, S28: 0.01}, S14, True, True),  # the order decides, not the values of later candidates
    ({S14: 0.01, S48: 0.20}, None, False, False),  # 2x8 not piloted: cannot skip it
    ({}, None, False, False),
    ({S14: 0.01, S28: 0.02, S48: 0.03, S88: 0.049}, S88, False, True),  # none reaches: the largest, flagged
])
def test_pilot_rule_on_hand_tables(table, schedule, reached, determined):
    choice = regime.choose_schedule(table)
    assert (choice.schedule, choice.reached, choice.determined) == (schedule, reached, determined)
    if determined and not reached:
        assert "no candidate reached 5%" in choice.reason and "8x8" in choice.reason
    if not determined:
        assert choice.reason.startswith("undetermined")


def test_schedule_labels_are_epochs_by_mini_batches_and_unknown_ones_are_named():
    assert regime.label(S28) == "2x8" and regime.parse_label("4x8") == S48
    with pytest.raises(ValueError, match=r"unknown schedule '3x3'; allowed: \['1x4', '2x8', '4x8', '8x8'\]"):
        regime.parse_label("3x3")


# --- the step rule -----------------------------------------------------------------------------------


def test_step_rule_fills_the_budget_in_multiples_of_ten():
    # hand: 40 runs, 3.5 h = 12600 s, margin 1.1: per run 12600 / 44 = 286.36 s; fixed 46 + first 12 = 58;
    # (286.36 - 58) / 3 = 76.1 later steps -> s <= 77.1 -> 70; projected 40 x (58 + 69 x 3) = 10600 s
    count = regime.study_steps(regime.Timing(46.0, 12.0, 3.0), runs=40)
    assert count.steps == 70 and count.projected_s == pytest.approx(10600.0) and count.fits


def test_step_rule_keeps_the_minimum_and_says_it_overruns():
    # hand: (286.36 - 58) / 6 = 38.1 -> 30 < 60, so 60; 40 x (58 + 59 x 6) = 16480 s = 4.58 h
    count = regime.study_steps(regime.Timing(46.0, 12.0, 6.0), runs=40)
    assert count.steps == 60 and count.projected_s == pytest.approx(16480.0) and not count.fits
    assert "overrun" in count.reason and "4.58 h" in count.reason


def test_timing_of_a_run_is_measured_as_project_time_measures_it():
    t = regime.Timing.of_run(100.0, [10.0, 2.0, 4.0, 3.0])
    assert (t.fixed_s, t.first_step_s, t.later_step_s) == (81.0, 10.0, 3.0)


# --- the stress configuration -------------------------------------------------------------------------


def test_stress_config_exists_only_once_the_rules_decided(tmp_path):
    assert configs.stress_config(str(tmp_path)) is None
    undecided = regime.decide({S14: {"out_frac_mean": 0.01, "wall_s": 90.0, "step_times": [10.0] + [2.0] * 19}})
    (tmp_path / regime.REGIME_FILE).write_text(json.dumps(undecided))
    assert "study" not in undecided and configs.stress_config(str(tmp_path)) is None
    pilots = {S14: {"out_frac_mean": 0.01, "wall_s": 90.0, "step_times": [10.0] + [2.0] * 19},
              S28: {"out_frac_mean": 0.08, "wall_s": 136.0, "step_times": [12.0] + [4.0] * 19}}
    decided = regime.decide(pilots)
    (tmp_path / regime.REGIME_FILE).write_text(json.dumps(decided))
    config = configs.stress_config(str(tmp_path))
    # hand: 2x8's timing fixed 136 - 88 = 48, first 12, later 4: (286.36 - 60) / 4 = 56.6 -> 57.6 -> 50 < 60 -> 60
    assert (config.settings.ppo_epochs, config.settings.mini_batches, config.settings.steps) == (2, 8, 60)
    long_settings = configs.LONG.settings
    for field in ("digits", "prompts_per_step", "responses_per_prompt", "lr", "max_response_length", "balance_batch"):
        assert getattr(config.settings, field) == getattr(long_settings, field), field
    assert config.warm_start == configs.LONG.warm_start and config.methods == regime.STUDY_METHODS
    assert config.report.pi_weight and config.report.claims_min_steps == 60
    assert configs.StudyConfig.from_json(config.to_json()) == config


# --- claim 2 by the weight on ∇π ----------------------------------------------------------------------


def _rows(reward, entropy, pi_weight, grad_norm, steps=3):
    return [dict({c: 0.0 for c in runs.CSV_COLUMNS}, step=i + 1, reward=reward, entropy=entropy, ratio_max=2.0,
                 pi_weight_max=pi_weight if i == 1 else 0.5, grad_norm=grad_norm if i == 2 else 0.5)
            for i in range(steps)]


def _stress_runs(soft_pi, soft_reward_gap, soft_grad, per_method=None):
    """grpo, dgpo and the soft clips over 4 seeds; the soft clips' run-max ∇π weight, final-reward gap to grpo
    (plus a per-seed jitter, so intervals have width) and peak grad norm are chosen; ``per_method`` overrides."""
    jitter = (0.0, 0.01, -0.01, 0.005)
    out = {"grpo": {s: _rows(0.5, 0.3, 1.0, 1.0) for s in range(4)},
           "dgpo": {s: _rows(0.5 + jitter[s], 0.3 + jitter[s], 1.0, 1.0) for s in range(4)}}
    for method in report.SOFT_CLIPS:
        pi, gap, grad = (per_method or {}).get(method, (soft_pi, soft_reward_gap, soft_grad))
        out[method] = {s: _rows(0.5 + gap + jitter[s], 0.3, pi, grad + jitter[s]) for s in range(4)}
    return out


STRESS = report.ReportSettings(final_window=1, claims_min_steps=3, pi_weight=True)


@pytest.mark.parametrize("soft,per_method,expected", [
    ((50.0, -0.2, 1.0), None, "holds"),  # weights diverge, reward below grpo's
    ((50.0, 0.0, 3.0), None, "holds"),  # weights diverge, reward level, grad-norm peaks above grpo's
    ((10.0, -0.2, 1.0), None, "holds"),  # the bound is inclusive
    ((9.9, -0.2, 3.0), None, "does not hold"),  # bounded in every seed, however unstable
    ((50.0, 0.2, 3.0), None, "does not hold"),  # reward above grpo's
    ((50.0, 0.0, 1.0), None, "cannot tell"),  # weights diverge, nothing measurably unstable
    ((50.0, -0.2, 1.0), {"gppo": (2.0, -0.2, 1.0)}, "cannot tell"),  # holds for two soft clips, not the third
])
def test_claim2_rule_by_pi_weight_and_stability(soft, per_method, expected):
    data = _stress_runs(*soft, per_method=per_method)
    rows = report.claims(data, STRESS, 3, report.paired_differences(data, STRESS))
    claim, rule, reading, verdict, figures = rows[1]
    assert claim.startswith("Soft clipping") and verdict == expected, reading
    assert "∇π weight" in rule and "peak-grad-norm" in rule and "pi_weight_max.png" in figures


def test_claim2_mixed_seeds_cannot_tell_and_few_steps_cannot_tell_at_this_scale():
    data = _stress_runs(50.0, -0.2, 1.0)
    data["cispo"][3] = _rows(0.3, 0.3, 2.0, 1.0)  # one seed bounded: neither "every seed" side
    rows = report.claims(data, STRESS, 3, report.paired_differences(data, STRESS))
    assert rows[1][3] == "cannot tell" and "cispo: largest ∇π weight ≥ 10 in 3/4 seeds" in rows[1][2]
    strict = report.ReportSettings(final_window=1, claims_min_steps=60, pi_weight=True)
    rows = report.claims(data, strict, 3, report.paired_differences(data, strict))
    assert all(r[3] == "cannot tell at this scale (3 < 60 steps)" for r in rows)


def test_claim2_without_pi_weight_keeps_the_long_studys_rule():
    data = _stress_runs(50.0, -0.2, 1.0)
    settings = report.ReportSettings(final_window=1, claims_min_steps=3)
    rows = report.claims(data, settings, 3, report.paired_differences(data, settings))
    assert "max ratio above grpo's" in rows[1][1] and "∇π" not in rows[1][1]


# --- the stress report --------------------------------------------------------------------------------


def _write(out, method, seed, rows):
    os.makedirs(runs.run_dir(out, method, seed))
    runs.write_csv(runs.csv_path(out, method, seed), rows)
    with open(os.path.join(runs.run_dir(out, method, seed), runs.RUN_RECORD), "w") as f:
        json.dump({"identity": {}, "returncode": 0, "wall_s": 100.0}, f)


def test_stress_report_has_the_regime_the_pi_weight_table_and_six_figures_and_rebuilds_identically(tmp_path):
    out = str(tmp_path / "study")
    data = _stress_runs(50.0, -0.2, 3.0)
    for method, by_seed in data.items():
        for seed, rows in by_seed.items():
            _write(out, method, seed, rows)
    os.makedirs(os.path.join(out, "pilot"))
    record = regime.decide({S14: {"out_frac_mean": 0.0123, "wall_s": 90.0, "step_times": [10.0] + [2.0] * 19},
                            S28: {"out_frac_mean": 0.0712, "wall_s": 136.0, "step_times": [12.0] + [4.0] * 19}})
    with open(os.path.join(out, "pilot", regime.REGIME_FILE), "w") as f:
        json.dump(record, f)
    settings = report.ReportSettings(final_window=1, threshold_window=1, claims_min_steps=3, pi_weight=True,
                                     regime_file="pilot/regime.json")
    methods = list(data)
    path = report.write_report(out, methods, range(4), settings, steps=3)
    first = open(path, "rb").read()
    figures = {name: open(os.path.join(out, "figures", name), "rb").read()
               for name in sorted(os.listdir(os.path.join(out, "figures")))}
    assert sorted(figures) == sorted(f"{s}.png" for s in ("reward", "entropy", "ratio_max", "grad_norm", "out_frac",
                                                          "pi_weight_max"))
    text = first.decode()
    assert "| 1x4 | 0.0123 | 20 | 90 |" in text and "| 2x8 | 0.0712 | 20 | 136 |" in text
    assert "2x8 is the smallest candidate" in text and "Steps (step rule" in text
    # hand: cispo's per-step pi_weight_max is (0.5, 50, 0.5) in every seed: largest 50, median 0.5
    cispo = next(l for l in text.split("## The weight on ∇π")[1].splitlines() if l.startswith("| cispo |"))
    assert cispo.split("|")[2].strip() == "50 (0.5)"
    assert "| method − grpo | final reward | mean reward (area) | final entropy | peak grad norm |" in text
    shutil.rmtree(os.path.join(out, "figures"))
    os.remove(path)
    report.write_report(out, methods, range(4), settings, steps=3)
    assert open(path, "rb").read() == first
    assert all(open(os.path.join(out, "figures", n), "rb").read() == b for n, b in figures.items())


# --- the committed pilot ------------------------------------------------------------------------------


def test_committed_regime_is_the_rules_output_on_the_committed_pilot_csvs():
    """Once the pilot is committed: its regime.json is what the rules give on its CSVs and run records."""
    if regime.read_regime(configs.PILOT_DIR) is None:
        pytest.skip("no pilot committed yet")
    sys.path.insert(0, EXPERIMENT)
    import pilot  # experiments/method_comparison/pilot.py

    committed = regime.read_regime(configs.PILOT_DIR)
    assert committed == json.loads(json.dumps(regime.decide(pilot.all_measured(configs.PILOT_DIR))))
    # the rule read by hand from the committed values: the first candidate at >= 5%, all before it piloted
    values = {p["schedule"]: p["out_frac_mean"] for p in committed["pilots"]}
    order = [regime.label(c) for c in regime.CANDIDATES]
    reached = [s for s in order if s in values and values[s] >= 0.05]
    if reached:
        first = reached[0]
        assert all(s in values and values[s] < 0.05 for s in order[:order.index(first)])
        assert committed["choice"]["schedule"] == first
    for p in committed["pilots"]:
        assert p["steps"] == regime.PILOT_STEPS and not math.isnan(p["out_frac_mean"])


def test_stress_report_in_a_folder_without_the_pilot_says_so(tmp_path):
    out = str(tmp_path)
    for method, by_seed in _stress_runs(50.0, -0.2, 3.0).items():
        _write(out, method, 0, by_seed[0])
    settings = report.ReportSettings(final_window=1, claims_min_steps=3, pi_weight=True, regime_file="pilot/regime.json")
    text = open(report.write_report(out, ["grpo", "cispo"], [0], settings, steps=3)).read()
    assert "No pilot record in this folder (pilot/regime.json)" in text

