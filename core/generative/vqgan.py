"""The training losses of the `vqgan` autoencoder kind, from MONAI parts: a 3-D
`PatchDiscriminator` with MONAI's hinge `PatchAdversarialLoss` (switched on after
`training.adversarial_start` of the epochs, as Chen et al. start theirs at step 10000 of
80000), and optionally the LPIPS perceptual loss of Chen et al.'s VQ-GAN on one random axial,
coronal and sagittal slice per patch, its VGG16 + linear heads read from a local file only
(`training.perceptual_weights`; MONAI's PerceptualLoss would download, tumorsweep never does).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from monai.losses import PatchAdversarialLoss
from monai.networks.nets import PatchDiscriminator

from tumorsweep.errors import TumorsweepError
from tumorsweep.generative.config import GeneratorConfig
from tumorsweep.weights import load_checkpoint_entry


class LPIPS(torch.nn.Module):
    """LPIPS with Chen et al.'s tensor names (`tumorsweep.generative.released._lpips`),
    weights from a local file, frozen."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        from tumorsweep.generative.released import _check_state, _lpips

        self.net = _lpips()
        file = Path(path)
        if not file.is_file():
            raise TumorsweepError(
                f"training.perceptual_weights {file}: file not found (a local LPIPS weights "
                "file; tumorsweep never downloads weights)"
            )
        state = load_checkpoint_entry(file, ("state_dict", None), "training.perceptual_weights")
        state = {k.removeprefix("perceptual_model."): v for k, v in state.items()}
        _check_state(file, "state dict", state, self.net)
        self.net.load_state_dict(state)
        self.net.eval().requires_grad_(False)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Per-image distance of two (N, 1, H, W) batches (the scaling layer broadcasts the
        single channel to three, as theirs)."""
        scaling, vgg = self.net.scaling_layer, self.net.net
        x = (a - scaling.shift) / scaling.scale
        y = (b - scaling.shift) / scaling.scale
        total = torch.zeros(a.shape[0], device=a.device)
        for index in range(5):
            part = getattr(vgg, f"slice{index + 1}")
            x, y = part(x), part(y)
            nx = x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            ny = y / (y.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            head = getattr(self.net, f"lin{index}").model[1]
            total = total + head((nx - ny) ** 2).mean(dim=(1, 2, 3))
        return total


def discriminator_layers(patch_size: int) -> int:
    """Chen et al.'s 3 layers on 96^3 patches; fewer on patches too small for 3 (each layer
    but the last halves the size and the 4^3 kernels need at least 4 voxels left)."""
    return max(1, min(3, patch_size.bit_length() - 4))


def _slices(volume: torch.Tensor, generator: torch.Generator | None) -> list[torch.Tensor]:
    """One random slice per axis of each (B, 1, X, Y, Z) volume, as (B, 1, H, W) images."""
    out = []
    for axis in (2, 3, 4):
        index = int(torch.randint(volume.shape[axis], (1,), generator=generator))
        out.append(volume.select(axis, index))
    return out


class VQGANLosses:
    """Discriminator, its optimiser and the perceptual network of one autoencoder run; their
    state travels in the generator's resumable checkpoint (`state["vqgan"]`)."""

    def __init__(self, config: GeneratorConfig, device: torch.device, state: dict) -> None:
        spec = config.training
        self.config, self.device = config, device
        self.start = int(spec.adversarial_start * spec.autoencoder_epochs)
        self.adversarial = PatchAdversarialLoss(criterion="hinge")
        self.discriminator = None
        if spec.adversarial_weight > 0:
            self.discriminator = PatchDiscriminator(
                spatial_dims=3,
                channels=spec.discriminator_channels,
                in_channels=1,
                num_layers_d=discriminator_layers(config.patch_size),
                norm="BATCH",
            ).to(device)
            self.optimizer = torch.optim.Adam(
                self.discriminator.parameters(), lr=spec.autoencoder_lr, betas=(0.5, 0.9)
            )
            saved = state.get("vqgan")
            if saved:
                self.discriminator.load_state_dict(saved["discriminator"])
                self.optimizer.load_state_dict(saved["optimizer"])
        self.perceptual = None
        if spec.perceptual_weight > 0:
            if not spec.perceptual_weights or not Path(spec.perceptual_weights).is_file():
                raise TumorsweepError(
                    f"training.perceptual_weights {spec.perceptual_weights}: file not found "
                    "(a local LPIPS weights file; tumorsweep never downloads weights)"
                )
            self.perceptual = LPIPS(spec.perceptual_weights).to(device)
        self.generator = torch.Generator().manual_seed(spec.seed)

    def autoencoder_loss(
        self, image: torch.Tensor, recon: torch.Tensor, epoch: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The autoencoder's extra loss terms (adversarial, perceptual) and their values."""
        spec, extra, values = self.config.training, recon.new_zeros(()), {}
        if self.perceptual is not None:
            pairs = zip(_slices(image, self.generator), _slices(recon, self.generator), strict=True)
            perceptual = sum(self.perceptual(a, b).mean() for a, b in pairs)
            extra = extra + spec.perceptual_weight * perceptual
            values["autoencoder_perceptual"] = float(perceptual.detach())
        if self.discriminator is not None and epoch >= self.start:
            logits = self.discriminator(recon)[-1]
            g_loss = self.adversarial(logits, target_is_real=True, for_discriminator=False)
            extra = extra + spec.adversarial_weight * g_loss
            values["autoencoder_adversarial"] = float(g_loss.detach())
        return extra, values

    def discriminator_step(self, image: torch.Tensor, recon: torch.Tensor, epoch: int) -> float:
        """One hinge step of the discriminator on real vs reconstructed patches."""
        if self.discriminator is None or epoch < self.start:
            return 0.0
        real = self.discriminator(image.detach())[-1]
        fake = self.discriminator(recon.detach())[-1]
        loss = 0.5 * (
            self.adversarial(real, target_is_real=True, for_discriminator=True)
            + self.adversarial(fake, target_is_real=False, for_discriminator=True)
        )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def save(self, state: dict[str, Any]) -> None:
        """Put the discriminator's weights and optimiser into the checkpoint state."""
        if self.discriminator is not None:
            state["vqgan"] = {
                "discriminator": {
                    k: v.detach().cpu().clone() for k, v in self.discriminator.state_dict().items()
                },
                "optimizer": self.optimizer.state_dict(),
            }
