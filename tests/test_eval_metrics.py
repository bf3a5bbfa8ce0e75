"""Unbiased Pass@k against brute force over all k-subsets and the binomial closed form; Avg@k and the
benchmark average against direct computation."""

import itertools
from fractions import Fraction
from math import comb

import pytest

from verl_dgpo.eval.metrics import benchmark_metrics, pass_at_k, report_ks, summarize


def brute_force_pass_at_k(n, c, k):
    """Fraction of the C(n, k) subsets of k samples that contain at least one of the c correct ones."""
    outcomes = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return Fraction(sum(any(outcomes[i] for i in s) for s in subsets), len(subsets))


GRID = [(n, c, k) for n in range(1, 9) for c in range(0, n + 1) for k in range(1, n + 1)]


@pytest.mark.parametrize("n, c, k", GRID)
def test_pass_at_k_equals_enumeration_over_k_subsets(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(float(brute_force_pass_at_k(n, c, k)), abs=1e-12)


@pytest.mark.parametrize("n, c, k", [(32, 3, 1), (32, 3, 8), (32, 3, 32), (64, 10, 16), (100, 1, 50), (200, 37, 100)])
def test_pass_at_k_equals_binomial_closed_form(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k), rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("n, k", [(1, 1), (5, 1), (5, 3), (32, 32)])
def test_no_correct_sample_gives_zero(n, k):
    assert pass_at_k(n, 0, k) == 0.0


@pytest.mark.parametrize("n, k", [(1, 1), (5, 1), (5, 5), (32, 7)])
def test_all_correct_gives_one(n, k):
    assert pass_at_k(n, n, k) == 1.0


@pytest.mark.parametrize("n, c", [(4, 1), (32, 1), (32, 31)])
def test_k_equals_n_is_one_iff_any_correct(n, c):
    assert pass_at_k(n, c, n) == 1.0


@pytest.mark.parametrize("n, c", [(4, 1), (32, 5), (10, 10)])
def test_pass_at_1_is_the_accuracy(n, c):
    assert pass_at_k(n, c, 1) == pytest.approx(c / n)


@pytest.mark.parametrize("bad", [(0, 0, 1), (4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5), (4.0, 2, 1), (4, True, 1)])
def test_bad_arguments_name_the_rule(bad):
    with pytest.raises(ValueError, match="pass_at_k"):
        pass_at_k(*bad)


def test_report_ks():
    assert report_ks(32) == [1, 2, 4, 8, 16, 32]
    assert report_ks(5) == [1, 2, 4, 5]
    assert report_ks(1) == [1]


def test_benchmark_and_average_against_direct_computation():
    a = [[1, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]]
    b = [[0, 1, 0, 1], [0, 0, 0, 1]]
    got = summarize({"A": {i: s for i, s in enumerate(a)}, "B": {i: s for i, s in enumerate(b)}})
    avg_a = 100 * (0.25 + 1 + 0) / 3
    pass2_a = 100 * ((1 - comb(3, 2) / comb(4, 2)) + 1 + 0) / 3
    avg_b = 100 * (0.5 + 0.25) / 2
    pass2_b = 100 * ((1 - comb(2, 2) / comb(4, 2)) + (1 - comb(3, 2) / comb(4, 2))) / 2
    assert got["benchmarks"]["A"]["avg@4"] == pytest.approx(avg_a)
    assert got["benchmarks"]["A"]["pass@2"] == pytest.approx(pass2_a)
    assert got["benchmarks"]["A"]["pass@4"] == pytest.approx(100 * 2 / 3)
    assert got["benchmarks"]["B"]["pass@2"] == pytest.approx(pass2_b)
    assert got["average"]["avg@4"] == pytest.approx((avg_a + avg_b) / 2)
    assert got["average"]["pass@2"] == pytest.approx((pass2_a + pass2_b) / 2)
    assert got["benchmarks"]["A"]["problems"] == 3 and got["benchmarks"]["B"]["samples"] == 8


def test_benchmark_metrics_rejects_too_few_samples():
    with pytest.raises(ValueError, match="at least k=4"):
        benchmark_metrics([[1, 0, 1, 1], [1, 0]], k=4)
