"""Evaluation: per-case Dice/NSD, aggregation, post-processing and sliding-window inference.

Metrics and post-processing need only numpy/scipy; inference (torch, MONAI) loads on first use.
"""

from core.evaluate.aggregate import aggregate
from core.evaluate.metrics import case_metrics
from core.evaluate.postprocess import postprocess

__all__ = ["aggregate", "case_metrics", "postprocess"]
