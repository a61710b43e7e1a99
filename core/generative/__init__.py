"""DiffTumor (Chen et al. CVPR 2024) on MONAI's generative components: a latent diffusion
generator trained on the study's own real-tumour training cases, and the synthesis transform
that uses it. Nothing here needs Ray, MLflow or a trial's config: the training job, the
sweep's auto-training and a trial's checks live one layer up, in `tumorsweep.difftumor`."""

from tumorsweep.generative.config import GeneratorConfig, generator_config
from tumorsweep.generative.sampler import Generator
from tumorsweep.generative.store import load_generator, read_generator_info, save_generator
from tumorsweep.generative.synthesis import synthesize_difftumor_inplace
from tumorsweep.generative.transform import DiffTumorSynthesisd

__all__ = [
    "DiffTumorSynthesisd",
    "Generator",
    "GeneratorConfig",
    "generator_config",
    "load_generator",
    "read_generator_info",
    "save_generator",
    "synthesize_difftumor_inplace",
]
