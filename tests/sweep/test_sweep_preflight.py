"""Checks a sweep runs before Ray starts, dry runs included, that used to happen only inside Ray
or after the whole sweep: the search metric is a validation metric (never test, never
unknown, optimised in its own direction), `--register-best` names follow MLflow's rules, and a
DiffTumor generator's weight files have their recorded hashes and hold no pickled code. Each
refusal is one line, exit 2, the dataset byte-identical and nothing written. No Ray here."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from refusals_util import tree

from tumorsweep.cli.study import main
from tumorsweep.config import make_config
from tumorsweep.generative.config import generator_config
from tumorsweep.generative.models import MODEL_NAMES, build_model
from tumorsweep.generative.store import CONFIG_FILE, _content_hash, save_generator
from tumorsweep.weights import sha256


@pytest.fixture()
def dataset(phantom_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TUMORSWEEP_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return phantom_dir


def dry_run(data: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["--data", str(data), "--preset", "demo", "--dry-run",
            "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
            "--storage", str(tmp_path / "ray"), *extra]  # fmt: skip


def refused(study: str, args: list[str], data: Path, tmp_path: Path, capsys, *needles) -> None:
    before = tree(data)
    assert main(study, args) == 2
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    assert tree(data) == before
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray").exists()


def space(tmp_path: Path, metric: str, searcher: str = "grid", mode: str = "max") -> str:
    path = tmp_path / "space.yaml"
    sweep = (
        "sweep:\n  synthesis.sphere_ratio: {grid: [0.0, 0.1]}\n"
        if searcher == "grid"
        else "sweep:\n  synthesis.sphere_ratio: {uniform: [0.0, 0.2]}\n"
    )
    path.write_text(
        f"study: s\n{sweep}searcher: {{type: {searcher}, num_samples: 2}}\n"
        f"metric: {metric}\nmode: {mode}\n"
    )
    return str(path)


# --- the search metric -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metric", "searcher", "mode", "message"),
    [
        ("tumor_dice", "grid", "max", "metric 'tumor_dice' is not a validation metric"),
        ("tumor_nsd", "optuna", "max", "metric 'tumor_nsd' is not a validation metric"),
        ("liver_hd95_global", "grid", "min", "'liver_hd95_global' is not a validation metric"),
        ("best_val_tumour_dice", "grid", "max", "unknown search metric 'best_val_tumour_dice'"),
        ("val_tumor_dice", "optuna", "max", "did you mean best_val_tumor_dice?"),
        ("best_val_tumor_hd95", "grid", "max", "is better when lower, but mode is 'max'"),
        ("best_val_tumor_dice", "optuna", "min", "is better when higher, but mode is 'min'"),
    ],
    ids=["test-grid", "test-optuna", "test-global", "unknown", "raw-val", "hd95-max", "dice-min"],
)
def test_a_search_steered_by_test_or_unknown_numbers_is_refused(
    dataset, tmp_path, capsys, metric, searcher, mode, message
) -> None:
    args = dry_run(dataset, tmp_path, "--search-space", space(tmp_path, metric, searcher, mode))
    refused("s", args, dataset, tmp_path, capsys, message, "space.yaml")


def test_a_validation_metric_passes(dataset, tmp_path, capsys) -> None:
    for searcher in ("grid", "optuna"):
        args = dry_run(
            dataset, tmp_path, "--search-space", space(tmp_path, "best_val_mean_dice", searcher)
        )
        assert main("s", args) == 0, capsys.readouterr().err
    hd95 = space(tmp_path, "best_val_tumor_hd95", mode="min")
    assert main("s", dry_run(dataset, tmp_path, "--search-space", hd95)) == 0
    assert "metric best_val_tumor_hd95 (min)" in capsys.readouterr().out


# --- --register-best names -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("bad/name", "--register-best 'bad/name': Invalid model name"),
        ("team:model", "Names cannot contain '/' or ':'"),
        ("", "--register-best '': the model name is empty"),
        ("   ", "the model name is empty"),
        (" padded", "leading/trailing spaces"),
    ],
    ids=["slash", "colon", "empty", "blank", "padded"],
)
def test_register_best_names_mlflow_refuses_are_refused_before_the_sweep(
    dataset, tmp_path, capsys, name, message
) -> None:
    refused("sphere_ratio", dry_run(dataset, tmp_path, "--register-best", name), dataset,
            tmp_path, capsys, message)  # fmt: skip


# --- a DiffTumor generator folder ------------------------------------------------------------


@pytest.fixture()
def generator(tmp_path: Path) -> Path:
    """An untrained but well-formed generator folder at the demo spacing (no training: the
    checks read the files, not what the weights learnt)."""
    spacing = make_config("demo").data.spacing
    config = generator_config("demo", spacing, {"patch_size": 16})
    torch.manual_seed(0)
    weights = {name: build_model(config, name).state_dict() for name in MODEL_NAMES}
    return save_generator(tmp_path / "gen", config, weights, 1.0, trained_on=[])


def gen_args(folder: Path) -> list[str]:
    return ["--set", "synthesis.style=difftumor", "--set", f"synthesis.generator={folder}"]


def test_an_intact_generator_passes_the_dry_run(dataset, tmp_path, generator, capsys) -> None:
    assert main("sphere_ratio", dry_run(dataset, tmp_path, *gen_args(generator))) == 0
    assert "nothing ran" in capsys.readouterr().out


def test_a_tampered_generator_file_is_refused_before_ray(
    dataset, tmp_path, generator, capsys
) -> None:
    late = generator / "late.pt"
    state = torch.load(late, weights_only=True)
    first = next(iter(state))
    state[first] = state[first] + 1.0  # same shapes, other weights
    torch.save(state, late)
    args = dry_run(dataset, tmp_path, *gen_args(generator))
    refused("sphere_ratio", args, dataset, tmp_path, capsys,
            f"{late}: contents differ from the hash in {CONFIG_FILE}")  # fmt: skip


class _RunsCode:
    """Unpickling this calls open(marker, 'w'): proof that code in a file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_generator_file_holding_pickled_code_is_refused_and_never_run(
    dataset, tmp_path, generator, capsys
) -> None:
    marker = tmp_path / "code_ran"
    early = generator / "early.pt"
    state = torch.load(early, weights_only=True)
    state["payload"] = _RunsCode(marker)
    torch.save(state, early)
    record = json.loads((generator / CONFIG_FILE).read_text())  # hashes that match the file
    record["files"]["early.pt"] = sha256(early)
    record["content_hash"] = _content_hash(record)
    (generator / CONFIG_FILE).write_text(json.dumps(record))
    args = dry_run(dataset, tmp_path, *gen_args(generator))
    refused("sphere_ratio", args, dataset, tmp_path, capsys, f"{early}: holds pickled code")
    assert not marker.exists()
    err_words = "weights_only=False"
    assert main("sphere_ratio", args) == 2
    assert err_words not in capsys.readouterr().err  # never advise running the file's code
    assert not marker.exists() and os.path.exists(early)
