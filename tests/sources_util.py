"""A healthy-only source laid out as SyntheticTumors' data root and `datafolds/healthy.json`.

The data root holds `01_Multi-Atlas_Labeling/img/img000N.nii.gz`, `03_CHAOS/ct/img/N_image.nii.gz`
and their liver-only labels under `label/` (`multi-atlas-label000N`, `chaos-N_segmentation`),
plus one tumour case `04_LiTS/img/liver_68.nii.gz` (labels `04_LiTS/label/`) that the JSON's
validation list names, as the public file's validation list names Hu's Val; the JSON lives in
its own folder and lists relative paths, so it only works with `base_dir` = the data root.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

from tumorsweep.data import write_phantom_dataset

HEALTHY_JSON_KEYS = {
    "description": "all healthy data",
    "labels": {"0": "background", "1": "liver", "2": "tumor"},
    "licence": "yt",
    "modality": {"0": "CT"},
    "name": "small",
    "reference": "xxxx",
    "release": "2022/09/20",
    "tensorImageSize": "3D",
}


def write_healthy_source(
    tmp: Path,
    shape: tuple[int, int, int] = (64, 64, 48),
    spacing: tuple[float, float, float] = (2.0, 2.0, 2.0),
    seed: int = 11,
) -> tuple[Path, Path]:
    """Write 3 healthy phantom CTs (2 "BTCV", 1 "CHAOS") and a tumour validation case in the
    SyntheticTumors layout; returns (healthy.json, data root)."""
    phantom = tmp / "phantom-healthy"
    write_phantom_dataset(phantom, cases=4, seed=seed, shape=shape, spacing=spacing, tumor_cases=1)
    root = tmp / "SyntheticTumors-data"
    targets = [
        ("01_Multi-Atlas_Labeling/img/img0001.nii.gz", "label/multi-atlas-label0001.nii.gz"),
        ("01_Multi-Atlas_Labeling/img/img0002.nii.gz", "label/multi-atlas-label0002.nii.gz"),
        ("03_CHAOS/ct/img/10_image.nii.gz", "label/chaos-10_segmentation.nii.gz"),
        ("04_LiTS/img/liver_68.nii.gz", "04_LiTS/label/liver_68.nii.gz"),
    ]
    for number, (image, label) in enumerate(targets):
        for source, target in ((f"imagesTr/liver_{number}", image), (f"labelsTr/liver_{number}",
                               label)):  # fmt: skip
            (root / target).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(phantom / f"{source}.nii.gz", root / target)
    for _image, label in targets[:3]:  # healthy sources hold liver-only labels
        values = np.unique(np.asarray(nib.load(root / label).dataobj))
        assert set(values.tolist()) == {0, 1}, values
    items = [{"image": image, "label": label} for image, label in targets]
    folds = tmp / "datafolds"
    folds.mkdir(exist_ok=True)
    path = folds / "healthy.json"
    description = {**HEALTHY_JSON_KEYS, "numTraining": 3, "numValid": 1}
    path.write_text(json.dumps({**description, "training": items[:3], "validation": items[3:]}))
    shutil.rmtree(phantom)
    return path, root
