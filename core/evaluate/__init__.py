"""Evaluation: per-case metrics, aggregation, protocols, post-processing, inference.

The metrics themselves are listed in `tumorsweep.evaluate.registry.METRICS` (iterate that to build a
table; `registry.metrics(edges)` adds the lesion-size buckets); lesion-level detection is defined in
`tumorsweep.evaluate.lesions`. Metrics, protocols and post-processing need only numpy/scipy; the
inference functions (torch, MONAI) are imported on first use so `import tumorsweep.evaluate` stays
light.
"""

from __future__ import annotations

from typing import Any

from tumorsweep.evaluate.aggregate import aggregate
from tumorsweep.evaluate.lesions import LesionParams
from tumorsweep.evaluate.metrics import case_metrics, case_metrics_and_lesions
from tumorsweep.evaluate.postprocess import postprocess
from tumorsweep.evaluate.protocol import PROTOCOLS, EvalProtocol

_INFERENCE = (
    "sliding_window_logits",
    "sliding_window_scores",
    "predict_image",
    "predict_case",
    "evaluate_cases",
)

__all__ = [
    "PROTOCOLS",
    "EvalProtocol",
    "LesionParams",
    "aggregate",
    "case_metrics",
    "case_metrics_and_lesions",
    "postprocess",
    *_INFERENCE,
]


def __getattr__(name: str) -> Any:
    """Load the torch-based inference functions only when they are asked for."""
    if name in _INFERENCE:
        from tumorsweep.evaluate import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'tumorsweep.evaluate' has no attribute {name!r}")
