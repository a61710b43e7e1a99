"""Cross-validation folds: disjoint, deterministic held-out lists from a folds file or dealt;
each fold's lists pass the leakage guard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from layouts_util import msd_dataset  # tests/ is on the path
from pydantic import ValidationError

from tumorsweep.data.cases import resolve_cases
from tumorsweep.data.config import DataConfig
from tumorsweep.errors import TumorsweepError

TUMOURS = {n: n >= 3 for n in range(12)}  # 3 healthy, 9 tumour cases


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return msd_dataset(tmp_path_factory.mktemp("folds"), TUMOURS)


def _names(entries) -> set[str]:
    return {e["case"] for e in entries}


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_dealt_folds_partition_the_tumour_cases(dataset: Path) -> None:
    folds = [
        resolve_cases(DataConfig(root=str(dataset), folds=3, fold=k, val_fraction=0.2))
        for k in range(3)
    ]
    tests = [_names(f.test) for f in folds]
    assert [len(t) for t in tests] == [3, 3, 3]
    assert set.union(*tests) == {f"liver_{n}" for n in range(3, 12)}  # every tumour case once
    assert not (tests[0] & tests[1]) and not (tests[1] & tests[2]) and not (tests[0] & tests[2])
    for fold in folds:
        assert fold.eval_set == "3-fold" and len(fold.validation) == 1
        assert not _names(fold.validation) & _names(fold.test)
        train = _names(fold.train) | _names(fold.train_tumor)
        assert not train & (_names(fold.validation) | _names(fold.test))
        assert len(train) + len(fold.validation) + len(fold.test) == 12
        assert _names(fold.train) == {"liver_0", "liver_1", "liver_2"}  # healthy stay training
    again = resolve_cases(DataConfig(root=str(dataset), folds=3, fold=1, val_fraction=0.2))
    assert again == folds[1]  # deterministic per dataset and seed
    other = resolve_cases(
        DataConfig(root=str(dataset), folds=3, fold=1, val_fraction=0.2, split_seed=5)
    )
    assert _names(other.test) != tests[1]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_folds_files_json_and_case_lists(dataset: Path, tmp_path: Path) -> None:
    held = [["liver_3", "liver_4"], ["liver_5", "liver_6", "liver_7"]]
    for k, names in enumerate(held):  # SyntheticTumors real_k.json: 'validation' is held out
        (tmp_path / f"real_{k}.json").write_text(
            json.dumps({"validation": [{"image": f"img/{n}.nii.gz", "label": "x"} for n in names]})
        )
        (tmp_path / f"real_tumor_val_{k}.txt").write_text(
            "".join(f"{n}.nii.gz\n" for n in names)
        )  # DiffTumor's lists: one file name a line
    for template in ("real_{fold}.json", "real_tumor_val_{fold}.txt"):
        for k, names in enumerate(held):
            data = DataConfig(
                root=str(dataset), folds=2, fold=k, folds_file=str(tmp_path / template)
            )
            assert sorted(_names(resolve_cases(data).test)) == names
    (tmp_path / "bad_1.txt").write_text("liver_99.nii.gz\n")
    with pytest.raises(TumorsweepError, match="lacks held-out cases liver_99"):
        resolve_cases(
            DataConfig(
                root=str(dataset), folds=2, fold=1, folds_file=str(tmp_path / "bad_{fold}.txt")
            )
        )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"folds": 3, "fold": 3}, "fold 3 must be < folds 3"),
        ({"folds": 3, "split": "hu-val"}, "each fold's held-out cases are its test list"),
        ({"fold": 1}, "need data.folds"),
        ({"folds": 2, "folds_file": "real.json"}, "needs a {fold} placeholder"),
    ],
)
def test_inconsistent_fold_fields_are_refused(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        DataConfig(**fields)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_difftumor_fold_lists_with_their_healthy_root(dataset: Path, tmp_path: Path) -> None:
    """DiffTumor's real_tumor_train_k.txt / real_tumor_val_k.txt as published (two columns,
    healthy CTs marked by `liver_label` under --healthy_data_root): the training list is the
    train file's real cases plus its healthy CTs, the test list the val file."""
    import shutil

    healthy = tmp_path / "HealthyCT"
    for folder in ("CT/01_Multi-Atlas_Labeling/img", "label/liver_label"):
        (healthy / folder).mkdir(parents=True)
    source = next((dataset / "imagesTr").glob("liver_0.nii*"))
    for n in (78, 79):
        shutil.copy(source, healthy / f"CT/01_Multi-Atlas_Labeling/img/img{n:04d}.nii.gz")
        shutil.copy(source, healthy / f"label/liver_label/multi-atlas-label{n:04d}.nii.gz")
    lists = tmp_path / "liver_aug_data_fold"
    lists.mkdir()
    real = [f"imagesTr/liver_{n}.nii.gz   labelsTr/liver_{n}.nii.gz" for n in (3, 4, 5, 6, 7)]
    healthy_lines = [
        f"CT/01_Multi-Atlas_Labeling/img/img{n:04d}.nii.gz   "
        f"label/liver_label/multi-atlas-label{n:04d}.nii.gz"
        for n in (78, 79)
    ]
    (lists / "real_tumor_train_0.txt").write_text("\n".join(real + healthy_lines) + "\n")
    (lists / "real_tumor_val_0.txt").write_text(
        "imagesTr/liver_10.nii.gz   labelsTr/liver_10.nii.gz\n"
        "imagesTr/liver_11.nii.gz   labelsTr/liver_11.nii.gz\n"
    )
    data = DataConfig(
        root=str(dataset), folds=5, fold=0, val_fraction=0.2, healthy_root=str(healthy),
        folds_file=str(lists / "real_tumor_val_{fold}.txt"),
    )  # fmt: skip
    cases = resolve_cases(data)
    assert _names(cases.test) == {"liver_10", "liver_11"}
    assert _names(cases.train) == {"img0078", "img0079"}  # healthy: only the listed ones
    assert all(Path(e["image"]).is_relative_to(healthy) for e in cases.train)
    assert len(cases.validation) == 1  # 20% of the 5 listed real cases, for selection
    assert _names(cases.train_tumor) | _names(cases.validation) == {
        f"liver_{n}" for n in (3, 4, 5, 6, 7)
    }  # liver_0-2, 8, 9 are not in the list: not trained on
    (lists / "real_tumor_train_0.txt").write_text(real[0] + "\nimagesTr/liver_99.nii.gz x\n")
    with pytest.raises(TumorsweepError, match="real_tumor_train_0.txt:2: the dataset lacks"):
        resolve_cases(data)
