"""A training pool from several datasets (`data.sources`): SyntheticTumors' healthy.json with its
relative paths under a data root, source-qualified case ids, the per-source pool, the guard
against one case reached from two sources, and `check-data` per source. Real NIfTI files."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from sources_util import write_healthy_source

from tumorsweep import tracking
from tumorsweep.cli import main
from tumorsweep.data.cases import resolve_cases
from tumorsweep.data.config import DataConfig, DataSource
from tumorsweep.errors import TumorsweepError


@pytest.fixture
def healthy(tmp_path: Path) -> tuple[Path, Path]:
    return write_healthy_source(tmp_path)


def _config(root: Path, *sources: DataSource, **more) -> DataConfig:
    return DataConfig(root=str(root), sources=list(sources), **more)


def _source(healthy: tuple[Path, Path], **more) -> DataSource:
    path, base = healthy
    return DataSource(**{"path": str(path), "base_dir": str(base), **more})


def test_healthy_json_with_relative_paths_joins_the_pool_under_its_own_name(
    phantom_dir: Path, healthy: tuple[Path, Path]
) -> None:
    single = resolve_cases(_config(phantom_dir))
    cases = resolve_cases(_config(phantom_dir, _source(healthy)))
    root_name = "tumorsweep-phantom"
    expected = ["healthy/img0001", "healthy/img0002", "healthy/10_image"]
    assert [e["case"] for e in cases.train] == [e["case"] for e in single.train] + expected
    assert {e["source"] for e in cases.train} == {root_name, "healthy"}
    base = healthy[1].resolve()
    assert cases.train[-1]["image"] == str(base / "03_CHAOS/ct/img/10_image.nii.gz")
    assert cases.train[-1]["label"] == str(base / "label/chaos-10_segmentation.nii.gz")
    # validation, test and the real-tumour arm stay data.root's; the source's own validation
    # list (its tumour case) is not used, and the notes say so
    assert cases.validation == single.validation and cases.test == single.test
    assert cases.train_tumor == single.train_tumor
    assert any("healthy: its validation list (1 case(s)) is not used" in w for w in cases.warnings)
    n_root, real = len(single.train), len(single.train_tumor)
    assert cases.pool(0.0) == {root_name: {"healthy": n_root}, "healthy": {"healthy": 3}}
    assert cases.pool(1.0) == {root_name: {"real_tumor": real}, "healthy": {"real_tumor": 0}}
    assert cases.pool(0.5)[root_name] == {"healthy": n_root, "real_tumor": real}
    assert [s["role"] for s in cases.sources] == ["evaluation", "healthy"]
    params = tracking.pool_params(cases.pool(1.0))
    assert params == {f"train_pool.{root_name}.real_tumor": real,
                      "train_pool.healthy.real_tumor": 0, "train_pool.total": real}  # fmt: skip


def test_without_base_dir_the_relative_paths_do_not_resolve(
    phantom_dir: Path, healthy: tuple[Path, Path]
) -> None:
    with pytest.raises(TumorsweepError, match="listed files do not exist"):
        resolve_cases(_config(phantom_dir, DataSource(path=str(healthy[0]))))
    with pytest.raises(TumorsweepError, match="base_dir .* folder not found"):
        resolve_cases(_config(phantom_dir, _source(healthy, base_dir=str(healthy[1] / "no"))))


def test_root_healthy_false_leaves_the_synthetic_pool_to_the_sources(
    phantom_dir: Path, healthy: tuple[Path, Path]
) -> None:
    cases = resolve_cases(_config(phantom_dir, _source(healthy), root_healthy=False))
    assert [e["source"] for e in cases.train] == ["healthy"] * 3
    assert cases.pool(0.0) == {"tumorsweep-phantom": {"healthy": 0}, "healthy": {"healthy": 3}}


def test_data_root_itself_takes_a_base_dir(tmp_path: Path, healthy: tuple[Path, Path]) -> None:
    """lits.json-style: data.root is a JSON of relative paths, data.base_dir the data root."""
    path, base = healthy
    listed = json.loads(path.read_text())
    lits = tmp_path / "datafolds" / "lits.json"
    lits.write_text(json.dumps({**listed, "validation": [], "test": listed["validation"]}))
    cases = resolve_cases(DataConfig(root=str(lits), base_dir=str(base)))
    assert [e["case"] for e in cases.test] == ["liver_68"]
    assert cases.test[0]["image"] == str(base.resolve() / "04_LiTS/img/liver_68.nii.gz")
    with pytest.raises(TumorsweepError, match="base_dir .* applies to JSON descriptions"):
        resolve_cases(DataConfig(root=str(base / "label"), format="lits", base_dir=str(base)))


def _one_line(message: str, *names: str) -> None:
    assert "\n" not in message
    for name in names:
        assert name in message, (name, message)


def test_one_file_reached_from_two_sources_is_refused_naming_both(
    tmp_path: Path, phantom_dir: Path, healthy: tuple[Path, Path]
) -> None:
    path, base = healthy
    shared = base / "01_Multi-Atlas_Labeling/img/img0002.nii.gz"
    # the same file by another path (a symlink to the root's healthy case)
    shared.unlink()
    os.symlink(phantom_dir / "imagesTr/liver_1.nii.gz", shared)
    with pytest.raises(TumorsweepError) as error:
        resolve_cases(_config(phantom_dir, _source(healthy)))
    _one_line(str(error.value), "liver_1", "healthy/img0002", ": same file")
    # the same bytes in another file
    shared.unlink()
    shutil.copy(phantom_dir / "imagesTr/liver_1.nii.gz", shared)
    with pytest.raises(TumorsweepError) as error:
        resolve_cases(_config(phantom_dir, _source(healthy)))
    _one_line(str(error.value), "liver_1", "healthy/img0002", ": same content")
    assert "data.root_healthy=false" in str(error.value)
    # kept out of the pool, the root's copy no longer collides
    cases = resolve_cases(_config(phantom_dir, _source(healthy), root_healthy=False))
    assert len(cases.train) == 3


def test_the_same_lits_case_in_two_sources_is_one_case(
    phantom_dir: Path, healthy: tuple[Path, Path]
) -> None:
    """healthy.json's own `04_LiTS/img/liver_N` is LiTS scan N, whatever its bytes."""
    path, base = healthy
    listed = json.loads(path.read_text())
    moved = base / "04_LiTS/img/liver_1.nii.gz"
    os.replace(base / "01_Multi-Atlas_Labeling/img/img0001.nii.gz", moved)
    listed["training"][0]["image"] = "04_LiTS/img/liver_1.nii.gz"
    path.write_text(json.dumps(listed))
    with pytest.raises(TumorsweepError) as error:
        resolve_cases(_config(phantom_dir, _source(healthy)))
    _one_line(str(error.value), "liver_1 (", "healthy/liver_1", ": same LiTS case")


def test_a_held_out_case_in_another_source_is_leakage(
    phantom_dir: Path, healthy: tuple[Path, Path]
) -> None:
    single = resolve_cases(_config(phantom_dir))
    test_case = single.test[0]
    path, base = healthy
    listed = json.loads(path.read_text())
    target = base / "extra/copy.nii.gz"
    target.parent.mkdir()
    shutil.copy(test_case["image"], target)
    label = listed["training"][0]["label"]
    listed["training"].append({"image": "extra/copy.nii.gz", "label": label})
    path.write_text(json.dumps(listed))
    source = _source(healthy, name="btcv")
    with pytest.raises(TumorsweepError) as error:
        resolve_cases(_config(phantom_dir, source))
    _one_line(str(error.value), "a validation/test case of data.root", test_case["case"],
              "btcv/copy", "data.allow_overlap=true")  # fmt: skip
    allowed = resolve_cases(_config(phantom_dir, source, allow_overlap=True))
    assert any(
        w.startswith("override data.allow_overlap:") and "btcv/copy" in w for w in allowed.warnings
    )


def test_a_healthy_source_with_a_tumour_is_refused_and_a_train_source_splits_by_arm(
    phantom_dir: Path, healthy: tuple[Path, Path]
) -> None:
    path, base = healthy
    listed = json.loads(path.read_text())
    listed["training"] += listed["validation"]  # the tumour case liver_68
    path.write_text(json.dumps(listed))
    with pytest.raises(TumorsweepError, match=r"role healthy\): 1 case\(s\) hold tumour"):
        resolve_cases(_config(phantom_dir, _source(healthy)))
    cases = resolve_cases(_config(phantom_dir, _source(healthy, role="train", name="mixed")))
    assert [e["case"] for e in cases.train_tumor][-1] == "mixed/liver_68"
    assert cases.pool(1.0)["mixed"] == {"real_tumor": 1}


def test_source_names_must_differ(phantom_dir: Path, healthy: tuple[Path, Path]) -> None:
    with pytest.raises(TumorsweepError, match="two sources are called 'tumorsweep-phantom'"):
        resolve_cases(_config(phantom_dir, _source(healthy, name="tumorsweep-phantom")))
    with pytest.raises(ValueError, match="name 'a' given to two sources"):
        _config(phantom_dir, _source(healthy, name="a"), _source(healthy, name="a"))
    with pytest.raises(ValueError, match="String should match pattern"):
        _source(healthy, name="../x")


def test_check_data_summarises_per_source(
    phantom_dir: Path, healthy: tuple[Path, Path], capsys: pytest.CaptureFixture
) -> None:
    path, base = healthy
    spec = f"{{path: {path}, base_dir: {base}, name: healthy}}"
    assert main(["check-data", "--data", str(phantom_dir), "--source", spec]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    # source, layout, role, cases, train, val, test, healthy, tumour, liver ml, problems
    root = rows["tumorsweep-phantom"]
    assert root[1:9] == ["msd", "evaluation", "9", "6", "1", "2", "4", "5"] and root[-1] == "0"
    assert rows["healthy"][1:9] == ["msd", "healthy", "3", "3", "0", "0", "3", "0"]
    assert "healthy/10_image" in out and "ok: every case passed" in out
    # the same file twice: one line naming both, exit code 2
    shutil.copy(phantom_dir / "imagesTr/liver_0.nii.gz", base / "03_CHAOS/ct/img/10_image.nii.gz")
    assert main(["check-data", "--data", str(phantom_dir), "--source", spec]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "liver_0" in err and "healthy/10_image" in err
    assert main(["check-data", "--data", str(phantom_dir), "--source", "{role: x}"]) == 2
    assert "--source '{role: x}': path: Field required" in capsys.readouterr().err
