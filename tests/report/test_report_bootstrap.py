"""The report's bootstrap interval (`tumorsweep.report.stats.bootstrap_ci`) checked against
closed forms, never against a replay of its own draws.

For a trials x cases matrix X with no gaps, write X_ij = m + a_i + b_j + e_ij (row effects,
column effects and interaction, each summing to zero). The two-level (pigeonhole) bootstrap
mean of S drawn rows and n drawn columns has mean m and variance exactly
var(a)/S + var(b)/n + var(e)/(S n) (plug-in variances, Owen 2007): the draws of rows and
columns are independent and the cross terms vanish by the zero sums. The cases-only bootstrap
of one row is the textbook var(x)/n. With many rows and columns the bootstrap distribution is
close to normal, so its 2.5% and 97.5% percentiles are m -/+ 1.96 sd; the tolerances below are
the Monte Carlo error of a percentile from R resamples (sd * sqrt(p (1 - p) / R) / phi(1.96),
about 0.019 sd for R = 20000) times four, plus the skew left by finitely many rows.
"""

from __future__ import annotations

import numpy as np
import pytest

from tumorsweep.report.stats import bootstrap_ci

R = 20_000
Z = 1.959964


def _closed_form_sd(matrix: np.ndarray) -> float:
    """sd of the two-level bootstrap mean of a full matrix (module docstring)."""
    m = matrix.mean()
    rows = matrix.mean(axis=1) - m
    cols = matrix.mean(axis=0) - m
    inter = matrix - m - rows[:, None] - cols[None, :]
    s, n = matrix.shape
    return float(np.sqrt(rows.var() / s + cols.var() / n + inter.var() / (s * n)))


def _percentile_tolerance(sd: float) -> float:
    mc = sd * np.sqrt(0.025 * 0.975 / R) / (np.exp(-(Z**2) / 2) / np.sqrt(2 * np.pi))
    return 4 * mc + 0.02 * sd


def test_two_level_interval_has_the_closed_form_spread_of_seeds_and_cases() -> None:
    rng = np.random.default_rng(11)
    seeds, cases = 40, 60
    # seed effects dominate (SD 0.05), case effects SD 0.15, interaction SD 0.03
    matrix = (
        0.6
        + rng.normal(0, 0.05, (seeds, 1))
        + rng.normal(0, 0.15, (1, cases))
        + rng.normal(0, 0.03, (seeds, cases))
    )
    sd = _closed_form_sd(matrix)
    low, high = bootstrap_ci(matrix, n_resamples=R, seed=4)
    tol = _percentile_tolerance(sd)
    assert low == pytest.approx(matrix.mean() - Z * sd, abs=tol)
    assert high == pytest.approx(matrix.mean() + Z * sd, abs=tol)


def test_the_seed_term_is_in_the_interval() -> None:
    """Rows shifted by large seed effects: the cases-only sd (var(b)/n) would miss most of
    the spread; the interval must follow var(a)/S."""
    rng = np.random.default_rng(12)
    matrix = rng.normal(0, 0.02, (30, 40)) + rng.normal(0, 0.2, (30, 1)) + 0.5
    sd = _closed_form_sd(matrix)
    cases_only_sd = float(np.sqrt(matrix.mean(axis=0).var() / 40))
    assert sd > 5 * cases_only_sd
    low, high = bootstrap_ci(matrix, n_resamples=R, seed=5)
    assert (high - low) == pytest.approx(2 * Z * sd, abs=2 * _percentile_tolerance(sd))


def test_one_trial_is_the_textbook_bootstrap_of_the_case_mean() -> None:
    values = np.random.default_rng(13).uniform(0.2, 0.9, 200)
    sd = float(np.sqrt(values.var() / values.size))
    low, high = bootstrap_ci(values, n_resamples=R, seed=6)
    tol = _percentile_tolerance(sd)
    assert low == pytest.approx(values.mean() - Z * sd, abs=tol)
    assert high == pytest.approx(values.mean() + Z * sd, abs=tol)


def test_intervals_cover_a_known_mean_as_often_as_their_level_says() -> None:
    """Data drawn around a known mean with many seeds and cases: the 95% interval covers it in
    95% of datasets, within the binomial error of 300 datasets (and the documented shortfall of
    a plug-in bootstrap, (S - 1) / S of the seed variance, is small at S = 20)."""
    rng = np.random.default_rng(14)
    mean, covered, datasets = 0.55, 0, 300
    for _ in range(datasets):
        matrix = (
            mean
            + rng.normal(0, 0.03, (20, 1))
            + rng.normal(0, 0.1, (1, 50))
            + rng.normal(0, 0.05, (20, 50))
        )
        low, high = bootstrap_ci(matrix, n_resamples=1000, seed=int(rng.integers(1 << 30)))
        covered += low <= mean <= high
    error = np.sqrt(0.95 * 0.05 / datasets)
    assert abs(covered / datasets - 0.95) < 4 * error + 0.02
