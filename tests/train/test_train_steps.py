"""Each named step of the trainer on its own (tumorsweep.train): build, train_epoch, validate,
selected_metrics, save_checkpoint / restore, final_test, check_trial."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from tumorsweep.config import make_config
from tumorsweep.data.cases import CaseLists, resolve_cases
from tumorsweep.errors import TumorsweepError
from tumorsweep.optim import warmup_cosine_lr
from tumorsweep.session import LocalSession
from tumorsweep.tracking import NullLogger
from tumorsweep.train import (
    TrainState,
    build,
    check_trial,
    evaluate,
    final_test,
    restore,
    save_checkpoint,
    selected_metrics,
    summarise,
    train_epoch,
    validate,
)

SMALL = {
    "data.spacing": (2.0, 2.0, 2.0),
    "schedule.patch_size": (32, 32, 32),
    "schedule.epochs": 4,
    "schedule.warmup_epochs": 2,
    "schedule.val_every": 2,
    "schedule.batch_size": 2,
    "schedule.crops_per_volume": 2,
    "data.loader_workers": 0,
    "eval.roi": (64, 64, 64),
    "eval.overlap": 0.0,
}


@pytest.fixture(scope="module")
def cases(phantom_dir: Path) -> CaseLists:
    return resolve_cases(make_config("demo", {"data.root": str(phantom_dir)}).data)


def _trainer(cases: CaseLists, tmp_path: Path | None = None, **overrides):
    torch.manual_seed(0)
    cfg = make_config("demo", {**SMALL, **overrides})
    return build(cfg, cases, LocalSession(tmp_path), NullLogger())


def test_build_makes_the_loader_and_schedule_of_the_config(cases: CaseLists) -> None:
    trainer = _trainer(cases)
    batch = next(iter(trainer.loader))
    assert tuple(batch["image"].shape) == (2, 1, 32, 32, 32)
    assert batch["label"].dtype == torch.int64 and int(batch["label"].max()) <= 2
    assert len(trainer.loader.dataset) == len(cases.train)  # healthy cases: synthesis arm
    assert trainer.synthesis is not None
    control = _trainer(cases, **{"data.real_fraction": 1.0})
    assert control.synthesis is None and len(control.loader.dataset) == len(cases.train_tumor)


def test_train_epoch_reports_the_lr_it_trained_at_and_steps_the_schedule(cases) -> None:
    trainer = _trainer(cases)
    lrs = [train_epoch(trainer, epoch)["lr"] for epoch in range(3)]
    expected = [warmup_cosine_lr(e, 3e-3, warmup_epochs=2, epochs=4) for e in range(3)]
    assert lrs == pytest.approx(expected) and lrs[0] == 0.0  # the public warm-up starts at 0
    metrics = train_epoch(trainer, 3)
    assert math.isfinite(metrics["train_loss"]) and 0.0 <= metrics["data_wait_fraction"] <= 1.0
    assert trainer.timing["time_train_s"] > 0


def test_validate_keeps_only_better_weights_and_selected_metrics_follow(cases) -> None:
    trainer = _trainer(cases)
    state = TrainState()
    assert all(math.isnan(v) for v in selected_metrics(state).values())
    for epoch in range(2):
        train_epoch(trainer, epoch)
    first = validate(trainer, state, epoch=1)
    assert state.best_epoch == 1 and state.best_value == pytest.approx(first["val_mean_dice"])
    assert selected_metrics(state)["best_val_tumor_dice"] == first["val_tumor_dice"]
    kept = {k: v.clone() for k, v in state.best_weights.items()}
    with torch.no_grad():  # a much worse model: background everywhere
        for parameter in trainer.model.parameters():
            parameter.zero_()
    worse = validate(trainer, state, epoch=3)
    assert worse["val_mean_dice"] < first["val_mean_dice"]
    assert state.best_epoch == 1 and all(torch.equal(kept[k], state.best_weights[k]) for k in kept)


def test_final_test_scores_the_selected_weights_not_the_last(cases) -> None:
    trainer = _trainer(cases)
    state = TrainState()
    for epoch in range(2):
        train_epoch(trainer, epoch)
    validate(trainer, state, epoch=1)
    expected = summarise(evaluate(trainer, cases.test))
    with torch.no_grad():
        for parameter in trainer.model.parameters():
            parameter.zero_()
    final = final_test(trainer, state)
    assert final["tumor_dice"] == pytest.approx(expected["tumor_dice"], abs=1e-12)
    assert final["liver_dice"] == pytest.approx(expected["liver_dice"], abs=1e-12)
    assert final["best_epoch"] == 1.0


def test_checkpoint_round_trip_loads_with_weights_only(cases, tmp_path: Path) -> None:
    trainer = _trainer(cases, tmp_path)
    state = TrainState()
    for epoch in range(2):
        train_epoch(trainer, epoch)
    validate(trainer, state, epoch=1)
    state.epoch = 2
    save_checkpoint(trainer, state, {"epoch": 2})
    saved = torch.load(tmp_path / "state.pt", weights_only=True)  # no code in checkpoints
    assert saved["epoch"] == 2 and saved["best_epoch"] == 1
    fresh = _trainer(cases, tmp_path)
    restored = restore(fresh)
    assert restored.epoch == 2
    assert restored.best_val == pytest.approx(state.best_val, nan_ok=True)  # lesion NaNs
    assert pd.DataFrame(restored.best_val_rows).equals(pd.DataFrame(state.best_val_rows))
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, fresh.model.state_dict()[key])
    # the schedule resumes where it was: epoch 2 trains at the epoch-2 lr
    assert train_epoch(fresh, 2)["lr"] == pytest.approx(
        warmup_cosine_lr(2, 3e-3, warmup_epochs=2, epochs=4)
    )


def test_check_trial_refuses_what_cannot_run(cases, tmp_path: Path) -> None:
    empty = CaseLists((), (), cases.validation, cases.test, "test", "/data")
    with pytest.raises(TumorsweepError, match="no healthy .* training cases"):
        check_trial(make_config("demo", SMALL), empty)
    with pytest.raises(TumorsweepError, match="no real-tumour training cases"):
        check_trial(make_config("demo", {**SMALL, "data.real_fraction": 1.0}), empty)
    no_tumours = CaseLists(cases.train, (), cases.validation, cases.test, "test", "/data")
    gmm = make_config("demo", {**SMALL, "synthesis.location": "gmm"})
    with pytest.raises(TumorsweepError, match="location=gmm needs real-tumour training cases"):
        check_trial(gmm, no_tumours)
    missing = make_config(
        "demo", {"model.name": "swin_unetr_base", "model.pretrained": str(tmp_path / "no.pt")}
    )
    with pytest.raises(TumorsweepError, match="model.pretrained: file not found"):
        check_trial(missing, cases)


class _Recorder(NullLogger):
    """Keeps what final_test logs: metrics and the artifacts' contents."""

    records = True

    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}
        self.files: dict[str, str] = {}

    def log_metrics(self, metrics, step: int) -> None:
        self.metrics.update(metrics)

    def log_artifacts(self, paths) -> None:
        for path in map(Path, paths):
            if path.is_file():
                self.files[path.name] = path.read_text()


def test_final_test_logs_lesion_metrics_and_the_per_lesion_table(cases, tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = make_config("demo", {**SMALL, "eval.lesions.size_edges_mm": (6.0, 12.0)})
    recorder = _Recorder()
    trainer = build(cfg, cases, LocalSession(tmp_path), recorder)
    train_epoch(trainer, 0)
    final = final_test(trainer, TrainState())
    for name in (
        "tumor_lesion_sensitivity",
        "tumor_lesion_sensitivity_6to12mm",
        "case_sensitivity",
    ):
        assert name in final and name in recorder.metrics
    assert "tumor_lesion_sensitivity_lt10mm" not in final  # the configured buckets name them
    lesions = pd.read_csv(pd.io.common.StringIO(recorder.files["per_lesion_test.csv"]))
    assert list(lesions.columns) == [
        "case", "lesion", "voxels", "diameter_mm", "detected", "matched_dice"
    ]  # fmt: skip
    assert len(lesions) == final["tumor_lesions_true_total"] > 0
    assert lesions["detected"].sum() == final["tumor_lesions_detected_total"]
    assert set(lesions["case"]) <= {c["case"] for c in cases.test}
    per_case = pd.read_csv(pd.io.common.StringIO(recorder.files["per_case_test.csv"]))
    assert per_case["tumor_lesions_true"].sum() == len(lesions)


def test_selecting_on_an_undefined_lesion_metric_is_a_clear_error(cases) -> None:
    trainer = _trainer(cases, **{"eval.select_metric": "val_tumor_lesion_sensitivity_ge20mm"})
    train_epoch(trainer, 0)
    with pytest.raises(TumorsweepError, match="undefined on the validation cases"):
        validate(trainer, TrainState(), epoch=0)
