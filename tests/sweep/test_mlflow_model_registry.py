"""The best model, kept: trial weights in a real MLflow SQLite store, registered by the study's
validation metric (never a test metric), and `tumorsweep predict` from a run and from the
registry giving the same labels as the local checkpoint; experiments open as training runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from tumorsweep import tracking
from tumorsweep.cli import main
from tumorsweep.cli.study import main as sweep_main
from tumorsweep.config import TrialConfig, to_yaml
from tumorsweep.errors import TumorsweepError
from tumorsweep.models import build
from tumorsweep.sweep import register_best

# trial: (status, best_val_tumor_dice, tumor_dice, logs its model folder)
TRIALS = {
    "val_best": ("FINISHED", 0.61, 0.40, True),
    "test_best": ("FINISHED", 0.52, 0.70, True),  # best on the test list: must not be chosen
    "failed": ("FAILED", 0.90, float("nan"), True),
    "unlogged": ("FINISHED", float("nan"), 0.80, False),
}


def _model_folder(root: Path, seed: int, cfg: TrialConfig) -> Path:
    """model/ as final_test writes it: the CPU state dict and the resolved config."""
    torch.manual_seed(seed)
    network = build(cfg.model.name, None, **cfg.model.options)
    folder = root / tracking.MODEL_ARTIFACT_DIR
    folder.mkdir(parents=True)
    torch.save(network.state_dict(), folder / tracking.BEST_WEIGHTS_FILE)
    (folder / tracking.CONFIG_ARTIFACT).write_text(to_yaml(cfg))
    return folder


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, tiny_config: TrialConfig) -> dict:
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    runs_store = tracking.RunStore(uri)
    experiment_id = runs_store.ensure_experiment("sphere_ratio")
    parent = runs_store.start_parent_run(experiment_id, "sweep", tags={})
    runs = {}
    for seed, (name, (status, val, test, logged)) in enumerate(TRIALS.items()):
        run_id = runs_store.attach_trial_run(experiment_id, parent, name, name, {}, {})
        logger = runs_store.trial_logger(run_id)
        logger.log_metrics({"best_val_tumor_dice": val, "tumor_dice": test}, step=2)
        if logged:
            logger.log_artifacts([_model_folder(root / name, seed, tiny_config)])
        runs_store.finish_run(run_id, status=status)
        runs[name] = run_id
    return {"uri": uri, "root": root, "experiment_id": experiment_id, "parent": parent, **runs}


@pytest.fixture()
def cts(tmp_path: Path, phantom_dir: Path) -> Path:
    folder = tmp_path / "cts"
    folder.mkdir()
    for name in ("liver_2", "liver_8"):
        shutil.copy(phantom_dir / "imagesTr" / f"{name}.nii.gz", folder / f"{name}.nii.gz")
    return folder


def test_experiments_open_as_training_runs_in_the_ui(store: dict) -> None:
    experiment = MlflowClient(store["uri"]).get_experiment(store["experiment_id"])
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    # MLflow 3.17's UI ignores that tag for its GenAI / Model training switch: the URL sets it
    assert tracking.runs_page_url(store["uri"], store["experiment_id"]) == (
        f"http://127.0.0.1:5000/#/experiments/{store['experiment_id']}/runs"
        "?workflowType=machine_learning"
    )
    assert tracking.runs_page_url("http://head:5000/", "7").startswith("http://head:5000/#/")
    # sorted on the search metric, best first (MLflow's URL state: orderByKey / orderByAsc)
    assert tracking.runs_page_url(store["uri"], "7", "best_val_tumor_dice").endswith(
        "runs?workflowType=machine_learning&orderByKey=metrics.%60best_val_tumor_dice%60"
        "&orderByAsc=false"
    )


def test_the_printed_link_opens_a_saved_view_of_the_trials(store: dict) -> None:
    """MLflow 3.17's UI loads the view named by `viewStateShareKey` from the experiment tag
    `mlflow.sharedViewState.<key>` (its JSON: search facets and table state)."""
    swept = ["synthesis.sphere_ratio"]
    url = tracking.trials_view_url(
        store["uri"], store["experiment_id"], "best_val_tumor_dice", swept
    )
    prefix = f"#/experiments/{store['experiment_id']}/runs?workflowType=machine_learning"
    assert prefix + "&viewStateShareKey=" in url
    key = url.rsplit("=", 1)[1]
    tags = MlflowClient(store["uri"]).get_experiment(store["experiment_id"]).tags
    state = json.loads(tags[f"mlflow.sharedViewState.{key}"])
    assert state["searchFilter"] == "tags.`tumorsweep.role` = 'trial'"
    assert (state["orderByKey"], state["orderByAsc"]) == ("metrics.`best_val_tumor_dice`", False)
    assert state["selectedColumns"][:6] == [
        "params.`synthesis.sphere_ratio`",
        "metrics.`tumor_dice`",
        "metrics.`tumor_nsd`",
        "metrics.`liver_dice`",
        "metrics.`liver_nsd`",
        "metrics.`best_val_tumor_dice`",
    ]
    # the filter is one MLflow itself accepts, and it finds the trials, not the sweep's run
    found = MlflowClient(store["uri"]).search_runs([store["experiment_id"]], state["searchFilter"])
    assert found and all(r.data.tags["tumorsweep.role"] == "trial" for r in found)


def test_the_best_trial_by_validation_is_registered_and_predicts_like_its_weights(
    store: dict, cts: Path, tmp_path: Path
) -> None:
    uri = store["uri"]
    version, run_id, value = register_best(
        uri, store["experiment_id"], store["parent"], "best_val_tumor_dice", "max", "liver_best"
    )
    assert (version, run_id, value) == (1, store["val_best"], 0.61)
    registered = MlflowClient(uri).get_model_version("liver_best", "1")
    assert registered.run_id == store["val_best"]
    assert registered.tags[tracking.REGISTERED_METRIC_TAG] == "best_val_tumor_dice (max)"
    outputs = {}
    sources = {
        "model": ["--model", "models:/liver_best/1", "--tracking-uri", uri],
        "run": ["--run", run_id, "--tracking-uri", uri],
        "checkpoint": ["--checkpoint", str(store["root"] / "val_best/model/best_weights.pt")],
    }
    for kind, source in sources.items():
        out = tmp_path / kind
        assert main(["predict", *source, "--images", str(cts), "--out", str(out)]) == 0
        outputs[kind] = {p.name: np.asarray(nib.load(p).dataobj) for p in out.glob("*.nii.gz")}
    assert sorted(outputs["model"]) == ["liver_2.nii.gz", "liver_8.nii.gz"]
    for name, labels in outputs["checkpoint"].items():
        np.testing.assert_array_equal(outputs["model"][name], labels)
        np.testing.assert_array_equal(outputs["run"][name], labels)
    other = tmp_path / "other"  # another trial's weights predict differently: the test can fail
    args = ["--run", store["test_best"], "--tracking-uri", uri, "--images", str(cts)]
    assert main(["predict", *args, "--out", str(other)]) == 0
    assert any(
        not np.array_equal(np.asarray(nib.load(other / name).dataobj), labels)
        for name, labels in outputs["checkpoint"].items()
    )
    again = register_best(
        uri, store["experiment_id"], store["parent"], "best_val_tumor_dice", "max", "liver_best"
    )
    assert again[0] == 2


def test_a_test_metric_never_picks_the_registered_model(store: dict) -> None:
    with pytest.raises(TumorsweepError, match="'tumor_dice' is not a validation metric"):
        register_best(
            store["uri"], store["experiment_id"], store["parent"], "tumor_dice", "max", "x"
        )


def test_a_best_trial_without_weights_is_not_registered(store: dict) -> None:
    with pytest.raises(TumorsweepError, match="has no model/best_weights.pt"):
        tracking.RunStore(store["uri"]).register_trial("y", store["unlogged"], {}, "")
    assert MlflowClient(store["uri"]).search_registered_models("name = 'y'") == []


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (["--run", "unlogged"], "no model/best_weights.pt artifact"),
        (["--run", "0123456789abcdef"], "--run 0123456789abcdef: no such run"),
        (["--model", "models:/liver_best"], "expected models:/NAME/VERSION"),
        (["--model", "models:/nobody/3"], "--model models:/nobody/3: no such model version"),
    ],
)
def test_a_run_or_model_without_weights_is_one_line_and_writes_nothing(
    store: dict, cts: Path, tmp_path: Path, capsys: pytest.CaptureFixture, source, message
) -> None:
    source = [store.get(item, item) for item in source]
    out = tmp_path / "out"
    args = ["predict", *source, "--tracking-uri", store["uri"], "--images", str(cts)]
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and err.startswith("tumorsweep predict: error:")
    assert not out.exists()


def test_a_missing_store_is_not_created(tmp_path: Path, cts: Path, capsys) -> None:
    uri = f"sqlite:///{tmp_path / 'none' / 'mlflow.db'}"
    args = ["predict", "--run", "abc", "--tracking-uri", uri, "--images", str(cts)]
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "none").exists() and not (tmp_path / "out").exists()


def test_the_sweep_refuses_to_register_by_a_test_metric_before_running(
    phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(
        "study: s\nconfigs:\n  - {synthesis.sphere_ratio: 0.0}\nsearcher: {type: grid}\n"
        "metric: tumor_dice\n"
    )
    args = [
        "--data", str(phantom_dir), "--search-space", str(space), "--register-best", "m",
        "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--storage", str(tmp_path / "r"),
    ]  # fmt: skip
    assert sweep_main("s", args) == 2
    assert "'tumor_dice' is not a validation metric (best_val_*)" in capsys.readouterr().err
    space.write_text(space.read_text().replace("tumor_dice", "best_val_tumor_dice"))
    assert sweep_main("s", [*args, "--set", "eval.log_best_model=false"]) == 2
    assert "--register-best m: needs eval.log_best_model=true" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "r").exists()
