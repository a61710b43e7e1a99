"""Pieces of core.report that need no MLflow store: params, labels, published numbers, stats."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from core.errors import TumorsweepError
from core.report import bootstrap_ci, match_published, paired_wilcoxon, published_table
from core.report.labels import config_label
from core.report.runs import _read_per_case, parse_param
from core.report.tables import latex_escape

SYNTHETIC = {
    "data.real_tumors": False,
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
        ("segmamba_v1", "hu-val", {"data.real_tumors": True}, None, "SegMambaV1(Real)"),
        ("unet", "hu-val", {"synthesis.gmm_components": 3}, None, "UNET(gmm_components=3)"),
    ],
)
def test_labels_read_like_the_published_columns(
    backbone: str, eval_set: str, swept: dict, pretrained: object, label: str
) -> None:
    assert config_label(backbone, eval_set, swept, pretrained) == label


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
    assert match_published("unet", "hu-val", SYNTHETIC, ["synthesis.texture.u0_min"]).empty
    assert match_published("unet", "test", SYNTHETIC, ["synthesis.sphere_ratio"]).empty
    real = match_published("unet", "hu-val", {"data.real_tumors": True}, ["data.real_tumors"])
    assert real.set_index("metric").loc["tumor_dice", "value"] == 0.56542


def test_bootstrap_interval_is_seeded_and_brackets_the_mean() -> None:
    values = np.array([0.2, 0.5, 0.55, 0.6, 0.9])
    low, high = bootstrap_ci(values, n_resamples=500, seed=3)
    assert (low, high) == bootstrap_ci(values, n_resamples=500, seed=3)
    assert low < values.mean() < high and 0.2 <= low and high <= 0.9
    assert all(math.isnan(v) for v in bootstrap_ci(np.array([])))


def test_wilcoxon_uses_shared_cases_only() -> None:
    ours = pd.Series([0.5, 0.6, 0.7, np.nan], index=["a", "b", "c", "d"])
    base = pd.Series([0.4, 0.4, 0.4, 0.4, 0.4], index=["a", "b", "c", "d", "e"])
    p, n = paired_wilcoxon(ours, base)
    assert n == 3 and p == pytest.approx(0.25)  # 3 positive differences, exact two-sided
    assert paired_wilcoxon(base, base) == (1.0, 5)
    assert math.isnan(paired_wilcoxon(ours, pd.Series(dtype=float))[0])


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
