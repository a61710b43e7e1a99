"""Tumour synthesis (Hu et al. CVPR 2023 and its ablation knobs); no Ray, no MLflow.

`TumorSynthesisd` (the MONAI transform) is imported on first use, so that the rest (the
synthesis itself, the CLI) does not pull in MONAI and PyTorch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from core.synthesis.config import SynthesisConfig
from core.synthesis.location import LocationModel, fit_location_model
from core.synthesis.preview import save_preview
from core.synthesis.synthesize import synthesize_tumors

if TYPE_CHECKING:
    from core.synthesis.transform import TumorSynthesisd

__all__ = [
    "LocationModel",
    "SynthesisConfig",
    "TumorSynthesisd",
    "fit_location_model",
    "save_preview",
    "synthesize_tumors",
]


def __getattr__(name: str) -> Any:
    if name == "TumorSynthesisd":
        from core.synthesis.transform import TumorSynthesisd

        return TumorSynthesisd
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
