"""Tumour synthesis (Hu et al. CVPR 2023 and its ablation knobs); no Ray, no MLflow."""

from core.synthesis.config import SynthesisConfig
from core.synthesis.location import LocationModel, fit_location_model
from core.synthesis.preview import save_preview
from core.synthesis.synthesize import synthesize_tumors
from core.synthesis.transform import TumorSynthesisd

__all__ = [
    "LocationModel",
    "SynthesisConfig",
    "TumorSynthesisd",
    "fit_location_model",
    "save_preview",
    "synthesize_tumors",
]
