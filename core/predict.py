"""Segment new CTs with a trial's selected weights: no label, each CT's own grid, volumes.

A `TrainedModel` is a trial's network with the weights it was scored with and the resolved
config that trained it (`config.yaml`): resampling spacing, HU window, sliding-window size and
overlap, evaluation protocol and post-processing all come from there, so a prediction is the
one the trial's own test scored. Several models form an ensemble (their softmax
probabilities are averaged, `tumorsweep.evaluate.inference.sliding_window_scores`) and must agree
on every one of those settings. Checks come first and name the file or field: inputs must be
readable 3-D CTs in Hounsfield units, and weights must load with `torch.load(weights_only=True)`
into the config's network. No MLflow here: the CLI turns runs and registered models into
local files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
import yaml
from pydantic import ValidationError
from scipy import ndimage

from tumorsweep.config import TrialConfig, format_validation_error
from tumorsweep.data.io import open_nifti, resolve_path, voxels
from tumorsweep.errors import TumorsweepError
from tumorsweep.evaluate.naming import NIFTI_SUFFIXES, case_name

LABEL_SUFFIX = ".nii.gz"
VOLUME_COLUMNS = ("case", "image", "labels", "liver_ml", "tumor_ml", "tumor_count")
# Tumours are counted as 26-connected components of label 2 (diagonal contact joins them).
TUMOR_STRUCTURE = np.ones((3, 3, 3), bool)


@dataclass(frozen=True)
class TrainedModel:
    """A trial's network holding its selected weights, and the config that trained it."""

    source: str  # what the user named: a run id, a models:/ URI or a checkpoint path
    config: TrialConfig
    network: torch.nn.Module


@dataclass(frozen=True)
class InferenceSettings:
    """How a trial's evaluation turned a CT into labels (shared by an ensemble's members)."""

    spacing: tuple[float, float, float]
    window: tuple[float, float]
    roi: tuple[int, int, int]
    overlap: float
    sw_batch_size: int
    protocol: str
    postprocess: bool
    amp: bool
    amp_dtype: str = "auto"

    @classmethod
    def of(cls, cfg: TrialConfig) -> InferenceSettings:
        """The settings a trial's `tumorsweep.train.evaluate` used."""
        return cls(
            spacing=tuple(cfg.data.spacing),
            window=tuple(cfg.data.window),
            roi=tuple(cfg.eval.roi or cfg.schedule.patch_size),
            overlap=cfg.eval.overlap,
            sw_batch_size=cfg.eval.sw_batch_size,
            protocol=cfg.eval.protocol,
            postprocess=cfg.eval.postprocess,
            amp=cfg.schedule.amp,
            amp_dtype=cfg.schedule.amp_dtype,
        )


def read_config(path: str | Path) -> TrialConfig:
    """A trial's resolved `config.yaml`, validated; problems name the file and the field.

    A trial writes every field, so one without `synthesis.texture.draws` was logged before
    that field existed, when every event drew its texture's scale, base and u0 afresh: it is
    read as `per_event` (what it ran; its swept u0 range stays valid)."""
    file = Path(path)
    if not file.is_file():
        raise TumorsweepError(f"{file}: config file not found")
    try:
        tree = yaml.safe_load(file.read_text())
        texture = (tree.get("synthesis") or {}).get("texture") if isinstance(tree, dict) else None
        if isinstance(texture, dict) and "draws" not in texture:
            texture["draws"] = "per_event"
        return TrialConfig.model_validate(tree)
    except yaml.YAMLError as exc:
        raise TumorsweepError(f"{file}: not valid YAML ({' '.join(str(exc).split())})") from None
    except ValidationError as exc:
        raise TumorsweepError(f"{file}: {format_validation_error(exc)}") from None


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a weights file (`model/best_weights.pt`), a trainer checkpoint
    (`state.pt`: its selected weights, else its latest) or a released checkpoint of the
    public code (`{'epoch', 'best_acc', 'state_dict', 'optimizer', 'scheduler'}`); loaded
    with weights_only=True (`tumorsweep.models.checkpoints`), so a file holding code is
    refused rather than run."""
    from tumorsweep.models.checkpoints import read_state_dict

    return read_state_dict(path)


def load_trained(weights: str | Path, config: str | Path, source: str) -> TrainedModel:
    """The config's network with the checkpoint's weights; a checkpoint of another network
    (missing, unexpected or differently shaped parameters) is an error naming both files."""
    from tumorsweep.models import build
    from tumorsweep.models.checkpoints import match_keys
    from tumorsweep.models.registry import build_options

    cfg = read_config(config)
    state = read_weights(weights)
    options = build_options(cfg.model.name, cfg.model.options, cfg.schedule.patch_size)
    network = build(cfg.model.name, None, **options)  # the weights replace any pretraining
    state = match_keys(state, network)  # published Swin names -> MONAI's
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())
        raise TumorsweepError(
            f"{weights}: does not match model.name={cfg.model.name} (options "
            f"{cfg.model.options}) of {config}: {detail[:400]}"
        ) from None
    return TrainedModel(source, cfg, network.eval())


def shared_settings(models: Sequence[TrainedModel]) -> InferenceSettings:
    """The one set of inference settings of an ensemble; members that differ are an error."""
    if not models:
        raise TumorsweepError("no model given: pass --run, --model or --checkpoint")
    first = InferenceSettings.of(models[0].config)
    for model in models[1:]:
        other = InferenceSettings.of(model.config)
        for name, value in vars(first).items():
            if vars(other)[name] != value:
                raise TumorsweepError(
                    f"{model.source}: {name} {vars(other)[name]!r} differs from {value!r} of "
                    f"{models[0].source}; an ensemble needs one preprocessing and protocol"
                )
    return first


def find_images(inputs: Sequence[str | Path]) -> list[Path]:
    """The CT files named by `inputs` (files, or folders of .nii/.nii.gz), each checked to be
    a 3-D CT; two inputs with one case name are an error (their labels would collide)."""
    images: list[Path] = []
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            found = sorted(
                p
                for p in path.iterdir()
                if p.name.endswith(NIFTI_SUFFIXES) and not p.name.startswith(".")
            )
            if not found:
                raise TumorsweepError(f"--images {path}: no .nii or .nii.gz files in the folder")
            images += found
        elif path.name.endswith(NIFTI_SUFFIXES) or not path.exists():
            images.append(path)
        else:
            raise TumorsweepError(f"--images {path}: not a NIfTI file (.nii or .nii.gz)")
    seen: dict[str, Path] = {}
    for image in images:
        name = case_name(image)
        if name in seen:
            raise TumorsweepError(f"--images: case {name} twice ({seen[name]}, {image})")
        seen[name] = image
        check_ct(image)
    return images


def check_ct(path: str | Path) -> None:
    """A readable 3-D volume of finite values that is not a 0/1/2 label map."""
    image = open_nifti(path)
    data = voxels(image, path)
    if data.size and data.min() >= 0 and data.max() <= 2 and np.array_equal(data, np.round(data)):
        raise TumorsweepError(
            f"{path}: holds only the values 0, 1, 2: a label map, not a CT in Hounsfield units"
        )


def label_path(image: str | Path, out_dir: str | Path) -> Path:
    """Where the labels of `image` go: `<out_dir>/<case>.nii.gz`."""
    return Path(out_dir) / f"{case_name(image)}{LABEL_SUFFIX}"


def check_out_dir(
    out_dir: str | Path, images: Sequence[Path], inputs: Sequence[str | Path]
) -> None:
    """`out_dir` must be a folder (or creatable) whose outputs overwrite no input, and not
    a folder of inputs (the labels would be taken for CTs next time)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise TumorsweepError(f"--out {out}: is a file, not a folder")
    resolved = resolve_path(out)
    for given in inputs:
        if Path(given).is_dir() and Path(given).resolve() == resolved:
            raise TumorsweepError(f"--out {out}: is an --images folder; write labels elsewhere")
    for image in images:
        if label_path(image, resolved) == resolve_path(image):
            raise TumorsweepError(f"--out {out}: would overwrite the input {image}")


def predict_ct(
    models: Sequence[TrainedModel], image: str | Path, device: torch.device | str = "cpu"
) -> np.ndarray:
    """Labels (uint8 0/1/2) of one CT on its own grid, predicted as the models' trial scored."""
    from tumorsweep.evaluate.inference import predict_image
    from tumorsweep.evaluate.protocol import resolve_protocol

    settings = shared_settings(models)
    device = torch.device(device)
    return predict_image(
        [model.network for model in models],
        image,
        resolve_protocol(settings.protocol).transforms(settings.spacing, settings.window),
        roi=settings.roi,
        overlap=settings.overlap,
        sw_batch_size=settings.sw_batch_size,
        amp=_autocast_dtype(settings.amp_dtype) if settings.amp and device.type == "cuda" else None,
        protocol=settings.protocol,
        postprocess=settings.postprocess,
        device=device,
    )


def _autocast_dtype(setting: str) -> torch.dtype:
    """The CUDA autocast dtype the trial trained in (`schedule.amp_dtype`; auto = bfloat16
    where the GPU supports it), so prediction windows run as the trial's evaluation ran them."""
    if setting == "float16" or (setting == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


def save_labels(labels: np.ndarray, like: str | Path, path: str | Path) -> Path:
    """Write labels as uint8 NIfTI on the grid of the CT `like`: its shape, affine, qform and
    sform (so they open over the CT in 3D Slicer or ITK-SNAP); nibabel drops the CT's intensity
    scaling for a new image, so the stored values are the labels."""
    reference = open_nifti(like)
    if labels.shape != reference.shape[:3]:
        raise TumorsweepError(
            f"{like}: labels of shape {labels.shape} do not fit its grid {reference.shape[:3]}"
        )
    header = reference.header.copy()
    header.set_data_dtype(np.uint8)
    header.set_data_shape(labels.shape)
    image = nib.Nifti1Image(labels.astype(np.uint8, copy=False), reference.affine, header)
    image.header["cal_min"], image.header["cal_max"] = 0, 2
    qform, qcode = reference.get_qform(coded=True)
    sform, scode = reference.get_sform(coded=True)
    if qform is not None:
        image.set_qform(qform, int(qcode))
    if sform is not None:
        image.set_sform(sform, int(scode))
    nib.save(image, str(path))
    return Path(path)


def label_volumes(labels: np.ndarray, affine: np.ndarray) -> dict[str, Any]:
    """Liver volume (labels 1 and 2: the organ with its tumours) and tumour volume (label 2) in
    ml, and the number of tumours (26-connected components of label 2)."""
    voxel_ml = abs(float(np.linalg.det(np.asarray(affine, dtype=float)[:3, :3]))) / 1000.0
    tumour = labels == 2
    _, count = ndimage.label(tumour, structure=TUMOR_STRUCTURE)
    return {
        "liver_ml": int(np.count_nonzero(labels >= 1)) * voxel_ml,
        "tumor_ml": int(np.count_nonzero(tumour)) * voxel_ml,
        "tumor_count": int(count),
    }
