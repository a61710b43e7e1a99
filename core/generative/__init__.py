"""DiffTumor (Chen et al. CVPR 2024) on MONAI's generative components: a latent diffusion
generator trained on the study's own real-tumour training cases, and the synthesis transform
that uses it. Sampling (`Generator`, `DiffTumorSynthesisd`) needs neither Ray nor MLflow;
only the training job (`tumorsweep.generative.job`) reaches them."""

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
