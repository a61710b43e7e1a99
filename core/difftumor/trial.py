"""What a segmentation trial needs of its DiffTumor generator: the checks before any worker
starts (folder complete, trained at the trial's spacing, not on held-out cases) and the
transform, loaded on the trainer's device."""

from __future__ import annotations

import torch

from tumorsweep.config import TrialConfig
from tumorsweep.data.cases import CaseLists
from tumorsweep.data.config import DataConfig
from tumorsweep.errors import TumorsweepError
from tumorsweep.generative.config import AUTO
from tumorsweep.generative.store import load_generator, verify_generator_files
from tumorsweep.generative.transform import DiffTumorSynthesisd


def check_generator(cfg: TrialConfig, cases: CaseLists) -> None:
    """Refuse a generator this trial cannot use; `auto` needs real-tumour training cases."""
    folder = cfg.synthesis.generator
    if folder == AUTO:
        if not cases.train_tumor:
            raise TumorsweepError(
                f"synthesis.generator=auto: {cases.root} has no real-tumour training cases "
                f"to train the DiffTumor generator on (test list {cases.eval_set!r}); pass a "
                "folder from tumorsweep train-generator instead"
            )
        return
    info = verify_generator_files(folder)
    if tuple(info.config.spacing) != tuple(cfg.data.spacing):
        raise TumorsweepError(
            f"synthesis.generator {folder}: trained at {info.config.spacing} mm, but the trial "
            f"resamples to data.spacing {tuple(cfg.data.spacing)}"
        )
    leaked = sorted(info.trained_on_keys() & cases.held_out())
    if leaked and not cfg.data.allow_overlap:
        raise TumorsweepError(
            f"synthesis.generator {folder}: trained on validation/test cases "
            f"{' '.join(leaked[:10])}; retrain on training cases only (tumorsweep "
            "train-generator --split ...) or set data.allow_overlap=true"
        )


def trial_transform(cfg: TrialConfig, device: torch.device) -> DiffTumorSynthesisd:
    """The trial's DiffTumor transform, its generator on `device`. On a GPU the generator runs
    in the training process: DataLoader workers cannot use CUDA once it is initialised."""
    if cfg.synthesis.generator == AUTO:
        raise TumorsweepError(
            "synthesis.generator=auto is resolved by the sweep driver (sweeps/*.py); for a "
            "single trial pass a folder from tumorsweep train-generator"
        )
    loader_data(cfg, device)  # refuse loader workers the generator cannot run in, first
    generator = load_generator(cfg.synthesis.generator, device)
    return DiffTumorSynthesisd(("image", "label"), config=cfg.synthesis, generator=generator)


def loader_data(cfg: TrialConfig, device: torch.device) -> DataConfig:
    """The trial's data settings for its loader: on a GPU the generator runs in the training
    process (DataLoader workers cannot use CUDA once it is initialised), so `auto` loader
    workers become 0 and an explicit count is refused."""
    if device.type != "cuda" or cfg.data.loader_workers == 0:
        return cfg.data
    if cfg.data.loader_workers != "auto":
        raise TumorsweepError(
            f"synthesis.style=difftumor on {device}: set data.loader_workers=0 (got "
            f"{cfg.data.loader_workers}); the generator runs on the GPU in the training process"
        )
    return cfg.data.model_copy(update={"loader_workers": 0})
