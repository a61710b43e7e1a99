"""MONAI chains: protocol order, synthesis slot in HU, patch shapes, label dtype, caching."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import CacheDataset, DataLoader
from monai.transforms import Invertd, MapTransform, Randomizable

from core.data.layouts import load_split
from core.data.phantom import write_phantom_dataset
from core.data.transforms import eval_transforms, train_transforms
from core.errors import TumorsweepError


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


def test_bad_chain_arguments() -> None:
    with pytest.raises(TumorsweepError, match="window"):
        train_transforms(window=(189, -21))
    with pytest.raises(TumorsweepError, match="patch_size"):
        train_transforms(patch_size=(96, 96))
    with pytest.raises(TumorsweepError, match="spacing"):
        eval_transforms(spacing=(1.0, 0.0, 1.0))
