"""Dataset layouts: every layout, named splits, overlap warnings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from layouts_util import msd_dataset, write_pair  # tests/ is on the path

from tumorsweep.data.layouts import load_split
from tumorsweep.data.splits import NAMED_SPLITS
from tumorsweep.errors import TumorsweepError


@pytest.fixture(scope="module")
def lits_root(tmp_path_factory) -> Path:
    """All 131 LiTS case numbers as tiny volumes, mixing .nii and .nii.gz, in two batches."""
    root = tmp_path_factory.mktemp("lits")
    tumor_free = set(NAMED_SPLITS["tumor-free"])
    for n in range(131):
        batch = root / ("Training Batch 1" if n < 28 else "Training Batch 2")
        ext = ".nii" if n % 2 else ".nii.gz"
        write_pair(
            batch / f"volume-{n}{ext}",
            batch / f"segmentation-{n}{ext}",
            n not in tumor_free,
            (4, 4, 4),
        )
    (root / "Training Batch 1" / "._volume-3.nii").write_bytes(b"mac")
    return root


def cases(entries: list[dict]) -> list[str]:
    return [e["case"] for e in entries]


def test_named_split_sizes() -> None:
    sizes = {name: len(numbers) for name, numbers in NAMED_SPLITS.items()}
    assert sizes == {"hu-val": 22, "chen-val-0": 23, "tumor-free": 13, "global": 118}
    assert not set(NAMED_SPLITS["global"]) & set(NAMED_SPLITS["tumor-free"])
    assert set(NAMED_SPLITS["hu-val"]) <= set(NAMED_SPLITS["global"])
    assert NAMED_SPLITS["hu-val"][:3] == (2, 13, 15) and NAMED_SPLITS["chen-val-0"][-1] == 129


def test_msd_lists_flags_and_macos_litter(tmp_path) -> None:
    root = msd_dataset(tmp_path, {0: False, 1: False, 2: True, 3: True, 4: True}, [3], [4])
    study = load_split(root)
    assert (study.fmt, study.name, study.eval_set) == ("msd", "Task03_Liver", "test")
    assert cases(study.train) == ["liver_0", "liver_1", "liver_2"]
    assert cases(study.validation) == ["liver_3"] and cases(study.test) == ["liver_4"]
    first = study.train[0]
    assert first["image"] == str((tmp_path / "imagesTr/liver_0.nii.gz").resolve())
    assert (first["case_id"], first["tumor"]) == (0, False)
    assert cases(study.train_cases(real_tumors=False)) == ["liver_0", "liver_1"]
    assert cases(study.train_cases(real_tumors=True)) == ["liver_2"]
    assert study.warnings == []
    assert load_split(root / "dataset.json", fmt="msd").train == study.train


@pytest.mark.filterwarnings("ignore:.*no test list")
def test_validation_fraction_is_deterministic_and_drawn_from_tumour_cases(tmp_path) -> None:
    tumors = {n: n >= 2 for n in range(12)}
    root = msd_dataset(tmp_path, tumors, flags=False)
    picks = [
        cases(load_split(root, fmt="folds", val_fraction=0.3, seed=s).validation) for s in (0, 0, 1)
    ]
    assert picks[0] == picks[1] and len(picks[0]) == 3 and picks[0] != picks[2]
    study = load_split(root, fmt="folds", val_fraction=0.3, seed=0)
    assert all(n not in ("liver_0", "liver_1") for n in picks[0])  # read from the labels
    assert not set(cases(study.validation)) & set(cases(study.train))
    assert len(study.train) == 9 and len(study.train_cases(real_tumors=False)) == 2


@pytest.mark.parametrize("split", sorted(NAMED_SPLITS))
@pytest.mark.filterwarnings("ignore:.*no tumour cases left")
def test_lits_named_splits(lits_root, split) -> None:
    study = load_split(lits_root, split=split)
    assert study.fmt == "lits" and study.eval_set == split
    assert [e["case_id"] for e in study.test] == list(NAMED_SPLITS[split])
    assert len(study.train) + len(study.validation) + len(study.test) == 131
    held = set(cases(study.test)) | set(cases(study.validation))
    assert not held & set(cases(study.train))
    tumor_free = set(NAMED_SPLITS["tumor-free"])
    candidates = 131 - len(tumor_free | set(NAMED_SPLITS[split]))
    assert len(study.validation) == min(candidates, max(1, round(0.1 * candidates)))
    assert all(e["case_id"] not in NAMED_SPLITS["tumor-free"] for e in study.validation)
    assert study.warnings == (
        []
        if candidates
        else [f"{lits_root}: no tumour cases left outside the test list for validation"]
    )


def test_named_split_lists_missing_case_numbers(tmp_path) -> None:
    root = msd_dataset(tmp_path, {2: True, 13: True, 15: True})
    with pytest.raises(TumorsweepError, match=r"lacks case numbers 17 19 21 33"):
        load_split(root, split="hu-val")


@pytest.mark.filterwarnings("ignore:.*no test list")
def test_nnunet_raw_dataset(tmp_path) -> None:
    for n, tumor in ((0, False), (1, True), (2, True)):
        write_pair(
            tmp_path / f"imagesTr/liver_{n:03d}_0000.nii.gz",
            tmp_path / f"labelsTr/liver_{n:03d}.nii.gz",
            tumor,
        )
    description = {
        "name": "Dataset003_Liver",
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "liver": 1, "tumor": 2},
        "numTraining": 3,
        "file_ending": ".nii.gz",
    }
    (tmp_path / "dataset.json").write_text(json.dumps(description))
    study = load_split(tmp_path, val_fraction=0.5)
    assert study.fmt == "nnunet" and study.name == "Dataset003_Liver"
    assert [e["case_id"] for e in study.train + study.validation] == [0, 2, 1]
    assert study.train[0]["image"].endswith("liver_000_0000.nii.gz")
    description["numTraining"] = 5
    (tmp_path / "dataset.json").write_text(json.dumps(description))
    with pytest.raises(TumorsweepError, match="numTraining is 5 but labelsTr holds 3"):
        load_split(tmp_path)


@pytest.mark.filterwarnings("ignore:.*no test list")
def test_folds_json_with_data_root_warns_on_overlap(tmp_path) -> None:
    data = tmp_path / "data"
    for n in (1, 2, 3):
        write_pair(data / f"img{n}.nii.gz", data / f"lab{n}.nii.gz", tumor=n == 3)
    fold = tmp_path / "folds" / "healthy_fold0.json"
    fold.parent.mkdir()
    fold.write_text(json.dumps({
        "data_root": "../data",
        "training": [{"image": f"img{n}.nii.gz", "label": f"lab{n}.nii.gz"} for n in (1, 2, 3)],
        "validation": [{"image": "img3.nii.gz", "label": "lab3.nii.gz"}],
    }))  # fmt: skip
    with pytest.warns(UserWarning, match="1 validation cases also in training: img3"):
        study = load_split(fold)
    assert (study.fmt, study.name, study.test) == ("folds", "healthy_fold0", [])
    assert any("no test list" in w for w in study.warnings)
    assert any("validation cases also in training" in w for w in study.warnings)
    assert cases(study.train_cases(real_tumors=False)) == ["img1", "img2"]
    assert study.train[0]["case_id"] is None


def _description(root: Path, text: str) -> Path:
    (root / "dataset.json").write_text(text)
    return root


MISSING_FILES = json.dumps({"numTraining": 1, "training": [{"image": "a.nii", "label": "b.nii"}]})


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "nowhere", "dataset path not found"),
        (lambda p: p, "cannot tell the dataset layout"),
        (lambda p: _description(p, "[1, 2]"), "not a dataset description"),
        (lambda p: _description(p, "{oops"), "not a readable JSON"),
        (lambda p: _description(p, MISSING_FILES), "listed files do not exist: .*a.nii"),
    ],
)
def test_bad_dataset_paths(tmp_path, make, message) -> None:
    with pytest.raises(TumorsweepError, match=message):
        load_split(make(tmp_path))


@pytest.mark.filterwarnings("ignore:.*no test list")
def test_bad_arguments(tmp_path) -> None:
    root = msd_dataset(tmp_path, {0: True})
    with pytest.raises(TumorsweepError, match="format 'decathlon' unknown"):
        load_split(root, fmt="decathlon")
    with pytest.raises(TumorsweepError, match="split 'hu' unknown"):
        load_split(root, split="hu")
