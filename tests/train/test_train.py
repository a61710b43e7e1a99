"""The per-worker loop run in-process (no Ray): it learns, checkpoints, resumes, stops on NaN."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tumorsweep.config import make_config
from tumorsweep.data.cases import CaseLists, resolve_cases
from tumorsweep.train import TrainingDivergedError, run_local

FAST = {
    "data.spacing": (2.0, 2.0, 2.0),
    "schedule.patch_size": (32, 32, 32),
    "schedule.epochs": 4,
    "schedule.warmup_epochs": 1,
    "schedule.val_every": 2,
    "schedule.crops_per_volume": 2,
    "eval.roi": None,  # windows of the training patch (the demo's 96x96x64 would pad these)
    "eval.overlap": 0.0,
}


@pytest.fixture(scope="module")
def cases(phantom_dir: Path) -> dict:
    cfg = make_config("demo", {"data.root": str(phantom_dir)})
    return resolve_cases(cfg.data)


def test_unet_loss_falls_and_metrics_are_finite(cases: CaseLists, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    cfg = make_config("demo", {**FAST, "schedule.patch_size": (64, 64, 32), "schedule.epochs": 6})
    out = run_local(cfg, cases, checkpoint_dir=tmp_path / "ckpt")
    losses = [r["train_loss"] for r in out["reports"] if "train_loss" in r]
    assert len(losses) == 6
    assert losses[-1] < losses[0]
    final = out["final"]
    for name in ("liver_dice", "liver_nsd", "tumor_dice", "tumor_nsd"):
        assert math.isfinite(final[name]) and 0.0 <= final[name] <= 1.0
    assert final["best_epoch"] in (1.0, 3.0, 5.0)
    validated = [r for r in out["reports"] if "val_liver_dice" in r]
    assert [r["epoch"] for r in validated] == [2, 4, 6]
    assert (tmp_path / "ckpt" / "state.pt").exists()


def test_resume_continues_from_checkpoint(cases: CaseLists, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    first = make_config("demo", {**FAST, "schedule.epochs": 4})
    run_local(first, cases, checkpoint_dir=tmp_path)
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert state["epoch"] == 4
    longer = make_config("demo", {**FAST, "schedule.epochs": 6})
    out = run_local(longer, cases, checkpoint_dir=tmp_path)
    epochs = [r["epoch"] for r in out["reports"] if "train_loss" in r]
    assert epochs == [5, 6]


def test_real_tumour_control_trains_on_tumour_cases(cases: CaseLists) -> None:
    torch.set_num_threads(1)
    assert cases.train_tumor, "phantom must hold real-tumour training cases"
    cfg = make_config("demo", {**FAST, "schedule.epochs": 1, "data.real_fraction": 1.0})
    out = run_local(cfg, cases)
    assert math.isfinite(out["final"]["liver_dice"])


def test_nan_loss_stops_with_a_reason(cases: CaseLists, monkeypatch: pytest.MonkeyPatch) -> None:
    import monai.losses

    class NanLoss(torch.nn.Module):
        def __init__(self, **_: object) -> None:
            super().__init__()

        def forward(self, logits: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
            return logits.sum() * float("nan")

    monkeypatch.setattr(monai.losses, "DiceCELoss", NanLoss)
    cfg = make_config("demo", {**FAST, "schedule.epochs": 1})
    with pytest.raises(TrainingDivergedError, match="loss became nan at epoch 0"):
        run_local(cfg, cases)


@pytest.mark.parametrize(
    ("backbone", "options", "patch"),
    [
        ("swin_unetr_tiny", {}, (64, 64, 64)),  # 32^3 leaves Swin's bottleneck at 1 voxel
        ("nnunet", {}, (32, 32, 32)),
        ("segmamba_tom", {"widths": (8, 16, 32, 64), "hidden_size": 64}, (32, 32, 32)),
    ],
)
def test_each_backbone_family_trains(
    cases: CaseLists, backbone: str, options: dict, patch: tuple
) -> None:
    """One short run per family (SegMamba through the exact CPU scan): loss falls, metrics
    are finite; SegMamba's inter-slice scan depths follow the 32^3 patch."""
    torch.set_num_threads(2)
    torch.manual_seed(0)
    cfg = make_config(
        "demo",
        {
            **FAST,
            "model.name": backbone,
            "model.options": options,
            "schedule.patch_size": patch,
            "schedule.epochs": 3,
            "schedule.batch_size": 1,  # one 1-patch step per training volume: half the compute
            "schedule.crops_per_volume": 1,
            "schedule.val_every": 3,
            "schedule.lr": 2e-3,
        },
    )
    out = run_local(cfg, cases)
    losses = [r["train_loss"] for r in out["reports"] if "train_loss" in r]
    assert losses[-1] < losses[0]
    for name in ("liver_dice", "liver_nsd", "tumor_dice", "tumor_nsd"):
        assert math.isfinite(out["final"][name])
