"""Pieces of tumorsweep.report that need no MLflow store: params, labels, published numbers, stats.

The statistics are checked against scipy and numpy written here, and the paired test's
validity by simulation: rejection rates under the null are held to alpha plus three binomial
standard errors of the simulated rate.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tumorsweep.errors import TumorsweepError
from tumorsweep.report import (
    bootstrap_ci,
    file_stem,
    holm,
    match_published,
    paired_test,
    published_table,
    sign_flip_test,
    two_level_t_test,
)
from tumorsweep.report.labels import config_label
from tumorsweep.report.runs import _read_per_case, logged_params, parse_param
from tumorsweep.report.tables import latex_escape

SYNTHETIC = {
    "data.real_fraction": 0.0,
    "synthesis.style": "hu",
    "synthesis.location": "uniform",
    "synthesis.sphere_ratio": 0.0,
}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0.15", 0.15),
        ("3", 3),
        ("True", True),
        ("false", False),
        ("None", None),
        ("[3.0, 6.0]", [3.0, 6.0]),
        ("gmm", "gmm"),
        ("1e-05", 1e-5),
    ],
)
def test_params_parse_back_to_their_values(text: str, value: object) -> None:
    parsed = parse_param(text)
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize(
    ("backbone", "eval_set", "swept", "pretrained", "label"),
    [
        ("unet", "hu-val", {"synthesis.sphere_ratio": 0.15}, None, "UNET(+15% Sphere)"),
        ("unet", "hu-val", {"synthesis.sphere_ratio": 0.0}, None, "UNET"),
        ("unet", "global", {"synthesis.location": "gmm"}, None, "UNET(GMM,Global)"),
        ("swin_unetr_base", "hu-val", {}, "/w/model_swinvit.pt", "Swin-UNETR-Base (pretrain)"),
        ("swin_unetr_tiny", "hu-val", {}, False, "Swin-UNETR-Tiny (no.pretrain)"),
        ("nnunet", "chen-val-0", {}, None, "nnUNet(Chen's Val)"),
        ("segmamba_v1", "hu-val", {"data.real_fraction": 1.0}, None, "SegMambaV1(Real)"),
        ("unet", "hu-val", {"synthesis.gmm_components": 3}, None, "UNET(gmm_components=3)"),
        (
            "unet",
            "hu-val",
            {"synthesis.texture.hu_drop.low": 40.0},
            None,
            "UNET(hu_drop.low=40.0)",
        ),
    ],
)
def test_labels_read_like_the_published_columns(
    backbone: str, eval_set: str, swept: dict, pretrained: object, label: str
) -> None:
    assert config_label(backbone, eval_set, swept, pretrained) == label


def test_params_of_older_trials_are_read_under_todays_names() -> None:
    params = logged_params(
        {"synthesis.texture.hu_drop_min": "40.0", "synthesis.ca.organ_hu_min": "90.0"}
        | {"data.real_tumors": "False", "synthesis.ca.steps.high": "60"}
    )
    assert params["synthesis.texture.hu_drop.low"] == 40.0
    assert params["data.real_fraction"] == 0.0
    assert "synthesis.ca.organ_hu.low" not in params  # organ_hu_min is a field, no range end
    assert params["synthesis.ca.steps.high"] == 60


def test_published_numbers_are_transcribed() -> None:
    table = published_table()
    assert not table.duplicated(["table", "label", "metric"]).any()
    table = table.set_index(["table", "label", "metric"])
    real = "AI model trained by real tumors for comparison (Downloaded, control experiment)"
    assert table.loc[(real, "UNET", "tumor_nsd"), ["value", "paper"]].tolist() == [0.55023, 0.5810]
    manual = "AI model trained by synthetic tumors (Self), manual method modification"
    assert table.loc[(manual, "UNET(+25% Sphere)", "tumor_dice"), "value"] == 0.45940
    mamba = "AI model trained by synthetic tumors (Self), Mamba model"
    assert table.loc[(mamba, "SegMambaV1(Global)", "liver_dice"), "value"] == 0.95292
    assert published_table()["value"].between(0.4, 1.0).all()


def test_published_match_needs_every_swept_knob_and_prefers_the_replication() -> None:
    swin = {**SYNTHETIC, "model.pretrained": "/w/model_swinvit.pt"}
    found = match_published("swin_unetr_base", "hu-val", swin, ["model.name"])
    assert set(found["source"]) == {"replication"}
    assert found.set_index("metric").loc["tumor_dice", "value"] == 0.57025
    # a texture study's baseline must not borrow the baseline's published value
    assert match_published("unet", "hu-val", SYNTHETIC, ["synthesis.texture.u0.low"]).empty
    assert match_published("unet", "test", SYNTHETIC, ["synthesis.sphere_ratio"]).empty
    real = match_published("unet", "hu-val", {"data.real_fraction": 1.0}, ["data.real_fraction"])
    assert real.set_index("metric").loc["tumor_dice", "value"] == 0.56542


def test_published_values_carry_the_protocol_they_were_scored_with() -> None:
    table = published_table()
    semi = table["table"].str.contains("DiffTumor \\(semi-supervised\\)")
    assert set(table[~semi]["protocol"]) == {"hu2023"}
    assert set(table[semi]["protocol"]) == {"chen2024"}  # DiffTumor's own validation.py


def test_bootstrap_interval_is_seeded_and_brackets_the_mean() -> None:
    values = np.array([0.2, 0.5, 0.55, 0.6, 0.9])
    low, high = bootstrap_ci(values, n_resamples=500, seed=3)
    assert (low, high) == bootstrap_ci(values, n_resamples=500, seed=3)
    assert low < values.mean() < high and 0.2 <= low and high <= 0.9
    assert all(math.isnan(v) for v in bootstrap_ci(np.array([])))
    # one level: the percentile bootstrap of the case mean, drawn as documented
    picks = np.random.default_rng(3).integers(0, 5, size=(500, 5))
    expected = np.percentile(values[picks].mean(axis=1), [2.5, 97.5])
    assert (low, high) == pytest.approx(tuple(expected), abs=1e-12)


def test_two_level_bootstrap_reduces_to_cases_when_seeds_agree() -> None:
    cases = np.random.default_rng(5).uniform(0.3, 0.8, 22)
    identical = np.vstack([cases, cases, cases])
    assert bootstrap_ci(identical, 400, seed=1) == pytest.approx(bootstrap_ci(cases, 400, seed=1))
    # a case no trial scored is left out; one some trials did not score still counts
    with_gap = np.column_stack([identical, np.full(3, np.nan)])
    assert bootstrap_ci(with_gap, 400, seed=1) == pytest.approx(bootstrap_ci(cases, 400, 1))


def test_two_level_bootstrap_resamples_the_seeds() -> None:
    """Each trial constant over cases: only the seed draw matters, so the interval is the
    percentile bootstrap of the trial means over the documented trial picks."""
    shifts = np.array([0.50, 0.58, 0.61])
    matrix = np.repeat(shifts[:, None], 10, axis=1)
    rng = np.random.default_rng(2)
    rng.integers(0, 10, size=(1000, 10))  # the case picks come first
    trial_picks = rng.integers(0, 3, size=(1000, 3))
    expected = np.percentile(shifts[trial_picks].mean(axis=1), [2.5, 97.5])
    assert bootstrap_ci(matrix, 1000, seed=2) == pytest.approx(tuple(expected), abs=1e-12)
    one_level = bootstrap_ci(matrix.mean(axis=0), 1000, seed=2)
    assert one_level[1] - one_level[0] < 1e-12 < expected[1] - expected[0]


def test_two_level_t_is_welch_on_trial_means_when_cases_agree() -> None:
    base = np.linspace(0.4, 0.7, 12)
    ours = base + np.array([[0.03], [-0.02], [0.06]])
    baseline = base + np.array([[0.01], [-0.05], [0.0], [0.02]])
    welch = stats.ttest_ind(ours.mean(axis=1), baseline.mean(axis=1), equal_var=False)
    assert two_level_t_test(ours, baseline) == pytest.approx(welch.pvalue, rel=1e-9)


def test_two_level_t_is_the_paired_t_when_seeds_agree() -> None:
    rng = np.random.default_rng(0)
    case = rng.uniform(0.3, 0.8, 15)
    ours, baseline = case + rng.normal(0.02, 0.03, 15), case
    paired = stats.ttest_rel(ours, baseline)
    p = two_level_t_test(np.vstack([ours, ours]), np.vstack([baseline] * 3))
    assert p == pytest.approx(paired.pvalue, rel=1e-9)


def test_two_level_t_sums_both_levels_with_satterthwaite_df() -> None:
    rng = np.random.default_rng(1)
    case = rng.uniform(0.3, 0.8, 20)
    ours = case + 0.03 + rng.normal(0, 0.04, (3, 1)) + rng.normal(0, 0.03, (3, 20))
    baseline = case + rng.normal(0, 0.04, (4, 1)) + rng.normal(0, 0.03, (4, 20))
    terms = np.array(
        [
            stats.sem(ours.mean(axis=1)) ** 2,
            stats.sem(baseline.mean(axis=1)) ** 2,
            stats.sem(ours.mean(axis=0) - baseline.mean(axis=0)) ** 2,
        ]
    )
    dof = terms.sum() ** 2 / (terms**2 / np.array([2, 3, 19])).sum()
    t = (ours.mean() - baseline.mean()) / np.sqrt(terms.sum())
    assert two_level_t_test(ours, baseline) == pytest.approx(2 * stats.t.sf(abs(t), dof), rel=1e-9)
    with pytest.raises(ValueError, match="need >= 2 trials each"):
        two_level_t_test(ours[:1], baseline)


@pytest.mark.parametrize("n", [7, 12])
def test_sign_flip_is_the_exact_paired_permutation_test(n: int) -> None:
    d = np.random.default_rng(n).normal(0.02, 0.05, n)
    exact = stats.permutation_test(
        (d, np.zeros(n)),
        lambda x, y, axis: np.mean(x - y, axis=axis),
        permutation_type="samples",
        n_resamples=np.inf,
        vectorized=True,
    )
    assert sign_flip_test(d) == pytest.approx(exact.pvalue, abs=1e-12)
    assert sign_flip_test(np.zeros(n)) == 1.0


def test_sign_flip_samples_the_patterns_beyond_16_cases() -> None:
    d = np.random.default_rng(4).normal(0.02, 0.05, 22)
    scipy_p = stats.permutation_test(
        (d, np.zeros(22)),
        lambda x, y, axis: np.mean(x - y, axis=axis),
        permutation_type="samples",
        n_resamples=20_000,
        vectorized=True,
        rng=np.random.default_rng(9),
    ).pvalue
    ours = sign_flip_test(d)
    se = math.sqrt(2 * scipy_p * (1 - scipy_p) / 20_000)  # both are Monte Carlo estimates
    assert 0.05 < scipy_p < 0.5 and abs(ours - scipy_p) < 4 * se
    assert ours == sign_flip_test(d)  # seeded


def test_holm_matches_its_step_down_definition() -> None:
    p = np.array([0.01, 0.04, np.nan, 0.03, 0.005, 0.2, 0.012])
    adjusted = holm(p)
    assert np.isnan(adjusted[2])
    given = np.flatnonzero(~np.isnan(p))
    m = len(given)
    for alpha in (0.01, 0.05, 0.1):
        # reject the k smallest while p_(i) <= alpha / (m - i) for every i < k
        rejected: set[int] = set()
        for i, index in enumerate(given[np.argsort(p[given])]):
            if p[index] > alpha / (m - i):
                break
            rejected.add(int(index))
        assert set(np.flatnonzero(adjusted <= alpha)) == rejected
    assert adjusted[4] == pytest.approx(6 * 0.005) and adjusted[5] == pytest.approx(0.2 * 1)
    assert adjusted[[0, 6]] == pytest.approx([0.05, 0.05])  # monotone: 5 * 0.01 carried on


def test_paired_test_uses_shared_cases_and_falls_back_to_sign_flips() -> None:
    cases = [f"liver_{n}" for n in range(9)]
    rng = np.random.default_rng(8)
    ours = pd.DataFrame(rng.uniform(0.4, 0.6, (3, 9)), columns=cases)
    base = pd.DataFrame(rng.uniform(0.4, 0.6, (2, 9)), columns=cases)
    ours.iloc[1, 2] = np.nan  # not scored by one trial: left out of the comparison
    base = base.drop(columns="liver_8")
    shared = [c for c in cases if c not in ("liver_2", "liver_8")]
    result = paired_test(ours, base)
    assert (result.n_cases, result.n_trials, result.n_baseline_trials) == (7, 3, 2)
    assert result.method == "two-level t"
    assert result.p_value == two_level_t_test(ours[shared].to_numpy(), base[shared].to_numpy())
    single = paired_test(ours.iloc[:1], base)
    assert single.method == "case sign-flip"
    d = ours.iloc[0][cases[:8]].to_numpy() - base.mean(axis=0).to_numpy()
    assert single.p_value == sign_flip_test(d)
    assert math.isnan(paired_test(ours, base.iloc[:0]).p_value)


def _simulate(rng, n_sims, delta=0.0, seed_sd=0.05, noise_sd=0.02, interaction_sd=0.0):
    """Two configurations of 3 seeds on 22 cases: shared case difficulty, a seed effect
    shared by all cases of a trial, case noise, a case x configuration effect, a shift."""
    for _ in range(n_sims):
        case = rng.normal(0.6, 0.15, 22)
        pair = []
        for shift in (delta, 0.0):
            seed_effect = rng.normal(0, seed_sd, (3, 1))
            noise = rng.normal(0, noise_sd, (3, 22))
            pair.append(case + rng.normal(0, interaction_sd, 22) + shift + seed_effect + noise)
        yield pair


ALPHA_SIM = 0.05


def _rate_and_bound(rejections: list[bool]) -> tuple[float, float]:
    n = len(rejections)
    return float(np.mean(rejections)), ALPHA_SIM + 3 * math.sqrt(ALPHA_SIM * (1 - ALPHA_SIM) / n)


def test_paired_test_holds_alpha_when_seed_variance_dominates() -> None:
    """Seed SD 0.05 shared by all cases, case noise SD 0.02, no effect: the two-level t
    rejects at most alpha (+3 binomial SE); the old per-case Wilcoxon almost always."""
    rng = np.random.default_rng(2024)
    ours = [two_level_t_test(a, b) < ALPHA_SIM for a, b in _simulate(rng, 2000)]
    rate, bound = _rate_and_bound(ours)
    assert rate <= bound
    old = [
        stats.wilcoxon(a.mean(axis=0), b.mean(axis=0)).pvalue < ALPHA_SIM
        for a, b in _simulate(rng, 300)
    ]
    assert np.mean(old) > 0.6  # about 0.85: the old test mistook seed luck for an effect


def test_paired_test_holds_alpha_when_cases_disagree() -> None:
    """No mean effect, but each configuration has its own per-case effects (SD 0.05): a
    trial-level Welch test alone rejects far too often; the case term keeps alpha."""
    rng = np.random.default_rng(7)
    runs = list(_simulate(rng, 1500, seed_sd=0.01, interaction_sd=0.05))
    rate, bound = _rate_and_bound([two_level_t_test(a, b) < ALPHA_SIM for a, b in runs])
    assert rate <= bound
    welch = [
        stats.ttest_ind(a.mean(axis=1), b.mean(axis=1), equal_var=False).pvalue < ALPHA_SIM
        for a, b in runs
    ]
    assert np.mean(welch) > 2 * bound  # about 0.18


def test_paired_test_detects_an_effect_well_above_the_seed_noise() -> None:
    rng = np.random.default_rng(11)
    detected = [two_level_t_test(a, b) < ALPHA_SIM for a, b in _simulate(rng, 500, delta=0.2)]
    assert np.mean(detected) > 0.8  # about 0.88 for a shift of 4 seed SDs with 3 seeds


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("sphere_ratio", "sphere_ratio"),
        ("/abs/name", "abs_name-"),
        ("../../x", "x-"),
        ("report", "report-"),
        ("..", "experiment-"),
    ],
)
def test_file_stems_are_safe_and_distinct(name: str, stem: str) -> None:
    made = file_stem(name)
    assert made.startswith(stem) and made == file_stem(name)
    assert all(c.isalnum() or c in "_-" for c in made)
    assert (made == name) == (stem == name)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("case,tumor_dice\nliver_2,abc\n", "non-numeric metric value"),
        ("name,tumor_dice\nliver_2,0.5\n", "needs a 'case' column"),
    ],
)
def test_malformed_per_case_csv_names_run_and_file(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "per_case_test.csv"
    path.write_text(content)
    trial = SimpleNamespace(experiment="sphere_ratio", run_id="abc123", label="UNET", seed=0)
    with pytest.raises(TumorsweepError, match=message) as caught:
        _read_per_case(path, trial)
    assert "run abc123" in str(caught.value) and "per_case_test.csv" in str(caught.value)


def test_latex_escapes_specials() -> None:
    assert latex_escape("UNET(+15% Sphere) ± x_1 & y") == r"UNET(+15\% Sphere) $\pm$ x\_1 \& y"
