"""The sweep's console: trial names as MLflow shows them, event lines with 3 decimals, and a
progress line with counts, the best search metric and an estimate of the time left."""

from __future__ import annotations

from tumorsweep.progress import Progress, trial_name
from tumorsweep.search_space import load_search_space, trial_count


def test_trial_names_say_their_configuration() -> None:
    swept = ["synthesis.sphere_ratio"]
    assert trial_name({"synthesis.sphere_ratio": 0.05}, swept, 0, None) == "sphere_ratio=0.05 s0"
    both = ["model.name", "data.real_fraction"]
    overrides = {"model.name": "swin_unetr_tiny", "data.real_fraction": 1.0}
    assert trial_name(overrides, both, 2, 1) == "swin_unetr_tiny real_fraction=1.0 s2 f1"


def test_progress_counts_best_and_time_left() -> None:
    now = [0.0]
    progress = Progress(total=5, metric="best_val_tumor_dice", mode="max", concurrent=2,
                        clock=lambda: now[0])  # fmt: skip
    assert progress.on_start("a", "sr=0 s0") == "[tumorsweep] sr=0 s0: started"
    progress.on_start("b", "sr=0.1 s0")
    assert progress.line() == (
        "[tumorsweep] 0/5 done, 2 running, 3 pending, 0 failed; 0m00s elapsed"
    )
    now[0] = 60.0
    line = progress.on_complete(
        "a", "sr=0 s0", {"tumor_dice": 0.61234, "liver_dice": 0.9, "best_val_tumor_dice": 0.58}
    )
    assert line == "[tumorsweep] sr=0 s0: finished, tumor_dice 0.612, liver_dice 0.900"
    now[0] = 90.0
    assert "FAILED: CUDA out of memory" in progress.on_error("b", "sr=0.1 s0", "CUDA out of memory")
    progress.on_start("c", "sr=0.2 s0")
    # finished trials took 60 s and 90 s: 75 s each; 1 running + 2 pending, 2 at a time
    assert progress.line() == (
        "[tumorsweep] 1/5 done, 1 running, 2 pending, 1 failed; "
        "best best_val_tumor_dice 0.580 (sr=0 s0); 1m30s elapsed, ~1m52s left"
    )
    now[0] = 100.0
    progress.on_complete("c", "sr=0.2 s0", {"best_val_tumor_dice": 0.7})
    assert "best best_val_tumor_dice 0.700 (sr=0.2 s0)" in progress.line()


def test_minimising_keeps_the_lowest() -> None:
    progress = Progress(total=2, metric="val_loss", mode="min", concurrent=1, clock=lambda: 0.0)
    progress.on_complete("a", "a", {"val_loss": 0.5})
    progress.on_complete("b", "b", {"val_loss": 0.7})
    assert "best val_loss 0.500 (a)" in progress.line()


def test_trial_count_of_the_shipped_studies() -> None:
    assert trial_count(load_search_space("sphere_ratio"), seeds=3, folds=None) == 21
    assert trial_count(load_search_space("sphere_ratio"), seeds=1, folds=5) == 35
    assert trial_count(load_search_space("texture"), seeds=1, folds=None) == 30
