"""A loaded DiffTumor generator: fills masked regions of CT patches with tumour, batched, on
one device. No Ray, no MLflow: this is what a training pipeline's transform calls."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from tumorsweep.errors import TumorsweepError
from tumorsweep.generative.config import GeneratorConfig
from tumorsweep.generative.models import (
    condition,
    ddim_scheduler,
    to_hu,
    to_unit,
    training_scheduler,
)


@dataclass
class Generator:
    """The autoencoder and the two denoisers of one generator folder, in eval mode."""

    config: GeneratorConfig
    autoencoder: torch.nn.Module
    denoisers: dict[str, torch.nn.Module]  # "early", "late"
    latent_scale: float
    trained_on: list[dict] = field(default_factory=list)
    path: str = ""

    @property
    def device(self) -> torch.device:
        return next(self.autoencoder.parameters()).device

    @torch.no_grad()
    def inpaint(
        self,
        image_hu: torch.Tensor,
        mask: torch.Tensor,
        kind: str,
        ddim_steps: int = 50,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """New CT patches in HU (B, 1, P, P, P) whose `mask` (same shape, 0/1) region holds a
        generated tumour of class `kind` ("early": DDPM over all its steps; "late": DDIM with
        `ddim_steps` and noise `eta`). The whole patch is decoded; callers paste the masked
        part. `generator` (on this device) makes the noise reproducible."""
        cfg, device = self.config, self.device
        if image_hu.shape[-3:] != (cfg.patch_size,) * 3 or image_hu.shape != mask.shape:
            raise TumorsweepError(
                f"generator {self.path}: expects image and mask patches of side "
                f"{cfg.patch_size}, got {tuple(image_hu.shape)} and {tuple(mask.shape)}"
            )
        unit = to_unit(image_hu.to(device, torch.float32), cfg.window)
        mask = mask.to(device, torch.float32)
        cond = condition(self.autoencoder, unit, mask, self.latent_scale, cfg.latent_factor)
        latent_shape = (len(unit), cfg.autoencoder.latent_channels, *cond.shape[2:])
        latent = torch.randn(latent_shape, generator=generator, device=device)
        if kind == "early":
            scheduler = training_scheduler(cfg.early, cfg.prediction_type)
            scheduler.set_timesteps(cfg.early.timesteps, device=device)
        else:
            if not 1 <= ddim_steps <= cfg.late.timesteps:
                raise TumorsweepError(
                    f"synthesis.difftumor.ddim_steps {ddim_steps}: must be in [1, "
                    f"{cfg.late.timesteps}] (the late model's training steps)"
                )
            scheduler = ddim_scheduler(cfg.late, cfg.prediction_type)
            scheduler.set_timesteps(ddim_steps, device=device)
        denoiser = self.denoisers[kind]
        for step in scheduler.timesteps:
            steps = torch.full((len(unit),), int(step), device=device, dtype=torch.long)
            out = denoiser(torch.cat([latent, cond], dim=1), timesteps=steps)
            if kind == "early":
                latent, _ = scheduler.step(out, int(step), latent, generator=generator)
            else:
                latent, _ = scheduler.step(out, int(step), latent, eta=eta, generator=generator)
        decoded = self.autoencoder.decode(latent / self.latent_scale)
        return to_hu(decoded, cfg.window)
