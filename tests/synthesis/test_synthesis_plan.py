"""`plan_tumors`: an event planned on read-only arrays (the fast chain's cache) is the event
`synthesize_tumors_inplace` writes; Hu's overlapping regions blend each voxel once."""

from __future__ import annotations

import numpy as np
import pytest
from synthesis_util import liver_case, only  # tests/ is on the path

from tumorsweep.synthesis import synthesize
from tumorsweep.synthesis.config import SynthesisConfig
from tumorsweep.synthesis.synthesize import plan_tumors, synthesize_tumors_inplace


def _read_only(*arrays: np.ndarray) -> list[np.ndarray]:
    out = []
    for array in arrays:
        array = array.copy()
        array.flags.writeable = False
        out.append(array)
    return out


@pytest.mark.parametrize(
    "config",
    [
        only("mix"),
        only("large", style="zhang"),
        SynthesisConfig(style="ca", ca={"steps": [20, 30], "seeds": [1, 2]}),
    ],
    ids=["hu-mix", "zhang", "ca"],
)
def test_planning_writes_nothing_and_applying_the_plan_is_the_event(config) -> None:
    image, label = liver_case(seed=4)
    frozen_image, frozen_label = _read_only(image, label)  # any write would raise
    edit = plan_tumors(frozen_image, frozen_label, config, np.random.default_rng(7))
    assert edit.added > 100
    planned_image, planned_label = image.copy(), label.copy()
    edit.apply(planned_image, planned_label)
    written_image, written_label = image.copy(), label.copy()
    added = synthesize_tumors_inplace(
        written_image, written_label, config, np.random.default_rng(7)
    )
    assert added == edit.added == int((planned_label == 2).sum())
    np.testing.assert_array_equal(planned_image, written_image)
    np.testing.assert_array_equal(planned_label, written_label)
    assert np.array_equal(planned_image[label == 0], image[label == 0]) or config.style == "ca"


def test_a_patch_computes_only_its_part_of_the_blend(monkeypatch) -> None:
    """The fast chain pastes a planned Hu event into one patch: each region's blend is then
    computed on the patch's part of it only, and gives the whole event's voxels there
    (labels exactly; images to float32 rounding, as BLAS may sum a smaller box in another
    order: a wrong texture, blur or offset would move them by tenths to tens of HU)."""
    image, label = liver_case(shape=(96, 88, 72), radii=(40, 36, 30), seed=6)
    blurred = []
    real = synthesize._blurred

    def counting(mask, region, *args, **kwargs):
        blurred.append(int(np.prod([b - a for a, b in zip(*region, strict=True)])))
        return real(mask, region, *args, **kwargs)

    monkeypatch.setattr(synthesize, "_blurred", counting)
    rng = np.random.default_rng(0)
    for seed in range(6):
        edit = plan_tumors(image, label, only("mix"), np.random.default_rng(seed))
        whole_image, whole_label = image.copy(), label.copy()
        edit.apply(whole_image, whole_label)
        whole = sum(blurred)
        for _ in range(3):
            blurred.clear()
            start = tuple(int(rng.integers(-8, n - 24)) for n in image.shape)
            lo = tuple(max(0, a) for a in start)
            window = tuple(slice(a, s + 32) for a, s in zip(lo, start, strict=True))
            patch_image, patch_label = image[window].copy(), label[window].copy()
            edit.apply(patch_image, patch_label, lo)
            np.testing.assert_array_equal(patch_label, whole_label[window])
            np.testing.assert_allclose(patch_image, whole_image[window], rtol=0, atol=1e-4)
            held = [
                int(np.prod([max(0, min(a + n, w.stop) - max(a, w.start)) for a, n, w in
                             zip(s.lo, s.shape, window, strict=True)]))
                for s in edit.image
            ]  # fmt: skip
            assert sorted(blurred) == sorted(h for h in held if h)  # each region's part, once
            assert sum(blurred) < whole
        blurred.clear()


def test_overlapping_regions_blend_each_voxel_once(monkeypatch) -> None:
    """Never merging the blobs' regions (so they overlap) or always merging them (one region)
    gives the same image: the texture is one field and the blur reads the whole mask, so
    only a voxel blended twice (or not at all) would differ, by its whole drop (tens of HU).
    What does differ is the texture's interpolation, re-centred on each region's own nodes
    (variance-keeping rows do not sum to 1): measured 0.11 HU at most."""
    image, label = liver_case(shape=(96, 88, 72), radii=(40, 36, 30), seed=5)
    config = only("mix")
    runs = {}
    for name, slack in (("apart", -(10**12)), ("merged", 10**12)):
        monkeypatch.setattr(synthesize, "_MERGE_SLACK", slack)
        edit = plan_tumors(image, label, config, np.random.default_rng(11))
        out_image, out_label = image.copy(), label.copy()
        edit.apply(out_image, out_label)
        runs[name] = (edit, out_image, out_label)
    apart = runs["apart"][0].image
    assert len(runs["merged"][0].image) == 1 and len(apart) > 5

    def meets(a, b) -> bool:
        return all(
            x < y + m and y < x + n for x, n, y, m in zip(a.lo, a.shape, b.lo, b.shape, strict=True)
        )

    overlaps = sum(meets(a, b) for i, a in enumerate(apart) for b in apart[:i])
    assert overlaps >= 3
    np.testing.assert_array_equal(runs["apart"][2], runs["merged"][2])
    changed = runs["merged"][1] != image
    assert changed.sum() > 2000
    assert float((image - runs["merged"][1])[changed].mean()) > 20.0  # the drop, in HU
    diff = np.abs(runs["apart"][1] - runs["merged"][1])
    assert float(diff.max()) < 0.5, float(diff.max())


def test_a_memo_keeps_the_label_scan_for_later_events(monkeypatch) -> None:
    """With a memo (a cached case's dict), the label is scanned on the first event only; every
    event is the one planned without a memo (same seed, same voxels), and a label with a
    tumour is still skipped under healthy_only from the kept scan."""
    image, label = liver_case()
    calls = []
    scan = synthesize.scan_label
    monkeypatch.setattr(synthesize, "scan_label", lambda lab: calls.append(1) or scan(lab))
    memo: dict = {}
    config = only("mix")
    for seed in (3, 4, 5):
        kept = plan_tumors(image, label, config, np.random.default_rng(seed), memo=memo)
        fresh = plan_tumors(image, label, config, np.random.default_rng(seed))
        got = [image.copy(), label.copy()]
        kept.apply(*got)
        expected = [image.copy(), label.copy()]
        fresh.apply(*expected)
        assert kept.added == fresh.added > 0
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])
    assert len(calls) == 1 + 3  # the memo's one scan, and one per event without it
    tumour = label.copy()
    tumour[36, 32, 28] = 2
    memo_tumour: dict = {}
    assert plan_tumors(image, tumour, config, np.random.default_rng(0), None, True,
                       memo_tumour).added == 0  # fmt: skip
    assert plan_tumors(image, tumour, config, np.random.default_rng(1), None, True,
                       memo_tumour).added == 0  # fmt: skip
