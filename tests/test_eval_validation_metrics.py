"""Validation during training reports the evaluator's Avg@n and unbiased Pass@k: compared with verl
0.9.1's own process_validation_metrics and with closed forms computed here."""

import random
from math import comb

import numpy as np
import pytest

from verl_dgpo.eval.runner import summarize_samples
from verl_dgpo.eval.validation_metrics import pass_at_k_val_metrics, with_pass_at_k


def make_batch(seed, n, sources=(("aime24", 5), ("math500", 7))):
    """verl's validation layout: prompts repeated n times (interleaved), per-sample 0/1 acc."""
    rng = random.Random(seed)
    data_sources, uids, acc = [], [], []
    for source, prompts in sources:
        for p in range(prompts):
            rate = rng.random()
            for _ in range(n):
                data_sources.append(source)
                uids.append(f"{source}-{p}")
                acc.append(float(rng.random() < rate))
    return data_sources, uids, acc


def closed_form(data_sources, uids, acc, n, k):
    per_source = {}
    for s, u, a in zip(data_sources, uids, acc):
        per_source.setdefault(s, {}).setdefault(u, []).append(a)
    out = {}
    for s, problems in per_source.items():
        cs = [int(sum(v)) for v in problems.values()]
        out[s] = (
            float(np.mean([c / n for c in cs])),
            float(np.mean([1 - comb(n - c, k) / comb(n, k) for c in cs])),
        )
    return out


def trainer():
    from verl.trainer.ppo.ray_trainer import RayPPOTrainer

    return object.__new__(with_pass_at_k(RayPPOTrainer))  # _val_metrics_update uses no trainer state


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("n", [4, 8])
def test_mixin_adds_avg_and_pass_at_k_next_to_verls_metrics(seed, n):
    ds, uids, acc = make_batch(seed, n)
    metrics = trainer()._val_metrics_update(np.array(ds, dtype=object), uids, {"reward": list(acc), "acc": list(acc)}, [])
    expected = closed_form(ds, uids, acc, n, n)
    for source, (avg, pass_n) in expected.items():
        assert metrics[f"val-core/{source}/acc/mean@{n}"] == pytest.approx(avg)  # verl's own
        assert metrics[f"val-core/{source}/acc/avg@{n}"] == pytest.approx(avg)
        assert metrics[f"val-core/{source}/acc/pass@{n}"] == pytest.approx(pass_n)
        assert metrics[f"val-core/{source}/acc/pass@2"] == pytest.approx(closed_form(ds, uids, acc, n, 2)[source][1])
    assert metrics[f"val-core/average/acc/pass@{n}"] == pytest.approx(np.mean([v[1] for v in expected.values()]))


def test_verl_best_at_n_is_not_the_unbiased_pass_at_n():
    ds, uids, acc = make_batch(3, 8)
    metrics = trainer()._val_metrics_update(np.array(ds, dtype=object), uids, {"acc": list(acc)}, [])
    assert metrics["val-core/math500/acc/best@8/mean"] < metrics["val-core/math500/acc/pass@8"]


def test_validation_equals_the_final_evaluation_summary():
    n = 8
    ds, uids, acc = make_batch(5, n)
    index = {u: i for i, u in enumerate(dict.fromkeys(uids))}
    records = {}
    for s, u, a in zip(ds, uids, acc):
        records.setdefault(index[u], []).append({"data_source": s, "score": a, "tokens": 1, "finish_reason": "stop"})
    summary = summarize_samples(records, n)
    val = pass_at_k_val_metrics(ds, uids, {"acc": acc})
    for label, source in (("AIME24", "aime24"), ("MATH500", "math500")):
        for key in (f"avg@{n}", "pass@1", "pass@4", f"pass@{n}"):
            assert val[f"val-core/{source}/acc/{key}"] == pytest.approx(summary["benchmarks"][label][key] / 100)
    assert val[f"val-core/average/acc/pass@{n}"] == pytest.approx(summary["average"][f"pass@{n}"] / 100)


def test_missing_sessions_count_as_failures_like_verl_v1():
    """Our avg@n with ``expected_acc_counts`` equals verl's mean@n over the same sessions, the missing ones
    scored 0: given explicitly (every release), and, where verl's ``process_validation_metrics`` takes
    ``expected_acc_counts`` (0.9.1; verl's main branch 0.10.0.dev was cut before it), verl's own filling."""
    import inspect

    from verl.trainer.ppo.metric_utils import process_validation_metrics

    n = 4
    ds, uids, acc = make_batch(7, n, sources=(("aime24", 3),))
    keep = [i for i in range(len(acc)) if i % 5 != 0]  # some sessions never materialised
    assert len(keep) < len(acc)
    filled = (ds, uids, [acc[i] if i in keep else 0.0 for i in range(len(acc))])
    ds, uids, acc = [ds[i] for i in keep], [uids[i] for i in keep], [acc[i] for i in keep]
    expected_counts = {("aime24", u): n for u in set(uids)}
    ours = pass_at_k_val_metrics(ds, uids, {"acc": acc}, expected_counts)
    explicit = process_validation_metrics(filled[0], filled[1], {"acc": filled[2]})
    assert ours[f"val-core/aime24/acc/avg@{n}"] == pytest.approx(explicit["aime24"]["acc"][f"mean@{n}"])
    if "expected_acc_counts" in inspect.signature(process_validation_metrics).parameters:
        verl = process_validation_metrics(ds, uids, {"acc": acc}, expected_acc_counts=expected_counts)
        assert ours[f"val-core/aime24/acc/avg@{n}"] == pytest.approx(verl["aime24"]["acc"][f"mean@{n}"])


def test_v1_pass_at_k_trainer_replaces_only_the_configured_mode_in_this_process():
    pytest.importorskip("transfer_queue")
    from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY

    from verl_dgpo.eval.validation_metrics import PassAtKValidationMixin, use_pass_at_k_trainer

    before = dict(TRAINER_REGISTRY)
    try:
        use_pass_at_k_trainer("sync")
        use_pass_at_k_trainer("sync")  # idempotent: wrapped once
        wrapped = TRAINER_REGISTRY["sync"]
        assert issubclass(wrapped, PassAtKValidationMixin) and wrapped.__mro__[2] is before["sync"]
        assert set(TRAINER_REGISTRY) == set(before)  # no new names: the mode keeps its own
        assert all(TRAINER_REGISTRY[k] is v for k, v in before.items() if k != "sync")
    finally:
        TRAINER_REGISTRY.clear()
        TRAINER_REGISTRY.update(before)
