"""MONAI chains: protocol order, synthesis slot in HU, patch shapes, label dtype, caching; the
fast pipeline against the public one (same patches, same indices, same distribution)."""

from __future__ import annotations

import copy
import math

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import CacheDataset, DataLoader
from monai.transforms import Invertd, MapTransform, Randomizable
from monai.transforms.utils import map_binary_to_indices

from tumorsweep.data.layouts import load_split
from tumorsweep.data.phantom import write_phantom_dataset
from tumorsweep.data.sampling import (
    BG_ROWS,
    FG_ROWS,
    LIVER_BOX,
    ORIGIN,
    SYNTH,
    CompactForSamplingd,
    RowIndices,
    SynthesiseLiverBoxd,
)
from tumorsweep.data.transforms import (
    HU_WINDOW,
    _window,
    eval_transforms,
    resampled_pair,
    train_transforms,
)
from tumorsweep.errors import TumorsweepError
from tumorsweep.synthesis import SynthesisConfig, TumorSynthesisd
from tumorsweep.synthesis.transform import SYNTHETIC_KEY

# Tumour sizes for 2 mm voxels (the demo preset's), always applied so every volume gets some.
SMALL_TUMOURS = SynthesisConfig(
    prob=1.0, radius={"tiny": 2.0, "small": 4.0, "medium": 8.0, "large": 16.0}
)


class MarkTumour(Randomizable, MapTransform):
    """Dummy synthesis: label a random liver voxel block as tumour and darken it by 80 HU."""

    def __init__(self) -> None:
        MapTransform.__init__(self, ["image", "label"])
        self.seen_min_hu: list[float] = []
        self.seen_shapes: list[tuple[int, ...]] = []

    def randomize(self, data=None) -> None:
        self.offset = int(self.R.randint(0, 3))

    def __call__(self, data: dict) -> dict:
        self.randomize()
        d = dict(data)
        image, label = d["image"].clone(), d["label"].clone()
        self.seen_min_hu.append(float(image.min()))
        self.seen_shapes.append(tuple(image.shape))
        liver = torch.nonzero(label[0] == 1)
        centre = liver[len(liver) // 2] + self.offset
        box = tuple(slice(int(c) - 2, int(c) + 3) for c in centre)
        label[(0, *box)] = 2
        image[(0, *box)] -= 80
        d["image"], d["label"] = image, label
        return d


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("ph")
    write_phantom_dataset(root, cases=4, seed=4, shape=(40, 40, 24), spacing=(3.0, 3.0, 4.0),
                          tumor_cases=2, orientation="LPS")  # fmt: skip
    return load_split(root)


@pytest.fixture(scope="module")
def healthy(tmp_path_factory) -> list[dict]:
    """Three healthy LPS phantoms (nibabel writes Fortran order) at 2.5 x 2.5 x 3 mm."""
    root = tmp_path_factory.mktemp("healthy")
    write_phantom_dataset(root, cases=6, seed=7, shape=(56, 56, 36), spacing=(2.5, 2.5, 3.0),
                          tumor_cases=3, orientation="LPS")  # fmt: skip
    return [{"image": c["image"], "label": c["label"]} for c in load_split(root).train_cases(False)]


def names(chain) -> list[str]:
    return [type(t).__name__ for t in chain.transforms]


def test_chain_order_follows_the_protocol() -> None:
    synthesis = MarkTumour()
    chain = train_transforms(synthesis=synthesis)
    assert names(chain) == [
        "LoadImaged", "EnsureChannelFirstd", "Orientationd", "Spacingd", "MarkTumour",
        "ScaleIntensityRanged", "SpatialPadd", "RandCropByPosNegLabeld",
        "RandFlipd", "RandFlipd", "RandFlipd", "RandRotate90d", "RandScaleIntensityd",
        "RandShiftIntensityd", "EnsureTyped",
    ]  # fmt: skip
    assert [t.prob for t in chain.transforms[8:14]] == [0.2, 0.2, 0.2, 0.2, 0.15, 0.15]
    window = chain.transforms[5]
    assert (window.scaler.a_min, window.scaler.a_max, window.scaler.clip) == (-21.0, 189.0, True)
    crop = chain.transforms[7].cropper
    assert (crop.pos_ratio, crop.num_samples, tuple(crop.spatial_size)) == (0.5, 1, (96, 96, 96))
    assert "MarkTumour" not in names(train_transforms(augment=False))
    assert names(train_transforms(augment=False))[-3:] == [
        "SpatialPadd", "RandCropByPosNegLabeld", "EnsureTyped",
    ]  # fmt: skip
    assert chain.transforms[6].mode == ("minimum", "constant")  # as the public code pads
    fast = train_transforms(synthesis=synthesis, pipeline="fast")
    assert names(fast) == [
        "LoadImaged", "EnsureChannelFirstd", "Orientationd", "Spacingd", "CompactForSamplingd",
        "SynthesiseLiverBoxd", "CropCachedPosNegd", "ScaleIntensityRanged",
        "RandFlipd", "RandFlipd", "RandFlipd", "RandRotate90d", "RandScaleIntensityd",
        "RandShiftIntensityd", "EnsureTyped",
    ]  # fmt: skip
    assert fast.transforms[5].synthesis is synthesis
    # Compose seeds its randomisable transforms in order: the same seeds reach the same roles.
    augmentation = names(chain)[8:14]
    randomised = [[n for n, t in zip(names(c), c.transforms, strict=True)
                   if isinstance(t, Randomizable)] for c in (chain, fast)]  # fmt: skip
    assert randomised == [
        ["MarkTumour", "RandCropByPosNegLabeld", *augmentation],
        ["SynthesiseLiverBoxd", "CropCachedPosNegd", *augmentation],
    ]


def test_cached_patches_with_synthesis_in_hu(study) -> None:
    synthesis = MarkTumour()
    chain = train_transforms(
        spacing=(1.5, 1.5, 1.5), patch_size=(32, 32, 32), synthesis=synthesis, augment=False
    )
    dataset = CacheDataset(study.train, chain, cache_rate=1.0, num_workers=0, progress=False)
    loader = DataLoader(dataset, batch_size=2, shuffle=False, num_workers=0)
    batches = [batch for _ in range(2) for batch in loader]
    # The synthesis ran on every draw (not cached), on HU values resampled to 1.5 mm.
    assert len(synthesis.seen_min_hu) == 2 * len(study.train)
    assert max(synthesis.seen_min_hu) < -500
    assert synthesis.seen_shapes[0] == (1, 79, 79, 62)  # 117 x 117 x 92 mm at 1.5 mm, unpadded
    image, label = batches[0]["image"], batches[0]["label"]
    assert image.shape == (2, 1, 32, 32, 32) and label.shape == (2, 1, 32, 32, 32)
    assert image.dtype == torch.float32 and label.dtype == torch.int64
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    labels = set(torch.cat([b["label"] for b in batches]).unique().tolist())
    assert labels <= {0, 1, 2} and 2 in labels


def test_augmented_chain_keeps_labels_and_shape(study) -> None:
    chain = train_transforms(patch_size=(48, 48, 48))
    chain.set_random_state(seed=0)
    for _ in range(3):
        (sample,) = chain(study.train[0])
        assert sample["image"].shape == (1, 48, 48, 48)
        assert set(sample["label"].unique().tolist()) <= {0, 1}


def test_eval_chain_inverts_to_the_native_grid(study) -> None:
    chain = eval_transforms(spacing=(2.0, 2.0, 2.0), window=(-175, 250))
    case = study.test[0]
    data = chain(case)
    assert data["image"].shape[1:] == data["label"].shape[1:] == (60, 60, 47)
    assert float(data["image"].min()) == 0.0 and float(data["image"].max()) == 1.0
    data["pred"] = data["label"].clone()
    inverter = Invertd("pred", transform=chain, orig_keys="label", nearest_interp=True)
    native = inverter(data)["pred"]
    assert tuple(native.shape[1:]) == (40, 40, 24)
    truth = np.asarray(nib.load(case["label"]).dataobj)
    agreement = (native[0].numpy().round() == truth).mean()
    assert agreement > 0.97  # back in LPS file order, apart from resampling at edges
    image_only = eval_transforms()({"image": case["image"]})
    assert "label" not in image_only


@pytest.mark.parametrize("patch", [(32, 32, 32), (25, 24, 64)])  # odd side; z padded (54 < 64)
def test_fast_pipeline_gives_the_public_patches(healthy, patch) -> None:
    """With synthesis and augmentation, over three epochs: the fast pipeline draws the same
    centres, tumours and flips (labels bit for bit). Its images equal the public ones to
    float32 rounding: the fast chain blends only the patch's part of each tumour region, and
    BLAS may round a sum over a smaller box in another order (a real difference in texture,
    blur or position moves voxels by far more than 1e-6 of the [0, 1] window). Any write into
    its (uncopied) cache would show in later epochs: synthesis always applies, so tumours
    would pile up."""

    def epochs(pipeline: str) -> tuple[CacheDataset, list[dict]]:
        chain = train_transforms(
            spacing=(2.0, 2.0, 2.0), patch_size=patch, num_samples=2, pipeline=pipeline,
            synthesis=TumorSynthesisd(config=SMALL_TUMOURS),
        )  # fmt: skip
        dataset = CacheDataset(healthy, chain, copy_cache=pipeline == "public", progress=False)
        generator = torch.Generator().manual_seed(3)
        loader = DataLoader(dataset, batch_size=1, shuffle=True, generator=generator)
        return dataset, [batch for _ in range(3) for batch in loader]

    _, public = epochs("public")
    _, fast = epochs("fast")
    assert len(fast) == len(public) == 9
    for ours, theirs in zip(fast, public, strict=True):
        assert ours.keys() == theirs.keys() == {"image", "label", SYNTHETIC_KEY}
        assert torch.equal(ours[SYNTHETIC_KEY], theirs[SYNTHETIC_KEY])
        assert ours["image"].shape == (2, 1, *patch) and ours["label"].dtype == torch.int64
        torch.testing.assert_close(ours["image"], theirs["image"], rtol=0, atol=1e-6)
        assert torch.equal(ours["label"], theirs["label"])
    labels = torch.cat([b["label"] for b in fast])
    assert int((labels == 2).sum()) > 100  # tumours were synthesised and pasted
    centres = labels[(slice(None), 0, *(p // 2 for p in patch))]
    assert 0 < int((centres == 0).sum()) < len(centres)  # both positive and negative patches


def _listed(rows: np.ndarray, compact: dict, low: float | None) -> np.ndarray:
    """Every entry of a cached index set as (n, 3) coordinates of the resampled grid."""
    image, label = compact["image"][0], compact["label"][0]
    indices = RowIndices(rows, image, label, low)
    flat = np.array([indices[k] for k in range(len(indices))], dtype=np.int64)
    return np.stack(np.unravel_index(flat, label.shape), axis=1) + np.asarray(compact[ORIGIN])


def test_cached_indices_are_monai_indices_after_synthesis(healthy) -> None:
    """MONAI's own foreground/background lists of the synthesised, windowed volume (what
    RandCropByPosNegLabeld draws from) equal the lists cached before synthesis; and the
    synthesis run on the cached liver box equals the one run on the whole volume."""
    case = resampled_pair((2.0, 2.0, 2.0))(healthy[0])
    compact = CompactForSamplingd((8, 8, 8), HU_WINDOW[0])(case)  # small patch: air dropped
    full = TumorSynthesisd(config=SMALL_TUMOURS).set_random_state(seed=11)(copy.deepcopy(case))
    assert int((full["label"] == 2).sum()) > 50
    windowed = _window(HU_WINDOW)({"image": full["image"]})["image"]
    fg, bg = map_binary_to_indices(full["label"], windowed, image_threshold=0.0)
    grid = full["label"].shape[1:]
    for cached, low, expected in ((FG_ROWS, None, fg), (BG_ROWS, HU_WINDOW[0], bg)):
        monai = np.stack(np.unravel_index(np.asarray(expected), grid), axis=1)
        np.testing.assert_array_equal(_listed(compact[cached], compact, low), monai)
    # The kept part (63 x 53 x 54 of 70 x 70 x 54) still holds every voxel either list names.
    assert math.prod(compact["label"].shape) < 0.8 * math.prod(full["label"].shape)

    boxed = SynthesiseLiverBoxd(TumorSynthesisd(config=SMALL_TUMOURS)).set_random_state(seed=11)
    cached_image, cached_label = compact["image"].copy(), compact["label"].copy()
    edit = boxed(compact)[SYNTH]
    np.testing.assert_array_equal(compact["image"], cached_image)  # the cache is not written
    np.testing.assert_array_equal(compact["label"], cached_label)
    image, label = cached_image[0].astype(np.float32), cached_label[0].copy()
    edit.apply(image, label)
    lo = np.asarray(compact[ORIGIN])
    kept = tuple(slice(a, a + n) for a, n in zip(lo, image.shape, strict=True))
    np.testing.assert_array_equal(image, full["image"][0][kept].numpy())
    np.testing.assert_array_equal(label, full["label"][0][kept].numpy())
    changed = np.argwhere((full["image"] != case["image"])[0].numpy())  # only inside the box
    box_lo = lo + [a for a, _ in compact[LIVER_BOX]]
    box_hi = lo + [b for _, b in compact[LIVER_BOX]]
    assert len(changed) and (changed.min(0) >= box_lo).all()
    assert (changed.max(0) < box_hi).all()
    assert int((label == 2).sum()) == int((full["label"] == 2).sum())  # every tumour voxel kept


def test_int16_cache_keeps_the_patch_distribution(healthy) -> None:
    """int16 storage rounds resampled HU: background centres lose exactly the voxels whose HU
    lies in (-21, -20.5) (they round to -21, the window's low end); the patches' statistics
    agree with float32 storage (which gives the public chain's patches, test above) within
    sampling error (independent seeds, 4.5 SE; each epoch visits every case once, so the
    i.i.d. standard error is if anything too wide)."""
    case = resampled_pair((2.0, 2.0, 2.0))(healthy[0])
    exact = CompactForSamplingd((32, 32, 32), HU_WINDOW[0], "float32")(case)
    rounded = CompactForSamplingd((32, 32, 32), HU_WINDOW[0], "int16")(case)
    image, label = case["image"][0].numpy(), case["label"][0].numpy()
    lost = int(np.count_nonzero((label == 0) & (image > -21.0) & (image < -20.5)))
    assert lost > 0
    assert exact[BG_ROWS][-1] - rounded[BG_ROWS][-1] == lost
    np.testing.assert_array_equal(exact[FG_ROWS], rounded[FG_ROWS])

    def statistics(dtype: str, seed: int) -> np.ndarray:
        chain = train_transforms(
            spacing=(2.0, 2.0, 2.0), patch_size=(32, 32, 32), augment=False, num_samples=8,
            pipeline="fast", cache_dtype=dtype,
        )  # fmt: skip
        dataset = CacheDataset(healthy, chain, copy_cache=False, progress=False)
        generator = torch.Generator().manual_seed(seed)
        loader = DataLoader(dataset, batch_size=3, shuffle=True, generator=generator)
        rows = []
        for _ in range(67):  # 67 x 3 volumes x 8 crops = 1608 patches
            for batch in loader:
                image, label = batch["image"][:, 0], batch["label"][:, 0]
                rows.append(torch.stack([
                    (label[:, 16, 16, 16] > 0).double(),  # centred on the liver
                    (label > 0).double().mean((1, 2, 3)),  # liver share of the patch
                    image.double().mean((1, 2, 3)),  # mean windowed intensity
                    (image > 0).double().mean((1, 2, 3)),  # share above the window's low end
                ], 1))  # fmt: skip
        return torch.cat(rows).numpy()

    float32, int16 = statistics("float32", 1), statistics("int16", 2)
    error = np.sqrt(float32.var(0) / len(float32) + int16.var(0) / len(int16))
    assert (np.abs(float32.mean(0) - int16.mean(0)) < 4.5 * error).all(), (
        float32.mean(0), int16.mean(0), error)  # fmt: skip
    assert 0.3 < float32[:, 0].mean() < 0.7  # pos:neg 1:1 (border shifts move a few centres)


def test_bad_chain_arguments() -> None:
    with pytest.raises(TumorsweepError, match="window"):
        train_transforms(window=(189, -21))
    with pytest.raises(TumorsweepError, match="patch_size"):
        train_transforms(patch_size=(96, 96))
    with pytest.raises(TumorsweepError, match="spacing"):
        eval_transforms(spacing=(1.0, 0.0, 1.0))
    with pytest.raises(TumorsweepError, match="pipeline must be"):
        train_transforms(pipeline="quick")
