"""Where tumour centres go: Hu et al.'s uniform rule, or a Gaussian mixture fitted to the
centres of real tumours in a canonical liver-box frame (saved as small JSON, never pickle).

Optionally (the replication's option) two mixtures: one fitted to the tiny real tumours
(equivalent-sphere radius (3V / 4 pi)^(1/3) <= `tiny_radius_mm`, V their volume in mm^3), one
to the larger ones; tiny blobs then take their centres from the first, the others from the
second."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from tumorsweep.data.naming import case_name
from tumorsweep.errors import TumorsweepError

CANONICAL_SHAPE = (282.0, 244.0, 143.0)
FORMAT = "tumorsweep-location-gmm/2"  # /2 records the fitted-on cases
_FORMAT_V1 = "tumorsweep-location-gmm/1"
_TRIES = 32  # rejection-sampling draws of a centre pixel before eroding the slice
_EDGE_MIN_LIVER = 5  # a centre needs >= 5 liver voxels in its 3x3x3 neighbourhood


def _erode_square(plane: np.ndarray, half: int = 2) -> np.ndarray:
    """Binary erosion by a (2*half+1)^2 square with border value 1, as two separable 1-D
    passes of shifted ANDs (same result as ndimage.binary_erosion, a fraction of its cost)."""
    out = plane.copy()
    for axis in (0, 1):
        src = out.copy() if axis else plane
        for d in range(1, half + 1):
            lead = [slice(None)] * 2
            lag = [slice(None)] * 2
            lead[axis], lag[axis] = slice(d, None), slice(None, -d)
            out[tuple(lead)] &= src[tuple(lag)]
            out[tuple(lag)] &= src[tuple(lead)]
    return out


def uniform_centre(
    liver: np.ndarray,
    rng: np.random.Generator,
    z_range: tuple[int, int] | None = None,
    cache: dict[int, tuple[np.ndarray, np.ndarray]] | None = None,
) -> tuple[int, int, int]:
    """Hu et al.: the axial slice z = z0 + round(U(0.3, 0.7) (z1 - z0)) of the liver's z-extent
    [z0, z1], eroded once by a 5x5 square, and a uniformly random remaining liver pixel.
    Where the original fails (an empty slice, an erosion that leaves nothing) we take the
    nearest non-empty slice, then the uneroded slice. `z_range`: the liver's first and last
    slices when the caller knows them; `cache`: candidate pixels per slice, kept by the
    caller across the blobs of one event on the same liver."""
    if z_range is None:
        z_any = np.flatnonzero(liver.any(axis=(0, 1)))
        z_range = int(z_any[0]), int(z_any[-1])
    z0, z1 = z_range
    z = z0 + int(round(rng.uniform(0.3, 0.7) * (z1 - z0)))
    nx, ny = liver.shape[:2]
    # Rejection sampling: a uniform pixel of the box accepted when its 5x5 square (clipped to
    # the box, i.e. border value 1) is all liver is a uniform pixel of the eroded slice,
    # without eroding it; after _TRIES misses the slice is eroded for real (cached).
    candidates = None if cache is None else cache.get(z)
    if candidates is None:
        for x, y in zip(
            rng.integers(nx, size=_TRIES).tolist(),
            rng.integers(ny, size=_TRIES).tolist(),
            strict=True,
        ):
            if liver[x, y, z] and liver[max(0, x - 2) : x + 3, max(0, y - 2) : y + 3, z].all():
                return x, y, z
        plane = liver[:, :, z] != 0
        if not plane.any():  # a gap in the liver: the nearest slice that has some
            z_any = np.flatnonzero(liver.any(axis=(0, 1)))
            z = int(z_any[np.argmin(np.abs(z_any - z))])
            plane = liver[:, :, z] != 0
        eroded = _erode_square(plane)
        candidates = np.nonzero(eroded if eroded.any() else plane)
        if cache is not None:
            cache[z] = candidates
    xs, ys = candidates
    pick = int(rng.integers(len(xs)))
    return int(xs[pick]), int(ys[pick]), z


def _liver_box(liver: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    coords = [
        np.flatnonzero(liver.any(axis=tuple(a for a in range(3) if a != i))) for i in range(3)
    ]
    lo = np.array([c[0] for c in coords], dtype=np.float64)
    hi = np.array([c[-1] + 1 for c in coords], dtype=np.float64)
    return lo, hi


@dataclass(frozen=True)
class LocationModel:
    """Gaussian mixture over tumour centres in the canonical liver-box frame.

    `covariances` is always one full 3x3 matrix per component (diag and tied fits are
    expanded), so sampling does not depend on how the model was fitted. `fitted_on` names the
    cases whose tumours it was fitted on and `fitted_on_labels` their label files (resolved
    paths, "" for arrays), so a study can refuse a model fitted on its evaluation cases; both
    are None when unknown (a model saved before they were recorded).
    """

    weights: list[float]
    means: list[list[float]]
    covariances: list[list[list[float]]]
    covariance_type: str = "full"
    canonical_shape: tuple[float, float, float] = CANONICAL_SHAPE
    n_tumors: int = 0
    fitted_on: tuple[str, ...] | None = None
    fitted_on_labels: tuple[str, ...] | None = None
    tiny: LocationModel | None = None  # the tiny tumours' own mixture (split models only)
    tiny_radius_mm: float | None = None  # the split: tiny = equivalent radius <= this

    def sample_centre(
        self,
        liver: np.ndarray,
        rng: np.random.Generator,
        max_tries: int,
        z_range: tuple[int, int] | None = None,
        kind: str | None = None,
    ) -> tuple[int, int, int]:
        """A centre inside the liver, off its edge; after `max_tries` misses, the uniform rule.
        `kind`: the blob's type; a split model draws "tiny" blobs from its tiny mixture."""
        if kind == "tiny" and self.tiny is not None:
            return self.tiny.sample_centre(liver, rng, max_tries, z_range)
        lo, hi = _liver_box(liver)
        scale = (hi - lo) / np.asarray(self.canonical_shape)
        weights = np.asarray(self.weights) / np.sum(self.weights)
        for _ in range(max_tries):
            k = int(rng.choice(len(weights), p=weights))
            point = rng.multivariate_normal(self.means[k], self.covariances[k])
            voxel = np.floor(lo + point * scale).astype(int)
            if np.any(voxel < 0) or np.any(voxel >= liver.shape) or not liver[tuple(voxel)]:
                continue
            around = liver[tuple(slice(max(0, v - 1), v + 2) for v in voxel)]
            if np.count_nonzero(around) >= _EDGE_MIN_LIVER:
                return int(voxel[0]), int(voxel[1]), int(voxel[2])
        return uniform_centre(liver, rng, z_range)

    def save(self, path: str | Path) -> None:
        """Write the model as JSON."""
        Path(path).write_text(json.dumps(self._payload(), indent=1))

    def _payload(self) -> dict:
        payload = {
            "format": FORMAT,
            "weights": self.weights,
            "means": self.means,
            "covariances": self.covariances,
            "covariance_type": self.covariance_type,
            "canonical_shape": list(self.canonical_shape),
            "n_tumors": self.n_tumors,
            "fitted_on": None
            if self.fitted_on is None
            else [
                {"case": case, "label": label}
                for case, label in zip(
                    self.fitted_on,
                    self.fitted_on_labels or ("",) * len(self.fitted_on),
                    strict=True,
                )
            ],
        }
        if self.tiny is not None:
            payload["tiny_radius_mm"] = self.tiny_radius_mm
            payload["tiny"] = self.tiny._payload()
        return payload

    @classmethod
    def load(cls, path: str | Path) -> LocationModel:
        """Read a model written by `save`, with a clear error for a missing or malformed file."""
        try:
            payload = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise TumorsweepError(f"location model {path}: {exc}") from exc
        return cls._from_payload(payload, path)

    @classmethod
    def _from_payload(cls, payload: dict, path: str | Path) -> LocationModel:
        try:
            if payload.get("format") not in (FORMAT, _FORMAT_V1):
                raise ValueError("not a tumorsweep location model (format field)")
            fitted = payload.get("fitted_on") if payload["format"] == FORMAT else None
            model = cls(
                weights=[float(w) for w in payload["weights"]],
                means=[[float(v) for v in m] for m in payload["means"]],
                covariances=[
                    [[float(v) for v in row] for row in c] for c in payload["covariances"]
                ],
                covariance_type=str(payload["covariance_type"]),
                canonical_shape=tuple(float(v) for v in payload["canonical_shape"]),
                n_tumors=int(payload.get("n_tumors", 0)),
                fitted_on=None if fitted is None else tuple(str(e["case"]) for e in fitted),
                fitted_on_labels=None if fitted is None else tuple(str(e["label"]) for e in fitted),
                tiny=None
                if payload.get("tiny") is None
                else cls._from_payload(payload["tiny"], f"{path} (tiny mixture)"),
                tiny_radius_mm=None
                if payload.get("tiny_radius_mm") is None
                else float(payload["tiny_radius_mm"]),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise TumorsweepError(f"location model {path}: {exc}") from exc
        k = len(model.weights)
        if k == 0 or len(model.means) != k or len(model.covariances) != k:
            raise TumorsweepError(f"location model {path}: inconsistent component counts")
        dims = {len(m) for m in model.means} | {len(c) for c in model.covariances}
        dims |= {len(row) for c in model.covariances for row in c}
        if dims != {3} or len(model.canonical_shape) != 3:
            raise TumorsweepError(
                f"location model {path}: means and covariances must be 3-D (3 and 3x3 per "
                f"component), found dimension(s) {sorted(dims)}"
            )
        values = np.asarray([*model.weights, *np.ravel(model.means), *np.ravel(model.covariances)])
        if not np.isfinite(values).all() or min(model.weights) < 0 or sum(model.weights) <= 0:
            raise TumorsweepError(
                f"location model {path}: weights must be >= 0 with a positive sum, and every "
                "value finite"
            )
        return model


def _as_label_array(label: np.ndarray | str | Path) -> tuple[np.ndarray, float]:
    """The label array and its voxel volume in mm^3 (1 for an array: 1 mm voxels); a path is
    read by the one NIfTI reader (`tumorsweep.data.io`: geometry, size, truncation and 0/1/2
    values checked) and reoriented to the closest canonical axes."""
    if isinstance(label, (str, Path)):
        from tumorsweep.data.io import as_labels, open_nifti, voxels

        image = open_nifti(label)
        values = as_labels(label, voxels(image, label))
        ornt = nib.orientations.io_orientation(image.affine)
        voxel = float(np.prod(image.header.get_zooms()[:3]))
        return nib.orientations.apply_orientation(values, ornt).astype(np.int16), voxel
    return np.asarray(label), 1.0


def _tumours(label: np.ndarray, voxel_mm3: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(centres in the canonical liver-box frame, equivalent-sphere radii in mm) of the
    tumours (connected components of label 2)."""
    liver = label >= 1
    components, count = ndimage.label(label == 2)
    if not liver.any() or count == 0:
        return np.zeros((0, 3)), np.zeros(0)
    lo, hi = _liver_box(liver)
    index = range(1, count + 1)
    centres = np.asarray(ndimage.center_of_mass(np.ones_like(components), components, index))
    volumes = np.bincount(components.ravel(), minlength=count + 1)[1:] * voxel_mm3
    radii = np.cbrt(3.0 * volumes / (4.0 * np.pi))
    return (centres - lo) / (hi - lo) * np.asarray(CANONICAL_SHAPE), radii


def tumour_centres(label: np.ndarray) -> np.ndarray:
    """Centres of the tumours (connected components of label 2) in the canonical liver-box frame."""
    return _tumours(label)[0]


def _fit_mixture(
    centres: np.ndarray, n_components: int, covariance_type: str, seed: int, what: str
) -> tuple[list, list, list]:
    from sklearn.mixture import GaussianMixture

    if len(centres) < max(2, n_components):
        raise TumorsweepError(
            f"fit-location: {len(centres)} {what}tumours found (label 2), need at least "
            f"{max(2, n_components)} for {n_components} components"
        )
    gmm = GaussianMixture(
        n_components, covariance_type=covariance_type, random_state=seed, reg_covar=1e-3
    )
    gmm.fit(centres)
    if covariance_type == "full":
        covs = gmm.covariances_
    elif covariance_type == "diag":
        covs = np.stack([np.diag(c) for c in gmm.covariances_])
    else:
        covs = np.repeat(gmm.covariances_[None], n_components, axis=0)
    return gmm.weights_.tolist(), gmm.means_.tolist(), covs.tolist()


def fit_location_model(
    labels: Iterable[np.ndarray | str | Path],
    n_components: int = 2,
    covariance_type: str = "full",
    seed: int = 0,
    cases: Sequence[str] | None = None,
    tiny_radius_mm: float | None = None,
) -> LocationModel:
    """Fit the GMM to the centres of every tumour in `labels` (arrays of 1 mm voxels, or NIfTI
    paths whose headers give the voxel size).

    With `tiny_radius_mm`, two mixtures of `n_components` each: the model's own on tumours
    whose equivalent-sphere radius exceeds it, `model.tiny` on the others (see the module
    docstring). The model records the cases it was fitted on: `cases` (one name per label),
    else the label files' names for paths; for arrays without names it is left unknown."""
    labels = list(labels)
    if cases is not None and len(cases) != len(labels):
        raise TumorsweepError(
            f"fit_location_model: {len(cases)} case names for {len(labels)} labels"
        )
    paths = ["" if isinstance(lab, np.ndarray) else str(Path(lab).resolve()) for lab in labels]
    if cases is None and all(paths):
        cases = [case_name(Path(p)) for p in paths]
    if n_components < 1:
        raise TumorsweepError(f"--components {n_components}: must be >= 1")
    if covariance_type not in ("full", "diag", "tied"):
        raise TumorsweepError(f"covariance type {covariance_type!r}: expected full, diag or tied")
    if tiny_radius_mm is not None and not tiny_radius_mm > 0:
        raise TumorsweepError(f"tiny radius {tiny_radius_mm} mm: must be > 0")
    found = [_tumours(*_as_label_array(lab)) for lab in labels]
    centres = np.concatenate([c for c, _ in found] or [np.zeros((0, 3))])
    radii = np.concatenate([r for _, r in found] or [np.zeros(0)])
    record = {
        "covariance_type": covariance_type,
        "fitted_on": None if cases is None else tuple(str(c) for c in cases),
        "fitted_on_labels": None if cases is None else tuple(paths),
    }
    if tiny_radius_mm is None:
        weights, means, covs = _fit_mixture(centres, n_components, covariance_type, seed, "")
        return LocationModel(weights, means, covs, n_tumors=len(centres), **record)
    small = radii <= tiny_radius_mm
    what = f"tiny (equivalent radius <= {tiny_radius_mm:g} mm) "
    tiny = LocationModel(
        *_fit_mixture(centres[small], n_components, covariance_type, seed, what),
        n_tumors=int(small.sum()),
        **record,
    )
    what = f"larger (equivalent radius > {tiny_radius_mm:g} mm) "
    weights, means, covs = _fit_mixture(centres[~small], n_components, covariance_type, seed, what)
    return LocationModel(
        weights, means, covs, n_tumors=int((~small).sum()), tiny=tiny,
        tiny_radius_mm=float(tiny_radius_mm), **record,
    )  # fmt: skip
