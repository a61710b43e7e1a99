"""Case lists of a study and the leakage guard: every route to overlap is refused unless the
override is set, and then it is said."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from layouts_util import msd_dataset, write_pair  # tests/ is on the path

from tumorsweep.data.cases import resolve_cases
from tumorsweep.data.config import DataConfig
from tumorsweep.data.splits import NAMED_SPLITS
from tumorsweep.errors import TumorsweepError

HU_VAL = NAMED_SPLITS["hu-val"]


def _synthetictumors_style(root: Path) -> Path:
    """A SyntheticTumors-style folds JSON: healthy training CTs plus a 'validation' list that
    is Hu's Val itself (their lits.json), all files on disk as liver_N."""
    for n in (*HU_VAL, 200, 201):
        write_pair(root / f"img/liver_{n}.nii.gz", root / f"lab/liver_{n}.nii.gz", n < 200)

    def pair(n: int) -> dict:
        return {"image": f"img/liver_{n}.nii.gz", "label": f"lab/liver_{n}.nii.gz"}

    description = {"training": [pair(200), pair(201)], "validation": [pair(n) for n in HU_VAL]}
    (root / "lits.json").write_text(json.dumps(description))
    return root / "lits.json"


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_validation_equal_to_the_named_test_split_is_refused(tmp_path: Path) -> None:
    path = _synthetictumors_style(tmp_path)
    data = DataConfig(root=str(path), split="hu-val")
    with pytest.raises(TumorsweepError, match=r"22 case\(s\) in both the validation and the test"):
        resolve_cases(data)
    allowed = resolve_cases(data.model_copy(update={"allow_overlap": True}))
    assert [e["case_id"] for e in allowed.test] == list(HU_VAL)
    assert len(allowed.validation) == 22 and len(allowed.train) == 2
    (note,) = [w for w in allowed.warnings if "override data.allow_overlap" in w]
    assert "22 case(s) in both the validation and the test list" in note


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_training_on_a_test_case_is_refused(tmp_path: Path) -> None:
    root = msd_dataset(tmp_path, {0: False, 1: True, 2: True, 3: True}, validation=[1], test=[3])
    description = json.loads((root / "dataset.json").read_text())
    description["training"].append(description["test"][0])  # liver_3 also trains
    (root / "dataset.json").write_text(json.dumps(description))
    with pytest.raises(TumorsweepError, match=r"1 case\(s\) in both the test and the train list"):
        resolve_cases(DataConfig(root=str(root)))


def test_clean_lists_and_selection_rules(tmp_path: Path) -> None:
    root = msd_dataset(tmp_path, {0: False, 1: False, 2: True, 3: True, 4: True}, [3], [4])
    cases = resolve_cases(DataConfig(root=str(root)))
    assert [e["case"] for e in cases.train] == ["liver_0", "liver_1"]
    assert [e["case"] for e in cases.train_tumor] == ["liver_2"]
    assert cases.selection == "validation" and cases.warnings == ()
    assert [e["case"] for e in cases.selection_cases()] == ["liver_3"]
    assert cases.held_out() >= {"liver_3", "liver_4"}
    with pytest.raises(TumorsweepError, match="selecting checkpoints on the test list"):
        resolve_cases(DataConfig(root=str(root)), select_on="test")
    on_test = resolve_cases(DataConfig(root=str(root)), "test", allow_test_selection=True)
    assert on_test.selection == "test" and [e["case"] for e in on_test.selection_cases()] == [
        "liver_4"
    ]
    assert any("optimistic" in w for w in on_test.warnings)
    with pytest.raises(AttributeError):
        cases.selection = "test"  # frozen: trials never edit the shared lists


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_no_validation_cases_means_the_last_epoch_is_reported(tmp_path: Path) -> None:
    # every tumour case is in the test list (as with --split global): nothing to select on
    root = msd_dataset(tmp_path, {0: False, 1: False, 2: True, 3: True}, test=[2, 3])
    cases = resolve_cases(DataConfig(root=str(root)))
    assert cases.selection == "last" and cases.selection_cases() == ()
    assert any("final epoch's weights are reported" in w for w in cases.warnings)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_no_test_list_is_refused(tmp_path: Path) -> None:
    root = msd_dataset(tmp_path, {0: False, 1: True, 2: True}, validation=[2])
    with pytest.raises(TumorsweepError, match="no test cases"):
        resolve_cases(DataConfig(root=str(root)))
