"""Where a trial's training loop runs: its rank, device, DDP wrapping and checkpoint storage.

`Session` is the small protocol the trainer talks to; `RaySession` is Ray Train's worker
context (multi-worker DDP trials), `TuneSession` a one-worker trial in its own Tune process,
`LocalSession` a single process without Ray (tests, notebooks, debugging). Checkpoints are plain
dicts of tensors and Python numbers saved with `torch.save` and read back with
`torch.load(weights_only=True)`: a checkpoint on shared storage cannot run code on a worker.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Protocol

import torch

CHECKPOINT_FILE = "state.pt"


class Session(Protocol):
    """What the trainer needs from where it runs."""

    world_rank: int
    world_size: int
    device: torch.device

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The latest checkpoint's state, or None when the trial starts fresh."""

    def report(self, metrics: dict[str, Any], checkpoint: dict[str, Any] | None = None) -> None:
        """Report metrics (every rank), optionally with a checkpoint state (chief only)."""

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move the model to the device (and wrap it for DDP)."""

    def prepare_loader(self, loader: Any) -> Any:
        """Shard the loader across ranks."""

    def barrier(self) -> None:
        """Wait for every rank."""


def save_state(state: dict[str, Any], folder: Path) -> Path:
    """Write a checkpoint state into `folder` (atomically: a temp file, then a rename)."""
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{CHECKPOINT_FILE}.partial"
    torch.save(state, partial)
    return partial.replace(folder / CHECKPOINT_FILE)


def load_state(folder: Path) -> dict[str, Any]:
    """Read a checkpoint state; tensors and plain Python values only (weights_only)."""
    from tumorsweep.weights import load_weights_only

    return load_weights_only(folder / CHECKPOINT_FILE, "checkpoint")


class _OneProcess:
    """What a session of a single training process does: no DDP, no sampler, no barrier."""

    world_rank = 0
    world_size = 1
    device: torch.device

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self.device)

    def prepare_loader(self, loader: Any) -> Any:
        return loader

    def barrier(self) -> None:
        return None


class LocalSession(_OneProcess):
    """Single-process stand-in for Ray Train's context; checkpoints go to `checkpoint_dir`."""

    def __init__(self, checkpoint_dir: str | Path | None = None) -> None:
        self.reports: list[dict[str, Any]] = []
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.device = torch.device("cpu")

    def load_checkpoint(self) -> dict[str, Any] | None:
        if self.checkpoint_dir and (self.checkpoint_dir / CHECKPOINT_FILE).exists():
            return load_state(self.checkpoint_dir)
        return None

    def report(self, metrics: dict[str, Any], checkpoint: dict[str, Any] | None = None) -> None:
        self.reports.append(dict(metrics))
        if checkpoint is not None and self.checkpoint_dir is not None:
            save_state(checkpoint, self.checkpoint_dir)


class _RayCheckpoints:
    """Checkpoints and reports through a Ray API (`ray.train` or `ray.tune`: both take a
    folder Checkpoint and give it back as a directory), shared by the two Ray sessions."""

    _api: Any

    def load_checkpoint(self) -> dict[str, Any] | None:
        checkpoint = self._api.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as folder:  # a local copy, if any, is removed after
            return load_state(Path(folder))

    def report(self, metrics: dict[str, Any], checkpoint: dict[str, Any] | None = None) -> None:
        if checkpoint is None:
            self._api.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="tumorsweep-ckpt-") as folder:
            save_state(checkpoint, Path(folder))  # report() persists it to storage before
            self._api.report(metrics, checkpoint=self._api.Checkpoint.from_directory(folder))


class RaySession(_RayCheckpoints):
    """Ray Train's context: rank, DDP wrapping, distributed sampler, checkpoints."""

    def __init__(self) -> None:
        import ray.train
        import ray.train.torch

        self._api = ray.train
        self._torch = ray.train.torch
        context = ray.train.get_context()
        self.world_rank = context.get_world_rank()
        self.world_size = context.get_world_size()
        self.device = ray.train.torch.get_device()

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return self._torch.prepare_model(model)

    def prepare_loader(self, loader: Any) -> Any:
        return self._torch.prepare_data_loader(loader)

    def barrier(self) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()


class TuneSession(_RayCheckpoints, _OneProcess):
    """A one-worker trial inside its own Ray Tune process: rank 0 of 1, the GPU Ray gave the
    trial (if any), checkpoints through Tune (a retried trial resumes from the last one)."""

    def __init__(self) -> None:
        import ray
        from ray import tune

        self._api = tune
        self.device = torch.device("cuda:0" if ray.get_gpu_ids() else "cpu")
