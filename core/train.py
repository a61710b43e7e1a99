"""The per-worker training loop: what Ray Train's TorchTrainer runs on every worker.

Paper protocol (PROTOCOL section 4): random patches through the MONAI chain with tumour synthesis
in HU, AdamW, linear warm-up then cosine stepped per epoch, Dice + cross-entropy, AMP on GPU,
validation every k epochs with sliding-window inference and the metrics of core.evaluate, best
checkpoint by a configurable validation metric, and at the end the best weights scored once on
the test list. Checkpoints go through Ray Train so a failed worker group resumes where it was.

The loop talks to Ray only through a small `Session`, so tests run it directly in one process.
"""

from __future__ import annotations

import copy
import csv
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core import tracking
from core.config import TrialConfig, flatten, to_yaml
from core.errors import TumorsweepError

CHECKPOINT_FILE = "state.pt"
# Fault-tolerance tests set this to an epoch number: the chief worker process then exits hard
# at the start of that epoch, once per trial, as if its node had been lost.
FAULT_ENV = "TUMORSWEEP_FAULT_AT_EPOCH"
SUMMARY_METRICS = ("liver_dice", "liver_nsd", "tumor_dice", "tumor_nsd")


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite: the trial stops with this reason."""


class LocalSession:
    """Single-process stand-in for Ray Train's context (tests, notebooks, debugging)."""

    world_rank = 0
    world_size = 1

    def __init__(self, checkpoint_dir: str | Path | None = None) -> None:
        self.reports: list[dict[str, Any]] = []
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.device = torch.device("cpu")

    def get_checkpoint(self) -> Path | None:
        if self.checkpoint_dir and (self.checkpoint_dir / CHECKPOINT_FILE).exists():
            return self.checkpoint_dir
        return None

    def report(self, metrics: dict[str, Any], checkpoint: Path | None = None) -> None:
        self.reports.append(dict(metrics))
        if checkpoint is not None and self.checkpoint_dir is not None:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            (checkpoint / CHECKPOINT_FILE).replace(self.checkpoint_dir / CHECKPOINT_FILE)

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self.device)

    def prepare_loader(self, loader: Any) -> Any:
        return loader

    def barrier(self) -> None:
        return None


class RaySession:
    """Ray Train's context: rank, DDP wrapping, distributed sampler, checkpoints."""

    def __init__(self) -> None:
        import ray.train
        import ray.train.torch

        self._train = ray.train
        self._torch = ray.train.torch
        context = ray.train.get_context()
        self.world_rank = context.get_world_rank()
        self.world_size = context.get_world_size()
        self.device = ray.train.torch.get_device()

    def get_checkpoint(self) -> Path | None:
        checkpoint = self._train.get_checkpoint()
        if checkpoint is None:
            return None
        local = Path(tempfile.mkdtemp(prefix="tumorsweep-restore-"))
        return Path(checkpoint.to_directory(str(local)))

    def report(self, metrics: dict[str, Any], checkpoint: Path | None = None) -> None:
        ckpt = self._train.Checkpoint.from_directory(str(checkpoint)) if checkpoint else None
        self._train.report(metrics, checkpoint=ckpt)

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return self._torch.prepare_model(model)

    def prepare_loader(self, loader: Any) -> Any:
        return self._torch.prepare_data_loader(loader)

    def barrier(self) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train entry point. `loop_config` holds `trial` (a TrialConfig as JSON), `cases`,
    and optionally `tracking_uri` + `run_id` of the trial's MLflow run."""
    torch.set_num_threads(max(1, int(loop_config.get("threads", 1))))
    fit(loop_config, RaySession())


def lr_factor(epoch: int, warmup_epochs: int, epochs: int) -> float:
    """Linear warm-up from ~0 to 1 over `warmup_epochs`, then cosine to 0 at `epochs`."""
    if epoch < warmup_epochs:
        return (epoch + 1) / (warmup_epochs + 1)
    span = max(1, epochs - warmup_epochs)
    return 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup_epochs) / span))


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def _synthesis_transform(cfg: TrialConfig, cases: dict[str, Any]):
    """TumorSynthesisd for synthetic training, None for the real-tumour control."""
    if cfg.data.real_tumors or not cfg.synthesis.enabled:
        return None
    from core.synthesis import LocationModel, TumorSynthesisd, fit_location_model

    location_model = None
    if cfg.synthesis.location == "gmm":
        if cfg.synthesis.location_model:
            location_model = LocationModel.load(cfg.synthesis.location_model)
        else:
            labels = [case["label"] for case in cases.get("train_tumor", [])]
            if not labels:
                raise TumorsweepError(
                    "synthesis.location=gmm needs real-tumour training cases to fit the "
                    "location model, or synthesis.location_model pointing at a fitted JSON"
                )
            location_model = fit_location_model(
                labels,
                n_components=cfg.synthesis.gmm_components,
                covariance_type=cfg.synthesis.gmm_covariance,
                seed=cfg.seed,
            )
    return TumorSynthesisd(
        keys=("image", "label"), config=cfg.synthesis, location_model=location_model
    )


def _evaluate(model, cases, cfg: TrialConfig, device) -> list[dict[str, Any]]:
    from core.data.transforms import eval_transforms
    from core.evaluate import evaluate_cases

    preprocess = eval_transforms(cfg.data.spacing, cfg.data.window)
    return evaluate_cases(
        _unwrap(model),
        cases,
        preprocess,
        roi=cfg.eval.roi or cfg.schedule.patch_size,
        overlap=cfg.eval.overlap,
        tolerance_mm=cfg.eval.tolerance_mm,
        liver_mode=cfg.eval.liver_mode,
        postprocess=cfg.eval.postprocess,
        device=device,
    )


def _summary(rows: list[dict[str, Any]], prefix: str = "") -> dict[str, float]:
    from core.evaluate import aggregate

    if not rows:
        return {}
    summary = aggregate(rows)
    return {
        f"{prefix}{key}": float(value)
        for key, value in summary.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }


def _write_rows(rows: list[dict[str, Any]], path: Path) -> Path:
    fields = list(rows[0]) if rows else ["case"]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _save_synthesis_preview(cfg: TrialConfig, cases: dict[str, Any], path: Path) -> Path | None:
    """One training case with tumours synthesised as in training (probability forced to 1)."""
    synth_cfg = cfg.model_copy(deep=True)
    synth_cfg.synthesis.prob = 1.0
    transform = _synthesis_transform(synth_cfg, cases)
    healthy = cases.get("train", [])
    if transform is None or not healthy:
        return None
    from core.data.transforms import resampled_pair
    from core.synthesis import save_preview

    load = resampled_pair(cfg.data.spacing)
    sample = load({"image": healthy[0]["image"], "label": healthy[0]["label"]})
    transform.set_random_state(seed=cfg.seed)
    sample = transform(sample)
    save_preview(np.asarray(sample["image"][0]), np.asarray(sample["label"][0]), path)
    return path


def _build_loader(cfg: TrialConfig, cases: dict[str, Any], session) -> Any:
    from monai.data import CacheDataset, DataLoader

    from core.data.transforms import train_transforms

    train_list = cases["train_tumor"] if cfg.data.real_tumors else cases["train"]
    if not train_list:
        kind = "real-tumour" if cfg.data.real_tumors else "healthy (tumour-free)"
        raise TumorsweepError(f"no {kind} training cases in the study")
    transform = train_transforms(
        spacing=cfg.data.spacing,
        window=cfg.data.window,
        patch_size=cfg.schedule.patch_size,
        synthesis=_synthesis_transform(cfg, cases),
        num_samples=cfg.schedule.crops_per_volume,
    )
    transform.set_random_state(seed=cfg.seed * 1000 + session.world_rank)
    items = [{"image": c["image"], "label": c["label"]} for c in train_list]
    dataset = CacheDataset(items, transform, cache_rate=cfg.data.cache_rate, progress=False)
    loader = DataLoader(  # each volume yields crops_per_volume patches
        dataset,
        batch_size=cfg.schedule.batch_size // cfg.schedule.crops_per_volume,
        shuffle=True,
        num_workers=cfg.data.loader_workers,
        persistent_workers=cfg.data.loader_workers > 0,
        drop_last=False,
    )
    return session.prepare_loader(loader)


def fit(loop_config: dict[str, Any], session) -> dict[str, float]:
    """Train, validate, checkpoint and test one trial; returns the final test metrics."""
    from monai.losses import DiceCELoss

    from core.models import build

    began = time.perf_counter()
    timing = {"time_setup_s": 0.0, "time_train_s": 0.0, "time_eval_s": 0.0}
    cfg = TrialConfig.model_validate(loop_config["trial"])
    cases = loop_config["cases"]
    tracking_uri = loop_config.get("tracking_uri")
    run_id = loop_config.get("run_id")
    is_chief = session.world_rank == 0
    log_to_mlflow = bool(is_chief and tracking_uri and run_id)

    torch.manual_seed(cfg.seed + session.world_rank)
    device = session.device
    options = dict(cfg.model.options)
    if cfg.model.name.startswith("segmamba"):  # inter-slice scan depths follow the patch
        options.setdefault("patch_size", cfg.schedule.patch_size)
    model = session.prepare_model(build(cfg.model.name, pretrained=cfg.model.pretrained, **options))
    loader = _build_loader(cfg, cases, session)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.schedule.lr, weight_decay=cfg.schedule.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda e: lr_factor(e, cfg.schedule.warmup_epochs, cfg.schedule.epochs),
    )
    use_amp = cfg.schedule.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    sign = 1.0 if cfg.eval.select_mode == "max" else -1.0
    best_key = "best_" + cfg.eval.select_metric
    state = {
        "epoch": 0,
        "best_value": -math.inf,
        "best_epoch": -1,
        "best_weights": None,
        "best_val_rows": [],
    }
    restored = session.get_checkpoint()
    logged: dict[str, set[int]] = {"train": set(), "val": set()}
    if restored is not None:
        saved = torch.load(restored / CHECKPOINT_FILE, map_location="cpu", weights_only=False)
        _unwrap(model).load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state.update({k: saved[k] for k in state})
        if log_to_mlflow:  # epochs logged after this checkpoint, before the failure
            logged["train"] = tracking.logged_steps(tracking_uri, run_id, "train_loss")
            logged["val"] = tracking.logged_steps(tracking_uri, run_id, "val_liver_dice")
            tracking.log_metrics(
                tracking_uri, run_id, {"resumed_at_epoch": state["epoch"]}, step=state["epoch"]
            )

    if log_to_mlflow and restored is None:
        with tempfile.TemporaryDirectory() as tmp:
            config_path = Path(tmp) / "config.yaml"
            config_path.write_text(to_yaml(cfg))
            files = [config_path]
            preview = _save_synthesis_preview(cfg, cases, Path(tmp) / "synthesis_preview.png")
            files += [preview] if preview else []
            tracking.log_artifacts(tracking_uri, run_id, files)
            extra = _model_facts(model)
            if extra:
                tracking.log_params(tracking_uri, run_id, extra)

    validation = (
        cases.get("test", []) if cfg.eval.select_on == "test" else cases.get("validation", [])
    )
    pending_epochs: list[tuple[int, dict[str, float]]] = []
    timing["time_setup_s"] = time.perf_counter() - began
    crash_at = int(os.environ.get(FAULT_ENV, "-1"))
    for epoch in range(state["epoch"], cfg.schedule.epochs):
        if epoch == crash_at and is_chief:
            marker = Path(tempfile.gettempdir()) / f"tumorsweep-fault-{run_id or os.getpid()}"
            if not marker.exists():  # once per trial: die like a lost node, mid-trial
                marker.touch()
                os._exit(17)
        model.train()
        if hasattr(loader, "sampler") and hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        total, count, wait, start = 0.0, 0, 0.0, time.perf_counter()
        fetched = time.perf_counter()
        for batch in loader:
            wait += time.perf_counter() - fetched
            image = batch["image"].to(device)
            label = batch["label"].to(device)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                loss = loss_fn(model(image), label)
            if not torch.isfinite(loss):
                raise TrainingDivergedError(
                    f"loss became {loss.item()} at epoch {epoch} (lr "
                    f"{optimizer.param_groups[0]['lr']:.2e}); stopping this trial"
                )
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total += float(loss.detach())
            count += 1
            fetched = time.perf_counter()
        elapsed = time.perf_counter() - start
        timing["time_train_s"] += elapsed
        scheduler.step()
        epoch_metrics = {
            "train_loss": _mean_across_ranks(total / max(count, 1), device),
            "lr": optimizer.param_groups[0]["lr"],
            "epoch_seconds": elapsed,
            "data_wait_fraction": wait / elapsed if elapsed > 0 else 0.0,
        }
        pending_epochs.append((epoch, epoch_metrics))
        # Tune checks the search metric is in every report: the best so far (NaN before any).
        report = {"epoch": epoch + 1, **epoch_metrics, best_key: _best(state, sign)}

        last = epoch + 1 == cfg.schedule.epochs
        if (epoch + 1) % cfg.schedule.val_every == 0 or last:
            val_metrics: dict[str, float] = {}
            if is_chief and validation:
                evaluated = time.perf_counter()
                rows = _evaluate(model, validation, cfg, device)
                timing["time_eval_s"] += time.perf_counter() - evaluated
                val_metrics = _summary(rows, prefix="val_")
                value = val_metrics.get(cfg.eval.select_metric, math.nan)
                if math.isfinite(value) and sign * value > state["best_value"]:
                    state.update(
                        best_value=sign * value,
                        best_epoch=epoch,
                        best_weights=copy.deepcopy(_unwrap(model).state_dict()),
                        best_val_rows=rows,
                    )
            session.barrier()
            state["epoch"] = epoch + 1
            if log_to_mlflow:
                for step, values in pending_epochs:
                    if step not in logged["train"]:
                        tracking.log_metrics(tracking_uri, run_id, values, step=step)
                if epoch not in logged["val"]:
                    tracking.log_metrics(tracking_uri, run_id, val_metrics, step=epoch)
            pending_epochs.clear()
            report.update(val_metrics)
            report[best_key] = _best(state, sign)
            with tempfile.TemporaryDirectory() as tmp:
                checkpoint = None
                if is_chief:
                    checkpoint = Path(tmp)
                    torch.save(
                        {
                            "model": _unwrap(model).state_dict(),
                            "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(),
                            **state,
                        },
                        checkpoint / CHECKPOINT_FILE,
                    )
                session.report(report, checkpoint=checkpoint)
        else:
            session.report(report)

    final: dict[str, float] = {}
    if is_chief:
        if state["best_weights"] is not None:
            _unwrap(model).load_state_dict(state["best_weights"])
        evaluated = time.perf_counter()
        test_rows = _evaluate(model, cases.get("test", []), cfg, device)
        timing["time_eval_s"] += time.perf_counter() - evaluated
        final = _summary(test_rows)
        final["best_epoch"] = float(state["best_epoch"])
        final.update(timing)
        final[best_key] = _best(state, sign)
        if log_to_mlflow:
            tracking.log_metrics(tracking_uri, run_id, final, step=cfg.schedule.epochs)
            with tempfile.TemporaryDirectory() as tmp:
                files = [_write_rows(test_rows, Path(tmp) / "per_case_test.csv")]
                if state["best_val_rows"]:
                    files.append(
                        _write_rows(state["best_val_rows"], Path(tmp) / "per_case_val.csv")
                    )
                tracking.log_artifacts(tracking_uri, run_id, files)
    session.barrier()
    # No "done" key: Tune reads it as "stop this trial now".
    session.report({"epoch": cfg.schedule.epochs, **final})
    return final


def _best(state: dict[str, Any], sign: float) -> float:
    """The best validation value so far in the metric's own sign; NaN before any."""
    return sign * state["best_value"] if math.isfinite(state["best_value"]) else math.nan


def _model_facts(model: torch.nn.Module) -> dict[str, Any]:
    """Facts about the built model worth recording next to the config."""
    inner = _unwrap(model)
    facts: dict[str, Any] = {"model.parameters": sum(p.numel() for p in inner.parameters())}
    if getattr(inner, "nslices", None) is not None:
        facts["model.nslices"] = inner.nslices
    return facts


def _mean_across_ranks(value: float, device: torch.device) -> float:
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return value
    tensor = torch.tensor([value], device=device, dtype=torch.float64)
    torch.distributed.all_reduce(tensor)
    return float(tensor.item() / torch.distributed.get_world_size())


def run_local(
    cfg: TrialConfig,
    cases: dict[str, Any],
    checkpoint_dir: str | Path | None = None,
    tracking_uri: str | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    """Run one trial in this process without Ray (tests and debugging)."""
    session = LocalSession(checkpoint_dir)
    final = fit(
        {
            "trial": cfg.model_dump(mode="json"),
            "cases": cases,
            "tracking_uri": tracking_uri,
            "run_id": run_id,
        },
        session,
    )
    return {"final": final, "reports": session.reports, "params": flatten(cfg)}
