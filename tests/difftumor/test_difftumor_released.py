"""Chen et al.'s released DiffTumor generator (`AutoencoderModel.ckpt`, `liver_early.pt`,
`liver_noearly.pt`) loads strictly into our re-implementation, runs, refuses any other key
set in one line, and computes what their code computes.

Test data (tests/difftumor/released_data/, produced once from MrGiovanni/DiffTumor's public
code, see produce.txt there): `manifest.json`, every tensor name and shape of the three files
as their model classes (`VQGAN` with STEP1's `vq_gan_3d.yaml`; `GaussianDiffusion(Unet3D)` with
`ddpm.yaml`, 4 and 200 steps, holding the VQ-GAN as saved under `ema`) state them; `oracle.pt`,
outputs of their own VQ-GAN, Unet3D, DDPM loop and DDIM sampler on weights drawn from the
manifest by the rule in `_fill` (their code run in a side environment with their pinned
rotary-embedding-torch 0.1.5).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from tumorsweep.errors import TumorsweepError
from tumorsweep.generative import released
from tumorsweep.generative.released import (
    AUTOENCODER_FILE,
    EARLY_FILE,
    LATE_FILE,
    ChenDiffusion,
    ChenUnet3D,
    ChenVQGAN,
    load_released_generator,
)
from tumorsweep.generative.store import load_generator, verify_generator_files
from tumorsweep.weights import load_checkpoint_entry

DATA = Path(__file__).parent / "released_data"
MANIFEST = json.loads((DATA / "manifest.json").read_text())
VQ_ENTRY = "AutoencoderModel.ckpt:state_dict"


class _LightningConfig:
    """Stands for the OmegaConf config a Lightning checkpoint pickles in `hyper_parameters`."""

    def __init__(self) -> None:
        self.embedding_dim = 8


def _random_state(shapes: dict[str, list[int]], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        key: torch.randn(shape, generator=g) * 0.05
        if not key.endswith("num_batches_tracked")
        else torch.zeros(shape, dtype=torch.long)
        for key, shape in shapes.items()
    }


def _save_released(
    folder: Path, vq_state: dict, early: dict, late: dict, reuse: Path | None = None
) -> Path:
    """The three files as the publishers saved them: a Lightning checkpoint and two trainer
    checkpoints (`step`, `model`, `ema`, `scaler`). With `reuse`, a state given as None is
    linked from that folder instead."""
    folder.mkdir(parents=True, exist_ok=True)
    states = {AUTOENCODER_FILE: vq_state, EARLY_FILE: early, LATE_FILE: late}
    for name, state in states.items():
        if state is None and reuse is not None:
            (folder / name).symlink_to(reuse / name)
    if vq_state is not None:
        torch.save(
            {
                "epoch": 3,
                "global_step": 80000,
                "pytorch-lightning_version": "1.6.4",
                "state_dict": vq_state,
                "hyper_parameters": {"cfg": _LightningConfig()},
                "optimizer_states": [],
                "lr_schedulers": [],
            },
            folder / AUTOENCODER_FILE,
        )
    for name, ema in ((EARLY_FILE, early), (LATE_FILE, late)):
        if ema is None:
            continue
        scaler = {"scale": 65536.0, "growth_factor": 2.0, "_growth_tracker": 0}
        torch.save({"step": 60000, "model": ema, "ema": ema, "scaler": scaler}, folder / name)
    return folder


@pytest.fixture(scope="module")
def states() -> dict[str, dict[str, torch.Tensor]]:
    vq = _random_state(MANIFEST[VQ_ENTRY], 0)
    out = {"vq": vq}
    for name, key in ((EARLY_FILE, "early"), (LATE_FILE, "late")):
        shapes = MANIFEST[f"{name}:ema"]
        state = _random_state({k: s for k, s in shapes.items() if not k.startswith("vqgan.")}, 1)
        state.update({f"vqgan.{k}": v for k, v in vq.items()})
        out[key] = {k: state[k] for k in shapes}  # the publishers' order
    # a usable schedule (the files carry their own; random values would not be one)
    for key, steps in (("early", 4), ("late", 200)):
        betas = torch.linspace(1e-4, 0.2, steps)
        cumprod = torch.cumprod(1 - betas, 0)
        prev = torch.cat([torch.ones(1), cumprod[:-1]])
        variance = betas * (1 - prev) / (1 - cumprod)
        out[key].update(
            betas=betas,
            alphas_cumprod=cumprod,
            alphas_cumprod_prev=prev,
            sqrt_recip_alphas_cumprod=(1 / cumprod).sqrt(),
            sqrt_recipm1_alphas_cumprod=(1 / cumprod - 1).sqrt(),
            posterior_variance=variance,
            posterior_log_variance_clipped=variance.clamp(min=1e-20).log(),
            posterior_mean_coef1=betas * prev.sqrt() / (1 - cumprod),
            posterior_mean_coef2=(1 - prev) * (1 - betas).sqrt() / (1 - cumprod),
        )
    return out


@pytest.fixture(scope="module")
def folder(states: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("released") / "model_weight"
    return _save_released(root, states["vq"], states["early"], states["late"])


def test_architectures_have_exactly_the_public_names_and_shapes() -> None:
    ours = {
        VQ_ENTRY: ChenVQGAN(),
        f"{EARLY_FILE}:ema": ChenDiffusion(4),
        f"{LATE_FILE}:ema": ChenDiffusion(200),
    }
    for entry, model in ours.items():
        shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
        assert list(shapes.items()) == list(MANIFEST[entry].items()), entry
    assert len(MANIFEST[VQ_ENTRY]) == 154 and len(MANIFEST[f"{EARLY_FILE}:ema"]) == 466


def test_released_folder_loads_strictly_and_synthesises(folder: Path) -> None:
    generator = load_generator(folder)
    assert isinstance(generator, released.ReleasedGenerator) and generator.released
    assert generator.config.patch_size == 96 and generator.config.late.timesteps == 200
    # the loaded tensors are the file's (the VQ-GAN's codebook, a denoiser weight)
    saved = torch.load(folder / AUTOENCODER_FILE, weights_only=False)["state_dict"]
    assert torch.equal(generator.vqgan.codebook.embeddings, saved["codebook.embeddings"])
    image = torch.full((1, 1, 32, 32, 32), 60.0)
    mask = torch.zeros_like(image)
    mask[..., 12:20, 12:20, 12:20] = 1
    noise = torch.Generator().manual_seed(0)
    early = generator.inpaint(image, mask, "early", generator=noise)
    late = generator.inpaint(image, mask, "late", ddim_steps=4, generator=noise)
    for out in (early, late):
        assert out.shape == image.shape and torch.isfinite(out).all()
        assert out.min() >= -175.0 and out.max() <= 250.0
    assert not torch.equal(early, late)
    info = verify_generator_files(folder)
    assert info.trained_on == [] and info.record["format"] == "chen2024-released"


@pytest.mark.parametrize("file", [AUTOENCODER_FILE, EARLY_FILE])
@pytest.mark.parametrize("change", ["renamed", "reshaped"])
def test_a_different_key_set_is_refused_naming_the_first_bad_key(
    states: dict, folder: Path, file: str, change: str, tmp_path: Path
) -> None:
    vq = dict(states["vq"]) if file == AUTOENCODER_FILE else None
    early = dict(states["early"]) if file == EARLY_FILE else None
    target = vq if file == AUTOENCODER_FILE else early
    key = "encoder.conv_blocks.1.res.conv1.conv.weight"
    key = key if file == AUTOENCODER_FILE else "denoise_fn.downs.2.0.block1.proj.weight"
    if change == "renamed":
        target[key.replace("conv1", "conv_1").replace("block1", "block_1")] = target.pop(key)
    else:
        target[key] = target[key][:-1]
    root = _save_released(tmp_path / "weights", vq, early, None, reuse=folder)
    with pytest.raises(TumorsweepError) as caught:
        load_released_generator(root)
    message = str(caught.value)
    assert "\n" not in message and str(root / file) in message
    assert key in message
    assert ("lacks" if change == "renamed" else "has shape") in message


def test_a_lightning_checkpoint_s_pickled_objects_never_run(tmp_path: Path) -> None:
    """Foreign objects beside the state dict are read as inert data: a payload that would
    run a command when unpickled runs nothing."""
    flag = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (subprocess.call, (["touch", str(flag)],))

    file = tmp_path / "c.ckpt"
    state = {"w": torch.ones(3)}
    torch.save({"state_dict": state, "hyper_parameters": {"cfg": Payload()}}, file)
    assert torch.equal(load_checkpoint_entry(file, ("state_dict",))["w"], state["w"])
    assert not flag.exists()
    with pytest.raises(TumorsweepError, match="has no 'ema' entry"):
        load_checkpoint_entry(file, ("ema",))


def _fill(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """The oracle's weight rule: N(0, 0.1^2) per floating tensor in state-dict order."""
    g = torch.Generator().manual_seed(seed)
    state = {
        k: torch.randn(v.shape, generator=g) * 0.1
        if v.dtype.is_floating_point
        else torch.zeros_like(v)
        for k, v in module.state_dict().items()
    }
    module.load_state_dict(state)
    return module.eval()


def test_forward_and_samplers_match_the_public_code() -> None:
    oracle = torch.load(DATA / "oracle.pt", weights_only=True)
    vq, unet = _fill(ChenVQGAN(), 0), _fill(ChenUnet3D(), 1)
    with torch.no_grad():
        latent = vq.encode(oracle["volume"])
        torch.testing.assert_close(latent, oracle["latent"], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(vq.decode(latent), oracle["decoded"], rtol=1e-4, atol=1e-4)
        eps = unet(oracle["x"], oracle["t"], oracle["cond"])
        torch.testing.assert_close(eps, oracle["eps"], rtol=1e-4, atol=1e-4)
    small = _fill(ChenUnet3D(), 3)
    cond = oracle["cond"]
    for key, steps in (("early", 4), ("late", 200)):
        model = ChenDiffusion(steps)
        model.denoise_fn = small
        for name, value in oracle[f"{key}_schedule"].items():
            getattr(model, name).copy_(value)
        with torch.no_grad():
            if key == "early":
                g = torch.Generator().manual_seed(7)
                x = torch.randn(2, 8, 4, 8, 8, generator=g)
                out = released._ddpm(model, x, cond, g)
                torch.testing.assert_close(out, oracle["early_sample"], rtol=1e-4, atol=1e-4)
            else:
                for eta in (0.0, 0.5):
                    g = torch.Generator().manual_seed(9)
                    out = released._ddim(model, oracle["late_xT"], cond[:1], 50, eta, g)
                    expected = oracle[f"late_sample_eta{eta}"]
                    # 50 chained float32 steps: the summation order of the convolutions
                    # (thread count) moves single elements by ~2e-4 relative; a wrong
                    # coefficient or step rule moves every element by O(1)
                    torch.testing.assert_close(out, expected, rtol=1e-3, atol=1e-3)


def test_ddim_timesteps_follow_their_uniform_rule() -> None:
    assert released.ddim_timesteps(200, 50)[:3].tolist() == [1, 5, 9]
    assert released.ddim_timesteps(200, 200)[:3].tolist() == [0, 1, 2]
    with pytest.raises(TumorsweepError, match="ddim_steps 300"):
        released.ddim_timesteps(200, 300)
