"""Sliding-window inference of a segmenter (or an ensemble) on one CT, inverted to its native grid.

Windows run on the model's device (optionally under autocast); the blended logits live on the
CPU in the protocol's stitching dtype. The inversion replays the preprocessing chain backwards
with MONAI `Invertd`, so the prediction has the image file's shape and orientation whatever the
chain did (orientation, resampling, ...): `predict_image` needs no label, `predict_case` is the
same prediction checked against the case's label grid. Several models average their softmax
probabilities (`sliding_window_scores`). Two protocols (`tumorsweep.evaluate.protocol`): argmax
first and invert the uint8 labels by nearest neighbour (ours), or invert each class's logits by
linear interpolation and take the argmax on the native grid (Hu et al.), one channel at a time
so only two float32 native-grid volumes are held at once. The protocol also says how an image
smaller than the window is padded, which Gaussian blending weights are used and whether the
windows may run under autocast (`EvalProtocol`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference
from monai.networks.layers import GaussianFilter
from monai.transforms import Compose, Invertd, SpatialPadd

from tumorsweep.data.io import as_labels, load_volume
from tumorsweep.defaults import SW_BATCH_SIZE, SW_OVERLAP, SW_ROI
from tumorsweep.errors import TumorsweepError
from tumorsweep.evaluate.lesions import LesionParams
from tumorsweep.evaluate.metrics import case_metrics_and_lesions
from tumorsweep.evaluate.naming import case_name
from tumorsweep.evaluate.protocol import EvalProtocol, organ_mask, resolve_protocol

STITCH_DTYPES = {"float16": torch.float16, "float32": torch.float32}
BLEND_WEIGHTS = ("monai", "monai09")
GAUSSIAN_SIGMA_SCALE = 0.125  # MONAI's default, in 0.9 and since
MONAI09_MIN_WEIGHT = 1e-3  # MONAI 0.9's sliding window raises smaller weights to this


def monai09_gaussian_weights(roi: Sequence[int]) -> torch.Tensor:
    """MONAI 0.9's Gaussian window weights (X, Y, Z), float32, as its sliding window uses them.

    A unit impulse at n // 2 per axis, smoothed by MONAI's erf-discretised Gaussian filter
    (sigma = 0.125 n, truncated at 4 sigma), divided by its maximum, then every weight below
    max(smallest non-zero weight, 1e-3) raised to it. MONAI >= 1.0 instead samples
    exp(-x^2 / 2 sigma^2) around (n - 1) / 2: on a 96^3 window the two differ by up to 0.044.
    """
    size = tuple(int(side) for side in roi)
    impulse = torch.zeros((1, 1, *size), dtype=torch.float32)
    impulse[(0, 0, *(side // 2 for side in size))] = 1.0
    sigmas = [side * GAUSSIAN_SIGMA_SCALE for side in size]
    with torch.no_grad():
        weights = GaussianFilter(len(size), sigmas).to(dtype=torch.float32)(impulse)[0, 0]
    weights = weights / torch.max(weights)
    floor = max(weights[weights != 0].min().item(), MONAI09_MIN_WEIGHT)
    return torch.clamp(weights, min=floor)


def _check_arguments(
    image: object, stitch_dtype: str, sw_batch_size: int, blend_weights: str
) -> None:
    """One clear refusal for a sliding-window call's bad argument (before any model runs)."""
    if not isinstance(image, torch.Tensor) or image.ndim != 5:
        raise TumorsweepError(f"image: expected a (B, 1, X, Y, Z) tensor, got {_describe(image)}")
    if stitch_dtype not in STITCH_DTYPES:
        raise TumorsweepError(
            f"stitch_dtype: expected one of {sorted(STITCH_DTYPES)}, got {stitch_dtype!r}"
        )
    if int(sw_batch_size) < 1:
        raise TumorsweepError(f"sw_batch_size: expected an integer >= 1, got {sw_batch_size!r}")
    if blend_weights not in BLEND_WEIGHTS:
        raise TumorsweepError(
            f"blend_weights: expected one of {list(BLEND_WEIGHTS)}, got {blend_weights!r}"
        )


def sliding_window_logits(
    model: torch.nn.Module,
    image: torch.Tensor,
    *,
    roi: Sequence[int] = SW_ROI,
    overlap: float = SW_OVERLAP,
    sw_batch_size: int = SW_BATCH_SIZE,
    mode: str = "gaussian",
    amp: bool | torch.dtype | None = False,
    stitch_dtype: str = "float32",
    device: torch.device | str | None = None,
    blend_weights: str = "monai",
) -> torch.Tensor:
    """Blended logits (B, classes, X, Y, Z) on the CPU in `stitch_dtype`, of `image` (B, 1, ...).

    The model is put in eval mode and run without gradients on `device` (default: where its
    parameters are), `sw_batch_size` windows at a time. `amp` runs them under autocast: a
    dtype (pass the training one, `schedule.amp_dtype`) or True for torch's default of the
    device (float16 on CUDA); False / None = float32. MONAI blends in the dtype of the image it
    is given, so the image is handed over in `stitch_dtype`. `blend_weights="monai09"` blends
    Gaussian windows with MONAI 0.9's weights (`monai09_gaussian_weights`).
    """
    _check_arguments(image, stitch_dtype, sw_batch_size, blend_weights)
    dtype = STITCH_DTYPES[stitch_dtype]
    window_device = torch.device(device) if device is not None else _model_device(model)
    model.to(window_device).eval()
    autocast_dtype = amp if isinstance(amp, torch.dtype) else None

    def predict(window: torch.Tensor) -> torch.Tensor:
        autocast = (
            torch.autocast(device_type=window_device.type, dtype=autocast_dtype)
            if amp
            else contextlib.nullcontext()
        )
        with autocast:
            logits = model(window.to(window_device, torch.float32))
        return logits.to(dtype)

    weights = None
    if blend_weights == "monai09" and mode == "gaussian":
        weights = monai09_gaussian_weights(roi).to(window_device, dtype)[None, None]
    with torch.no_grad():
        return sliding_window_inference(
            image.to("cpu", dtype),
            roi_size=tuple(roi),
            sw_batch_size=int(sw_batch_size),
            predictor=predict,
            overlap=overlap,
            mode=mode,
            sw_device=window_device,
            device="cpu",
            roi_weight_map=weights,
        )


def sliding_window_scores(
    models: Sequence[torch.nn.Module],
    image: torch.Tensor,
    *,
    roi: Sequence[int] = SW_ROI,
    overlap: float = SW_OVERLAP,
    sw_batch_size: int = SW_BATCH_SIZE,
    amp: bool | torch.dtype | None = False,
    stitch_dtype: str = "float32",
    device: torch.device | str | None = None,
    blend_weights: str = "monai",
) -> torch.Tensor:
    """Per-class scores (B, classes, X, Y, Z) on the CPU of `image` under one or more models.

    One model: its blended logits, exactly what a trial's evaluation scores. Several (an
    ensemble, e.g. the folds of one configuration): the mean of their softmax probabilities
    in float32. Probabilities, not logits, so that one over-confident member cannot outvote
    the others by the size of its logits; not labels, so that confidence still counts.
    """
    if not models:
        raise TumorsweepError("models: expected at least one model, got none")
    window = dict(
        roi=roi,
        overlap=overlap,
        sw_batch_size=sw_batch_size,
        amp=amp,
        device=device,
        blend_weights=blend_weights,
    )
    if len(models) == 1:
        return sliding_window_logits(models[0], image, stitch_dtype=stitch_dtype, **window)
    total = None
    for model in models:
        logits = sliding_window_logits(model, image, stitch_dtype=stitch_dtype, **window)
        probabilities = torch.softmax(logits.to(torch.float32), dim=1)
        del logits
        total = probabilities if total is None else total.add_(probabilities)
    return total.div_(len(models))


def predict_image(
    models: torch.nn.Module | Sequence[torch.nn.Module],
    image_path: str | Path,
    preprocess: Compose,
    *,
    roi: Sequence[int] = SW_ROI,
    overlap: float = SW_OVERLAP,
    sw_batch_size: int = SW_BATCH_SIZE,
    amp: bool | torch.dtype | None = False,
    protocol: str | EvalProtocol = "tumorsweep",
    postprocess: bool = True,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Predicted labels (uint8) of one CT on its own file grid: no label file needed.

    `preprocess` is the evaluation chain; it is given the image alone (so it must allow a
    missing "label" key, as `tumorsweep.data.transforms.eval_transforms` does) and the prediction
    is inverted through it. Several models are an ensemble (`sliding_window_scores`).
    """
    path = Path(image_path)
    if not path.is_file():
        raise TumorsweepError(f"{path}: image file not found")
    networks = [models] if isinstance(models, torch.nn.Module) else list(models)
    window = dict(roi=roi, overlap=overlap, sw_batch_size=sw_batch_size, amp=amp, device=device)
    chosen = resolve_protocol(protocol)
    data = preprocess({"image": str(path)})
    labels = _native_labels(networks, data, path, preprocess, chosen, window)
    return chosen.postprocess(labels) if postprocess else labels


def predict_case(
    model: torch.nn.Module,
    case: dict,
    preprocess: Compose,
    *,
    roi: Sequence[int] = SW_ROI,
    overlap: float = SW_OVERLAP,
    sw_batch_size: int = SW_BATCH_SIZE,
    amp: bool | torch.dtype | None = False,
    protocol: str | EvalProtocol = "tumorsweep",
    postprocess: bool = True,
    device: torch.device | str | None = None,
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Predicted labels (uint8, label file's grid), stored truth (uint8) and its spacing in mm.

    `case` holds "image" and "label" paths; `preprocess` is the evaluation chain (load,
    channel first, orientation, resampling, window) that the prediction is inverted through.
    `postprocess=False` skips the protocol's post-processing. The prediction itself is
    `predict_image`'s: the same scores, inversion and post-processing.
    """
    chosen = resolve_protocol(protocol)
    image_path, label_path = _case_paths(case)
    truth, truth_affine, spacing = load_volume(label_path)
    truth = as_labels(label_path, truth)
    window = dict(roi=roi, overlap=overlap, sw_batch_size=sw_batch_size, amp=amp, device=device)
    data = preprocess({"image": str(image_path), "label": str(label_path)})
    pred = _native_labels([model], data, image_path, preprocess, chosen, window)
    if pred.shape != truth.shape:
        raise TumorsweepError(
            f"{label_path}: prediction inverted to shape {pred.shape}, label has {truth.shape}"
        )
    if postprocess:
        organ = organ_mask(case, truth.shape, truth_affine) if chosen.organ_gate else None
        pred = chosen.postprocess(pred, organ)
    return pred, truth, spacing


def _native_labels(
    models: Sequence[torch.nn.Module],
    data: dict,
    image_path: Path,
    preprocess: Compose,
    protocol: EvalProtocol,
    window: dict,
) -> np.ndarray:
    """Labels on the image's file grid from its preprocessed dict, the protocol's way:
    argmax then nearest inversion, or linear inversion of each class's scores then argmax.

    With `protocol.pad == "minimum"` the image is first padded to the window (numpy's minimum
    mode) and the inversion crops that padding off again; `window_precision == "float32"`
    overrides the caller's `amp`.
    """
    image = data["image"]
    if not isinstance(image, MetaTensor):
        raise TumorsweepError(f"{image_path}: preprocess must return a MONAI MetaTensor image")
    _check_resampling(image, image_path, protocol)
    if protocol.pad == "minimum":
        pad = SpatialPadd("image", spatial_size=tuple(window["roi"]), mode="minimum")
        image = pad({"image": image})["image"]
        preprocess = Compose([*preprocess.transforms, pad])
    settings = dict(window)
    if protocol.window_precision == "float32":
        settings["amp"] = False
    scores = sliding_window_scores(
        models,
        image.unsqueeze(0),
        stitch_dtype=protocol.stitch_dtype,
        blend_weights=protocol.blend_weights,
        **settings,
    )[0]
    if protocol.inversion == "labels_nearest":
        labels = scores.argmax(dim=0, keepdim=True).to(torch.uint8)
        del scores
        return _invert_labels(labels, image, preprocess)
    return _invert_logits_argmax(scores, image, preprocess)


def evaluate_cases(
    model: torch.nn.Module,
    cases: list[dict],
    preprocess: Compose,
    *,
    roi: Sequence[int] = SW_ROI,
    overlap: float = SW_OVERLAP,
    sw_batch_size: int = SW_BATCH_SIZE,
    amp: bool | torch.dtype | None = False,
    tolerance_mm: float = 2.0,
    protocol: str | EvalProtocol = "tumorsweep",
    postprocess: bool = True,
    device: torch.device | str | None = None,
    lesions: LesionParams | None = None,
    lesion_table: list[dict] | None = None,
) -> list[dict]:
    """One row per case: `case` (name) plus `case_metrics` of its native-grid prediction.

    `lesions` sets the lesion metrics' rules; a `lesion_table` list given gets one row per
    true lesion appended (`tumorsweep.evaluate.lesions.lesion_records`)."""
    chosen = resolve_protocol(protocol)
    rows = []
    for case in cases:
        name = case.get("case") or case_name(case["label"])
        pred, truth, spacing = predict_case(
            model,
            case,
            preprocess,
            roi=roi,
            overlap=overlap,
            sw_batch_size=sw_batch_size,
            amp=amp,
            protocol=chosen,
            postprocess=postprocess,
            device=device,
        )
        try:
            metrics, records = case_metrics_and_lesions(
                pred, truth, spacing, tolerance_mm, chosen.liver_mode, lesions, name
            )
        except TumorsweepError as exc:
            raise TumorsweepError(f"{case['label']}: {exc}") from None
        rows.append({"case": name, **metrics})
        if lesion_table is not None:
            lesion_table.extend(records)
    return rows


def _check_resampling(image: MetaTensor, image_path: Path, protocol: EvalProtocol) -> None:
    """Refuse, under a protocol that resamples as MONAI 0.9 did (hu2023), a chain that
    resampled with today's MONAI: its numbers would not be the protocol's. Build the chain
    with `EvalProtocol.transforms`. Other protocols take any chain."""
    if protocol.resample != "monai09":
        return
    for operation in image.applied_operations:
        if operation.get("class") == "SpatialResample":
            used = str((operation.get("extra_info") or {}).get("dtype")).removeprefix("torch.")
            raise TumorsweepError(
                f"{image_path}: protocol {protocol.name} resamples as MONAI 0.9 did ('monai09'), "
                f"the evaluation chain with today's Spacingd ({used!r}): build it with "
                f"PROTOCOLS[{protocol.name!r}].transforms(spacing, window)"
            )


def _invert_labels(labels: torch.Tensor, image: MetaTensor, preprocess: Compose) -> np.ndarray:
    """A (1, X, Y, Z) label map on the preprocessed grid, back on the native grid (nearest)."""
    restore = Invertd(keys="pred", transform=preprocess, orig_keys="image", nearest_interp=True)
    inverted = restore({"image": image, "pred": labels})["pred"]
    return np.asarray(inverted.numpy()[0]).round().astype(np.uint8)


def _invert_logits_argmax(
    logits: torch.Tensor, image: MetaTensor, preprocess: Compose
) -> np.ndarray:
    """Argmax on the native grid of the (C, X, Y, Z) logits inverted linearly, class by class.

    Ties go to the lowest class, as `torch.argmax` breaks them.
    """
    restore = Invertd(keys="pred", transform=preprocess, orig_keys="image", nearest_interp=False)
    best = labels = None
    for index in range(logits.shape[0]):
        channel = logits[index : index + 1].to(torch.float32)
        values = restore({"image": image, "pred": channel})["pred"].as_tensor()[0]
        if best is None:
            best, labels = values, torch.zeros(values.shape, dtype=torch.uint8)
            continue
        better = values > best
        labels[better] = index
        best[better] = values[better]
    return labels.numpy()


def _case_paths(case: dict) -> tuple[Path, Path]:
    """The image and label paths of a case, checked to exist."""
    paths = []
    for key in ("image", "label"):
        if key not in case:
            raise TumorsweepError(f"case {case!r:.120}: missing the {key!r} path")
        path = Path(case[key])
        if not path.is_file():
            raise TumorsweepError(f"{path}: {key} file not found")
        paths.append(path)
    return paths[0], paths[1]


def _model_device(model: torch.nn.Module) -> torch.device:
    """Where the model's parameters live (CPU for a parameter-free module)."""
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _describe(value: object) -> str:
    """Short description of a bad argument for an error message."""
    shape = getattr(value, "shape", None)
    return f"{type(value).__name__} of shape {tuple(shape)}" if shape is not None else repr(value)
