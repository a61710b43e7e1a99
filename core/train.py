"""The trainer of one trial: what every Ray Train worker (or one local process) runs.

The protocol, step by step (`fit`): build the model, loss, optimiser and loader; restore the
last checkpoint, or record the trial's start; per epoch `train_epoch`; every `val_every`
epochs `validate` on the selection list (chief rank), keep the best weights by
`eval.select_metric`, `save_checkpoint`; at the end `final_test` scores the selected weights
once on the test list. Ray is reached only through a `Session` and MLflow only through a
`TrialLogger`, so every step runs in a plain process in tests.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import tempfile
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tumorsweep import tracking
from tumorsweep.config import TrialConfig, flatten, selectable_metrics, to_yaml
from tumorsweep.data.cases import REAL_TUMOR_KEY, CaseLists
from tumorsweep.errors import TumorsweepError
from tumorsweep.session import LocalSession, RaySession, Session, TuneSession
from tumorsweep.synthesis.transform import SYNTHETIC_KEY
from tumorsweep.tracking import NullLogger, TrialLogger


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite: the trial stops with this reason."""


@dataclass
class TrainState:
    """What a checkpoint holds besides the live weights: progress and the selected model."""

    epoch: int = 0
    best_value: float = -math.inf  # the selection metric, signed so that larger is better
    best_epoch: int = -1
    best_weights: dict[str, torch.Tensor] | None = None
    best_val: dict[str, float] = field(default_factory=dict)
    best_val_rows: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Trainer:
    """The built pieces of one trial on one rank."""

    cfg: TrialConfig
    cases: CaseLists
    session: Session
    logger: TrialLogger
    model: torch.nn.Module
    loss_fn: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None  # None: full precision
    loader: Any
    synthesis: Any  # TumorSynthesisd of the chain, BatchDiffTumor (on_batch), or None (real)
    timing: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(("time_setup_s", "time_train_s", "time_eval_s"), 0.0)
    )

    @property
    def is_chief(self) -> bool:
        return self.session.world_rank == 0


def train_loop_per_worker(loop_config: dict[str, Any], session_kind: str = "train") -> None:
    """Ray entry point, the only place that unpacks Ray's dict: `trial` (a TrialConfig as
    JSON), `cases` (CaseLists), `threads`, optional `tracking_uri` + `run_id`,
    `location_model` and `preview`. `session_kind`: "train" in a Ray Train worker, "tune" in
    a one-worker trial's own Tune process."""
    torch.set_num_threads(max(1, int(loop_config.get("threads", 1))))
    session = RaySession() if session_kind == "train" else TuneSession()
    uri, run_id = loop_config.get("tracking_uri"), loop_config.get("run_id")
    chief = session.world_rank == 0
    logger = tracking.MlflowTrialLogger(uri, run_id) if chief and uri and run_id else NullLogger()
    fit(
        TrialConfig.model_validate(loop_config["trial"]),
        loop_config["cases"],
        session,
        logger,
        location_model=loop_config.get("location_model"),
        preview=loop_config.get("preview", True),
    )


def fit(
    cfg: TrialConfig,
    cases: CaseLists,
    session: Session,
    logger: TrialLogger | None = None,
    location_model: Any = None,
    preview: bool = True,
) -> dict[str, float]:
    """Train, select and test one trial; returns the final test metrics."""
    began = time.perf_counter()
    trainer = build(cfg, cases, session, logger or NullLogger(), location_model)
    state = restore(trainer)
    if state is None:
        state = TrainState()
        start_trial(trainer, preview)
    logged = {name: trainer.logger.logged_steps(name) for name in _STEP_METRICS}
    trainer.timing["time_setup_s"] = time.perf_counter() - began
    pending: list[tuple[int, dict[str, float]]] = []
    for epoch in range(state.epoch, cfg.schedule.epochs):
        pending.append((epoch, train_epoch(trainer, epoch)))
        report = {"epoch": epoch + 1, **pending[-1][1], **selected_metrics(state, trainer.cfg)}
        if not is_checkpoint_epoch(cfg, epoch):
            session.report(report)
            continue
        val = validate(trainer, state, epoch) if trainer.is_chief else {}
        session.barrier()
        state.epoch = epoch + 1
        log_epochs(trainer, pending, val, epoch, logged)
        pending.clear()
        save_checkpoint(trainer, state, {**report, **val, **selected_metrics(state, trainer.cfg)})
    final = final_test(trainer, state)
    session.barrier()
    session.report({"epoch": cfg.schedule.epochs, **final})  # no "done" key: Tune stops on it
    return final


_STEP_METRICS = (tracking.TRAIN_STEP_METRIC, tracking.VAL_STEP_METRIC)


def check_trial(cfg: TrialConfig, cases: CaseLists) -> None:
    """Refuse, before any worker starts, a trial that cannot run on these cases."""
    share = cfg.data.real_share()
    both = cfg.data.semi_supervised
    arms = [("real-tumour", cases.train_tumor, share > 0 or both), ("healthy (tumour-free)",
            cases.train, share < 1)]  # fmt: skip
    for kind, arm, needed in arms:
        if needed and not arm:
            mixed = f" (data.real_fraction {share:g} needs both)" if 0 < share < 1 else ""
            mixed = " (data.semi_supervised needs both)" if both else mixed
            raise TumorsweepError(f"{cases.root}: no {kind} training cases in the study{mixed}")
    if cfg.eval.protocol == "chen2024" and not cfg.eval.organ_masks:
        raise TumorsweepError(
            "eval.protocol=chen2024 scores tumours inside an external organ mask per case: set "
            "eval.organ_masks to their folder (DiffTumor: organ_pseudo_swin_new/liver), or "
            "'truth' on phantoms"
        )
    if cfg.model.pretrained and not Path(cfg.model.pretrained).is_file():
        raise TumorsweepError(f"model.pretrained: file not found: {cfg.model.pretrained}")
    if cfg.model.pretrained:
        from tumorsweep.weights import check_weights_file

        check_weights_file(cfg.model.pretrained, "model.pretrained")  # pickled code, not torch
    synth = cfg.synthesis
    if synth.style == "difftumor" and uses_synthesis(cfg):
        from tumorsweep.difftumor.trial import check_generator

        check_generator(cfg, cases)
    if synth.location != "gmm" or not uses_synthesis(cfg):
        return
    if synth.location_model:
        from tumorsweep.synthesis import LocationModel

        model = LocationModel.load(synth.location_model)
        fitted_on = set(model.fitted_on or ()) | set(model.fitted_on_labels or ())
        leaked = sorted(fitted_on & cases.held_out())
        if leaked and not cfg.data.allow_overlap:
            raise TumorsweepError(
                f"synthesis.location_model {synth.location_model}: fitted on validation/test "
                f"cases {' '.join(leaked[:10])}; refit on training cases only (tumorsweep "
                "fit-location --split ...) or set data.allow_overlap=true"
            )
    elif not cases.train_tumor:
        raise TumorsweepError(
            "synthesis.location=gmm needs real-tumour training cases to fit the location "
            "model, or synthesis.location_model pointing at a fitted JSON"
        )


def uses_synthesis(cfg: TrialConfig) -> bool:
    """Whether some training samples get synthetic tumours (not the real-tumour control)."""
    return cfg.synthesis.enabled and cfg.data.real_share() < 1


def training_cases(cfg: TrialConfig, cases: CaseLists) -> tuple[dict, ...]:
    """The training arm: healthy cases (synthesis), real-tumour cases (the control), or both
    (0 < data.real_fraction < 1, or data.semi_supervised), each marked `real_tumor`: the
    loader's mix sampler, the healthy-crop selection and the batch synthesis read the flag.
    Real-tumour samples keep their labels: synthesis leaves a label with tumour unchanged."""
    share = cfg.data.real_share()
    healthy = tuple({**entry, REAL_TUMOR_KEY: False} for entry in cases.train)
    real = tuple({**entry, REAL_TUMOR_KEY: True} for entry in cases.train_tumor)
    if cfg.data.semi_supervised:
        return (*real, *healthy)  # the public list order: real cases, then healthy ones
    if share == 0:
        return healthy
    if share == 1:
        return real
    return (*healthy, *real)


def prepare_location_model(cfg: TrialConfig, cases: CaseLists) -> Any:
    """The GMM location model of a trial (loaded, or fitted on its training tumours), once."""
    if cfg.synthesis.location != "gmm" or not uses_synthesis(cfg):
        return None
    from tumorsweep.synthesis import LocationModel, fit_location_model

    if cfg.synthesis.location_model:
        return LocationModel.load(cfg.synthesis.location_model)
    return fit_location_model(
        [case["label"] for case in cases.train_tumor],
        n_components=cfg.synthesis.gmm_components,
        covariance_type=cfg.synthesis.gmm_covariance,
        seed=cfg.seed,
        cases=[case["case"] for case in cases.train_tumor],
        tiny_radius_mm=cfg.synthesis.gmm_tiny_radius_mm if cfg.synthesis.gmm_tiny_split else None,
    )


def build(
    cfg: TrialConfig,
    cases: CaseLists,
    session: Session,
    logger: TrialLogger,
    location_model: Any = None,
) -> Trainer:
    """Model (on the session's device, DDP-wrapped), loss, optimiser, schedule, AMP, loader."""
    from tumorsweep.data.loaders import training_loader
    from tumorsweep.models import build as build_model
    from tumorsweep.models.registry import build_options
    from tumorsweep.optim import build_optimisation

    check_trial(cfg, cases)
    torch.manual_seed(cfg.seed + session.world_rank)
    options = build_options(cfg.model.name, cfg.model.options, cfg.schedule.patch_size)
    model = session.prepare_model(build_model(cfg.model.name, cfg.model.pretrained, **options))
    loss_fn, optimizer, scheduler = build_optimisation(cfg, model)
    use_amp = cfg.schedule.amp and session.device.type == "cuda"
    amp_dtype = None
    if use_amp:
        amp_dtype = amp_precision(cfg.schedule.amp_dtype, torch.cuda.is_bf16_supported())
    synthesis = _synthesis_transform(cfg, cases, location_model, session.device)
    on_batch = cfg.synthesis.style == "difftumor"  # made on the training batch, not the volume
    loader = training_loader(
        training_cases(cfg, cases),
        cfg.data,
        patch_size=cfg.schedule.patch_size,
        batch_size=cfg.schedule.batch_size,
        crops_per_volume=cfg.schedule.crops_per_volume,
        seed=cfg.seed * 1000 + session.world_rank,
        synthesis=None if on_batch else synthesis,
        real_fraction=0.0 if cfg.data.semi_supervised else cfg.data.real_share(),
        order_seed=cfg.seed,
        rank=session.world_rank,
        world_size=session.world_size,
        cpus=torch.get_num_threads(),  # the trial's CPUs per worker (train_loop_per_worker)
        pin_memory=session.device.type == "cuda",
    )
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    return Trainer(
        cfg, cases, session, logger, model, loss_fn, optimizer, scheduler, scaler, amp_dtype,
        session.prepare_loader(loader), synthesis,
    )  # fmt: skip


def amp_precision(setting: str, bf16_supported: bool) -> torch.dtype:
    """The autocast dtype of `schedule.amp_dtype` on this GPU (float16 trains with a scaler)."""
    if setting == "bfloat16" and not bf16_supported:
        raise TumorsweepError("schedule.amp_dtype=bfloat16: this GPU does not support bfloat16")
    if setting == "auto":
        return torch.bfloat16 if bf16_supported else torch.float16
    return torch.bfloat16 if setting == "bfloat16" else torch.float16


def _synthesis_transform(
    cfg: TrialConfig, cases: CaseLists, location_model: Any, device: torch.device
) -> Any:
    """TumorSynthesisd for the loader chain (per volume, in HU), or for the difftumor style a
    `BatchDiffTumor` the trainer runs on each training batch (its generator on `device`);
    None for the real-tumour control."""
    if not uses_synthesis(cfg):
        return None
    if cfg.synthesis.style == "difftumor":
        from tumorsweep.difftumor.trial import trial_batch_synthesis

        return trial_batch_synthesis(cfg, device)
    from tumorsweep.synthesis import TumorSynthesisd

    model = location_model if location_model is not None else prepare_location_model(cfg, cases)
    return TumorSynthesisd(keys=("image", "label"), config=cfg.synthesis, location_model=model)


def restore(trainer: Trainer) -> TrainState | None:
    """The state of the last checkpoint, loaded into model, optimiser and schedule; None if
    the trial starts fresh."""
    saved = trainer.session.load_checkpoint()
    if saved is None:
        return None
    _unwrap(trainer.model).load_state_dict(saved["model"])
    trainer.optimizer.load_state_dict(saved["optimizer"])
    trainer.scheduler.load_state_dict(saved["scheduler"])
    trainer.scaler.load_state_dict(saved["scaler"])
    state = TrainState(**{name: saved[name] for name in TrainState.__dataclass_fields__})
    trainer.logger.log_metrics({tracking.RESUMED_METRIC: state.epoch}, step=state.epoch)
    return state


def start_trial(trainer: Trainer, preview: bool) -> None:
    """Record the resolved config, a synthesis preview and model facts with the trial."""
    if not trainer.logger.records:
        return
    with tempfile.TemporaryDirectory() as tmp:
        files = [Path(tmp) / tracking.CONFIG_ARTIFACT]
        files[0].write_text(to_yaml(trainer.cfg))
        if preview and trainer.synthesis is not None and trainer.cases.train:
            files.append(_synthesis_preview(trainer, Path(tmp) / tracking.PREVIEW_ARTIFACT))
        trainer.logger.log_artifacts(files)
    trainer.logger.log_params(_model_facts(trainer.model))
    if getattr(getattr(trainer.synthesis, "generator", None), "released", False):
        trainer.logger.log_params({tracking.GENERATOR_RELEASED_PARAM: True})


def train_epoch(trainer: Trainer, epoch: int) -> dict[str, float]:
    """One pass over the loader; returns the epoch's loss, lr, time and data-wait fraction."""
    model, optimizer, device = trainer.model, trainer.optimizer, trainer.session.device
    model.train()
    if hasattr(trainer.loader, "sampler") and hasattr(trainer.loader.sampler, "set_epoch"):
        trainer.loader.sampler.set_epoch(epoch)
    total, count, wait = 0.0, 0, 0.0
    patches = torch.zeros(3, dtype=torch.float64)  # patches, with tumour voxels, synthetic
    on_batch = getattr(trainer.synthesis, "on_batch", False)
    rng = np.random.default_rng([trainer.cfg.seed, trainer.session.world_rank, epoch])
    start = fetched = time.perf_counter()
    for batch in trainer.loader:
        wait += time.perf_counter() - fetched
        image, label = batch["image"].to(device), batch["label"].to(device)
        if on_batch:
            healthy = batch.get(REAL_TUMOR_KEY)
            healthy = None if healthy is None else ~torch.as_tensor(healthy, dtype=torch.bool)
            image, label, synthetic = trainer.synthesis(image, label, healthy, rng)
        else:  # synthesised per volume in the loader: the patch shows it if it holds tumour
            synthetic = torch.as_tensor(batch.get(SYNTHETIC_KEY, False), dtype=torch.bool)
        has_tumour = (label == 2).flatten(1).any(dim=1).cpu()
        synthetic = synthetic.cpu().expand_as(has_tumour) & has_tumour
        patches += torch.tensor([len(has_tumour), int(has_tumour.sum()), int(synthetic.sum())])
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=trainer.amp_dtype, enabled=bool(trainer.amp_dtype)):
            loss = trainer.loss_fn(model(image), label)
        if not torch.isfinite(loss):
            raise TrainingDivergedError(
                f"loss became {loss.item()} at epoch {epoch} (lr "
                f"{optimizer.param_groups[0]['lr']:.2e}); stopping this trial"
            )
        trainer.scaler.scale(loss).backward()
        trainer.scaler.step(optimizer)
        trainer.scaler.update()
        total += float(loss.detach())
        count += 1
        fetched = time.perf_counter()
    elapsed = time.perf_counter() - start
    trainer.timing["time_train_s"] += elapsed
    lr = optimizer.param_groups[0]["lr"]
    trainer.scheduler.step()
    seen, tumour, synthetic = _sum_across_ranks(patches, device).tolist()
    return {
        "train_loss": _mean_across_ranks(total / max(count, 1), device),
        "lr": lr,
        "epoch_seconds": elapsed,
        "data_wait_fraction": wait / elapsed if elapsed > 0 else 0.0,
        tracking.PATCH_TUMOR_FRACTION: tumour / seen if seen else 0.0,
        tracking.PATCH_SYNTHETIC_FRACTION: synthetic / seen if seen else 0.0,
    }


def is_checkpoint_epoch(cfg: TrialConfig, epoch: int) -> bool:
    """Validate and checkpoint every `val_every` epochs and after the last one."""
    return (epoch + 1) % cfg.schedule.val_every == 0 or epoch + 1 == cfg.schedule.epochs


def validate(trainer: Trainer, state: TrainState, epoch: int) -> dict[str, float]:
    """Score the selection list (chief) and keep the weights if they are the best so far."""
    cases = trainer.cases.selection_cases()
    if trainer.cases.selection == "last":  # no selection list: the latest weights are kept
        state.best_epoch, state.best_weights = epoch, None
        return {}
    if not cases:
        return {}
    started = time.perf_counter()
    rows = evaluate(trainer, cases, overlap=trainer.cfg.eval.val_overlap)
    trainer.timing["time_eval_s"] += time.perf_counter() - started
    summary = summarise(rows, prefix="val_")
    select = trainer.cfg.eval.select_metric
    sign = 1.0 if selectable_metrics(trainer.cfg.eval.lesions.size_edges_mm)[select] else -1.0
    value = summary.get(select, math.nan)
    if not math.isfinite(value) and select.startswith(("val_tumor_lesion", "val_case_")):
        raise TumorsweepError(
            f"eval.select_metric {select} is undefined on the validation cases (no case it is "
            "defined for, e.g. no tumour-free case for case_specificity or no lesion of that "
            "size): choose another metric or validation list"
        )
    if math.isfinite(value) and sign * value > state.best_value:
        state.best_value, state.best_epoch = sign * value, epoch
        state.best_weights = copy.deepcopy(_unwrap(trainer.model).state_dict())
        state.best_val, state.best_val_rows = summary, _plain(rows)
    return summary


def selected_metrics(state: TrainState, cfg: TrialConfig | None = None) -> dict[str, float]:
    """Every validation metric at the selected checkpoint, as `best_<name>` (NaN before any
    validation: Tune expects its search metric in every report)."""
    names = selectable_metrics(cfg.eval.lesions.size_edges_mm if cfg else None)
    return {f"best_{name}": state.best_val.get(name, math.nan) for name in names}


def log_epochs(
    trainer: Trainer,
    pending: list[tuple[int, dict[str, float]]],
    val: dict[str, float],
    epoch: int,
    logged: dict[str, set[int]],
) -> None:
    """Log the epochs trained since the last checkpoint and this validation (epochs a failed
    attempt already logged are skipped)."""
    for step, values in pending:
        if step not in logged[tracking.TRAIN_STEP_METRIC]:
            trainer.logger.log_metrics(values, step=step)
    if epoch not in logged[tracking.VAL_STEP_METRIC]:  # curves of results, not of counters
        trainer.logger.log_metrics(tracking.split_bookkeeping(val)[0], step=epoch)


def save_checkpoint(trainer: Trainer, state: TrainState, report: dict[str, Any]) -> None:
    """Report with a checkpoint: weights, optimiser, schedule, AMP scaler and the state (the
    chief writes it; tensors and plain values only, so it loads with weights_only=True)."""
    checkpoint = None
    if trainer.is_chief:
        checkpoint = {
            "model": _unwrap(trainer.model).state_dict(),
            "optimizer": trainer.optimizer.state_dict(),
            "scheduler": trainer.scheduler.state_dict(),
            "scaler": trainer.scaler.state_dict(),
            **{f.name: getattr(state, f.name) for f in fields(state)},
        }
    trainer.session.report(report, checkpoint=checkpoint)


def final_test(trainer: Trainer, state: TrainState) -> dict[str, float]:
    """Score the selected weights once on the test list (chief); log metrics, per-case tables
    and (`eval.log_best_model`) the scored weights with the config, for `tumorsweep predict`."""
    if not trainer.is_chief:
        return {}
    if state.best_weights is not None:
        _unwrap(trainer.model).load_state_dict(state.best_weights)
    started = time.perf_counter()
    lesion_rows: list[dict[str, Any]] = []
    test_rows = evaluate(trainer, trainer.cases.test, lesion_table=lesion_rows)
    trainer.timing["time_eval_s"] += time.perf_counter() - started
    final = summarise(test_rows)
    final["best_epoch"] = float(state.best_epoch)
    final.update(trainer.timing)
    final.update(selected_metrics(state, trainer.cfg))
    results, bookkeeping = tracking.split_bookkeeping(final)
    trainer.logger.log_metrics(results, step=trainer.cfg.schedule.epochs)
    with tempfile.TemporaryDirectory() as tmp:
        files = [_write_rows(test_rows, Path(tmp) / tracking.PER_CASE_TEST_ARTIFACT)]
        books = Path(tmp) / tracking.BOOKKEEPING_ARTIFACT
        books.write_text(json.dumps(bookkeeping, indent=1, sort_keys=True), encoding="utf-8")
        files.append(books)
        files.append(
            _write_rows(lesion_rows, Path(tmp) / tracking.PER_LESION_TEST_ARTIFACT, LESION_COLUMNS)
        )
        if state.best_val_rows:
            files.append(
                _write_rows(state.best_val_rows, Path(tmp) / tracking.PER_CASE_VAL_ARTIFACT)
            )
        if trainer.cfg.eval.log_best_model and trainer.logger.records:
            files.append(_model_folder(trainer, Path(tmp)))
        trainer.logger.log_artifacts(files)
    return final


def _model_folder(trainer: Trainer, tmp: Path) -> Path:
    """The trial's `model/` artifact folder: the weights just scored, as a CPU state dict (no
    code: it loads with weights_only=True), and the resolved config they were trained with."""
    folder = tmp / tracking.MODEL_ARTIFACT_DIR
    folder.mkdir()
    weights = {k: v.detach().cpu() for k, v in _unwrap(trainer.model).state_dict().items()}
    torch.save(weights, folder / tracking.BEST_WEIGHTS_FILE)
    (folder / tracking.CONFIG_ARTIFACT).write_text(to_yaml(trainer.cfg))
    return folder


def evaluate(
    trainer: Trainer,
    cases: tuple[dict, ...],
    overlap: float | None = None,
    lesion_table: list[dict] | None = None,
) -> list[dict[str, Any]]:
    """Per-case metric rows of the current weights on `cases` (native label grids), scored by
    the study's protocol: its evaluation chain, and windows under autocast in the training AMP
    dtype (`schedule.amp_dtype`) unless the protocol runs them in float32 (hu2023). `overlap`
    overrides `eval.overlap` (validation during training: `eval.val_overlap`); one row per
    true lesion is appended to `lesion_table` when given."""
    from tumorsweep.evaluate import PROTOCOLS, evaluate_cases
    from tumorsweep.evaluate.protocol import with_organ_masks

    cfg = trainer.cfg
    protocol = PROTOCOLS[cfg.eval.protocol]
    return evaluate_cases(
        _unwrap(trainer.model),
        with_organ_masks(list(cases), cfg.eval.organ_masks),
        protocol.transforms(cfg.data.spacing, cfg.data.window),
        roi=cfg.eval.roi or cfg.schedule.patch_size,
        overlap=cfg.eval.overlap if overlap is None else overlap,
        sw_batch_size=cfg.eval.sw_batch_size,
        amp=trainer.amp_dtype,
        tolerance_mm=cfg.eval.tolerance_mm,
        protocol=cfg.eval.protocol,
        postprocess=cfg.eval.postprocess,
        device=trainer.session.device,
        lesions=cfg.eval.lesions.params(),
        lesion_table=lesion_table,
    )


def summarise(rows: list[dict[str, Any]], prefix: str = "") -> dict[str, float]:
    """Case-set summary of metric rows (`tumorsweep.evaluate.aggregate`) plus the mean of liver and
    tumour Dice (Hu et al.'s selection metric), numeric values only, keys prefixed."""
    from tumorsweep.evaluate import aggregate

    if not rows:
        return {}
    summary = {
        key: float(value)
        for key, value in aggregate(rows).items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }
    summary["mean_dice"] = 0.5 * (summary["liver_dice"] + summary["tumor_dice"])
    return {f"{prefix}{key}": value for key, value in summary.items()}


def _synthesis_preview(trainer: Trainer, path: Path) -> Path:
    """One healthy training case with tumours synthesised as in training (probability 1)."""
    from tumorsweep.data.transforms import resampled_pair
    from tumorsweep.synthesis import TumorSynthesisd, save_preview

    cfg = trainer.cfg.model_copy(deep=True)
    cfg.synthesis.prob = 1.0
    if cfg.synthesis.style == "difftumor":
        from tumorsweep.generative import DiffTumorSynthesisd

        cfg.synthesis.difftumor.prob = 1.0
        transform = DiffTumorSynthesisd(
            ("image", "label"), config=cfg.synthesis, generator=trainer.synthesis.generator
        )
    else:
        transform = TumorSynthesisd(
            keys=("image", "label"),
            config=cfg.synthesis,
            location_model=trainer.synthesis.location_model,
        )
    case = trainer.cases.train[0]
    sample = resampled_pair(cfg.data.spacing)({"image": case["image"], "label": case["label"]})
    before = np.array(sample["image"][0])
    transform.set_random_state(seed=cfg.seed)
    sample = transform(sample)
    image, label = np.asarray(sample["image"][0]), np.asarray(sample["label"][0])
    save_preview(image, label, path, before=before, spacing=cfg.data.spacing)
    return path


LESION_COLUMNS = ("case", "lesion", "voxels", "diameter_mm", "detected", "matched_dice")


def _write_rows(
    rows: list[dict[str, Any]], path: Path, columns: tuple[str, ...] = ("case",)
) -> Path:
    fields = list(rows[0]) if rows else list(columns)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _plain(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with numpy scalars turned into Python numbers (checkpoints hold plain values)."""
    return [{k: v.item() if isinstance(v, np.generic) else v for k, v in r.items()} for r in rows]


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def _model_facts(model: torch.nn.Module) -> dict[str, Any]:
    """Facts about the built model worth recording next to the config."""
    from tumorsweep.models import count_parameters

    inner = _unwrap(model)
    facts: dict[str, Any] = {"model.parameters": count_parameters(inner)}
    if getattr(inner, "nslices", None) is not None:
        facts["model.nslices"] = inner.nslices
    return facts


def _sum_across_ranks(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Element-wise sum of a small CPU tensor over the DDP ranks (itself without DDP)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return values
    tensor = values.to(device)
    torch.distributed.all_reduce(tensor)
    return tensor.cpu()


def _mean_across_ranks(value: float, device: torch.device) -> float:
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return value
    tensor = torch.tensor([value], device=device, dtype=torch.float64)
    torch.distributed.all_reduce(tensor)
    return float(tensor.item() / torch.distributed.get_world_size())


def run_local(
    cfg: TrialConfig,
    cases: CaseLists,
    checkpoint_dir: str | Path | None = None,
    logger: TrialLogger | None = None,
) -> dict[str, Any]:
    """Run one trial in this process without Ray (tests, notebooks, debugging)."""
    session = LocalSession(checkpoint_dir)
    final = fit(cfg, cases, session, logger, prepare_location_model(cfg, cases))
    return {"final": final, "reports": session.reports, "params": flatten(cfg)}
