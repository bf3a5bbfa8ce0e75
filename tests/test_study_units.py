"""Fast checks of the method comparison's pieces: probe metrics, wrapper losses, per-step CSV, statistics, report.

Expected values are computed here by hand or with plain Python from the inputs, never by the study code.
Anything that imports the experiment's verl plugin runs in a subprocess, so this test process's verl
registry stays as the package leaves it.
"""

import json
import math
import os
import statistics
import subprocess
import sys

import pytest
import torch


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENT = os.path.join(ROOT, "experiments", "method_comparison")
sys.path.insert(0, EXPERIMENT)

from comparison_study import probe, report, runs, stats  # noqa: E402

SHA = "0" * 64


# --- probe ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("eps_low,eps_high", [(0.2, 0.2), (0.2, 0.28), (0.1, 0.5)])
def test_probe_region_fractions_and_extremes_match_hand_count(eps_low, eps_high):
    ratios = [[0.5, 0.95, 1.6, 1.0], [0.7, 3.0, 1.1, 0.01]]
    adv = [[-1.0, -1.0, -1.0, -1.0], [2.0, 2.0, 2.0, 2.0]]
    mask = [[1, 1, 1, 0], [1, 1, 1, 1]]  # the last token of row 0 is padding (its ratio must be ignored)
    stats = probe.ratio_stats(
        torch.zeros(2, 4), torch.log(torch.tensor(ratios)), torch.tensor(adv), torch.tensor(mask), eps_low, eps_high
    )
    valid = [(r, a) for rr, aa, mm in zip(ratios, adv, mask) for r, a, m in zip(rr, aa, mm) if m]
    lo, hi = 1 - eps_low, 1 + eps_high
    count = len(valid)
    expect = {
        "study/ln_frac": sum(a < 0 and r < lo for r, a in valid) / count,
        "study/hp_frac": sum(a > 0 and r > hi for r, a in valid) / count,
        "study/lp_frac": sum(a > 0 and r < lo for r, a in valid) / count,
        "study/hn_frac": sum(a < 0 and r > hi for r, a in valid) / count,
        "study/out_frac": sum(r < lo or r > hi for r, a in valid) / count,
        "study/ratio_max": max(r for r, _ in valid),
        "study/ratio_min": min(r for r, _ in valid),
    }
    for key, value in expect.items():
        assert stats[key] == pytest.approx(value, rel=1e-5), key


def test_probe_empty_mask_gives_zero_fractions_and_nan_extremes():
    stats = probe.ratio_stats(torch.zeros(1, 3), torch.ones(1, 3), torch.ones(1, 3), torch.zeros(1, 3), 0.2, 0.2)
    assert all(stats[k] == 0.0 for k in probe.FRACTION_KEYS)
    assert all(math.isnan(stats[k]) for k in probe.EXTREME_KEYS)


@pytest.mark.parametrize("updates", [1, 3, 8])
def test_step_extremes_reports_true_max_once_per_step(updates):
    step = probe.StepExtremes(updates)
    values = [(1.0 + i * 0.37 % 2.1, 1.0 / (1.0 + i)) for i in range(2 * updates)]
    reported = [step.add(mx, mn) for mx, mn in values]
    for s in range(2):
        chunk = values[s * updates : (s + 1) * updates]
        out = reported[s * updates : (s + 1) * updates]
        assert all(o == {} for o in out[:-1])
        assert out[-1]["study/ratio_max"] == max(v[0] for v in chunk)
        assert out[-1]["study/ratio_min"] == min(v[1] for v in chunk)


# --- per-step CSV ------------------------------------------------------------------------------------


def test_rows_from_jsonl_reads_each_training_step_and_marks_missing_as_nan(tmp_path):
    path = tmp_path / "m.jsonl"
    records = [
        {"step": 1, "data": {"critic/score/mean": 0.25, "timing_s/step": 3.0, "actor/study/ratio_max": 4.5}},
        {"step": 1, "data": {"val-core/x": 1.0}},  # validation-only record: ignored
        {"step": 2, "data": {"critic/score/mean": 0.5, "timing_s/step": 1.0, "actor/entropy": 0.7}},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    rows = runs.rows_from_jsonl(str(path))
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["reward"] == 0.25 and rows[0]["ratio_max"] == 4.5 and math.isnan(rows[0]["entropy"])
    assert rows[1]["entropy"] == 0.7 and rows[1]["step_time"] == 1.0
    csv_path = tmp_path / "m.csv"
    runs.write_csv(str(csv_path), rows)
    back = runs.read_csv(str(csv_path))
    assert list(back[0]) == runs.CSV_COLUMNS
    assert back[1]["reward"] == 0.5 and math.isnan(back[0]["entropy"])


def test_run_overrides_name_method_seed_and_off_policy_batching():
    settings = runs.StudySettings(steps=5, prompts_per_step=8, mini_batches=4, ppo_epochs=2)
    spec = runs.RunSpec("dgpo_n2", 7, settings, "/m", SHA)
    ov = spec.overrides()
    assert "algorithm.dgpo.n=2" in ov and "local_cpu.seed=7" in ov and "actor_rollout_ref.rollout.seed=7" in ov
    assert "actor_rollout_ref.actor.ppo_mini_batch_size=2" in ov and "actor_rollout_ref.actor.ppo_epochs=2" in ov
    assert settings.updates_per_step == 8
    with pytest.raises(runs.StudyError, match="allowed"):
        runs.RunSpec("nope", 0, settings, "/m", SHA).overrides()
    with pytest.raises(runs.StudyError, match="multiple"):
        runs.StudySettings(prompts_per_step=8, mini_batches=3)


def test_run_overrides_select_the_study_wrapper_loss():
    settings = runs.StudySettings(steps=5)
    expected = {"grpo": "vanilla", "cispo": "cispo", "gppo": "gppo", "ce_gppo": "ce_gppo", "aspo": "aspo",
                "dgpo": "dgpo", "dgpo_n2": "dgpo"}
    for method, loss in expected.items():
        assert f"algorithm.policy_loss=study_{loss}" in runs.RunSpec(method, 0, settings, "/m", SHA).overrides()


# --- run identity ------------------------------------------------------------------------------------


def test_finished_run_is_recognised_from_its_record_in_any_checkout(tmp_path):
    settings = runs.StudySettings(steps=3, extra_overrides=("a=1",))
    spec = runs.RunSpec("grpo", 0, settings, "/checkout/a/warm_start", SHA)
    directory = str(tmp_path)
    (tmp_path / "metrics.csv").write_text("step\n")
    (tmp_path / runs.RUN_RECORD).write_text(json.dumps({"identity": spec.identity(), "returncode": 0, "wall_s": 1.0}))
    assert "/checkout" not in json.dumps(spec.identity())  # no path in the identity
    assert runs.finished_record(directory, runs.RunSpec("grpo", 0, settings, "/elsewhere/warm_start", SHA)) is not None
    assert runs.finished_record(directory, runs.RunSpec("grpo", 1, settings, "/m", SHA)) is None
    assert runs.finished_record(directory, runs.RunSpec("grpo", 0, runs.StudySettings(steps=4), "/m", SHA)) is None
    assert runs.finished_record(directory, runs.RunSpec("grpo", 0, settings, "/m", "1" * 64)) is None


def test_recorded_command_has_no_checkout_path():
    cmd = [sys.executable, "-m", "verl_dgpo.main", f"actor_rollout_ref.model.path={runs.REPO_ROOT}/x/warm_start"]
    assert runs.portable_command(cmd) == ["python", "-m", "verl_dgpo.main", "actor_rollout_ref.model.path=x/warm_start"]


def test_committed_run_records_hold_no_absolute_path():
    import glob

    records = glob.glob(os.path.join(EXPERIMENT, "results", "*", "runs", "*", "*", runs.RUN_RECORD))
    records += glob.glob(os.path.join(EXPERIMENT, "results", "*", "pilot", "*", "runs", "*", "*", runs.RUN_RECORD))
    assert records
    for path in records:
        text = open(path).read()
        assert '"/' not in text and "=/" not in text, path


# --- statistics --------------------------------------------------------------------------------------


def test_paired_interval_matches_hand_computation():
    # method and reference per seed; differences d = (+0.1, +0.3, +0.2): mean 0.2,
    # sample sd = sqrt(((-0.1)^2 + 0.1^2 + 0^2) / 2) = 0.1, t(0.975, 2) = 4.3027,
    # half width = 4.3027 * 0.1 / sqrt(3) = 0.248416...
    method = {0: 0.6, 1: 0.8, 2: 0.5, 9: 1.0}  # seed 9 has no reference run: left out
    reference = {0: 0.5, 1: 0.5, 2: 0.3}
    d = stats.paired_difference(method, reference)
    assert d.seeds == (0, 1, 2)
    assert d.differences == pytest.approx((0.1, 0.3, 0.2))
    assert d.mean == pytest.approx(0.2)
    assert d.low == pytest.approx(0.2 - 0.2484158, abs=1e-6) and d.high == pytest.approx(0.2 + 0.2484158, abs=1e-6)
    assert d.sign() == 0  # the interval contains 0
    shifted = stats.paired_difference({s: v + 0.3 for s, v in method.items()}, reference)
    assert shifted.sign() == 1 and shifted.low == pytest.approx(0.5 - 0.2484158, abs=1e-6)


def test_paired_interval_with_one_seed_has_no_bounds():
    d = stats.paired_difference({0: 0.7}, {0: 0.5, 1: 0.1})
    assert d.mean == pytest.approx(0.2) and math.isnan(d.low) and math.isnan(d.high) and d.sign() == 0
    assert stats.paired_difference({1: 0.7}, {0: 0.5}) is None


def test_t_table_matches_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    for df in range(1, len(stats.T_975) + 1):
        assert stats.t_quantile_975(df) == pytest.approx(scipy_stats.t.ppf(0.975, df), abs=6e-5)


@pytest.mark.parametrize("window,expected", [(1, 3), (2, 4), (3, 5), (6, None)])
def test_steps_to_threshold_uses_trailing_mean(window, expected):
    rewards = [0.2, 0.5, 0.9, 0.7, 0.9, 0.8]
    # hand: trailing means >= 0.8 -- w=1: step 3; w=2: (0.9+0.7)/2=0.8 at step 4; w=3: (0.9+0.7+0.9)/3 at step 5;
    # w=6: means at steps 1..6 are 0.2, 0.35, 0.533, 0.575, 0.64, 0.667 -> never
    assert stats.first_step_reaching(list(range(1, 7)), rewards, 0.8, window) == expected


def test_seeds_that_never_reach_the_threshold_count_as_the_budget():
    assert stats.steps_to_threshold([3, None, 5], budget=20) == ((3 + 20 + 5) / 3, 2)


# --- report ------------------------------------------------------------------------------------------


def _write_run(out, method, seed, rewards, entropies, times, ratio_max, wall_s=100.0):
    rows = []
    for i, (r, e, t) in enumerate(zip(rewards, entropies, times)):
        row = {c: 0.0 for c in runs.CSV_COLUMNS}
        row.update(step=i + 1, reward=r, entropy=e, step_time=t, ratio_max=ratio_max[i], out_frac=0.1 * (i % 2))
        rows.append(row)
    os.makedirs(runs.run_dir(out, method, seed))
    runs.write_csv(runs.csv_path(out, method, seed), rows)
    if wall_s is not None:  # a finished run's record, written last
        with open(os.path.join(runs.run_dir(out, method, seed), runs.RUN_RECORD), "w") as f:
            json.dump({"identity": {}, "returncode": 0, "wall_s": wall_s}, f)


def test_report_statistics_from_csvs(tmp_path):
    out = str(tmp_path)
    data = {
        ("grpo", 0): ([0.1, 0.5, 0.9, 0.8], [1.0, 0.9, 0.8, 0.7], [9.0, 1.0, 2.0, 3.0], [1.5, 2.0, 7.0, 1.0]),
        ("grpo", 1): ([0.2, 0.3, 0.4, 0.6], [1.0, 0.5, 0.05, 0.02], [9.0, 2.0, 2.0, 2.0], [1.2, 1.3, 1.4, 1.5]),
        ("dgpo", 0): ([0.3, 0.9, 0.9, 1.0], [2.0, 0.1, 0.1, 0.1], [9.0, 4.0, 4.0, 5.0], [30.0, 2.0, 2.0, 2.0]),
        ("dgpo", 1): ([0.2, 0.4, 0.5, 0.5], [1.0, 0.6, 0.3, 0.1], [9.0, 4.0, 4.0, 4.0], [1.0, 2.0, 3.0, 2.5]),
    }
    for (m, s), (r, e, t, x) in data.items():
        _write_run(out, m, s, r, e, t, x)
    settings = report.ReportSettings(threshold=0.8, threshold_window=1, final_window=2, claims_min_steps=4)
    text = open(report.write_report(out, ["grpo", "dgpo"], [0, 1], settings, steps=4)).read()
    # hand: grpo final rewards (0.85, 0.5): mean 0.675, sample sd 0.2475; mean rewards (0.575, 0.375);
    # steps to 0.8: seed 0 at step 3, seed 1 never (counts as 4): 3.5 (1/2); final entropy (0.75, 0.035).
    line = next(l for l in text.splitlines() if l.startswith("| grpo |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1:7] == ["2", "0.150", "0.675 ± 0.247", "0.475 ± 0.141", "3.5 (1/2)", "0.393 ± 0.506"]
    assert cells[7] == "7 (1.45)"  # max of all per-step max ratios; median of the 8 of them
    g_time = statistics.median([1.0, 2.0, 3.0, 2.0, 2.0, 2.0])
    d_line = next(l for l in text.splitlines() if l.startswith("| dgpo |"))
    assert d_line.rstrip(" |").endswith(f"{statistics.median([4.0, 4.0, 5.0, 4.0, 4.0, 4.0]) / g_time:.2f}")
    # paired final reward: dgpo (0.95, 0.5) - grpo (0.85, 0.5) = (+0.1, 0.0); mean 0.05, sd 0.0707107,
    # half width 12.7062 * 0.0707107 / sqrt(2) = 0.63531
    paired = next(l for l in text.split("## Paired")[1].splitlines() if l.startswith("| dgpo |"))
    assert "+0.050 [-0.585, +0.685] (+0.100, +0.000)" in paired
    for stem in ("reward", "entropy", "ratio_max", "grad_norm", "out_frac"):
        assert open(os.path.join(out, "figures", f"{stem}.png"), "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    steps, mean, low, high = report.curves(report.load_runs(out, ["grpo"], [0, 1]), "reward")["grpo"]
    assert steps == [1, 2, 3, 4] and mean[1] == pytest.approx(0.4) and low[2] == 0.4 and high[2] == 0.9


def test_curves_smooth_each_seed_over_the_trailing_window_before_the_seed_band(tmp_path):
    nan = math.nan
    assert report.trailing([1.0, 3.0, nan, 5.0], 2) == [1.0, 2.0, 3.0, 5.0]
    assert report.trailing([1.0, 3.0, nan, 5.0], 2, "max") == [1.0, 3.0, 3.0, 5.0]
    assert report.trailing([2.0, 4.0, 9.0], 1) == [2.0, 4.0, 9.0]
    runs_ = {"grpo": {0: [{"step": i + 1, "reward": v} for i, v in enumerate([0.0, 1.0, 1.0])],
                      1: [{"step": i + 1, "reward": v} for i, v in enumerate([1.0, 0.0, 0.0])]}}
    steps, mean, low, high = report.curves(runs_, "reward", window=2)["grpo"]
    # hand: seed 0 smoothed (0, 0.5, 1), seed 1 (1, 0.5, 0): means (0.5, 0.5, 0.5), bands [0,1], [0.5,0.5], [0,1]
    assert steps == [1, 2, 3] and mean == [0.5, 0.5, 0.5] and low == [0.0, 0.5, 0.0] and high == [1.0, 0.5, 1.0]


def test_report_names_missing_unfinished_and_short_runs_and_sums_wall_time(tmp_path):
    out = str(tmp_path)
    flat = ([0.5] * 4, [0.3] * 4, [1.0] * 4, [1.2] * 4)
    _write_run(out, "grpo", 0, *flat, wall_s=100.0)
    _write_run(out, "grpo", 1, *flat, wall_s=260.0)
    _write_run(out, "dgpo", 0, *[v[:3] for v in flat], wall_s=90.0)  # stopped after 3 of 4 steps
    _write_run(out, "dgpo", 1, *flat, wall_s=None)  # CSV written, run.json not yet: unfinished
    text = open(report.write_report(out, ["grpo", "dgpo"], [0, 1], report.ReportSettings(final_window=1),
                                    steps=4)).read()
    assert "Runs: 3/4 of the study's 2 methods x 2 seeds." in text
    assert "missing: dgpo seed 1." in text  # the unfinished run is not in the statistics
    assert "fewer than 4 steps**: dgpo seed 0 (3 steps)" in text
    # hand: 100 + 260 + 90 = 450 s = 0.125 h; median of (90, 100, 260) = 100
    assert "450 s = 0.12 h in all; per run min 90 s, median 100 s, max 260 s" in text
    assert next(l for l in text.splitlines() if l.startswith("| dgpo |")).split("|")[2].strip() == "1"
    complete = str(tmp_path / "complete")
    for seed in (0, 1):
        _write_run(complete, "grpo", seed, *flat)
    text = open(report.write_report(complete, ["grpo"], [0, 1], report.ReportSettings(final_window=1), steps=4)).read()
    assert "Runs: 2/2 of the study's 1 methods x 2 seeds (complete)." in text and "Partial" not in text


def _claims_runs(entropy_gap, reward_gap, soft_ratio):
    """grpo, dgpo and the soft clips over 3 seeds, with chosen final-entropy / final-reward gaps to grpo."""
    def rows(reward, entropy, ratio):
        return [dict({c: 0.0 for c in runs.CSV_COLUMNS}, step=i + 1, reward=reward, entropy=entropy, ratio_max=ratio)
                for i in range(3)]
    noise = (0.0, 0.01, -0.01)
    out = {"grpo": {s: rows(0.5, 0.3, 2.0) for s in range(3)},
           "dgpo": {s: rows(0.5 + reward_gap + noise[s], 0.3 + entropy_gap + noise[s], 3.0) for s in range(3)}}
    for method in report.SOFT_CLIPS:
        out[method] = {s: rows(0.5 - 0.2 + noise[s], 0.3, soft_ratio) for s in range(3)}
    return out


@pytest.mark.parametrize("entropy_gap,reward_gap,soft_ratio,expected", [
    (0.2, 0.0, 100.0, ("holds", "holds", "holds")),
    (-0.2, 0.0, 100.0, ("does not hold", "holds", "does not hold")),
    (0.0, -0.2, 1.0, ("cannot tell", "does not hold", "does not hold")),
])
def test_claim_rules(entropy_gap, reward_gap, soft_ratio, expected):
    data = _claims_runs(entropy_gap, reward_gap, soft_ratio)
    settings = report.ReportSettings(final_window=1, claims_min_steps=3)
    rows = report.claims(data, settings, 3, report.paired_differences(data, settings))
    assert tuple(r[3] for r in rows) == expected
    few = report.claims(data, report.ReportSettings(final_window=1, claims_min_steps=150), 3,
                        report.paired_differences(data, settings))
    assert all(r[3].startswith("cannot tell at this scale") for r in few)


# --- the experiment stays out of the package and out of verl -----------------------------------------


def _python(code: str, **env) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, EXPERIMENT, os.environ.get("PYTHONPATH", "")]))
    full_env.pop("VERL_USE_EXTERNAL_MODULES", None)
    full_env.update(env)
    return subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True, text=True, timeout=300)


def test_package_source_never_names_the_experiment():
    for folder, _, files in os.walk(os.path.join(ROOT, "verl_dgpo")):
        for name in files:
            if name.endswith((".py", ".yaml")):
                text = open(os.path.join(folder, name)).read()
                assert "comparison_study" not in text and "experiments/method_comparison" not in text, name


def test_experiment_loads_only_on_request_registers_wrappers_and_rebinds_no_verl_function():
    """One fresh process: importing verl (hence the plugin verl_dgpo.registry), verl_dgpo and its trainer entry
    point loads nothing of the experiment; then every attribute of every loaded verl module is snapshot,
    the experiment's plugin imported, and the object identities compared; the wrappers equal their losses."""
    code = r'''
import sys, verl, verl.trainer.ppo.core_algos as core_algos, verl.workers.utils.losses
import verl_dgpo, verl_dgpo.registry, verl_dgpo.main
assert not [m for m in sys.modules if m.split(".")[0] == "comparison_study"]
assert not [n for n in core_algos.POLICY_LOSS_REGISTRY if n.startswith("study_")]
def snapshot():
    return {(name, attr): id(value) for name, mod in list(sys.modules.items())
            if name == "verl" or name.startswith("verl.") for attr, value in list(vars(mod).items())}
before = snapshot()
registry_before = dict(core_algos.POLICY_LOSS_REGISTRY)
import comparison_study.plugin as plugin
after = snapshot()
changed = [key for key in before if after.get(key) != before[key]]
assert not changed, changed
new = {k: v for k, v in core_algos.POLICY_LOSS_REGISTRY.items() if k not in registry_before}
assert sorted(new) == sorted("study_" + n for n in plugin.WRAPPED), sorted(new)
assert all(core_algos.POLICY_LOSS_REGISTRY[k] is v for k, v in registry_before.items())

import math, torch
lp = torch.tensor([[0.0, math.log(2.0), math.log(0.5)]], requires_grad=True)
old, adv, mask = torch.zeros(1, 3), torch.tensor([[1.0, 1.0, -1.0]]), torch.ones(1, 3)
from verl_dgpo.config import standalone_actor_config
for name in plugin.WRAPPED:
    cfg = standalone_actor_config(name)
    kwargs = dict(old_log_prob=old, log_prob=lp, advantages=adv, response_mask=mask, loss_agg_mode="token-mean",
                  config=cfg, rollout_is_weights=None)
    want, want_metrics = core_algos.get_policy_loss_fn(name)(**kwargs)
    got, metrics = core_algos.get_policy_loss_fn("study_" + name)(**kwargs)
    g_want, = torch.autograd.grad(want, lp)
    g_got, = torch.autograd.grad(got, lp)
    assert torch.equal(want.detach(), got.detach()) and torch.equal(g_want, g_got), name
    # ratios (1, 2, 0.5) with advantages (+, +, -), eps 0.2: HP = token 2, LN = token 3
    assert abs(metrics["study/hp_frac"] - 1 / 3) < 1e-6 and abs(metrics["study/ln_frac"] - 1 / 3) < 1e-6, name
    assert abs(metrics["study/ratio_max"] - 2.0) < 1e-6 and abs(metrics["study/ratio_min"] - 0.5) < 1e-6
    assert set(want_metrics) <= set(metrics)
print("ok")
'''
    proc = _python(code)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stdout[-2000:] + proc.stderr[-3000:]
