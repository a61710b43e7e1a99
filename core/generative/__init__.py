"""DiffTumor (Chen et al. CVPR 2024) on MONAI's generative components: a latent diffusion
generator trained on the study's own real-tumour training cases, and the synthesis transform
that uses it. Sampling (`Generator`, `DiffTumorSynthesisd`) needs neither Ray nor MLflow;
only the training job (`core.generative.job`) reaches them."""

from core.generative.config import GeneratorConfig, generator_config
from core.generative.sampler import Generator
from core.generative.store import load_generator, read_generator_info, save_generator
from core.generative.synthesis import synthesize_difftumor_inplace
from core.generative.transform import DiffTumorSynthesisd

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
