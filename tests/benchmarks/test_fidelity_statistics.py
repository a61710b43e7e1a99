"""`benchmarks/fidelity.py`'s statistics: the KS statistic it permutes, the event-permutation
p-value of its per-component rows (components of one event share its draws) and the Holm
adjustment of its family-wise line."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from scipy import stats

# Loaded by file under its own name (see test_fidelity_draw_recorder.py).
_SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "fidelity.py"
_SPEC = importlib.util.spec_from_file_location("benchmark_fidelity_stats", _SCRIPT)
fidelity = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(fidelity)


def test_ks_statistic_is_scipys_with_ties_and_unequal_sizes() -> None:
    rng = np.random.default_rng(0)
    for a, b in (
        (rng.normal(size=300), rng.normal(0.2, 1.0, size=170)),
        (rng.integers(0, 6, size=90).astype(float), rng.integers(0, 7, size=140).astype(float)),
    ):
        expected = stats.ks_2samp(a, b).statistic
        assert abs(fidelity.ks_statistic(a, b) - expected) < 1e-12


def _clustered(rng: np.random.Generator, events: int, shift: float = 0.0) -> list[np.ndarray]:
    """Events of 6 components that share an event effect (std 1) beside their own noise
    (std 1): the values of one event move together, as blobs of one event can."""
    return [rng.normal(shift + rng.normal(), 1.0, size=6) for _ in range(events)]


def test_event_permutation_p_holds_its_level_where_pooled_ks_does_not() -> None:
    """Same distribution on both sides, 200 replicate pairs of 30 clustered events each: the
    event-permutation p (99 permutations) falls below 0.1 in at most ~9% of them (exact up to
    ties, which make it conservative; binomial SE 2%: 3-16% allowed), while scipy's pooled p,
    which treats the 180 values as independent, falls below it far more often. A shifted
    sample gets the smallest permutation p."""
    rng = np.random.default_rng(1)
    perm_hits = pooled_hits = 0
    replicates = 200
    for k in range(replicates):
        a, b = _clustered(rng, 30), _clustered(rng, 30)
        perm_hits += fidelity.event_permutation_p(a, b, permutations=99, seed=k) < 0.1
        pooled_hits += stats.ks_2samp(np.concatenate(a), np.concatenate(b)).pvalue < 0.1
    assert 0.03 <= perm_hits / replicates <= 0.16
    assert pooled_hits / replicates > 0.2
    shifted = fidelity.event_permutation_p(
        _clustered(rng, 40), _clustered(rng, 40, shift=2.0), permutations=199
    )
    assert shifted == 1 / 200  # no permutation reaches the observed D


def test_holm_adjustment_by_hand() -> None:
    """Holm: the k-th smallest of m p-values times (m - k + 1), made non-decreasing in that
    order, capped at 1; worked by hand for four values."""
    adjusted = fidelity.holm([0.01, 0.04, 0.03, 0.005])
    # sorted: 0.005 * 4 = 0.02, 0.01 * 3 = 0.03, 0.03 * 2 = 0.06, 0.04 * 1 = 0.04 -> 0.06
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])
    assert fidelity.holm([0.5, 0.9]) == [1.0, 1.0]
