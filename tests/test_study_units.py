"""Fast checks of the study's pieces: the probe's metrics, the per-step CSV, the report's statistics.

Expected values are computed here by hand or with plain Python from the inputs, never by the study code.
"""

import json
import math
import os
import statistics

import pytest
import torch

from verl_dgpo.study import probe, report, runs


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


def test_probed_loss_keeps_loss_value_and_adds_metrics(monkeypatch):
    monkeypatch.delenv(probe.UPDATES_ENV, raising=False)

    def loss_fn(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean", config=None,
                rollout_is_weights=None):
        return (log_prob * advantages).sum(), {"actor/own": 1.0}

    wrapped = probe.probed(loss_fn)
    assert probe.probed(wrapped) is wrapped  # idempotent
    lp = torch.tensor([[0.0, math.log(2.0)]], requires_grad=True)
    loss, metrics = wrapped(torch.zeros(1, 2), lp, torch.ones(1, 2), torch.ones(1, 2), config={"clip_ratio": 0.2})
    assert loss.item() == pytest.approx(math.log(2.0))
    loss.backward()
    assert lp.grad.tolist() == [[1.0, 1.0]]  # the probe adds no gradient path
    assert metrics["actor/own"] == 1.0
    assert metrics["study/ratio_max"] == pytest.approx(2.0)
    assert metrics["study/hp_frac"] == pytest.approx(0.5)


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
    spec = runs.RunSpec("dgpo_n2", 7, settings, "/m")
    ov = spec.overrides()
    assert "algorithm.dgpo.n=2" in ov and "local_cpu.seed=7" in ov and "actor_rollout_ref.rollout.seed=7" in ov
    assert "actor_rollout_ref.actor.ppo_mini_batch_size=2" in ov and "actor_rollout_ref.actor.ppo_epochs=2" in ov
    assert settings.updates_per_step == 8
    with pytest.raises(runs.StudyError, match="allowed"):
        runs.RunSpec("nope", 0, settings, "/m").overrides()
    with pytest.raises(runs.StudyError, match="multiple"):
        runs.StudySettings(prompts_per_step=8, mini_batches=3)


# --- report ------------------------------------------------------------------------------------------


def _write_run(out, method, seed, rewards, entropies, times, ratio_max):
    rows = []
    for i, (r, e, t) in enumerate(zip(rewards, entropies, times)):
        row = {c: 0.0 for c in runs.CSV_COLUMNS}
        row.update(step=i + 1, reward=r, entropy=e, step_time=t, ratio_max=ratio_max[i], out_frac=0.1 * (i % 2))
        rows.append(row)
    os.makedirs(runs.run_dir(out, method, seed))
    runs.write_csv(runs.csv_path(out, method, seed), rows)


def test_report_statistics_from_csvs(tmp_path):
    out = str(tmp_path)
    data = {
        ("grpo", 0): ([0.1, 0.5, 0.9, 0.8], [1.0, 0.9, 0.8, 0.7], [9.0, 1.0, 2.0, 3.0], [1.5, 2.0, 7.0, 1.0]),
        ("grpo", 1): ([0.2, 0.3, 0.4, 0.6], [1.0, 0.5, 0.05, 0.02], [9.0, 2.0, 2.0, 2.0], [1.2, 1.3, 1.4, 1.5]),
        ("dgpo", 0): ([0.3, 0.9, 0.9, 1.0], [2.0, 0.1, 0.1, 0.1], [9.0, 4.0, 4.0, 5.0], [30.0, 2.0, 2.0, 2.0]),
    }
    for (m, s), (r, e, t, x) in data.items():
        _write_run(out, m, s, r, e, t, x)
    settings = report.ReportSettings(threshold=0.8, threshold_window=1, final_window=2, collapse_fraction=0.1)
    md, png, summaries = report.write_report(out, ["grpo", "dgpo"], [0, 1], settings)
    by = {s.method: s for s in summaries}
    g_final = [(0.9 + 0.8) / 2, (0.4 + 0.6) / 2]
    assert by["grpo"].final_reward_mean == pytest.approx(sum(g_final) / 2)
    assert by["grpo"].final_reward_std == pytest.approx(abs(g_final[0] - g_final[1]) / 2)
    assert by["grpo"].steps_to_threshold == [3, None]
    assert by["grpo"].collapsed == 1  # seed 1: mean(0.05, 0.02) < 0.1 * 1.0
    assert by["dgpo"].collapsed == 1  # mean(0.1, 0.1) < 0.1 * 2.0
    assert by["grpo"].max_ratio == 7.0 and by["dgpo"].max_ratio == 30.0
    g_time = statistics.median([1.0, 2.0, 3.0, 2.0, 2.0, 2.0])
    assert by["dgpo"].step_time_ratio == pytest.approx(statistics.median([4.0, 4.0, 5.0]) / g_time)
    text = open(md).read()
    assert "| grpo | 2 | 0.150 | 0.675 ± 0.175 | 3.0 (1/2) | 1/2 |" in text
    assert "| dgpo | 1 | 0.300 | 0.950 ± 0.000 | 2.0 (1/1) | 1/1 |" in text
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    steps, mean, low, high = report.curves(report.load_runs(out, ["grpo"], [0, 1]), "reward")["grpo"]
    assert steps == [1, 2, 3, 4] and mean[1] == pytest.approx(0.4) and low[2] == 0.4 and high[2] == 0.9


def test_finished_run_is_recognised_from_its_record(tmp_path):
    settings = runs.StudySettings(steps=3, extra_overrides=("a=1",))
    spec = runs.RunSpec("grpo", 0, settings, "/m")
    directory = str(tmp_path)
    (tmp_path / "metrics.csv").write_text("step\n")
    (tmp_path / runs.RUN_RECORD).write_text(json.dumps({"identity": spec.identity(), "returncode": 0, "wall_s": 1.0}))
    assert runs.finished_record(directory, spec) is not None
    assert runs.finished_record(directory, runs.RunSpec("grpo", 1, settings, "/m")) is None
    assert runs.finished_record(directory, runs.RunSpec("grpo", 0, runs.StudySettings(steps=4), "/m")) is None


@pytest.mark.parametrize("window,expected", [(1, 3), (2, 4), (3, 5), (6, None)])
def test_steps_to_threshold_uses_trailing_mean(window, expected):
    rewards = [0.2, 0.5, 0.9, 0.7, 0.9, 0.8]
    rows = [{"step": i + 1, "reward": r} for i, r in enumerate(rewards)]
    # hand: trailing means >= 0.8 -- w=1: step 3; w=2: (0.9+0.7)/2=0.8 at step 4; w=3: (0.9+0.7+0.9)/3 at step 5;
    # w=6: means at steps 1..6 are 0.2, 0.35, 0.533, 0.575, 0.64, 0.667 -> never
    assert report.first_step_reaching(rows, 0.8, window) == expected


def test_diagnostics_table_means_and_median_max_ratio():
    rows = lambda vals: [dict({c: 0.0 for c in runs.CSV_COLUMNS}, step=i + 1, ln_frac=v, ratio_max=10 * v + 1)
                         for i, v in enumerate(vals)]
    table = report.diagnostics_table({"dgpo": {0: rows([0.1, 0.3]), 1: rows([0.2, 0.6])}})
    line = next(l for l in table.splitlines() if l.startswith("| dgpo |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1] == f"{(0.1 + 0.3 + 0.2 + 0.6) / 4:.4f}"          # mean LN fraction
    assert cells[6] == f"{statistics.median([2.0, 4.0, 3.0, 7.0]):.3g}"  # median of per-step max ratios


def test_importing_the_probe_changes_nothing_in_verl():
    """Only verl_dgpo.study.boot (loaded in study runs) installs the probe; importing the probe does not."""
    from verl.trainer.ppo.core_algos import get_policy_loss_fn
    from verl.workers.utils import losses

    from verl_dgpo.local.hf_rollout import HFRolloutServer

    assert losses.get_policy_loss_fn is get_policy_loss_fn
    assert not getattr(HFRolloutServer._generate_batch, "__study_seeded__", False)
