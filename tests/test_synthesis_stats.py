"""Statistical checks: blob counts and sizes per type, sphericity, texture, GMM placement."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.ndimage import gaussian_filter
from test_synthesis import liver_case, only

from core.cli import main as cli_main
from core.synthesis import LocationModel, fit_location_model, synthesize_tumors
from core.synthesis.config import TextureConfig
from core.synthesis.shapes import Blob, deformed_ellipsoid
from core.synthesis.texture import draw_hu_texture


def test_tiny_counts_and_sizes_match_configured_ranges():
    image, label = liver_case(shape=(120, 110, 90), radii=(55, 50, 42))
    config = only(
        "tiny",
        elastic_sigma={"tiny": (0.5, 1.0), "small": (1, 2), "medium": (3, 6), "large": (5, 10)},
    )
    counts, volumes = [], []
    for seed in range(8):
        _, new_label = synthesize_tumors(image, label, config, np.random.default_rng(seed))
        components, _ = ndimage.label(new_label == 2)
        sizes = np.bincount(components.ravel())[1:]
        sizes = sizes[sizes >= 8]  # ignore slivers cut off by the nearest-neighbour warp
        counts.append(len(sizes))
        volumes += list(sizes)
    assert 1 <= min(counts) and max(counts) <= 10  # 3-10 blobs, some may merge
    assert np.mean(counts) > 4
    # semi-axes 3..5 voxels: volumes between a 3^3 and a 5^3 ellipsoid, a little deformed
    assert 4 / 3 * np.pi * 27 * 0.5 < np.median(volumes) < 4 / 3 * np.pi * 125 * 1.3


def test_large_blob_is_bigger_than_medium():
    image, label = liver_case(shape=(120, 110, 90), radii=(55, 50, 42))
    biggest = {}
    for kind in ("medium", "large"):
        _, new_label = synthesize_tumors(image, label, only(kind), np.random.default_rng(3))
        components, _ = ndimage.label(new_label == 2)
        biggest[kind] = int(np.bincount(components.ravel())[1:].max())
    assert biggest["large"] > 2 * biggest["medium"]


def sphericity(mask: np.ndarray) -> float:
    """Ratio of smallest to largest principal std of the voxel cloud (1 = sphere)."""
    coords = np.argwhere(mask).astype(float)
    eig = np.linalg.eigvalsh(np.cov(coords.T))
    return float(np.sqrt(eig[0] / eig[-1]))


def blob_sphericities(sphere_ratio: float, n: int = 30) -> np.ndarray:
    rng = np.random.default_rng(0)
    values = []
    for _ in range(n):
        axes = tuple(int(a) for a in rng.integers(12, 21, size=3))
        if rng.uniform() < sphere_ratio:
            axes = (axes[int(rng.integers(3))],) * 3
        blob = Blob(centre=(40, 40, 40), semi_axes=axes, elastic_sigma=1.0)
        _, _, mask = deformed_ellipsoid(blob, (80, 80, 80), rng)
        values.append(sphericity(mask))
    return np.array(values)


def test_sphere_ratio_one_gives_round_blobs_zero_gives_ellipsoids():
    spheres, ellipsoids = blob_sphericities(1.0), blob_sphericities(0.0)
    assert np.median(spheres) > 0.85
    assert np.median(ellipsoids) < 0.8
    assert np.median(spheres) - np.median(ellipsoids) > 0.1


def planar_reference(axes: tuple[int, int, int], sigma: float, rng) -> np.ndarray:
    """The original's recipe: ellipsoid in a 4r array, three planar elastic passes."""
    shape = tuple(4 * a for a in axes)
    grids = np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij")
    ell = sum(((g - 2 * a) / a) ** 2 for g, a in zip(grids, axes, strict=True)) < 1
    for plane in ((0, 1), (1, 2), (0, 2)):
        coords = [g.copy() for g in grids]
        for axis in plane:
            control = rng.normal(0, sigma, size=(3, 3))
            t = [grids[p] / (shape[p] - 1) for p in plane]
            basis = [
                np.stack([2 * (s - 0.5) * (s - 1), -4 * s * (s - 1), 2 * s * (s - 0.5)]) for s in t
            ]
            coords[axis] = coords[axis] + np.einsum(
                "i...,j...,ij->...", basis[0], basis[1], control
            )
        ell = ndimage.map_coordinates(ell.astype(np.uint8), coords, order=0) > 0
    return ell


def test_single_3d_field_keeps_the_shape_statistics_of_three_planar_passes():
    rng = np.random.default_rng(1)
    axes, sigma = (10, 8, 7), 3.0
    ref = [planar_reference(axes, sigma, rng) for _ in range(24)]
    ours = [
        deformed_ellipsoid(Blob((20, 20, 20), axes, sigma), (40, 40, 40), rng)[2] for _ in range(24)
    ]
    for stat in (lambda m: m.sum(), sphericity):
        a, b = np.mean([stat(m) for m in ref]), np.mean([stat(m) for m in ours])
        assert abs(a - b) / a < 0.12, (a, b)


def test_texture_matches_a_bank_built_the_original_way():
    shape, rng = (96, 96, 96), np.random.default_rng(0)
    bank_values = []
    for _ in range(2):
        a = gaussian_filter(rng.uniform(size=shape), 3.0)
        p = rng.uniform(0.19, 0.21) * (a - a.min()) / (a.max() - a.min()) + rng.uniform(0.04, 0.06)
        b = gaussian_filter((p > rng.uniform(size=shape)).astype(float), 4.0)
        bank = np.clip(rng.uniform(0.5, 0.55) / b[b > 0.12].mean() * b, 0, 1)
        bank_values.append(bank[16:-16, 16:-16, 16:-16].ravel())
    bank_values = np.concatenate(bank_values)
    cfg = TextureConfig(sigma_a=[3.0], sigma_b=[4.0])
    ours = np.concatenate(
        [
            draw_hu_texture(rng, (0, 0, 0), (32, 32, 32), cfg, bank_shape=shape)
            .sample((0, 0, 0), (32, 32, 32))
            .ravel()
            for _ in range(30)
        ]
    )
    assert abs(ours.mean() - bank_values.mean()) < 0.03
    assert abs(ours.std() - bank_values.std()) / bank_values.std() < 0.25


def tumour_label(seed: int, centres) -> np.ndarray:
    _, label = liver_case(shape=(60, 56, 48), radii=(26, 24, 20), seed=seed)
    label = label.astype(np.int16)
    for c in centres:
        label[c[0] - 2 : c[0] + 3, c[1] - 2 : c[1] + 3, c[2] - 2 : c[2] + 3] = 2
    return label


def test_gmm_centres_land_where_training_tumours_were(tmp_path):
    rng = np.random.default_rng(0)
    # training tumours cluster in one corner region of the liver box
    labels = [
        tumour_label(i, [tuple(int(v) for v in rng.normal((20, 18, 30), 1.5))]) for i in range(25)
    ]
    model = fit_location_model(labels, n_components=1, covariance_type="diag", seed=0)
    model.save(tmp_path / "gmm.json")
    loaded = LocationModel.load(tmp_path / "gmm.json")
    assert json.loads((tmp_path / "gmm.json").read_text())["n_tumors"] == 25
    liver = tumour_label(99, []) >= 1
    centres = np.array([loaded.sample_centre(liver, rng, 600) for _ in range(200)])
    # the mean of drawn centres is within ~2 voxels of the training centre; a uniform rule
    # (middle 40% of z, anywhere in x/y) would put it near the liver centre (30, 28, 24)
    assert np.all(np.abs(centres.mean(axis=0) - (20, 18, 30)) < 2.5)
    assert np.all(liver[tuple(centres.T)])


def test_gmm_falls_back_to_uniform_on_a_tiny_liver():
    model = LocationModel(
        weights=[1.0], means=[[-500.0, -500.0, -500.0]], covariances=[np.eye(3).tolist()]
    )
    liver = np.zeros((10, 10, 10), bool)
    liver[3:7, 3:7, 3:7] = True
    centre = model.sample_centre(liver, np.random.default_rng(0), max_tries=20)
    assert liver[centre]


def test_cli_fit_location_and_synthesize_round_trip(tmp_path, capsys):
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    labels_dir = tmp_path / "labels"
    labels_dir.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        lab = tumour_label(i, [tuple(int(v) for v in rng.normal((30, 28, 24), 3))])
        nib.save(nib.Nifti1Image(lab.astype(np.uint8), affine), labels_dir / f"l{i}.nii.gz")
    assert (
        cli_main(
            [
                "fit-location",
                "--data",
                str(labels_dir),
                "--components",
                "1",
                "--out",
                str(tmp_path / "gmm.json"),
            ]
        )
        == 0
    )
    image, label = liver_case(shape=(60, 56, 48), radii=(26, 24, 20))
    affine2 = np.diag([2.0, 2.0, 2.0, 1.0])  # 2 mm: resampled to 1 mm internally and back
    nib.save(nib.Nifti1Image(image, affine2), tmp_path / "ct.nii.gz")
    nib.save(nib.Nifti1Image(label, affine2), tmp_path / "liver.nii.gz")
    out = tmp_path / "out"
    code = cli_main(
        [
            "synthesize",
            "--image",
            str(tmp_path / "ct.nii.gz"),
            "--label",
            str(tmp_path / "liver.nii.gz"),
            "--out",
            str(out),
            "--tumor-type",
            "small",
            "--location",
            "gmm",
            "--location-model",
            str(tmp_path / "gmm.json"),
        ]
    )
    assert code == 0
    new_label = nib.load(out / "label.nii.gz")
    assert np.allclose(new_label.affine, affine2) and new_label.shape == label.shape
    assert np.asarray(new_label.dataobj).max() == 2 and (out / "preview.png").stat().st_size > 1000
    assert (
        cli_main(
            [
                "synthesize",
                "--image",
                str(tmp_path / "ct.nii.gz"),
                "--label",
                str(tmp_path / "liver.nii.gz"),
                "--out",
                str(out),
                "--sphere-ratio",
                "1.5",
            ]
        )
        == 2
    )
    assert "sphere_ratio" in capsys.readouterr().err


def test_zhang_style_darkens_inside_the_liver_only():
    image, label = liver_case()
    config = only("medium", style="zhang")
    new_image, new_label = synthesize_tumors(image, label, config, np.random.default_rng(2))
    assert (new_label == 2).sum() > 0 and np.all(label[new_label == 2] == 1)
    assert np.array_equal(new_image[label == 0], image[label == 0])
    assert (image - new_image)[new_label == 2].mean() > 5


def test_smooth_field_from_byte_noise_is_a_unit_gaussian():
    from scipy import stats

    from core.synthesis.texture import SmoothField

    rng = np.random.default_rng(3)
    for sigma in (4.0, 12.0):
        # one voxel per independent field: the marginal, free of spatial correlation
        values = np.array(
            [
                SmoothField(rng, sigma, (0, 0, 0), (2, 2, 2)).sample((1, 1, 1), (2, 2, 2))[0, 0, 0]
                for _ in range(1500)
            ]
        )
        assert abs(values.mean()) < 0.1 and abs(values.std() - 1) < 0.1
        assert abs(stats.skew(values)) < 0.2 and abs(stats.kurtosis(values)) < 0.4
