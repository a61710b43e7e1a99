"""The released-checkpoints study end to end on phantoms: files written like the publishers'
`save_checkpoint` under their released names, evaluated on a Hu's-Val-numbered phantom set,
recorded in a real MLflow store, and the Downloaded-style table with the published values."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from tumorsweep import tracking
from tumorsweep.data.splits import NAMED_SPLITS
from tumorsweep.models import build
from tumorsweep.models.released import RELEASED, released
from tumorsweep.released import main, notes
from tumorsweep.report import build_report

HU_VAL = NAMED_SPLITS["hu-val"]
FILES = ("synt.no_pretrain.unet/model.pt", "real.no_pretrain.unet/model.pt")


def _hu_val_phantoms(root: Path) -> Path:
    """An MSD-layout dataset whose cases are numbered as Hu's Val (the 22 LiTS numbers the
    published tables report on), each a copy of one of three small phantom tumour CTs."""
    from tumorsweep.data import write_phantom_dataset

    source = root / "phantom"
    write_phantom_dataset(
        source, cases=4, seed=7, shape=(40, 40, 24), spacing=(2.0, 2.0, 2.0), tumor_cases=3
    )
    tumours = json.loads((source / "dataset.json").read_text())["test"]
    tumours += json.loads((source / "dataset.json").read_text())["validation"]
    data = root / "Task03_Liver"
    entries = []
    for i, number in enumerate(HU_VAL):
        pick = tumours[i % len(tumours)]
        for kind in ("image", "label"):
            folder = "imagesTr" if kind == "image" else "labelsTr"
            link = data / folder / f"liver_{number}.nii.gz"
            link.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source / pick[kind], link)
        entries.append(
            {
                "image": f"./imagesTr/liver_{number}.nii.gz",
                "label": f"./labelsTr/liver_{number}.nii.gz",
            }
        )
    description = {"name": "Task03_Liver", "numTraining": len(entries), "training": entries}
    (data / "dataset.json").write_text(json.dumps(description))
    return data


def _to_published_names(state: dict) -> dict:
    """Swin keys as the public swin3d_unetrv2 names them, with its unused final norm."""
    out = {
        k.replace(".mlp.linear1.", ".mlp.fc1.").replace(".mlp.linear2.", ".mlp.fc2."): v
        for k, v in state.items()
    }
    if any(".mlp.fc1." in k for k in out):
        width = out["swinViT.layers4.0.downsample.reduction.weight"].shape[0] // 2
        out["swinViT.norm.weight"] = torch.ones(width)
        out["swinViT.norm.bias"] = torch.zeros(width)
    return out


def save_like_publishers(model: torch.nn.Module, path: Path, **extra) -> None:
    """SyntheticTumors `monai_trainer.save_checkpoint`: epoch, best_acc (numpy mean of the
    validation Dice array), state_dict, optimizer and scheduler state."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=1e-5)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=4000)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "epoch": 1999,
        "best_acc": np.mean(np.array([0.96, 0.57], dtype=np.float32)),
        "state_dict": _to_published_names(model.state_dict()),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        **extra,
    }
    torch.save(payload, path)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("released")
    data = _hu_val_phantoms(root)
    checkpoints = root / "runs"  # as runs.tar.gz unpacks: runs/<logdir>/model.pt
    for seed, file in enumerate(FILES):
        torch.manual_seed(seed)
        save_like_publishers(build(released(file).backbone), checkpoints / file)
    (checkpoints / "notes.txt").write_text("not a checkpoint")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    code = main(
        ["--checkpoints", str(root), "--data", str(data), "--split", "hu-val",
         "--tracking-uri", uri, "--device", "cpu"]
    )  # fmt: skip
    return {"root": root, "checkpoints": checkpoints, "uri": uri, "code": code}


def test_study_records_evaluation_only_trials(study):
    assert study["code"] == 0
    client = MlflowClient(study["uri"])
    experiment = client.get_experiment_by_name("released_checkpoints")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags[tracking.ROLE_TAG] == "sweep"]
    trials = [r for r in runs if r.data.tags[tracking.ROLE_TAG] == "trial"]
    assert len(parents) == 1 and len(trials) == 2
    assert {r.info.status for r in runs} == {"FINISHED"}
    for run in trials:
        file = run.data.params["checkpoint.file"]
        digest = hashlib.sha256((study["checkpoints"] / file).read_bytes()).hexdigest()
        assert run.data.params["checkpoint.sha256"] == digest
        assert run.data.tags[tracking.CHECKPOINT_SHA256_TAG] == digest
        assert run.data.tags[tracking.PARENT_TAG] == parents[0].info.run_id
        assert run.data.params["eval.protocol"] == "hu2023"
        assert run.data.params["data.real_fraction"] == (
            "1.0" if file.startswith("real") else "0.0"
        )
        local = client.download_artifacts(run.info.run_id, tracking.PER_CASE_TEST_ARTIFACT)
        per_case = pd.read_csv(local)
        assert sorted(per_case["case"]) == sorted(f"liver_{n}" for n in HU_VAL)
        assert run.data.metrics["liver_dice"] == pytest.approx(per_case["liver_dice"].mean())


def test_table_sets_the_published_downloaded_values_beside_ours(study):
    report = build_report(study["uri"], "released_checkpoints", n_resamples=50)
    summary = report.summary.set_index(["label", "metric"])
    unet = summary.loc[("UNET(Synthetic)", "tumor_dice")]
    assert unet["published"] == pytest.approx(0.57766)
    assert unet["paper"] == pytest.approx(0.5981)
    assert unet["published_source"] == "checkpoint" and bool(unet["published_comparable"])
    real = summary.loc[("UNET(Real)", "liver_dice")]
    assert real["published"] == pytest.approx(0.95290)
    assert real["n_cases"] == 22
    table = report.table("released_checkpoints")
    assert list(table.columns) == [
        "UNET(Synthetic)",
        "UNET(Synthetic) [published]",
        "UNET(Real)",
        "UNET(Real) [published]",
    ]
    assert table.loc["Liver Dice", "UNET(Synthetic) [published]"] == "0.96093"
    assert table.loc["Tumor Dice", "UNET(Real) [published]"] == "0.53054 (paper 0.5763)"


def test_notes_say_where_a_file_was_selected_or_trained():
    cases = [{"case_id": n} for n in HU_VAL]
    hu, difftumor = released(FILES[0]), released("unet_synt_liver_tumors.pt")
    found = [type("F", (), {"entry": e})() for e in (hu, difftumor)]
    said = notes(found, cases, "hu-val")
    assert said[0] == f"{hu.file}: its publisher selected it on hu-val itself"
    assert said[1].startswith("unet_synt_liver_tumors.pt: trained on 17 of the 22 hu-val cases")
    assert "published set is chen-val-0" in said[1]


class Payload:
    """An object a weights-only load must not construct."""


def test_a_file_with_a_pickled_object_is_refused_before_anything_runs(
    tmp_path, mlflow_uri: str, capsys
):
    torch.manual_seed(0)
    model = build("unet")
    save_like_publishers(model, tmp_path / "ckpt" / FILES[0], args=Payload())
    uri = mlflow_uri
    code = main(["--checkpoints", str(tmp_path / "ckpt"), "--tracking-uri", uri])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert FILES[0] in err and "holds pickled code or Python objects" in err
    assert "Payload" in err
    assert not (tmp_path / "mlflow.db").exists()


def test_an_empty_folder_lists_the_released_names(tmp_path, capsys):
    assert main(["--checkpoints", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "none of the released files" in err and "unet_synt_liver_tumors.pt" in err


def test_registry_of_released_files_covers_both_publishers():
    assert len(RELEASED) == 13
    hu = [e for e in RELEASED if e.publisher.endswith("SyntheticTumors")]
    assert len(hu) == 10 and all(e.published_label for e in hu)
    assert {e.training for e in hu} == {"synthetic", "real"}
    assert sum(e.pretrained for e in hu) == 2
    base = released("synt.pretrain.swin_unetrv2_base/model.pt")
    assert base.overrides()["model.pretrained"] and base.backbone == "swin_unetr_base"
    difftumor = released("swinunetr_synt_liver_tumors.pt")
    assert difftumor.backbone == "swin_unetr_base" and difftumor.window == (-175.0, 250.0)
