"""In which precision a trial's evaluation runs its windows.

A trial trained with AMP (`schedule.amp`, `schedule.amp_dtype`) scores its validation and test
cases through `tumorsweep.train.evaluate`. Under `eval.protocol=hu2023` the windows run in
float32 whatever the training precision (`validation.py` has no autocast); under `tumorsweep`
they run under autocast in the training AMP dtype, not torch's default float16. The model below
records what each window actually ran in: autocast on or off, and the dtype of its convolution.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tumorsweep.config import make_config
from tumorsweep.train import amp_precision, evaluate


class Recorder(torch.nn.Module):
    """A 1x1x1 convolution to 3 classes that notes, per window, whether autocast was on, its
    dtype, and the dtype the convolution computed in."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 3, 1)
        self.seen: list[tuple[bool, torch.dtype | None, torch.dtype]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        on = torch.is_autocast_enabled(x.device.type)
        out = self.conv(x)
        self.seen.append((on, torch.get_autocast_dtype(x.device.type) if on else None, out.dtype))
        return out


def first_case(phantom_dir: Path) -> dict:
    image = sorted((phantom_dir / "imagesTr").glob("*.nii.gz"))[0]
    return {"image": str(image), "label": str(phantom_dir / "labelsTr" / image.name)}


def trained_with_amp(protocol: str, amp_dtype: str) -> SimpleNamespace:
    """What `evaluate` reads of a trainer whose config trains with AMP in `amp_dtype` (the
    trainer's autocast dtype is what `tumorsweep.train` derives from it on a GPU)."""
    cfg = make_config(
        "paper",
        {
            "schedule.amp": True,
            "schedule.amp_dtype": amp_dtype,
            "schedule.patch_size": (32, 32, 32),
            "eval.roi": (32, 32, 32),
            "eval.overlap": 0.0,
            "eval.protocol": protocol,
            "data.spacing": (4.0, 4.0, 4.0),
        },
    )
    return SimpleNamespace(
        cfg=cfg,
        model=Recorder(),
        amp_dtype=amp_precision(amp_dtype, bf16_supported=True),
        session=SimpleNamespace(device=torch.device("cpu")),
    )


@pytest.mark.parametrize("amp_dtype", ["float16", "bfloat16"])
def test_hu2023_windows_run_in_float32_after_amp_training(phantom_dir, amp_dtype):
    trainer = trained_with_amp("hu2023", amp_dtype)
    assert trainer.cfg.schedule.amp and trainer.amp_dtype is not None  # AMP training settings
    rows = evaluate(trainer, (first_case(phantom_dir),))
    assert len(rows) == 1
    assert trainer.model.seen and set(trainer.model.seen) == {(False, None, torch.float32)}


@pytest.mark.parametrize(
    ("amp_dtype", "expected"), [("float16", torch.float16), ("bfloat16", torch.bfloat16)]
)
def test_tumorsweep_windows_follow_the_training_amp_dtype(phantom_dir, amp_dtype, expected):
    trainer = trained_with_amp("tumorsweep", amp_dtype)
    evaluate(trainer, (first_case(phantom_dir),))
    assert trainer.model.seen and set(trainer.model.seen) == {(True, expected, expected)}


def test_without_amp_tumorsweep_windows_run_in_float32(phantom_dir):
    trainer = trained_with_amp("tumorsweep", "bfloat16")
    trainer.amp_dtype = None  # what the trainer holds on CPU or with schedule.amp=false
    evaluate(trainer, (first_case(phantom_dir),))
    assert set(trainer.model.seen) == {(False, None, torch.float32)}
