"""The segmentation checkpoints the authors released, and how each was evaluated.

One `ReleasedCheckpoint` per file: where it sits in the downloaded folder, which registry
backbone loads it, what it was trained on, which evaluation reproduces its published numbers
(resampling, window, sliding window, protocol, evaluation set) and which published column
(core/reference/published.yaml) reports them. Nothing is downloaded here: `download` is the
address the public README gives.

Sources. Hu et al. CVPR 2023 (MrGiovanni/SyntheticTumors): README "Model" table (ten files,
all named `model.pt`; `runs.tar.gz` holds them as `runs/<logdir>/model.pt`), training
commands (README "2. Train segmentation models": `--logdir runs/{synt,real}.{pretrain,
no_pretrain}.{unet,swin_unetrv2_<size>}`, `--json_dir datafolds/healthy.json` or
`datafolds/lits.json`, `--use_pretrained`), evaluation commands (README "3. Evaluation":
`validation.py --val_overlap=0.75`, 1 mm spacing, window [-21, 189], roi 96^3). Both training
lists validate (select the checkpoint) on the 22 Hu's Val cases they report on. DiffTumor
(Chen et al. CVPR 2024, MrGiovanni/DiffTumor): README "3. Train Segmentation Model" (files
`{unet,nnunet,swinunetr}_synt_liver_tumors.pt`; Swin-UNETR `--swin_type` default base, no
pretraining), STEP3 `validation.py` (1 mm, window [-175, 250], overlap 0.75, roi 96^3),
trained on fold 0 (`cross_eval/liver_aug_data_fold/real_tumor_train_0.txt`) and selected on
its validation list (Chen's Val fold 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tumorsweep.defaults import DIFFTUMOR_HU_WINDOW, HU_WINDOW, SW_OVERLAP, SW_ROI
from tumorsweep.errors import TumorsweepError

HU_REPO = "MrGiovanni/SyntheticTumors"
DIFFTUMOR_REPO = "MrGiovanni/DiffTumor"
HU_TABLES = {
    "synthetic": "AI model trained by synthetic tumors (Downloaded, control experiment)",
    "real": "AI model trained by real tumors for comparison (Downloaded, control experiment)",
}
# LiTS case numbers in DiffTumor's fold-0 liver training list (real tumours): 17 of Hu's Val.
DIFFTUMOR_FOLD0_TRAIN = (
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 14, 16, 17, 18, 20, 21, 23, 24, 25, 27, 28, 30, 32,
    33, 34, 35, 36, 37, 38, 39, 40, 41, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56,
    57, 59, 60, 62, 63, 64, 65, 67, 68, 69, 70, 72, 74, 75, 77, 78, 79, 80, 81, 83, 84, 85, 89,
    90, 91, 92, 93, 94, 95, 96, 99, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111,
    113, 114, 115, 116, 117, 118, 120, 121, 122, 123, 124, 125, 126, 127, 130,
)  # fmt: skip
# Hu et al.'s training lists: datafolds/lits.json (real) and the 11 tumour-free LiTS cases of
# datafolds/healthy.json (synthetic); neither holds a Hu's Val case.
HU_REAL_TRAIN = (
    0, 1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 18, 20, 22, 23, 24, 25, 26, 27, 28, 29, 30,
    31, 32, 34, 35, 36, 37, 38, 39, 40, 41, 43, 44, 45, 46, 47, 53, 54, 55, 56, 57, 58, 59, 60,
    61, 63, 65, 67, 69, 71, 72, 73, 75, 76, 77, 79, 80, 81, 82, 83, 84, 85, 86, 88, 89, 90, 91,
    92, 93, 94, 96, 97, 98, 100, 101, 102, 103, 104, 105, 106, 108, 109, 110, 112, 113, 114,
    116, 117, 118, 120, 122, 124, 125, 126, 128, 129, 130,
)  # fmt: skip
HU_SYNTHETIC_TRAIN = (32, 34, 38, 41, 47, 89, 91, 105, 106, 114, 115)


@dataclass(frozen=True)
class ReleasedCheckpoint:
    """One released file and the evaluation that reproduces its published numbers."""

    file: str  # path inside the downloaded folder
    publisher: str  # repository whose README links it
    download: str  # the README's link (not fetched by tumorsweep)
    backbone: str  # registry name
    training: str  # "synthetic" or "real" tumours
    pretrained: bool  # self-supervised Swin encoder (model_swinvit.pt) before training
    style: str = "hu"  # tumour synthesis of the synthetic runs: hu, difftumor
    options: dict[str, Any] = field(default_factory=dict)  # registry overrides
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    window: tuple[float, float] = HU_WINDOW
    roi: tuple[int, int, int] = SW_ROI
    overlap: float = SW_OVERLAP
    protocol: str = "hu2023"
    eval_set: str = "hu-val"  # where its published numbers were measured
    selected_on: str = "hu-val"  # where the checkpoint was picked (validation list)
    training_cases: tuple[int, ...] = ()  # LiTS case numbers it trained on
    published_table: str | None = None  # table of core/reference/published.yaml
    published_label: str | None = None  # its column there

    @property
    def name(self) -> str:
        """A short name for logs and run names: the file's folder and stem."""
        return self.file.removesuffix(".pt").replace("/model", "")

    def overrides(self) -> dict[str, Any]:
        """Dotted config fields of this evaluation (on top of the paper preset)."""
        values: dict[str, Any] = {
            "model.name": self.backbone,
            "model.options": dict(self.options),
            "model.pretrained": "model_swinvit.pt" if self.pretrained else None,
            "data.spacing": list(self.spacing),
            "data.window": list(self.window),
            "data.real_fraction": 1.0 if self.training == "real" else 0.0,
            "synthesis.style": self.style,
            "eval.overlap": self.overlap,
            "eval.protocol": self.protocol,
            "schedule.patch_size": list(self.roi),
        }
        return values


def _hu(
    training: str, backbone: str, pretrained: bool, label: str, link: str
) -> ReleasedCheckpoint:
    size = backbone.removeprefix("swin_unetr_")
    logdir = "unet" if backbone == "unet" else f"swin_unetrv2_{size}"
    pretrain = "pretrain" if pretrained else "no_pretrain"
    return ReleasedCheckpoint(
        file=f"{training[:4]}.{pretrain}.{logdir}/model.pt",
        publisher=HU_REPO,
        download=f"https://www.dropbox.com/s/{link}/model.pt",
        backbone=backbone,
        training="synthetic" if training == "synt" else "real",
        pretrained=pretrained,
        training_cases=HU_SYNTHETIC_TRAIN if training == "synt" else HU_REAL_TRAIN,
        published_table=HU_TABLES["synthetic" if training == "synt" else "real"],
        published_label=label,
    )


def _difftumor(backbone: str, prefix: str) -> ReleasedCheckpoint:
    name = f"{prefix}_synt_liver_tumors.pt"
    return ReleasedCheckpoint(
        file=name,
        publisher=DIFFTUMOR_REPO,
        download=f"https://huggingface.co/MrGiovanni/DiffTumor/resolve/main/SegmentationModel/{name}",
        backbone=backbone,
        training="synthetic",
        pretrained=False,
        style="difftumor",
        window=DIFFTUMOR_HU_WINDOW,
        eval_set="chen-val-0",
        selected_on="chen-val-0",
        training_cases=DIFFTUMOR_FOLD0_TRAIN,
    )


RELEASED: tuple[ReleasedCheckpoint, ...] = (
    _hu("synt", "unet", False, "UNET", "gb01obtxlbktmrp"),
    _hu("synt", "swin_unetr_base", True, "Swin-UNETR-Base (pretrain)", "pxvb6qfmeaha2va"),
    _hu("synt", "swin_unetr_base", False, "Swin-UNETR-Base (no.pretrain)", "idxwss85bmx3ejo"),
    _hu("synt", "swin_unetr_small", False, "Swin-UNETR-Small (no.pretrain)", "nkb64yo4jmscoy6"),
    _hu("synt", "swin_unetr_tiny", False, "Swin-UNETR-Tiny (no.pretrain)", "ddej5duj03ioh49"),
    _hu("real", "unet", False, "UNET", "8jfu22zgz4a8qjk"),
    _hu("real", "swin_unetr_base", True, "Swin-UNETR-Base (pretrain)", "cmh3uvwtfd3jlvp"),
    _hu("real", "swin_unetr_base", False, "Swin-UNETR-Base (no.pretrain)", "vf3se1yns18t7qm"),
    _hu("real", "swin_unetr_small", False, "Swin-UNETR-Small (no.pretrain)", "337uz6484zyzjty"),
    _hu("real", "swin_unetr_tiny", False, "Swin-UNETR-Tiny (no.pretrain)", "leh04qh5hvfq9i5"),
    _difftumor("unet", "unet"),
    _difftumor("nnunet", "nnunet"),
    _difftumor("swin_unetr_base", "swinunetr"),
)


def released(file: str) -> ReleasedCheckpoint:
    """The entry of a released file (its path inside the downloaded folder)."""
    for entry in RELEASED:
        if entry.file == file:
            return entry
    known = ", ".join(entry.file for entry in RELEASED)
    raise TumorsweepError(f"{file!r} is not a known released checkpoint; known: {known}")
