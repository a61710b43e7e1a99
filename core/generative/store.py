"""A generator folder: weights as plain state dicts (`torch.load(weights_only=True)`) and
`generator.json` (format, full config, latent scale, the cases trained on, a SHA-256 per
weight file and a content hash over all of it).

Writing is atomic (a temp folder renamed at the end: whole or absent). Reading checks, each
failure one `TumorsweepError` naming the file: the folder and every file exist, the JSON is
of this format and its config validates, every weight file has the recorded hash, and every
tensor has the shape the config's architecture needs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from tumorsweep.errors import TumorsweepError
from tumorsweep.generative.config import FORMAT, GeneratorConfig
from tumorsweep.generative.models import MODEL_NAMES, build_model
from tumorsweep.generative.released import (
    RELEASED_FILES,
    ReleasedGenerator,
    is_released_folder,
    load_released_generator,
    released_config,
)
from tumorsweep.generative.sampler import Generator
from tumorsweep.weights import load_weights_only, sha256

CONFIG_FILE = "generator.json"
WEIGHT_FILES = {name: f"{name}.pt" for name in MODEL_NAMES}


@dataclass(frozen=True)
class GeneratorInfo:
    """What `generator.json` records (weights not loaded)."""

    path: Path
    config: GeneratorConfig
    latent_scale: float
    trained_on: list[dict]
    files: dict[str, str]  # weight file -> SHA-256
    content_hash: str
    record: dict[str, Any]  # the whole JSON document

    def trained_on_keys(self) -> set[str]:
        """Names and image paths of the training cases (what the leakage guard compares)."""
        return {str(c[key]) for c in self.trained_on for key in ("case", "image") if key in c}


def _content_hash(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "content_hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def save_generator(
    folder: str | Path,
    config: GeneratorConfig,
    weights: dict[str, dict[str, torch.Tensor]],
    latent_scale: float,
    trained_on: list[dict],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the folder atomically; refuses to replace an existing one."""
    target = Path(folder)
    if target.exists():
        raise TumorsweepError(f"{target}: already exists; choose a new --out folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        files = {}
        for name, file in WEIGHT_FILES.items():
            state = {k: v.detach().cpu().contiguous() for k, v in weights[name].items()}
            torch.save(state, partial / file)
            files[file] = sha256(partial / file)
        record = {
            "format": FORMAT,
            "config": config.model_dump(mode="json"),
            "latent_scale": float(latent_scale),
            "latent_shape": [config.autoencoder.latent_channels] + [config.latent_size] * 3,
            "trained_on": trained_on,
            "files": files,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **(extra or {}),
        }
        record["content_hash"] = _content_hash(record)
        (partial / CONFIG_FILE).write_text(json.dumps(record, indent=2, sort_keys=True))
        partial.rename(target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return target


def read_generator_info(folder: str | Path) -> GeneratorInfo:
    """`generator.json` of a folder, checked (format, config, listed files present)."""
    root = Path(folder)
    if not root.is_dir():
        raise TumorsweepError(f"{root}: generator folder not found")
    config_file = root / CONFIG_FILE
    if not config_file.is_file():
        raise TumorsweepError(f"{config_file}: missing (not a generator folder, or a partial one)")
    try:
        record = json.loads(config_file.read_text())
    except (OSError, ValueError) as exc:
        raise TumorsweepError(f"{config_file}: not readable JSON ({exc})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        found = record.get("format") if isinstance(record, dict) else None
        raise TumorsweepError(
            f"{config_file}: format {found!r}, expected {FORMAT!r} (written by another "
            "version of tumorsweep: retrain with tumorsweep train-generator)"
        )
    try:
        config = GeneratorConfig.model_validate(record["config"])
        scale = float(record["latent_scale"])
        files = {str(k): str(v) for k, v in record["files"].items()}
        trained_on = list(record["trained_on"])
        content_hash = str(record["content_hash"])
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise TumorsweepError(f"{config_file}: config does not validate ({problems})") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise TumorsweepError(f"{config_file}: incomplete record ({exc!r})") from None
    if content_hash != _content_hash(record):
        raise TumorsweepError(f"{config_file}: content hash does not match (edited by hand?)")
    if set(files) != set(WEIGHT_FILES.values()):
        raise TumorsweepError(
            f"{config_file}: lists {sorted(files)}, expected {sorted(WEIGHT_FILES.values())}"
        )
    for file in WEIGHT_FILES.values():
        if not (root / file).is_file():
            raise TumorsweepError(f"{root / file}: missing (a partial generator folder)")
    return GeneratorInfo(root, config, scale, trained_on, files, content_hash, record)


_VERIFIED: dict[tuple, None] = {}


def verify_generator_files(folder: str | Path) -> GeneratorInfo:
    """Every weight file has its recorded hash and loads weights-only (no pickled code),
    without building the models: what a sweep checks before Ray starts. Remembered per file
    (path, size, mtime), so the trials of one sweep hash each file once. A folder of Chen et
    al.'s released files (`released.RELEASED_FILES`) is loaded strictly once instead."""
    if is_released_folder(folder):
        return _verify_released(Path(folder))
    info = read_generator_info(folder)
    for file in WEIGHT_FILES.values():
        path = info.path / file
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if key in _VERIFIED:
            continue
        if sha256(path) != info.files[file]:
            raise TumorsweepError(
                f"{path}: contents differ from the hash in {CONFIG_FILE} (damaged or replaced)"
            )
        load_weights_only(path)
        _VERIFIED[key] = None
    return info


def load_generator(
    folder: str | Path, device: str | torch.device = "cpu"
) -> Generator | ReleasedGenerator:
    """The generator of a folder on `device`, every file checked (see the module docstring);
    a folder of Chen et al.'s released files gives their generator (`released`)."""
    if is_released_folder(folder):
        return load_released_generator(folder, device)
    info = read_generator_info(folder)
    models = {}
    for name, file in WEIGHT_FILES.items():
        path = info.path / file
        if sha256(path) != info.files[file]:
            raise TumorsweepError(
                f"{path}: contents differ from the hash in {CONFIG_FILE} (damaged or replaced)"
            )
        state = load_weights_only(path)
        model = build_model(info.config, name)
        _check_shapes(path, model, state)
        model.load_state_dict(state)
        models[name] = model.to(device).eval().requires_grad_(False)
    return Generator(
        config=info.config,
        autoencoder=models["autoencoder"],
        denoisers={"early": models["early"], "late": models["late"]},
        latent_scale=info.latent_scale,
        trained_on=info.trained_on,
        path=str(info.path),
    )


def _verify_released(root: Path) -> GeneratorInfo:
    """The released files load strictly into their architectures (once per file version);
    what a trial reads of them: their settings, no training cases (unknown to the study)."""
    key = tuple(
        (str((root / n).resolve()), (root / n).stat().st_size, (root / n).stat().st_mtime_ns)
        for n in RELEASED_FILES
    )
    if key not in _VERIFIED:
        load_released_generator(root, "cpu")
        _VERIFIED[key] = None
    record = {"format": "chen2024-released", "files": list(RELEASED_FILES)}
    return GeneratorInfo(root, released_config(), 1.0, [], {}, "", record)


def _check_shapes(path: Path, model: torch.nn.Module, state: Any) -> None:
    """Every tensor the architecture needs, with its shape, and nothing else."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TumorsweepError(f"{path}: expected a state dict of tensors")
    wanted = model.state_dict()
    missing = sorted(set(wanted) - set(state))
    extra = sorted(set(state) - set(wanted))
    if missing or extra:
        raise TumorsweepError(
            f"{path}: tensors do not match the architecture in {CONFIG_FILE} "
            f"(missing {missing[:3]}, unexpected {extra[:3]})"
        )
    for key, tensor in wanted.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise TumorsweepError(
                f"{path}: {key} has shape {tuple(state[key].shape)}, the architecture in "
                f"{CONFIG_FILE} needs {tuple(tensor.shape)}"
            )
