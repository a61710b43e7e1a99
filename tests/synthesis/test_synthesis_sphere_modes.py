"""The two readings of "+N% Sphere" (`synthesis.sphere_mode`), measured on the production draw
(`_draw_blobs`) against moments written from each reading's definition.

replace: n ~ U{a..b} blobs per type, each a sphere with probability N (an ellipsoid's three
independent semi-axes on m integer values are also equal by chance, probability 1/m^2).
add: the same n ellipsoids plus Binomial(n, N) spheres of that type. Tolerances: 4 standard
errors of the mean over the events drawn, from each reading's own variance.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from tumorsweep.config import TrialConfig, flatten
from tumorsweep.synthesis.config import BLOB_TYPES, SynthesisConfig
from tumorsweep.synthesis.synthesize import _draw_blobs, synthesize_tumors

EVENTS = 3000


def _only(kind: str, **more) -> SynthesisConfig:
    probs = {t: float(t == kind) for t in (*BLOB_TYPES, "mix")}
    return SynthesisConfig(type_probs=probs, **more)


def _reference(mode: str, ratio: float, lo: int, hi: int, m: int) -> dict[str, tuple[float, float]]:
    """(mean, variance) per event of the blob count and of the equal-axes blob count, from the
    reading's definition (n uniform on lo..hi, q = 1/m^2 the chance of three equal axes)."""
    mean_n = (lo + hi) / 2
    var_n = ((hi - lo + 1) ** 2 - 1) / 12
    q = 1 / m**2
    if mode == "replace":
        p = ratio + (1 - ratio) * q
        return {
            "blobs": (mean_n, var_n),
            "spheres": (mean_n * p, var_n * p**2 + mean_n * p * (1 - p)),
        }
    blobs = (mean_n * (1 + ratio), var_n * (1 + ratio) ** 2 + mean_n * ratio * (1 - ratio))
    spheres = (
        mean_n * (q + ratio),
        var_n * (q + ratio) ** 2 + mean_n * (q * (1 - q) + ratio * (1 - ratio)),
    )
    return {"blobs": blobs, "spheres": spheres}


@pytest.mark.parametrize("mode", ["replace", "add"])
@pytest.mark.parametrize(("kind", "ratio"), [("tiny", 0.15), ("medium", 0.25), ("small", 0.0)])
def test_each_reading_matches_its_definition(mode: str, kind: str, ratio: float) -> None:
    config = _only(kind, sphere_ratio=ratio, sphere_mode=mode)
    lo, hi = config.counts[kind]
    r0 = config.radius[kind]
    a_lo, a_hi = int(0.75 * r0), int(1.25 * r0)
    rng = np.random.default_rng(17)
    blobs_per_event, spheres_per_event, radii = [], [], []
    for _ in range(EVENTS):
        blobs = _draw_blobs(config, rng, lambda kind: (0, 0, 0))
        equal = [b for b in blobs if len(set(b.semi_axes)) == 1]
        blobs_per_event.append(len(blobs))
        spheres_per_event.append(len(equal))
        radii += [b.semi_axes[0] for b in equal]
        assert all(a_lo <= a <= a_hi for b in blobs for a in b.semi_axes)
    reference = _reference(mode, ratio, lo, hi, a_hi - a_lo + 1)
    for name, observed in (("blobs", blobs_per_event), ("spheres", spheres_per_event)):
        mean, variance = reference[name]
        tolerance = 4 * np.sqrt(variance / EVENTS)
        assert abs(np.mean(observed) - mean) <= tolerance, (name, np.mean(observed), mean)
    # a sphere's radius is uniform on the semi-axis range in both readings (one drawn axis)
    counts = np.bincount(np.asarray(radii) - a_lo, minlength=a_hi - a_lo + 1)
    assert stats.chisquare(counts).pvalue > 1e-3


def test_the_readings_differ_where_they_should() -> None:
    """At N = 0.25 on tiny blobs, replace keeps 6.5 blobs per event and add makes 8.125."""
    means = {}
    for mode in ("replace", "add"):
        config = _only("tiny", sphere_ratio=0.25, sphere_mode=mode)
        rng = np.random.default_rng(5)
        means[mode] = np.mean(
            [len(_draw_blobs(config, rng, lambda k: (0, 0, 0))) for _ in range(2000)]
        )
    assert abs(means["replace"] - 6.5) < 0.2 and abs(means["add"] - 8.125) < 0.28


def test_add_spheres_take_their_type_for_the_centre_and_the_mix_per_type() -> None:
    """Each extra sphere is placed as a blob of its own type (a GMM split draws tiny ones from
    the tiny mixture), and in a mix event every type gains its own extras."""
    config = SynthesisConfig(
        type_probs={"tiny": 0, "small": 0, "medium": 0, "large": 0, "mix": 1},
        sphere_ratio=1.0,
        sphere_mode="add",
    )
    asked: list[str] = []
    rng = np.random.default_rng(2)

    def place(kind: str) -> tuple[int, int, int]:
        asked.append(kind)
        return (0, 0, 0)

    blobs = _draw_blobs(config, rng, place)
    assert len(asked) == len(blobs)
    for kind in BLOB_TYPES:  # N = 1: exactly as many extra spheres as ellipsoids per type
        r0 = config.radius[kind]
        mine = [b for b, k in zip(blobs, asked, strict=True) if k == kind]
        assert len(mine) % 2 == 0
        extras = mine[len(mine) // 2 :]
        assert all(len(set(b.semi_axes)) == 1 for b in extras)
        assert all(int(0.75 * r0) <= b.semi_axes[0] <= int(1.25 * r0) for b in extras)


def test_the_reading_is_a_logged_param_and_runs_through_synthesis() -> None:
    flat = flatten(TrialConfig())
    assert flat["synthesis.sphere_mode"] == "replace"
    description = SynthesisConfig.model_fields["sphere_mode"].description
    assert "replace" in description and "Binomial(n, N)" in description
    image = np.full((48, 48, 40), -100.0, dtype=np.float32)
    label = np.zeros(image.shape, dtype=np.uint8)
    label[6:42, 6:42, 5:35] = 1
    image[label == 1] = 110.0
    config = _only("small", sphere_ratio=1.0, sphere_mode="add", prob=1.0)
    _, new_label = synthesize_tumors(image, label, config, np.random.default_rng(0))
    assert (new_label == 2).sum() > 0 and set(np.unique(new_label)) <= {0, 1, 2}
    with pytest.raises(ValueError, match="sphere_mode"):
        SynthesisConfig(sphere_mode="extra")
