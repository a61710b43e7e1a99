"""Statistics of a configuration, and of a pair of them, that do not overclaim.

A configuration's data is a trials x cases matrix (one row per seed, one column per evaluation
case, NaN where a metric is undefined) holding two kinds of noise: training runs (a seed that
is better or worse on *every* case at once) and cases (the evaluation set samples patients).
A test with cases as the unit, like the per-case Wilcoxon this replaces, leaves the first
out: with 3 seeds, seed SD 0.05 and case noise SD 0.02 it calls two identical configurations
different 85% of the time at 0.05 (simulated, tests/report/test_report_units.py).

Interval (`bootstrap_ci`): 95% percentile bootstrap of the configuration mean (the mean over
trials of each trial's mean over the cases it scored). With >= 2 trials it is two-level: all
seeds score the same cases, so seeds and cases are crossed and are resampled independently
(Owen's pigeonhole bootstrap): draw n cases and S trials with replacement, average the drawn
trials' means over the drawn cases. One trial: cases only. Cases are sorted by name, trials
by seed, cases no trial scored dropped; draws: `rng = numpy.random.default_rng(seed)`, case
picks `rng.integers(0, n, size=(n_resamples, n))`, then trial picks `rng.integers(0, S,
size=(n_resamples, S))`. Few seeds make it approximate (3 seeds give 10 distinct resamples
whose spread is 2/3 of the seed variance): simulated coverage was 89% with seed variance
dominating (seed SD 0.05, case SD 0.15, 3 seeds), 93% at seed SD 0.02, and 87% for the
cases-only interval of one seed, which cannot see seed variance.

Paired test against the baseline (`paired_test`), over the cases every trial of both scored:
- both with >= 2 trials: a two-level Welch t-test (`two_level_t_test`). The difference D of
  the configuration means has variance seed_A/S_A + seed_B/S_B + (case x configuration)/n,
  estimated by s_A^2/S_A + s_B^2/S_B + s_d^2/n: s_k^2 is the sample variance of configuration
  k's per-trial means, s_d^2 that of the per-case differences of seed-averaged values;
  t = D / sqrt(sum), Satterthwaite degrees of freedom from the three terms (S_A - 1, S_B - 1,
  n - 1). Within-trial case noise is in both estimates, which errs conservative (0.7% rejected
  at 0.05 when seeds do not matter at all). Why not simpler: an exact permutation of trials
  cannot reach 0.05 with 3 + 3 seeds (20 splits, smallest two-sided p 0.1), and Welch's test
  on per-trial means alone conditions on the evaluated cases: it rejected 18% of true nulls
  where configurations differ case by case but not on average (case x configuration SD 0.05),
  where this test rejects 4.0%. With every per-case difference equal it is exactly Welch's
  test on per-trial means; with identical seeds, the paired t-test on per-case differences.
- a configuration with a single trial: a case-level sign-flip test of the mean per-case
  difference (`sign_flip_test`: exact over all 2^n sign patterns up to 16 cases, else 20,000
  seeded random ones). It cannot account for seed variance, and the table says so.
- cross-validation folds (each trial one fold: trained without, and tested on, its fold's
  cases): `fold_paired_test`. Fold k's model is better or worse on all of fold k's cases at
  once, so folds, not cases, are the second level: D_k = mean over fold k's shared cases of
  (ours - baseline), each side averaged over its seeds of that fold, paired because both
  configurations' fold k trained and tested on the same cases; then a one-sample t-test of
  the K values D_k (K - 1 degrees of freedom; fold-to-fold, seed-to-seed and case noise all in
  its error). Intervals pool the cases of all folds (`pool_folds`: one row per seed, each case
  the mean of the fold trials that scored it), then bootstrap as above.
Holm's step-down correction (`holm`) then runs over all comparisons of one table (every metric
x configuration against its baseline): it holds the family-wise error rate under any
dependence, which matters because a case's Dice and NSD are strongly correlated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import t as student_t

N_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
ALPHA = 0.05
EXACT_FLIPS_UP_TO = 16  # cases: 2^16 sign patterns are enumerated, beyond that sampled
N_RANDOM_FLIPS = 20_000

TWO_LEVEL_T = "two-level t"
SIGN_FLIP = "case sign-flip"
FOLD_PAIRED_T = "fold-paired t"
CI_TWO_LEVEL = "seeds+cases"
CI_CASES = "cases"


def ci_method(n_trials: int) -> str | None:
    """Which bootstrap `bootstrap_ci` uses for this many trials (None: no data)."""
    if n_trials < 1:
        return None
    return CI_TWO_LEVEL if n_trials >= 2 else CI_CASES


def bootstrap_ci(
    values: np.ndarray, n_resamples: int = N_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    """95% bootstrap interval of the mean of a trials x cases matrix (or one row of cases):
    two-level (trials and cases) with >= 2 rows, cases only with one; NaN, NaN when empty."""
    matrix = np.atleast_2d(np.asarray(values, dtype=float))
    matrix = matrix[:, ~np.isnan(matrix).all(axis=0)]
    n_trials, n_cases = matrix.shape
    if n_trials == 0 or n_cases == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    case_picks = rng.integers(0, n_cases, size=(n_resamples, n_cases))
    scored = ~np.isnan(matrix)
    # trial x resample: each trial's sum and count over the drawn cases it scored
    sums = np.where(scored, matrix, 0.0)[:, case_picks].sum(axis=2)
    counts = scored[:, case_picks].sum(axis=2)
    if n_trials >= 2:
        trial_picks = rng.integers(0, n_trials, size=(n_resamples, n_trials))
        sums = np.take_along_axis(sums.T, trial_picks, axis=1).T
        counts = np.take_along_axis(counts.T, trial_picks, axis=1).T
    with np.errstate(invalid="ignore", divide="ignore"):
        trial_means = sums / counts
    has_mean = counts > 0
    # per resample: mean over the drawn trials that scored any drawn case
    totals, drawn = np.where(has_mean, trial_means, 0.0).sum(axis=0), has_mean.sum(axis=0)
    means = totals[drawn > 0] / drawn[drawn > 0]
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def two_level_t_test(ours: np.ndarray, baseline: np.ndarray) -> float:
    """Two-sided p of the two-level Welch t-test (module docstring) of two trials x cases
    matrices over the same cases, without NaN, each with >= 2 trials."""
    ours, baseline = np.asarray(ours, dtype=float), np.asarray(baseline, dtype=float)
    if len(ours) < 2 or len(baseline) < 2 or ours.shape[1] != baseline.shape[1]:
        raise ValueError(
            f"need >= 2 trials each over the same cases: {ours.shape}, {baseline.shape}"
        )
    n_cases = ours.shape[1]
    terms, dofs = [], []
    for matrix in (ours, baseline):
        terms.append(matrix.mean(axis=1).var(ddof=1) / matrix.shape[0])
        dofs.append(matrix.shape[0] - 1)
    differences = ours.mean(axis=0) - baseline.mean(axis=0)
    terms.append(differences.var(ddof=1) / n_cases if n_cases > 1 else 0.0)
    dofs.append(max(n_cases - 1, 1))
    variance = sum(terms)
    difference = float(differences.mean())
    if variance <= 0:
        return 1.0 if difference == 0 else 0.0
    dof = variance**2 / sum(term**2 / dof for term, dof in zip(terms, dofs, strict=True))
    return float(2 * student_t.sf(abs(difference) / math.sqrt(variance), dof))


def sign_flip_test(
    differences: np.ndarray, n_flips: int = N_RANDOM_FLIPS, seed: int = BOOTSTRAP_SEED
) -> float:
    """Two-sided p of the sign-flip test of the mean of paired differences: exact over all
    2^n sign patterns up to n = 16, else (1 + hits) / (1 + n_flips) over seeded random ones."""
    d = np.asarray(differences, dtype=float)
    if d.size == 0:
        return math.nan
    observed = abs(d.mean())
    if d.size <= EXACT_FLIPS_UP_TO:
        patterns = np.arange(2**d.size)[:, None] >> np.arange(d.size)
        signs = 1.0 - 2.0 * (patterns & 1)
        extra = 0
    else:
        signs = np.random.default_rng(seed).choice((1.0, -1.0), size=(n_flips, d.size))
        extra = 1
    flipped = np.abs(signs @ d) / d.size
    hits = int((flipped >= observed * (1 - 1e-12)).sum())
    return (hits + extra) / (len(signs) + extra)


@dataclass(frozen=True)
class PairedTest:
    """A configuration against its baseline: p-value, shared cases, trials, which test."""

    p_value: float
    n_cases: int
    n_trials: int
    n_baseline_trials: int
    method: str | None


def paired_test(
    ours: pd.DataFrame, baseline: pd.DataFrame, seed: int = BOOTSTRAP_SEED
) -> PairedTest:
    """Test two trials x cases tables (columns = case names) on the cases every trial of
    both scored: two-level t with >= 2 trials each, case sign-flip otherwise."""
    both = [c for c in ours.columns if c in baseline.columns]
    ours, baseline = ours[both], baseline[both]
    shared = [c for c in both if ours[c].notna().all() and baseline[c].notna().all()]
    a, b = ours[sorted(shared)].to_numpy(float), baseline[sorted(shared)].to_numpy(float)
    if not shared or len(a) == 0 or len(b) == 0:
        return PairedTest(math.nan, 0, len(a), len(b), None)
    if len(a) >= 2 and len(b) >= 2:
        return PairedTest(two_level_t_test(a, b), len(shared), len(a), len(b), TWO_LEVEL_T)
    p_value = sign_flip_test(a.mean(axis=0) - b.mean(axis=0), seed=seed)
    return PairedTest(p_value, len(shared), len(a), len(b), SIGN_FLIP)


def pool_folds(matrix: pd.DataFrame, seeds: pd.Series) -> pd.DataFrame:
    """A trials x cases table of fold trials as seeds x cases: each case the mean of the
    trials of that seed that scored it (a case of several folds' test lists counts once)."""
    return matrix.groupby(seeds.reindex(matrix.index).to_numpy(), sort=True).mean()


def fold_paired_test(
    ours: pd.DataFrame, baseline: pd.DataFrame, ours_folds: pd.Series, baseline_folds: pd.Series
) -> PairedTest:
    """Fold-paired t-test (module docstring) of two trials x cases tables whose trials are
    cross-validation folds (`*_folds`: fold per trial, indexed like the tables' rows)."""
    differences, n_cases = [], 0
    shared_folds = sorted(set(ours_folds.dropna()) & set(baseline_folds.dropna()))
    for fold in shared_folds:
        a = ours[(ours_folds.reindex(ours.index) == fold).to_numpy()].mean(axis=0)
        b = baseline[(baseline_folds.reindex(baseline.index) == fold).to_numpy()].mean(axis=0)
        both = a.index.intersection(b.index)
        paired = (a[both] - b[both]).dropna()
        if len(paired):
            differences.append(float(paired.mean()))
            n_cases += len(paired)
    if len(differences) < 2:
        return PairedTest(math.nan, n_cases, len(ours), len(baseline), None)
    d = np.asarray(differences)
    spread = d.std(ddof=1)
    if spread == 0:
        p_value = 1.0 if d.mean() == 0 else 0.0
    else:
        t_stat = d.mean() / (spread / math.sqrt(len(d)))
        p_value = float(2 * student_t.sf(abs(t_stat), len(d) - 1))
    return PairedTest(p_value, n_cases, len(ours), len(baseline), FOLD_PAIRED_T)


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values (step-down, capped at 1); NaN stays NaN and is not counted."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, math.nan)
    given = np.flatnonzero(~np.isnan(p))
    order = given[np.argsort(p[given], kind="stable")]
    m = len(order)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted
