"""Evaluation protocols: every choice by which two evaluations of the same model differ.

"tumorsweep" is ours; "hu2023" replays `validation.py` of Hu et al. (CVPR 2023,
MrGiovanni/SyntheticTumors): the blended logits are inverted to the label's grid with linear
interpolation (`Invertd(..., nearest_interp=False)`) and only then argmax-ed; post-processing
keeps the largest 6-connected component of the liver channel (argmax == 1, tumour excluded)
and keeps tumour voxels within 30 cross dilations of it; liver is scored as label == 1.
Shared by both: sliding window with Gaussian blending, overlap and window size from the caller,
the 30-iteration dilation gate, Dice and DeepMind's surfel NSD per class on the native grid,
and float32 blending: float16 flipped 1.1e-4 of a trained model's predicted foreground and
moved per-case liver Dice / NSD by up to 1e-4 / 2.4e-4 (`benchmarks/stitching.py`), visible in
5-decimal tables, for ~25% more peak memory (19.0 vs 15.2 bytes per resampled voxel).

What `validation.py` inherits from the MONAI it pins (0.9.0) is part of "hu2023" too, each of
which moves its numbers (per case up to 1e-2 tumour Dice on resampled phantoms): the resampled
image is padded to the window with numpy's "minimum" mode (`SpatialPadd(mode="minimum")`, each
padded voxel the minimum of its own line) before the sliding window, instead of the window's
zero padding; resampling and its inversion are MONAI 0.9's `Spacingd` (float64 interpolation,
float32 affine algebra, its own output-grid rule: `tumorsweep.data.monai09`);
the Gaussian blending weights are MONAI 0.9's (an erf-discretised Gaussian centred at n//2,
clamped at >= 1e-3; MONAI >= 1.0 samples exp() centred at (n-1)/2); and the windows run in
float32 whatever the training precision (`validation.py` has no autocast).
`tests/evaluate/test_faithfulness_hu2023.py` checks the whole chain against MONAI 0.9.0 itself.

"chen2024" replays `validation.py` of Chen et al. (CVPR 2024, MrGiovanni/DiffTumor STEP3):
logits inverted linearly, then argmax, as hu2023; no component or dilation step: the liver is
an external organ mask of the case (their `organ_pseudo_swin_new/liver/<label file>`, a file on
the label's grid, its non-zero voxels) and tumour voxels are kept only inside it
(`denoise_pred`). Liver is scored as label == 1; they score the organ mask itself as the liver
(tumour voxels included), we the organ mask minus the predicted tumour (a label map holds one
class per voxel): tumour metrics are theirs exactly, liver Dice differs by those voxels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from monai.transforms import Compose

from tumorsweep.data.io import AFFINE_TOLERANCE, affine_gap, load_volume
from tumorsweep.data.transforms import eval_transforms
from tumorsweep.defaults import HU_WINDOW
from tumorsweep.errors import TumorsweepError
from tumorsweep.evaluate.postprocess import postprocess


@dataclass(frozen=True)
class EvalProtocol:
    """One evaluation protocol.

    - `inversion`: "labels_nearest" = argmax on the resampled grid, labels inverted by nearest
      neighbour; "logits_linear" = logits inverted by linear interpolation, then argmax.
    - `liver_mode`: liver for scoring, "ge1" (label >= 1, LiTS scorer) or "eq1" (label == 1).
    - `component_liver`, `connectivity`: which labels form the liver whose largest connected
      component post-processing keeps, and its connectivity (26 or 6 neighbours).
    - `stitch_dtype`: dtype the sliding-window logits are blended in ("float16" or "float32").
    - `dilation_iters`: tumours are kept within this many cross dilations of the kept liver.
    - `resample`: how the resampling to the study's spacing and its inversion compute:
      "float32"; "float64" (MONAI's `Spacingd` default); "monai09" = MONAI 0.9's `Spacingd`
      (float64 interpolation, float32 affine algebra, its output-grid rule), the public code's.
    - `pad`: how an image smaller than the window is padded: "window_zeros" = inside the
      sliding window with zeros; "minimum" = before it, with numpy's minimum mode (per line).
    - `blend_weights`: Gaussian window weights: "monai" = the installed MONAI's; "monai09" =
      MONAI 0.9's (erf-discretised, centred at n//2, clamped at >= 1e-3).
    - `window_precision`: "autocast" = windows run under autocast when the caller asks for it
      (in the training AMP dtype); "float32" = always float32, whatever the caller asks.
    - `organ_gate`: instead of the component and dilation steps, the case's organ mask (its
      `organ_mask` entry) is the liver and tumours are kept only inside it (chen2024).
    - `description`: one line for help texts and reports.
    """

    name: str
    description: str
    inversion: Literal["labels_nearest", "logits_linear"]
    liver_mode: Literal["ge1", "eq1"]
    component_liver: Literal["ge1", "eq1"]
    connectivity: Literal[6, 26]
    stitch_dtype: Literal["float16", "float32"]
    dilation_iters: int = 30
    resample: Literal["float32", "float64", "monai09"] = "float32"
    pad: Literal["window_zeros", "minimum"] = "window_zeros"
    blend_weights: Literal["monai", "monai09"] = "monai"
    window_precision: Literal["autocast", "float32"] = "autocast"
    organ_gate: bool = False

    def transforms(
        self, spacing: Sequence[float] = (1.0, 1.0, 1.0), window: Sequence[float] = HU_WINDOW
    ) -> Compose:
        """The evaluation chain (load, RAS, resample, window) with this protocol's resampling;
        the padding to the window is `tumorsweep.evaluate.inference`'s."""
        return eval_transforms(spacing, window, resample=self.resample)

    def postprocess(self, labels: np.ndarray, organ: np.ndarray | None = None) -> np.ndarray:
        """This protocol's post-processing of a 0/1/2 label map (`organ`: the case's organ
        mask on the same grid, for an `organ_gate` protocol)."""
        if self.organ_gate:
            if organ is None or organ.shape != labels.shape:
                got = "none" if organ is None else f"shape {organ.shape}"
                raise TumorsweepError(
                    f"protocol {self.name}: needs the case's organ mask on the prediction's "
                    f"grid {labels.shape}, got {got}"
                )
            return np.where(organ, np.where(labels == 2, 2, 1), 0).astype(labels.dtype)
        return postprocess(
            labels,
            self.dilation_iters,
            liver=self.component_liver,
            connectivity=self.connectivity,
        )


PROTOCOLS: dict[str, EvalProtocol] = {
    "tumorsweep": EvalProtocol(
        name="tumorsweep",
        description="argmax, labels inverted nearest; largest 26-connected liver + tumour; "
        "liver scored as label >= 1 (LiTS)",
        inversion="labels_nearest",
        liver_mode="ge1",
        component_liver="ge1",
        connectivity=26,
        stitch_dtype="float32",
    ),
    "hu2023": EvalProtocol(
        name="hu2023",
        description="Hu et al.'s validation.py with MONAI 0.9: its resampling, minimum "
        "padding to the window, MONAI 0.9 Gaussian weights, float32 windows; logits inverted "
        "linearly, then argmax; largest 6-connected component of label 1; liver = label 1",
        inversion="logits_linear",
        liver_mode="eq1",
        component_liver="eq1",
        connectivity=6,
        stitch_dtype="float32",
        resample="monai09",
        pad="minimum",
        blend_weights="monai09",
        window_precision="float32",
    ),
    "chen2024": EvalProtocol(
        name="chen2024",
        description="Chen et al.'s validation.py: logits inverted linearly, then argmax; the "
        "liver is an external organ mask per case, tumours kept only inside it; liver scored "
        "as label == 1",
        inversion="logits_linear",
        liver_mode="eq1",
        component_liver="eq1",
        connectivity=6,
        stitch_dtype="float32",
        organ_gate=True,
    ),
}

ORGAN_MASK_KEY = "organ_mask"  # a case's organ mask file (chen2024), beside "image", "label"


def organ_mask(case: dict, shape: tuple[int, ...], affine: np.ndarray | None = None) -> np.ndarray:
    """The organ mask of `case` (its `organ_mask` file, non-zero voxels) as a bool array of the
    label grid `shape`; a missing entry, a missing file, another shape or (given the label's
    `affine`) another grid fails naming it: a mask on another grid would gate the wrong
    voxels, silently."""
    path = case.get(ORGAN_MASK_KEY)
    if not path:
        raise TumorsweepError(
            f"case {case.get('case') or case.get('label')}: no organ mask (eval.organ_masks) for "
            "an organ-gated protocol"
        )
    mask, mask_affine, _ = load_volume(path)
    if mask.shape != tuple(shape):
        raise TumorsweepError(
            f"{path}: organ mask of shape {mask.shape}, but the case's label has {tuple(shape)}"
        )
    if affine is not None:
        gap = affine_gap(mask_affine, affine)
        if gap > AFFINE_TOLERANCE:
            raise TumorsweepError(
                f"{path}: organ mask's affine differs from the case's label "
                f"({case.get('label')}) by up to {gap:.4g} (tolerance {AFFINE_TOLERANCE}): "
                "it lies on another grid; resample it onto the label's"
            )
    return np.asarray(mask) > 0


def with_organ_masks(cases: list[dict], folder: str | None) -> list[dict]:
    """`cases` with their organ mask files (`organ_mask`): `folder`/<label file name>, Chen et
    al.'s layout (`organ_pseudo_swin_new/liver/liver_N.nii.gz`); "truth" = the case's own
    label file (its liver and tumour), for phantoms and tests: it gates tumours by the true
    liver, which flatters every score; None leaves the cases as they are."""
    if folder is None:
        return cases
    if folder == "truth":
        return [{**case, ORGAN_MASK_KEY: case["label"]} for case in cases]
    root = Path(folder)
    if not root.is_dir():
        raise TumorsweepError(f"eval.organ_masks: {root} is not a folder")
    return [{**case, ORGAN_MASK_KEY: str(root / Path(case["label"]).name)} for case in cases]


def resolve_protocol(protocol: str | EvalProtocol) -> EvalProtocol:
    """A protocol given by name or as an `EvalProtocol`; unknown names are an error."""
    if isinstance(protocol, EvalProtocol):
        return protocol
    if protocol not in PROTOCOLS:
        raise TumorsweepError(f"protocol: expected one of {sorted(PROTOCOLS)}, got {protocol!r}")
    return PROTOCOLS[protocol]
