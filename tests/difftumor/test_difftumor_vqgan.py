"""The `vqgan` autoencoder kind (MONAI VQVAE + PatchDiscriminator + hinge PatchAdversarialLoss,
optional LPIPS from a local file): a short generator training through the CLI on the phantom
CTs learns, logs each loss, saves and samples; a perceptual loss without a local file is
refused before anything trains."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tumorsweep.cli import main as cli
from tumorsweep.generative import load_generator, read_generator_info
from tumorsweep.generative.models import VQAutoencoder

MANIFEST = Path(__file__).parent / "released_data" / "manifest.json"
TINY = {
    "patch_size": 16,
    "autoencoder.kind": "vqgan",
    "autoencoder.num_embeddings": 64,
    "training.autoencoder_epochs": 8,
    "training.diffusion_epochs": 1,
    "training.crops_per_epoch": 32,
    "training.autoencoder_batch": 8,
    "training.diffusion_batch": 8,
    "training.checkpoint_every": 4,
    "training.adversarial_start": 0.25,
}


def _lpips_file(path: Path) -> Path:
    """Random LPIPS weights with Chen et al.'s names (their VQ-GAN's `perceptual_model.*`)."""
    shapes = json.loads(MANIFEST.read_text())["AutoencoderModel.ckpt:state_dict"]
    g = torch.Generator().manual_seed(0)
    state = {
        k: torch.randn(shape, generator=g).abs() * 0.05  # LPIPS heads weigh >= 0
        for k, shape in shapes.items()
        if k.startswith("perceptual_model.")
    }
    torch.save(state, path)
    return path


def _train(phantom_dir: Path, root: Path, settings: dict) -> int:
    sets = [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]
    return cli(
        ["train-generator", "--data", str(phantom_dir), "--preset", "demo", "--out",
         str(root / "gen"), "--tracking-uri", f"sqlite:///{root / 'mlflow.db'}", *sets]
    )  # fmt: skip


def test_vqgan_generator_trains_with_adversarial_and_perceptual_losses(
    phantom_dir: Path, tmp_path: Path
) -> None:
    torch.set_num_threads(1)
    lpips = _lpips_file(tmp_path / "lpips.pt")
    settings = TINY | {
        "training.perceptual_weight": 1.0,
        "training.perceptual_weights": str(lpips),
    }
    assert _train(phantom_dir, tmp_path, settings) == 0
    info = read_generator_info(tmp_path / "gen")
    history = info.record["history"]
    l1 = history["autoencoder_l1"]
    assert len(l1) == 8 and np.mean(l1[-2:]) < 0.85 * np.mean(l1[:2]), l1
    assert len(history["autoencoder_commitment"]) == 8
    assert len(history["autoencoder_perceptual"]) == 8
    assert min(history["autoencoder_perceptual"]) > 0
    # the adversarial terms start after a quarter of the 8 epochs: 0 before, > 0 after
    discriminator = history["autoencoder_discriminator"]
    assert discriminator[:2] == [0.0, 0.0] and min(discriminator[2:]) > 0
    assert "autoencoder_kl" not in history
    generator = load_generator(tmp_path / "gen")
    assert isinstance(generator.autoencoder, VQAutoencoder)
    image = torch.full((1, 1, 16, 16, 16), 100.0)
    mask = torch.zeros_like(image)
    mask[..., 6:10, 6:10, 6:10] = 1
    out = generator.inpaint(image, mask, "early", generator=torch.Generator().manual_seed(0))
    assert out.shape == image.shape and torch.isfinite(out).all()


def test_perceptual_loss_needs_a_local_file(
    phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert _train(phantom_dir, tmp_path, TINY | {"training.perceptual_weight": 1.0}) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "training.perceptual_weights" in err[0]
    assert "never downloads" in err[0]
    missing = tmp_path / "nowhere.pt"
    settings = TINY | {
        "training.perceptual_weight": 1.0,
        "training.perceptual_weights": str(missing),
    }
    assert _train(phantom_dir, tmp_path, settings) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(missing) in err[0] and "file not found" in err[0]
    assert not (tmp_path / "gen").exists()
