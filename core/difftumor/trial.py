"""What a segmentation trial needs of its DiffTumor generator: the checks before any worker
starts (folder complete, trained at the trial's spacing, not on held-out cases) and the
batch synthesis, its generator loaded on the trainer's device."""

from __future__ import annotations

import torch

from tumorsweep.config import TrialConfig
from tumorsweep.data.cases import CaseLists
from tumorsweep.errors import TumorsweepError
from tumorsweep.generative.batch import BatchDiffTumor
from tumorsweep.generative.config import AUTO
from tumorsweep.generative.store import load_generator, verify_generator_files


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
    if info.record.get("format") == "chen2024-released":
        return  # trained by the publishers: no case list to check (the run records it)
    leaked = sorted(info.trained_on_keys() & cases.held_out())
    if leaked and not cfg.data.allow_overlap:
        raise TumorsweepError(
            f"synthesis.generator {folder}: trained on validation/test cases "
            f"{' '.join(leaked[:10])}; retrain on training cases only (tumorsweep "
            "train-generator --split ...) or set data.allow_overlap=true"
        )


def trial_batch_synthesis(cfg: TrialConfig, device: torch.device) -> BatchDiffTumor:
    """The trial's DiffTumor synthesis on training batches, its generator on `device` (the
    trainer's): it runs in the training process, so loader workers never touch the GPU."""
    if cfg.synthesis.generator == AUTO:
        raise TumorsweepError(
            "synthesis.generator=auto is resolved by the sweep driver (sweeps/*.py); for a "
            "single trial pass a folder from tumorsweep train-generator"
        )
    generator = load_generator(cfg.synthesis.generator, device)
    late = generator.config.late.timesteps
    if cfg.synthesis.difftumor.ddim_steps > late:
        raise TumorsweepError(
            f"synthesis.difftumor.ddim_steps {cfg.synthesis.difftumor.ddim_steps}: more than "
            f"the {late} steps generator {generator.path} was trained with"
        )
    return BatchDiffTumor(generator, cfg.synthesis, cfg.data.window)
