"""Separate location mixtures for tiny and larger tumours (`synthesis.gmm_tiny_split`,
`tumorsweep fit-location --tiny-radius-mm`).

Labels with known tumours: in every case one tiny ball (radius 2 mm) and one large ball
(radius 7 mm) at known integer centres, so each tumour's centre of mass is its centre and its
equivalent-sphere radius is known. A one-component mixture's maximum-likelihood mean is the
sample mean of its centres: computed here from the centres placed, in the canonical frame.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tumorsweep.cli import main
from tumorsweep.config import TrialConfig
from tumorsweep.data.cases import CaseLists
from tumorsweep.errors import TumorsweepError
from tumorsweep.synthesis.location import CANONICAL_SHAPE, LocationModel, fit_location_model
from tumorsweep.train import prepare_location_model

SHAPE = (70, 60, 50)
LIVER = (slice(5, 65), slice(5, 55), slice(5, 45))  # liver box lo (5,5,5), hi (65,55,45)


def _ball(label: np.ndarray, centre: tuple[int, int, int], radius: float) -> None:
    grid = np.indices(label.shape)
    inside = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= radius**2
    label[inside] = 2


def _cases(n: int = 12, seed: int = 0):
    """Labels and the placed (tiny, large) centres in the canonical frame."""
    rng = np.random.default_rng(seed)
    lo, size = np.array([5, 5, 5]), np.array([60, 50, 40])
    labels, tiny, large = [], [], []
    for _ in range(n):
        label = np.zeros(SHAPE, dtype=np.uint8)
        label[LIVER] = 1
        small_c = (int(rng.integers(14, 22)), int(rng.integers(14, 22)), int(rng.integers(12, 18)))
        big_c = (int(rng.integers(42, 52)), int(rng.integers(34, 42)), int(rng.integers(26, 32)))
        _ball(label, small_c, 2.0)
        _ball(label, big_c, 7.0)
        labels.append(label)
        tiny.append((np.array(small_c) - lo) / size * np.array(CANONICAL_SHAPE))
        large.append((np.array(big_c) - lo) / size * np.array(CANONICAL_SHAPE))
    return labels, np.array(tiny), np.array(large)


def test_split_fits_each_mixture_on_its_own_tumours() -> None:
    labels, tiny, large = _cases()
    model = fit_location_model(labels, n_components=1, tiny_radius_mm=5.0)
    assert model.tiny is not None and model.tiny_radius_mm == 5.0
    assert model.tiny.n_tumors == len(tiny) and model.n_tumors == len(large)
    np.testing.assert_allclose(model.tiny.means[0], tiny.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(model.means[0], large.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(
        model.tiny.covariances[0], np.cov(tiny.T, bias=True) + 1e-3 * np.eye(3), atol=1e-4
    )
    single = fit_location_model(labels, n_components=1)
    assert single.tiny is None
    both = np.concatenate([tiny, large])
    np.testing.assert_allclose(single.means[0], both.mean(axis=0), atol=1e-6)


def test_tiny_blobs_draw_from_the_tiny_mixture(tmp_path: Path) -> None:
    labels, tiny, large = _cases()
    model = fit_location_model(labels, n_components=1, tiny_radius_mm=5.0)
    model.save(tmp_path / "split.json")
    loaded = LocationModel.load(tmp_path / "split.json")
    assert loaded == model
    liver = labels[0] >= 1
    rng = np.random.default_rng(4)
    scale = np.array([60, 50, 40]) / np.array(CANONICAL_SHAPE)
    for kind, centres in (("tiny", tiny), ("large", large), ("small", large)):
        drawn = np.array([loaded.sample_centre(liver, rng, 600, kind=kind) for _ in range(300)])
        # voxel = floor(lo + point * scale): its mean is lo + mean * scale - 1/2 (+- SE)
        expected = 5 + centres.mean(axis=0) * scale - 0.5
        spread = np.sqrt(np.diag(np.cov(centres.T, bias=True)) * scale**2 + 1 / 12 + 1e-3)
        assert np.all(np.abs(drawn.mean(axis=0) - expected) <= 4 * spread / np.sqrt(300) + 0.05)


def test_too_few_tiny_tumours_name_the_tiny_mixture() -> None:
    labels, _, _ = _cases(n=3)
    with pytest.raises(TumorsweepError, match=r"3 tiny \(equivalent radius <= 5 mm\) tumours"):
        fit_location_model(labels, n_components=4, tiny_radius_mm=5.0)
    with pytest.raises(TumorsweepError, match="must be > 0"):
        fit_location_model(labels, tiny_radius_mm=0.0)


def _write(labels: list[np.ndarray], folder: Path) -> list[Path]:
    folder.mkdir()
    paths = []
    for i, label in enumerate(labels):
        paths.append(folder / f"case_{i}.nii.gz")
        nib.save(nib.Nifti1Image(label, np.eye(4)), paths[-1])
    return paths


def test_the_trial_and_fit_location_offer_the_split(tmp_path: Path, capsys) -> None:
    labels, tiny, large = _cases()
    paths = _write(labels, tmp_path / "labels")
    entries = tuple(
        {"image": str(p), "label": str(p), "case": p.name, "case_id": None, "tumor": True,
         "source": "x"}
        for p in paths
    )  # fmt: skip
    cases = CaseLists((), entries, (), (), "test", str(tmp_path))
    cfg = TrialConfig.model_validate(
        {"synthesis": {"location": "gmm", "gmm_components": 1, "gmm_tiny_split": True}}
    )
    model = prepare_location_model(cfg, cases)
    np.testing.assert_allclose(model.tiny.means[0], tiny.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(model.means[0], large.mean(axis=0), atol=1e-6)
    plain = prepare_location_model(cfg.model_copy(update={"synthesis": cfg.synthesis.model_copy(
        update={"gmm_tiny_split": False})}), cases)  # fmt: skip
    assert plain.tiny is None
    out = tmp_path / "fit.json"
    args = ["fit-location", "--data", str(tmp_path / "labels"), "--components", "1"]
    assert main([*args, "--tiny-radius-mm", "5", "--out", str(out)]) == 0
    assert "on 12 tumours and 1 on 12 tiny tumours (radius <= 5 mm)" in capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert saved["tiny_radius_mm"] == 5.0 and saved["tiny"]["n_tumors"] == 12
    np.testing.assert_allclose(saved["tiny"]["means"][0], tiny.mean(axis=0), atol=1e-6)
