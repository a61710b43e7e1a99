"""Loss, optimiser and learning-rate schedule of a trial.

AdamW with linear warm-up then cosine annealing, stepped once per epoch, and Dice + cross-entropy
on the softmax of three classes.
"""

from __future__ import annotations

import math
from functools import partial

import torch

from core.config import TrialConfig


def lr_factor(epoch: int, warmup_epochs: int, epochs: int) -> float:
    """Linear warm-up from ~0 to 1 over `warmup_epochs`, then cosine to 0 at `epochs`."""
    if epoch < warmup_epochs:
        return (epoch + 1) / (warmup_epochs + 1)
    span = max(1, epochs - warmup_epochs)
    return 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup_epochs) / span))


def build_optimisation(
    cfg: TrialConfig, model: torch.nn.Module
) -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """(loss, optimiser, per-epoch scheduler) for one trial."""
    from monai.losses import DiceCELoss

    schedule = cfg.schedule
    loss = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=schedule.lr, weight_decay=schedule.weight_decay
    )
    factor = partial(lr_factor, warmup_epochs=schedule.warmup_epochs, epochs=schedule.epochs)
    return loss, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
