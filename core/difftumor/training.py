"""Training of a DiffTumor generator over a `Session`: the same loop in one process
(`LocalSession`) or on every rank of a Ray Train DDP run (`RaySession`).

Stage 1 fits the autoencoder on tumour-centred crops (kind kl: L1 + a small KL term; kind
vqgan: L1 + commitment + adversarial + optional perceptual, `generative.vqgan`), then measures
the spread of its latents (the scale that makes them unit-variance). Stages 2 and 3 fit the
"early" and "late" denoisers on crops centred on tumours of their class, with the autoencoder
frozen: x0 (or noise) prediction with an L1 loss, an EMA of the weights kept for sampling.
The chief rank reports a resumable checkpoint every `checkpoint_every` epochs and at the end
of each stage (tensors and plain values only: it loads with `weights_only=True`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from tumorsweep.generative.config import GeneratorConfig
from tumorsweep.generative.models import (
    build_autoencoder,
    build_denoiser,
    condition,
    training_scheduler,
)
from tumorsweep.generative.patches import TumourCase, TumourCrops, tumour_counts
from tumorsweep.generative.vqgan import VQGANLosses
from tumorsweep.session import Session
from tumorsweep.tracking import NullLogger, TrialLogger

STAGES = ("autoencoder", "early", "late")
_SCALE_CROPS = 32  # crops the latent spread is measured on


@dataclass
class FittedGenerator:
    """What training produced: weights per model, the latent scale, per-epoch losses."""

    config: GeneratorConfig
    weights: dict[str, dict[str, torch.Tensor]]
    latent_scale: float
    history: dict[str, list[float]]
    tumours: dict[str, int]
    fallbacks: list[str] = field(default_factory=list)  # classes trained on every tumour
    seconds: dict[str, float] = field(default_factory=dict)


def fit_generator(
    config: GeneratorConfig,
    cases: list[TumourCase],
    session: Session,
    logger: TrialLogger | None = None,
) -> FittedGenerator:
    """Train all three models on the real-tumour cases (`patches.load_cases`)."""
    logger = logger or NullLogger()
    state = session.load_checkpoint() or {
        "stage": 0,  # index into STAGES of the stage in progress
        "epoch": 0,  # epochs of that stage done
        "weights": {},  # per model: the weights to sample with (EMA for denoisers)
        "latent_scale": math.nan,
        "history": {},
        "seconds": {},
        "model": None,  # the stage's live weights, optimiser and EMA at the checkpoint
        "optimizer": None,
        "ema": None,
    }
    for index, stage in enumerate(STAGES):
        if index < state["stage"]:
            continue
        began = time.perf_counter()
        if stage == "autoencoder":
            _train_autoencoder(config, cases, session, logger, state)
        else:
            _train_denoiser(config, cases, stage, session, logger, state)
        state["seconds"][stage] = state["seconds"].get(stage, 0.0) + time.perf_counter() - began
        state.update(stage=index + 1, epoch=0, model=None, optimizer=None, ema=None)
        _report(session, {"stages_done": index + 1}, state)
    counts = tumour_counts(cases, config)
    return FittedGenerator(
        config=config,
        weights=state["weights"],
        latent_scale=float(state["latent_scale"]),
        history=state["history"],
        tumours=counts,
        fallbacks=[kind for kind in ("early", "late") if not counts[kind]],
        seconds=state["seconds"],
    )


def _loader(config: GeneratorConfig, cases: list[TumourCase], kind: str, batch: int, session):
    crops = TumourCrops(cases, config, kind, config.training.crops_per_epoch)
    loader = torch.utils.data.DataLoader(crops, batch_size=batch, shuffle=False, drop_last=False)
    return session.prepare_loader(loader)


def _train_autoencoder(
    config: GeneratorConfig,
    cases: list[TumourCase],
    session: Session,
    logger: TrialLogger,
    state: dict[str, Any],
) -> None:
    spec, device = config.training, session.device
    torch.manual_seed(spec.seed * 1000 + session.world_rank)
    autoencoder = build_autoencoder(config)
    if state["model"] is not None:
        autoencoder.load_state_dict(state["model"])
    model = session.prepare_model(autoencoder)
    optimizer = torch.optim.Adam(model.parameters(), lr=spec.autoencoder_lr)
    if state["optimizer"] is not None:
        optimizer.load_state_dict(state["optimizer"])
    loader = _loader(config, cases, "all", spec.autoencoder_batch, session)
    vq = VQGANLosses(config, device, state) if config.autoencoder.kind == "vqgan" else None
    second = "autoencoder_commitment" if vq else "autoencoder_kl"
    for epoch in range(state["epoch"], spec.autoencoder_epochs):
        loader.dataset.set_epoch(epoch)
        model.train()
        sums = torch.zeros(3, dtype=torch.float64)
        extras: dict[str, float] = {}
        for image, _ in loader:
            image = image.to(device)
            if vq is None:
                recon, mu, sigma = model(image)
                l1 = (recon - image).abs().mean()
                kl = 0.5 * torch.sum(mu.pow(2) + sigma.pow(2) - torch.log(sigma.pow(2)) - 1)
                term = kl = kl / image.shape[0]
                loss = l1 + spec.kl_weight * kl
            else:
                recon, term = model(image)
                l1 = (recon - image).abs().mean()
                extra, values = vq.autoencoder_loss(image, recon, epoch)
                loss = l1 + term + extra
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            n = len(image)
            if vq is not None:
                values["autoencoder_discriminator"] = vq.discriminator_step(image, recon, epoch)
                for name, value in values.items():
                    extras[name] = extras.get(name, 0.0) + value * n
            sums += torch.tensor([float(l1.detach()) * n, float(term.detach()) * n, n])
        named = {"autoencoder_l1": sums[0], second: sums[1]}
        named.update({k: torch.tensor(v, dtype=torch.float64) for k, v in extras.items()})
        metrics = _epoch_metrics(named, sums[2], device)
        if vq is not None:
            vq.save(state)
        _close_epoch(config, session, logger, state, epoch, metrics, (model, optimizer, None))
    _snapshot(state, "autoencoder", model, optimizer, None)
    state["latent_scale"] = latent_scale(_unwrap(model).eval(), cases, config, device)
    state["history"]["latent_scale"] = [state["latent_scale"]]


@torch.no_grad()
def latent_scale(
    autoencoder: torch.nn.Module, cases: list[TumourCase], config: GeneratorConfig, device
) -> float:
    """1 / std of the latents (posterior means) of a fixed set of crops: diffusion then works
    on unit-variance latents, as in Rombach et al.'s latent diffusion."""
    crops = TumourCrops(cases, config, "all", _SCALE_CROPS)
    images = torch.stack([crops[i][0] for i in range(len(crops))]).to(device)
    latents = torch.cat([autoencoder.encode(chunk)[0] for chunk in images.split(4)])
    return float(1.0 / latents.std().clamp_min(1e-6))


def _train_denoiser(
    config: GeneratorConfig,
    cases: list[TumourCase],
    kind: str,
    session: Session,
    logger: TrialLogger,
    state: dict[str, Any],
) -> None:
    spec, device = config.training, session.device
    torch.manual_seed(spec.seed * 1000 + session.world_rank + 100 * STAGES.index(kind))
    autoencoder = build_autoencoder(config)
    autoencoder.load_state_dict(state["weights"]["autoencoder"])
    autoencoder = autoencoder.to(device).eval().requires_grad_(False)
    denoiser = build_denoiser(config)
    if state["model"] is not None:
        denoiser.load_state_dict(state["model"])
    model = session.prepare_model(denoiser)
    ema = AveragedModel(
        _unwrap(model), multi_avg_fn=get_ema_multi_avg_fn(spec.ema_decay), use_buffers=True
    )
    if state["ema"] is not None:
        ema.load_state_dict(state["ema"])
    optimizer = torch.optim.Adam(model.parameters(), lr=spec.diffusion_lr)
    if state["optimizer"] is not None:
        optimizer.load_state_dict(state["optimizer"])
    schedule = config.early if kind == "early" else config.late
    scheduler = training_scheduler(schedule, config.prediction_type)
    scale, factor = float(state["latent_scale"]), config.latent_factor
    loader = _loader(config, cases, kind, spec.diffusion_batch, session)
    encoded: tuple[int, list] = (-1, [])
    for epoch in range(state["epoch"], spec.diffusion_epochs):
        crops = epoch // spec.latent_reuse  # the frozen autoencoder's output is reused
        if encoded[0] != crops:
            loader.dataset.set_epoch(crops)
            encoded = (crops, _encode(autoencoder, loader, scale, factor, device))
        model.train()
        sums = torch.zeros(2, dtype=torch.float64)
        for target, cond in encoded[1]:
            steps = torch.randint(0, schedule.timesteps, (len(target),), device=device)
            noise = torch.randn_like(target)
            noisy = scheduler.add_noise(target, noise, steps)
            out = model(torch.cat([noisy, cond], dim=1), timesteps=steps)
            loss = F.l1_loss(out, target if config.prediction_type == "sample" else noise)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            ema.update_parameters(_unwrap(model))
            sums += torch.tensor([float(loss.detach()) * len(target), len(target)])
        metrics = _epoch_metrics({f"diffusion_{kind}_l1": sums[0]}, sums[1], device)
        _close_epoch(config, session, logger, state, epoch, metrics, (model, optimizer, ema))
    _snapshot(state, kind, model, optimizer, ema)


@torch.no_grad()
def _encode(autoencoder, loader, scale: float, factor: int, device) -> list:
    """(scaled latent, conditioning) of every batch of crops the loader yields."""
    batches = []
    for image, mask in loader:
        image, mask = image.to(device), mask.to(device)
        target = autoencoder.encode(image)[0] * scale
        batches.append((target, condition(autoencoder, image, mask, scale, factor)))
    return batches


def _close_epoch(
    config: GeneratorConfig,
    session: Session,
    logger: TrialLogger,
    state: dict[str, Any],
    epoch: int,
    metrics: dict[str, float],
    live: tuple[torch.nn.Module, torch.optim.Optimizer, AveragedModel | None],
) -> None:
    """Record the epoch's losses; checkpoint every `checkpoint_every` epochs."""
    for name, value in metrics.items():
        state["history"].setdefault(name, []).append(value)
    logger.log_metrics(metrics, step=epoch)
    state["epoch"] = epoch + 1
    stage, spec = STAGES[state["stage"]], config.training
    total = spec.autoencoder_epochs if stage == "autoencoder" else spec.diffusion_epochs
    due = state["epoch"] % spec.checkpoint_every == 0
    if session.world_rank == 0 and (due or state["epoch"] == total):  # progress on the console
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        print(f"generator {stage} epoch {state['epoch']}/{total}: {shown}", flush=True)
    if not due:
        session.report({"epoch": epoch + 1, **metrics})
        return
    _snapshot(state, stage, *live)
    _report(session, {"epoch": epoch + 1, **metrics}, state)


def _snapshot(
    state: dict[str, Any],
    stage: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: AveragedModel | None,
) -> None:
    """Copy the stage's live weights, optimiser and EMA into the state; the weights to
    sample with are the EMA's for a denoiser, the live ones for the autoencoder."""
    live = {k: v.detach().cpu().clone() for k, v in _unwrap(model).state_dict().items()}
    state["model"], state["optimizer"] = live, optimizer.state_dict()
    state["ema"] = None if ema is None else ema.state_dict()
    state["weights"][stage] = (
        live
        if ema is None
        else {
            key.removeprefix("module."): value.detach().cpu().clone()
            for key, value in ema.state_dict().items()
            if key.startswith("module.")
        }
    )


def _report(session: Session, metrics: dict[str, Any], state: dict[str, Any]) -> None:
    checkpoint = dict(state) if session.world_rank == 0 else None
    session.report(metrics, checkpoint=checkpoint)


def _epoch_metrics(
    sums: dict[str, torch.Tensor], count: torch.Tensor, device: torch.device
) -> dict[str, float]:
    """Per-sample means over every rank."""
    values = torch.stack([*sums.values(), count])
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        values = values.to(device)
        torch.distributed.all_reduce(values)
    total = float(values[-1]) or 1.0
    return {name: float(v) / total for name, v in zip(sums, values[:-1], strict=True)}


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model
