"""The chen2024 evaluation protocol (DiffTumor's STEP3 validation.py): the liver is an external
organ mask per case, tumours are kept only inside it; and the DiffTumor STEP3 preset.

Reference: the published `denoise_pred` written from its description as one-hot channel
arithmetic (liver channel := organ mask, tumour channel := organ * predicted tumour channel);
none of our post-processing is called for it.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from tumorsweep.config import PRESETS, flatten, make_config
from tumorsweep.data.cases import CaseLists, resolve_cases
from tumorsweep.data.transforms import eval_transforms
from tumorsweep.errors import TumorsweepError
from tumorsweep.evaluate import PROTOCOLS, evaluate_cases
from tumorsweep.evaluate.protocol import with_organ_masks


def _denoise_pred_reference(pred: np.ndarray, organ: np.ndarray) -> np.ndarray:
    """Chen et al.'s denoise_pred on one-hot channels (3, X, Y, Z)."""
    out = np.zeros_like(pred)
    out[1] = organ == 1
    out[2] = out[1] * pred[2]
    out[0] = 1 - np.logical_or(out[1], out[2])
    return out


def test_chen2024_keeps_tumours_inside_the_organ_mask_only() -> None:
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 3, size=(12, 10, 8)).astype(np.uint8)
    organ = rng.random((12, 10, 8)) < 0.5
    ours = PROTOCOLS["chen2024"].postprocess(pred, organ)
    onehot = np.eye(3, dtype=np.uint8)[pred].transpose(3, 0, 1, 2)
    theirs = _denoise_pred_reference(onehot, organ.astype(np.uint8))
    assert np.array_equal(ours == 2, theirs[2] == 1)  # tumour: exactly theirs
    # liver: theirs is the whole organ (tumour included); ours the organ minus the tumour
    assert np.array_equal(ours >= 1, theirs[1] == 1)
    assert np.array_equal(ours == 1, (theirs[1] == 1) & (theirs[2] == 0))
    with pytest.raises(TumorsweepError, match="needs the case's organ mask"):
        PROTOCOLS["chen2024"].postprocess(pred, None)


class _AllTumour(torch.nn.Module):
    """Predicts tumour everywhere (constant logits favouring class 2)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros((x.shape[0], 3, *x.shape[2:]), dtype=x.dtype, device=x.device)
        logits[:, 2] = 1.0
        return logits


@pytest.fixture(scope="module")
def cases(phantom_dir: Path) -> CaseLists:
    return resolve_cases(make_config("demo", {"data.root": str(phantom_dir)}).data)


def test_chen2024_scores_inside_the_organ_masks_of_a_folder(
    cases: CaseLists, tmp_path: Path
) -> None:
    """A model that calls every voxel tumour, gated by each case's organ mask (here its true
    liver, written to a folder as DiffTumor lays out organ_pseudo_swin_new/liver/): tumour Dice
    is 2|T| / (|liver + tumour| + |T|), T the true tumour."""
    folder = tmp_path / "liver"
    folder.mkdir()
    test = list(cases.test[:2])
    for case in test:
        label = nib.load(case["label"])
        organ = (np.asarray(label.dataobj) >= 1).astype(np.uint8)
        nib.save(nib.Nifti1Image(organ, label.affine), folder / Path(case["label"]).name)
    rows = evaluate_cases(
        _AllTumour(),
        with_organ_masks(test, str(folder)),
        eval_transforms((2.0, 2.0, 2.0)),
        roi=(32, 32, 32),
        overlap=0.0,
        protocol="chen2024",
    )
    for case, row in zip(test, rows, strict=True):
        truth = np.asarray(nib.load(case["label"]).dataobj)
        tumour, organ = int((truth == 2).sum()), int((truth >= 1).sum())
        assert row["tumor_dice"] == pytest.approx(2 * tumour / (organ + tumour))
    truth_rows = evaluate_cases(
        _AllTumour(), with_organ_masks(test, "truth"), eval_transforms((2.0, 2.0, 2.0)),
        roi=(32, 32, 32), overlap=0.0, protocol="chen2024",
    )  # fmt: skip
    assert [r["tumor_dice"] for r in truth_rows] == [r["tumor_dice"] for r in rows]


def test_organ_masks_missing_or_misshapen_fail_naming_the_file(
    cases: CaseLists, tmp_path: Path
) -> None:
    case = dict(cases.test[0])
    with pytest.raises(TumorsweepError, match="is not a folder"):
        with_organ_masks([case], str(tmp_path / "nowhere"))
    kwargs = dict(roi=(32, 32, 32), overlap=0.0, protocol="chen2024")
    with pytest.raises(TumorsweepError, match="file not found"):
        evaluate_cases(_AllTumour(), with_organ_masks([case], str(tmp_path)),
                       eval_transforms((2.0, 2.0, 2.0)), **kwargs)  # fmt: skip
    small = tmp_path / Path(case["label"]).name
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.uint8), np.eye(4)), small)
    with pytest.raises(TumorsweepError, match=r"organ mask of shape \(4, 4, 4\)"):
        evaluate_cases(_AllTumour(), with_organ_masks([case], str(tmp_path)),
                       eval_transforms((2.0, 2.0, 2.0)), **kwargs)  # fmt: skip
    label = nib.load(case["label"])
    moved = label.affine.copy()
    moved[2, 3] += 3.0  # the label's own voxels, 3 mm up: the same shape on another grid
    nib.save(nib.Nifti1Image(np.asarray(label.dataobj), moved), small)
    with pytest.raises(TumorsweepError, match=r"affine differs from the case's label .* up to 3"):
        evaluate_cases(_AllTumour(), with_organ_masks([case], str(tmp_path)),
                       eval_transforms((2.0, 2.0, 2.0)), **kwargs)  # fmt: skip


def test_chen2024_preset_cites_every_value_and_matches_the_yaml() -> None:
    """core/reference/presets/chen2024.yaml: every value with its source and kind; the plain
    dict in PRESETS is the same values; the preset builds a valid config."""
    import tumorsweep

    path = Path(tumorsweep.__file__).parent / "reference" / "presets" / "chen2024.yaml"
    document = yaml.safe_load(path.read_text())
    assert document["name"] == "chen2024" and document["description"]
    values = document["values"]
    for field, entry in values.items():
        assert set(entry) == {"value", "source", "kind"}, field
        assert entry["kind"] in ("paper", "command", "code-default", "tumorsweep"), field
        assert entry["source"].strip(), field
    flat = {field: entry["value"] for field, entry in values.items()}
    assert PRESETS["chen2024"] == flat  # the preset is loaded from this file
    built = flatten(make_config("chen2024"))
    assert all(json.dumps(built[k]) == json.dumps(v) for k, v in flat.items())
    cfg = make_config("chen2024", {"eval.organ_masks": "truth"})
    assert cfg.data.window == (-175.0, 250.0) and cfg.schedule.batch_size == 12
    assert cfg.schedule.epochs == 2000 and cfg.schedule.val_every == 50
    assert cfg.schedule.lr == 4e-4 and not cfg.schedule.amp
    assert cfg.synthesis.difftumor.ddim_steps == 50 and cfg.eval.select_metric == "val_tumor_dice"
    assert cfg.data.loader_workers == 12 and cfg.data.cache_rate == 1.0
    assert cfg.data.semi_supervised and cfg.data.healthy_crop_organ_mm == 30.0
