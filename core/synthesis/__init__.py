"""Tumour synthesis (Hu et al. CVPR 2023 and its ablation knobs); no Ray, no MLflow.

`TumorSynthesisd` (the MONAI transform) is imported on first use, so that the rest (the
synthesis itself, the CLI) does not pull in MONAI and PyTorch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tumorsweep.synthesis.config import SynthesisConfig
from tumorsweep.synthesis.location import LocationModel, fit_location_model
from tumorsweep.synthesis.preview import save_preview
from tumorsweep.synthesis.synthesize import synthesize_tumors

if TYPE_CHECKING:
    from tumorsweep.synthesis.transform import TumorSynthesisd

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
        from tumorsweep.synthesis.transform import TumorSynthesisd

        return TumorSynthesisd
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
