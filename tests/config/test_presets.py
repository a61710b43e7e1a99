"""The published presets: every value has a source, the values agree with the public text they
cite, `make_config` gives exactly them, and docs/presets.md is generated from them.

The public text cannot be read in CI, so the lines the presets cite are transcribed below,
literally, with their file:line in MrGiovanni/SyntheticTumors at commit 983dbeef (2025-01-11).
Each command-line and code-default value is parsed back out of its line and compared with the
preset; a row's source must name the line that is checked.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tumorsweep import presets_doc
from tumorsweep.config import PRESET_DOCUMENTS, PRESET_KINDS, PRESETS, flatten, make_config

REPO = "MrGiovanni/SyntheticTumors@983dbeef"
PUBLIC = {
    "README.md:90": (
        "CUDA_VISIBLE_DEVICES=0 python -W ignore main.py --optim_lr=4e-4 --batch_size=2 "
        "--lrschedule=warmup_cosine --optim_name=adamw --model_name=unet --val_every=200 "
        "--max_epochs=4000 --save_checkpoint --workers=2 --noamp --distributed "
        "--dist-url=tcp://127.0.0.1:12235 --cache_num=200 --val_overlap=0.5 --syn "
        '--logdir="runs/synt.no_pretrain.unet" --train_dir $datapath --val_dir $datapath '
        "--json_dir datafolds/healthy.json"
    ),
    "README.md:126": (
        "CUDA_VISIBLE_DEVICES=0 python -W ignore validation.py --model=unet --val_overlap=0.75 "
        "--val_dir $datapath --json_dir datafolds/lits.json --log_dir runs/synt.no_pretrain.unet "
        "--save_dir out"
    ),
    "main.py:52": "parser.add_argument('--reg_weight', default=1e-5, type=float)",
    "main.py:57": "parser.add_argument('--val_every', default=1, type=int)",
    "main.py:110": "parser.add_argument('--roi_x', default=96, type=int)",
    "main.py:111": "parser.add_argument('--roi_y', default=96, type=int)",
    "main.py:112": "parser.add_argument('--roi_z', default=96, type=int)",
    "main.py:122": "parser.add_argument('--warmup_epochs', default=100, type=int)",
    "main.py:259": 'transforms.Spacingd(keys=["image", "label"], pixdim=(1.0, 1.0, 1.0), '
    'mode=("bilinear", "nearest")),',
    "main.py:274": "num_samples=1,",
    "main.py:331": 'transforms.ScaleIntensityRanged(keys=["image"], a_min=-21, a_max=189, '
    "b_min=0.0, b_max=1.0, clip=True),",
    "main.py:343": "args.amp = not args.noamp",
    "main.py:448": "dice_loss = DiceCELoss(to_onehot_y=True, softmax=True, squared_pred=True, "
    "smooth_nr=0, smooth_dr=1e-6)",
    "monai_trainer.py:389": "scaler = GradScaler()",
    "validation.py:69": "def cal_dice_nsd(pred, truth, spacing_mm=(1,1,1), tolerance=2):",
    "validation.py:79": "inf_size = [96, 96, 96]",
    "validation.py:129": "model_inferer = partial(sliding_window_inference, roi_size=inf_size, "
    "sw_batch_size=1, predictor=model,  overlap=args.val_overlap, mode='gaussian')",
    "optimizers/lr_scheduler.py:100": "warmup_start_lr: float = 0.0,",
    "optimizers/lr_scheduler.py:101": "eta_min: float = 0.0,",
}
# Values the paper text states (Hu et al., CVPR 2023, implementation details), not verbatim.
PAPER = {"schedule.lr": 2e-4, "eval.overlap": 0.75, "eval.val_overlap": None}


def flag(text: str, name: str) -> str:
    found = re.search(rf"--{name}=(\S+)", text)
    assert found, f"--{name}= not in {text!r}"
    return found.group(1)


def has_flag(text: str, name: str) -> bool:
    return re.search(rf"--{name}(\s|$)", text) is not None


def keyword(text: str, name: str) -> str:
    found = re.search(rf"\b{name}\s*[=:]\s*(?:float\s*=\s*)?(\([^)]*\)|[^,)\s]+)", text)
    assert found, f"{name}= not in {text!r}"
    return found.group(1)


def number_tuple(text: str) -> list[float]:
    return [float(part) for part in text.strip().strip("()[]").split(",")]


# (location, value read from that public line) per field; "README.md:90" rows are the training
# commands, "README.md:126" the validation.py commands.
Reader = tuple[str, Callable[[str], Any]]
CHECKS: dict[str, dict[str, Reader]] = {
    "command": {
        "schedule.lr": ("README.md:90", lambda t: float(flag(t, "optim_lr"))),
        "schedule.epochs": ("README.md:90", lambda t: int(flag(t, "max_epochs"))),
        "schedule.batch_size": ("README.md:90", lambda t: int(flag(t, "batch_size"))),
        "schedule.amp": ("README.md:90", lambda t: not has_flag(t, "noamp")),
        "schedule.val_every": ("README.md:90", lambda t: int(flag(t, "val_every"))),
        "eval.val_overlap": ("README.md:90", lambda t: float(flag(t, "val_overlap"))),
        "eval.overlap": ("README.md:126", lambda t: float(flag(t, "val_overlap"))),
        "model.name": ("README.md:90", lambda t: flag(t, "model_name")),
    },
    "code-default": {
        "data.spacing": ("main.py:259", lambda t: number_tuple(keyword(t, "pixdim"))),
        "data.window": (
            "main.py:331",
            lambda t: [float(keyword(t, "a_min")), float(keyword(t, "a_max"))],
        ),
        "schedule.warmup_epochs": ("main.py:122", lambda t: int(keyword(t, "default"))),
        "schedule.weight_decay": ("main.py:52", lambda t: float(keyword(t, "default"))),
        "schedule.patch_size": (
            "main.py:110",
            lambda _: [
                int(keyword(PUBLIC[f"main.py:{line}"], "default")) for line in (110, 111, 112)
            ],
        ),
        "schedule.crops_per_volume": (
            "main.py:268-274",
            lambda _: int(keyword(PUBLIC["main.py:274"], "num_samples")),
        ),
        "schedule.warmup_start_lr": (
            "optimizers/lr_scheduler.py:100",
            lambda t: float(keyword(t, "warmup_start_lr")),
        ),
        "schedule.min_lr": (
            "optimizers/lr_scheduler.py:101",
            lambda t: float(keyword(t, "eta_min")),
        ),
        "schedule.amp": ("main.py:343", lambda t: t == "args.amp = not args.noamp"),
        "schedule.amp_dtype": (
            "monai_trainer.py:389",
            lambda t: "float16" if t == "scaler = GradScaler()" else "unknown",
        ),
        "loss.squared_pred": ("main.py:448", lambda t: keyword(t, "squared_pred") == "True"),
        "loss.smooth_nr": ("main.py:448", lambda t: float(keyword(t, "smooth_nr"))),
        "loss.smooth_dr": ("main.py:448", lambda t: float(keyword(t, "smooth_dr"))),
        "eval.roi": ("validation.py:79", lambda t: [int(n) for n in number_tuple(t.split("=")[1])]),
        "eval.sw_batch_size": ("validation.py:129", lambda t: int(keyword(t, "sw_batch_size"))),
        "eval.tolerance_mm": ("validation.py:69", lambda t: float(keyword(t, "tolerance"))),
    },
}
# Code-default rows whose source is a whole function or a library default, not one value on a
# line: checked elsewhere (named) or by reading the cited code.
NOT_ON_ONE_LINE = {
    "loss.lambda_dice": "MONAI DiceCELoss's default weight, main.py:448 passes none",
    "loss.lambda_ce": "MONAI DiceCELoss's default weight, main.py:448 passes none",
    "eval.protocol": "validation.py as a whole: tests/evaluate/test_faithfulness_hu2023.py",
    "eval.postprocess": "validation.py:37-61 (denoise_pred): "
    "tests/evaluate/test_evaluate_postprocess.py",
    "eval.select_metric": "monai_trainer.py:310-330 (mean of the per-class Dice)",
}


def disagreements(documents: dict[str, dict]) -> list[str]:
    """Every preset row whose value differs from what its cited public source gives, or whose
    source does not cite the checked line, or that cannot be checked without a reason."""
    problems = []
    for name, document in documents.items():
        for field, row in document["values"].items():
            kind, value, source = row["kind"], row["value"], row["source"]
            if kind == "paper":
                expected = PAPER.get(field, "no transcription")
                where = "the paper text"
            elif kind in CHECKS and field in CHECKS[kind]:
                where, read = CHECKS[kind][field]
                expected = read(PUBLIC.get(where, ""))  # a range's reader picks its lines
                if f"{REPO} {where}" not in source and f" {where}" not in source:
                    problems.append(f"{name}: {field}: source does not cite {where}: {source!r}")
            elif kind == "code-default" and field in NOT_ON_ONE_LINE:
                continue
            elif kind == "tumorsweep":
                if not source.startswith("tumorsweep:"):
                    problems.append(
                        f"{name}: {field}: a tumorsweep row says why, from 'tumorsweep:'"
                    )
                continue
            else:
                problems.append(f"{name}: {field}: no transcribed {kind} source to check against")
                continue
            if field == "eval.roi" and value is None:  # None = the patch size
                value = document["values"]["schedule.patch_size"]["value"]
            if json.dumps(value) != json.dumps(expected):
                problems.append(f"{name}: {field}: preset {value!r}, {where} gives {expected!r}")
    return problems


def test_every_value_has_a_kind_and_a_source():
    assert {"paper", "hu2023-commands"} <= set(PRESET_DOCUMENTS)
    for document in PRESET_DOCUMENTS.values():
        assert document["values"], document["name"]
        for field, row in document["values"].items():
            assert row["kind"] in PRESET_KINDS, (document["name"], field)
            assert len(row["source"]) > 20, (document["name"], field)


# The SyntheticTumors lines above are transcribed; DiffTumor's (chen2024) are not yet, so its
# rows are checked for form only (test_every_value_has_a_kind_and_a_source).
HU_PRESETS = ("paper", "hu2023-commands")


def _hu(documents: dict) -> dict:
    return {name: documents[name] for name in HU_PRESETS}


def test_preset_values_agree_with_their_cited_public_sources():
    assert disagreements(_hu(PRESET_DOCUMENTS)) == []


@pytest.mark.parametrize(
    ("preset", "field", "value"),
    [
        ("hu2023-commands", "schedule.lr", 2e-4),  # the README command says 4e-4
        ("hu2023-commands", "schedule.amp", True),  # the commands pass --noamp
        ("paper", "schedule.weight_decay", 1e-4),  # main.py:52 says 1e-5
        ("paper", "schedule.lr", 4e-4),  # the paper text says 2e-4
    ],
)
def test_a_value_that_leaves_its_source_is_caught(preset, field, value):
    documents = copy.deepcopy(_hu(PRESET_DOCUMENTS))
    documents[preset]["values"][field]["value"] = value
    found = disagreements(documents)
    assert len(found) == 1 and found[0].startswith(f"{preset}: {field}: preset"), found


def test_a_row_citing_another_line_is_caught():
    documents = copy.deepcopy(_hu(PRESET_DOCUMENTS))
    documents["hu2023-commands"]["values"]["schedule.lr"]["source"] = "the paper, somewhere"
    assert any("does not cite README.md:90" in p for p in disagreements(documents))


def test_the_two_hu_presets_differ_where_paper_and_commands_disagree():
    paper, commands = (make_config(name) for name in ("paper", "hu2023-commands"))
    assert (paper.schedule.lr, commands.schedule.lr) == (2e-4, 4e-4)
    assert (paper.schedule.amp, commands.schedule.amp) == (True, False)
    assert (paper.schedule.val_every, commands.schedule.val_every) == (100, 200)
    assert (paper.eval.val_overlap, commands.eval.val_overlap) == (None, 0.5)
    assert paper.eval.overlap == commands.eval.overlap == 0.75
    assert paper.eval.protocol == commands.eval.protocol == "hu2023"


@pytest.mark.parametrize("name", sorted(PRESET_DOCUMENTS))
def test_make_config_gives_exactly_the_files_values(name):
    config = flatten(make_config(name))
    document = PRESET_DOCUMENTS[name]
    assert PRESETS[name] == {field: row["value"] for field, row in document["values"].items()}
    for field, row in document["values"].items():
        assert json.dumps(config[field]) == json.dumps(row["value"]), field


def test_the_presets_page_is_generated_from_the_files():
    page = Path(__file__).parents[2] / "docs" / "presets.md"
    assert page.read_text(encoding="utf-8") == presets_doc.render(), (
        "docs/presets.md is out of date: python -m tumorsweep.presets_doc > docs/presets.md"
    )
    for document in PRESET_DOCUMENTS.values():
        for field in document["values"]:
            assert f"`{field}`" in page.read_text(encoding="utf-8")


# Pixel2Cancer's lines the `pixel2cancer` preset cites, transcribed literally (MrGiovanni/
# Pixel2Cancer at commit 6aae22f); each value is read back out of its line.
P2C_REPO = "MrGiovanni/Pixel2Cancer@6aae22f"
P2C_PUBLIC = {
    "main.py:223": 'transforms.Spacingd(keys=["image", "label"], pixdim=(1.0, 1.0, 1.0), '
    'mode=("bilinear", "nearest")),',
    "main.py:224": 'TumorSysthesis(keys=["image", "label"], prob=0.9, args= args), '
    "# here we use online ",
    "main.py:226": 'keys=["image"], a_min=-175, a_max=250,',
    "Tumor_Synthesis/tumor_synthesis.py:12": (
        "Organ_HU = {'liver': [100, 160],'pancreas': [100, 160], 'kidney': [140, 200]}"
    ),
    "Tumor_Synthesis/tumor_synthesis.py:13": (
        "steps = {'liver': 150, 'pancreas': 80, 'kidney': 80}"
    ),
    "Tumor_Synthesis/tumor_synthesis.py:50": (
        "if self._do_transform and (np.max(d['label']) <= 2):"
    ),
    "Tumor_Synthesis/utils.py:302": "steps = np.random.randint(5, steps)",
    "Tumor_Synthesis/cellular/csrc/cellular.cu:31": "const int density_probability",
    "hg_liver_train_5_folds.sh:42": (
        "python -W ignore main.py --optim_lr=4e-4 --batch_size=4 --lrschedule=warmup_cosine "
        "--optim_name=adamw --model_name=unet --val_every=200 --max_epochs=2000 "
        "--save_checkpoint --workers=0 --noamp --distributed --ngpus_per_node=2 "
        "--dist-url=tcp://127.0.0.1:$dist --cache_num=200 --val_overlap=0.5 --syn "
        '--logdir="runs_liver/$1" --train_dir $datapath --val_dir $datapath --organ=liver '
        "--json_dir datafolds/5_fold/liver/liver_tumor_0.json"
    ),
}


def _liver(text: str, index: int) -> int:
    """The liver entry of a per-organ dict literal (Organ_HU: one of its pair)."""
    found = re.search(r"'liver':\s*(\[[^\]]*\]|\d+)", text)
    assert found, text
    values = number_tuple(found.group(1))
    return int(values[min(index, len(values) - 1)])


_COMMAND = "hg_liver_train_5_folds.sh:42"
P2C_CHECKS: dict[str, Reader] = {
    "data.spacing": ("main.py:223", lambda t: number_tuple(keyword(t, "pixdim"))),
    "data.window": (
        "main.py:226",
        lambda t: [float(keyword(t, "a_min")), float(keyword(t, "a_max"))],
    ),
    "synthesis.style": ("main.py:224", lambda t: "ca" if t.startswith("TumorSysthesis(") else "?"),
    "synthesis.prob": ("main.py:224", lambda t: float(keyword(t, "prob"))),
    # fires when max(label) <= 2: tumour CTs too, so not healthy-only
    "synthesis.healthy_only": (
        "Tumor_Synthesis/tumor_synthesis.py:50",
        lambda t: int(re.search(r"<=\s*(\d)", t).group(1)) < 2,
    ),
    # np.random.randint's upper end is exclusive
    "synthesis.ca.steps.high": (
        "Tumor_Synthesis/tumor_synthesis.py:13",
        lambda t: _liver(t, 0) - 1,
    ),
    "synthesis.ca.steps.low": (
        "Tumor_Synthesis/utils.py:302",
        lambda t: int(re.search(r"randint\((\d+),", t).group(1)),
    ),
    "synthesis.ca.organ_hu_min": (
        "Tumor_Synthesis/tumor_synthesis.py:12",
        lambda t: float(_liver(t, 0)),
    ),
    "synthesis.ca.vessel_hu": (
        "Tumor_Synthesis/tumor_synthesis.py:12",
        lambda t: float(_liver(t, 1)),
    ),
    # an int draw in [0, 1] passes `<= 1`, `< 0.3` and `< 0.1` (almost) always
    "synthesis.ca.invasion_prob": (
        "Tumor_Synthesis/cellular/csrc/cellular.cu:31",
        lambda t: [1.0, 1.0, 1.0] if t.startswith("const int ") else [1.0, 0.3, 0.1],
    ),
    "model.name": (_COMMAND, lambda t: flag(t, "model_name")),
    "schedule.lr": (_COMMAND, lambda t: float(flag(t, "optim_lr"))),
    "schedule.batch_size": (_COMMAND, lambda t: int(flag(t, "batch_size"))),
    "schedule.epochs": (_COMMAND, lambda t: int(flag(t, "max_epochs"))),
    "schedule.val_every": (_COMMAND, lambda t: int(flag(t, "val_every"))),
    "schedule.amp": (_COMMAND, lambda t: not has_flag(t, "noamp")),
    "eval.val_overlap": (_COMMAND, lambda t: float(flag(t, "val_overlap"))),
}


def p2c_disagreements(document: dict) -> list[str]:
    """`disagreements` for the pixel2cancer preset, against Pixel2Cancer's transcribed lines."""
    problems = []
    for field, row in document["values"].items():
        if row["kind"] == "tumorsweep":
            if not row["source"].startswith("tumorsweep:"):
                problems.append(f"{field}: a tumorsweep row says why, from 'tumorsweep:'")
            continue
        if field not in P2C_CHECKS:
            problems.append(f"{field}: no transcribed source to check against")
            continue
        where, read = P2C_CHECKS[field]
        if f"{P2C_REPO} {where}" not in row["source"]:
            problems.append(f"{field}: source does not cite {where}: {row['source']!r}")
        expected = read(P2C_PUBLIC[where])
        if json.dumps(row["value"]) != json.dumps(expected):
            problems.append(f"{field}: preset {row['value']!r}, {where} gives {expected!r}")
    return problems


def test_pixel2cancer_preset_agrees_with_the_public_lines_it_cites():
    document = PRESET_DOCUMENTS["pixel2cancer"]
    assert {"synthesis.style", "synthesis.prob", "data.window", "schedule.amp"} <= set(
        document["values"]
    )
    assert p2c_disagreements(document) == []
    config = make_config("pixel2cancer")
    assert (config.synthesis.style, config.synthesis.prob) == ("ca", 0.9)
    assert config.synthesis.healthy_only is False and config.schedule.amp is False
    assert config.data.window == (-175.0, 250.0)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("synthesis.prob", 0.1),  # the class default, not what main.py:224 passes
        ("synthesis.ca.steps.high", 150),  # randint's exclusive end
        ("schedule.amp", True),  # the liver command passes --noamp
        ("synthesis.ca.invasion_prob", [1.0, 0.3, 0.1]),  # as intended, not as coded
    ],
)
def test_a_pixel2cancer_value_that_leaves_its_source_is_caught(field, value):
    document = copy.deepcopy(PRESET_DOCUMENTS["pixel2cancer"])
    document["values"][field]["value"] = value
    found = p2c_disagreements(document)
    assert len(found) == 1 and found[0].startswith(f"{field}: preset"), found
