"""Loss, optimiser and learning-rate schedule of a trial, as Hu et al.'s public `main.py` sets
them (MrGiovanni/SyntheticTumors).

- Loss: MONAI `DiceCELoss(to_onehot_y=True, softmax=True, squared_pred=True, smooth_nr=0,
  smooth_dr=1e-6)`, the `loss.*` config fields (defaults = theirs).
- Optimiser: AdamW(lr, weight_decay).
- Schedule: their `LinearWarmupCosineAnnealingLR(warmup_epochs, max_epochs)` (warm-up start lr
  0, final lr 0), stepped once per epoch: epoch e < W trains at
  start + e (base - start) / (W - 1), so the first epoch trains at the start lr (0); from W on,
  min + (base - min) (1 + cos(pi (e - W) / (E - W))) / 2.
"""

from __future__ import annotations

import math
from functools import partial

import torch

from tumorsweep.config import TrialConfig


def warmup_cosine_lr(
    epoch: int,
    base_lr: float,
    warmup_epochs: int,
    epochs: int,
    warmup_start_lr: float = 0.0,
    min_lr: float = 0.0,
) -> float:
    """The learning rate epoch `epoch` (0-based) trains at (closed form of the schedule)."""
    if epoch < warmup_epochs:
        if warmup_epochs == 1:
            return warmup_start_lr
        return warmup_start_lr + epoch * (base_lr - warmup_start_lr) / (warmup_epochs - 1)
    span = max(1, epochs - warmup_epochs)
    return min_lr + 0.5 * (base_lr - min_lr) * (
        1.0 + math.cos(math.pi * (epoch - warmup_epochs) / span)
    )


def _factor(epoch: int, base_lr: float, **schedule: float) -> float:
    return warmup_cosine_lr(epoch, base_lr, **schedule) / base_lr


def build_optimisation(
    cfg: TrialConfig, model: torch.nn.Module
) -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """(loss, optimiser, per-epoch scheduler) for one trial."""
    from monai.losses import DiceCELoss

    schedule, loss = cfg.schedule, cfg.loss
    loss_fn = DiceCELoss(
        to_onehot_y=True,
        softmax=True,
        squared_pred=loss.squared_pred,
        smooth_nr=loss.smooth_nr,
        smooth_dr=loss.smooth_dr,
        lambda_dice=loss.lambda_dice,
        lambda_ce=loss.lambda_ce,
    )
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=schedule.lr, weight_decay=schedule.weight_decay
    )
    factor = partial(
        _factor,
        base_lr=schedule.lr,
        warmup_epochs=schedule.warmup_epochs,
        epochs=schedule.epochs,
        warmup_start_lr=schedule.warmup_start_lr,
        min_lr=schedule.min_lr,
    )
    return loss_fn, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
