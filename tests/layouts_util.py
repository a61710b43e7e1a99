"""Shared helpers of the data tests: tiny NIfTI pairs and a Medical Segmentation Decathlon
style folder (dataset.json with training, validation and test lists)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np


def write_pair(image: Path, label: Path, tumor: bool, shape=(8, 8, 8)) -> None:
    """A tiny image/label pair: liver block, plus a tumour voxel block when `tumor`."""
    seg = np.zeros(shape, dtype=np.uint8)
    seg[2:6, 2:6, 2:6] = 1
    if tumor:
        seg[3:5, 3:5, 3:5] = 2
    for path, data in ((image, (seg * 50.0).astype(np.float32)), (label, seg)):
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(data, np.eye(4)), path)


def msd_dataset(root: Path, tumors: dict[int, bool], validation=(), test=(), flags=True) -> Path:
    """An MSD-style dataset under `root`: one tiny pair per case (a tumour block where
    `tumors` says so), dataset.json listing them (with a `tumor` flag per entry when `flags`),
    a macOS `._` stray in the training list and a test entry without a file."""

    def entry(n: int) -> dict:
        e = {"image": f"./imagesTr/liver_{n}.nii.gz", "label": f"./labelsTr/liver_{n}.nii.gz"}
        return {**e, "tumor": tumors[n]} if flags else e

    for n, tumor in tumors.items():
        write_pair(root / f"imagesTr/liver_{n}.nii.gz", root / f"labelsTr/liver_{n}.nii.gz", tumor)
    held = set(validation) | set(test)
    training = [entry(n) for n in tumors if n not in held]
    training.append(
        {"image": "./imagesTr/._liver_0.nii.gz", "label": "./labelsTr/._liver_0.nii.gz"}
    )
    data = {
        "name": "Task03_Liver",
        "labels": {"0": "background", "1": "liver", "2": "cancer"},
        "numTraining": len(training),
        "training": training,
        "validation": [entry(n) for n in validation],
        "test": [entry(n) for n in test] + ["./imagesTs/liver_999.nii.gz"],
    }
    (root / "dataset.json").write_text(json.dumps(data))
    return root
