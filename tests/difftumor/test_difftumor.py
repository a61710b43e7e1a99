"""DiffTumor generator: training on the real-tumour training cases (CLI, MLflow), the folder's
checks, the synthesis transform's guarantees, the leakage guard and the report's labels.

One tiny generator (16^3 patches at 2 mm, a few epochs) is trained once for the module
through `tumorsweep train-generator` into a real MLflow SQLite store; the tests load it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from scipy import ndimage

from tumorsweep.cli import main as cli
from tumorsweep.config import make_config
from tumorsweep.data.cases import CaseLists, resolve_cases
from tumorsweep.data.transforms import resampled_pair
from tumorsweep.errors import TumorsweepError
from tumorsweep.generative import DiffTumorSynthesisd, load_generator, read_generator_info
from tumorsweep.generative.config import FORMAT
from tumorsweep.generative.store import CONFIG_FILE, _content_hash
from tumorsweep.generative.synthesis import synthesize_difftumor_inplace
from tumorsweep.synthesis import SynthesisConfig
from tumorsweep.weights import sha256

TINY = {
    "patch_size": 16,
    "training.autoencoder_epochs": 8,
    "training.diffusion_epochs": 8,
    "training.crops_per_epoch": 32,
    "training.autoencoder_batch": 8,
    "training.diffusion_batch": 8,
    "training.checkpoint_every": 4,
}


@pytest.fixture(scope="module")
def cases(phantom_dir: Path) -> CaseLists:
    return resolve_cases(make_config("demo", {"data.root": str(phantom_dir)}).data)


@pytest.fixture(scope="module")
def trained(phantom_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A generator trained through the CLI, and its MLflow store."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("generator")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    sets = [arg for key, value in TINY.items() for arg in ("--set", f"{key}={value}")]
    code = cli(
        ["train-generator", "--data", str(phantom_dir), "--preset", "demo", "--out",
         str(root / "gen"), "--tracking-uri", uri, "--experiment", "gen", *sets]
    )  # fmt: skip
    assert code == 0
    return {"folder": root / "gen", "uri": uri}


def _difftumor(folder: Path, **knobs) -> SynthesisConfig:
    demo = make_config("demo").synthesis.model_dump()
    return SynthesisConfig.model_validate(
        demo | {"style": "difftumor", "generator": str(folder), "difftumor": knobs}
    )


def _healthy(cases: CaseLists) -> tuple[np.ndarray, np.ndarray]:
    case = cases.train[0]
    sample = resampled_pair((2.0, 2.0, 2.0))({"image": case["image"], "label": case["label"]})
    return np.asarray(sample["image"][0], np.float32), np.asarray(sample["label"][0], np.uint8)


def test_training_learns_and_records_its_cases(trained: dict, cases: CaseLists) -> None:
    info = read_generator_info(trained["folder"])
    history = info.record["history"]
    for name in ("autoencoder_l1", "diffusion_early_l1", "diffusion_late_l1"):
        assert len(history[name]) == 8
        assert np.mean(history[name][-2:]) < 0.8 * np.mean(history[name][:2]), name
    assert sorted(c["case"] for c in info.trained_on) == sorted(
        c["case"] for c in cases.train_tumor
    )
    assert not info.trained_on_keys() & cases.held_out()
    assert sorted(p.name for p in trained["folder"].iterdir()) == [
        "autoencoder.pt", "early.pt", CONFIG_FILE, "late.pt"
    ]  # fmt: skip
    for file in ("autoencoder.pt", "early.pt", "late.pt"):
        state = torch.load(trained["folder"] / file, weights_only=True)
        assert all(isinstance(v, torch.Tensor) for v in state.values())

    from mlflow import MlflowClient

    client = MlflowClient(trained["uri"])
    [run] = client.search_runs([client.get_experiment_by_name("gen").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags["tumorsweep.role"] == "generator"
    assert run.data.tags["tumorsweep.generator_dir"] == str(trained["folder"].resolve())
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "autoencoder_l1")]
    assert steps == list(range(8))
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {CONFIG_FILE, "reconstruction.png", "samples.png"} <= artifacts


def test_tumour_inside_mask_with_tumour_hu(trained: dict, cases: CaseLists) -> None:
    generator = load_generator(trained["folder"])
    image, label = _healthy(cases)
    tumour_hu = []
    for entry in cases.train_tumor:  # the oracle: HU of the real training tumours
        ct, seg = (np.asarray(nib.load(entry[k]).dataobj) for k in ("image", "label"))
        tumour_hu.append(ct[seg == 2])
    tumour_mean = float(np.mean(np.concatenate(tumour_hu)))
    liver_mean = float(image[label == 1].mean())
    assert liver_mean - tumour_mean > 25  # the phantom's tumours are hypodense
    inside = []
    for seed in range(6):
        for blur in (0.0, 1.5):
            new_image, new_label = image.copy(), label.copy()
            config = _difftumor(trained["folder"], blur=(blur, blur))
            added = synthesize_difftumor_inplace(
                new_image, new_label, generator, config, np.random.default_rng(seed)
            )
            mask = new_label == 2
            assert added == mask.sum() > 0
            assert np.all(label[mask] == 1) and np.array_equal(new_label[~mask], label[~mask])
            changed = new_image != image
            reach = int(4.0 * blur + 0.5)  # scipy's Gaussian support (truncate 4)
            support = (
                ndimage.binary_dilation(mask, np.ones((2 * reach + 1,) * 3)) if reach else mask
            )
            assert not np.any(changed & ~support)
            if blur == 0.0:
                inside.append(new_image[mask])
    generated = float(np.mean(np.concatenate(inside)))
    assert abs(generated - tumour_mean) < abs(generated - liver_mean), (
        generated,
        tumour_mean,
        liver_mean,
    )


def test_transform_same_seed_same_voxels(trained: dict, cases: CaseLists) -> None:
    generator = load_generator(trained["folder"])
    image, label = _healthy(cases)
    sample = {"image": MetaTensor(image[None]), "label": MetaTensor(label[None].astype(np.float32))}
    config = _difftumor(trained["folder"], prob=1.0, early=0.0, medium=1.0, large=0.0, ddim_steps=5)
    outs = [
        DiffTumorSynthesisd(config=config, generator=generator).set_random_state(s)(sample)
        for s in (3, 3, 4)
    ]
    assert torch.equal(outs[0]["image"], outs[1]["image"])
    assert torch.equal(outs[0]["label"], outs[1]["label"])
    assert not torch.equal(outs[0]["image"], outs[2]["image"])
    assert isinstance(outs[0]["image"], MetaTensor) and outs[0]["label"].dtype == torch.float32
    assert torch.equal(sample["image"][0], torch.from_numpy(image))  # input left as it was
    never = DiffTumorSynthesisd(config=_difftumor(trained["folder"], prob=0.0), generator=generator)
    assert torch.equal(never(sample)["image"], sample["image"])
    tumour = {**sample, "label": sample["label"].clone()}
    tumour["label"][0, 10, 10, 10] = 2
    always = DiffTumorSynthesisd(config=config, generator=generator)
    assert torch.equal(always(tumour)["image"], sample["image"])  # already has a tumour


def _copy(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / "copy"))


def _rewrite(folder: Path, edit) -> None:
    record = json.loads((folder / CONFIG_FILE).read_text())
    edit(record)
    record["content_hash"] = _content_hash(record)
    (folder / CONFIG_FILE).write_text(json.dumps(record))


def test_bad_generator_folders_fail_naming_the_file(trained: dict, tmp_path: Path) -> None:
    with pytest.raises(TumorsweepError, match="nope: generator folder not found"):
        load_generator(tmp_path / "nope")
    partial = _copy(trained["folder"], tmp_path)
    (partial / "early.pt").unlink()
    with pytest.raises(TumorsweepError, match=r"early\.pt: missing"):
        load_generator(partial)
    (partial / CONFIG_FILE).unlink()
    with pytest.raises(TumorsweepError, match=r"generator\.json: missing"):
        load_generator(partial)
    shutil.rmtree(partial)

    other = _copy(trained["folder"], tmp_path)
    _rewrite(other, lambda r: r.update(format="tumorsweep.difftumor/0"))
    with pytest.raises(TumorsweepError, match="format 'tumorsweep.difftumor/0'"):
        load_generator(other)
    _rewrite(other, lambda r: r.update(format=FORMAT))
    _rewrite(other, lambda r: r["config"]["autoencoder"].update(latent_channels=4))
    with pytest.raises(TumorsweepError, match=r"autoencoder\.pt: .* has shape"):
        load_generator(other)
    text = (other / CONFIG_FILE).read_text().replace('"latent_channels": 4', '"latent_channels": 5')
    (other / CONFIG_FILE).write_text(text)
    with pytest.raises(TumorsweepError, match="content hash does not match"):
        load_generator(other)
    shutil.rmtree(other)

    wrong = _copy(trained["folder"], tmp_path)
    state = torch.load(wrong / "late.pt", weights_only=True)
    key = next(k for k, v in state.items() if v.ndim == 5)
    state[key] = torch.zeros(1, 1, 1, 1, 1)
    torch.save(state, wrong / "late.pt")
    with pytest.raises(TumorsweepError, match=r"late\.pt: contents differ"):
        load_generator(wrong)
    _rewrite(wrong, lambda r: r["files"].update({"late.pt": sha256(wrong / "late.pt")}))
    with pytest.raises(TumorsweepError, match=rf"late\.pt: {key} has shape \(1, 1, 1, 1, 1\)"):
        load_generator(wrong)
    args = ["--image", "x.nii.gz", "--label", "y.nii.gz", "--out", str(tmp_path / "o")]
    assert cli(["synthesize", *args, "--style", "difftumor", "--generator", str(wrong)]) == 2
    assert not (tmp_path / "o").exists()


def test_no_tumour_training_cases_is_refused(cases: CaseLists, tmp_path: Path) -> None:
    from tumorsweep.difftumor.job import GeneratorJob, run_job
    from tumorsweep.generative.config import generator_config

    empty = replace(cases, train_tumor=())
    job = GeneratorJob(generator_config("demo", (2.0, 2.0, 2.0)), empty, tmp_path / "g")
    with pytest.raises(TumorsweepError, match=f"{cases.root}: no real-tumour training cases"):
        run_job(job)
    assert not (tmp_path / "g").exists()
    auto = make_config("demo", {"synthesis.style": "difftumor", "synthesis.generator": "auto"})
    from tumorsweep.train import check_trial

    with pytest.raises(TumorsweepError, match="generator=auto: .* no real-tumour training"):
        check_trial(auto, empty)


def test_check_trial_refuses_a_generator_fitted_on_held_out_cases(
    trained: dict, cases: CaseLists
) -> None:
    from tumorsweep.train import check_trial

    folder = str(trained["folder"])
    cfg = make_config("demo", {"synthesis.style": "difftumor", "synthesis.generator": folder})
    check_trial(cfg, cases)
    trained_case = cases.train_tumor[0]
    leaky = replace(cases, validation=cases.validation + (trained_case,))
    with pytest.raises(
        TumorsweepError, match=f"trained on validation/test cases .*{trained_case['case']}"
    ):
        check_trial(cfg, leaky)
    allowed = make_config(
        "demo",
        {"synthesis.style": "difftumor", "synthesis.generator": folder, "data.allow_overlap": True},
    )
    check_trial(allowed, leaky)
    one_mm = make_config(
        "demo",
        {"synthesis.style": "difftumor", "synthesis.generator": folder, "data.spacing": (1, 1, 1)},
    )
    with pytest.raises(TumorsweepError, match=r"trained at \(2.0, 2.0, 2.0\) mm"):
        check_trial(one_mm, cases)
    with pytest.raises(TumorsweepError, match="generator: required when style is 'difftumor'"):
        make_config("demo", {"synthesis.style": "difftumor"})


def test_synthesize_cli_writes_image_label_preview(
    trained: dict, cases: CaseLists, tmp_path: Path
) -> None:
    case = cases.train[0]
    out = tmp_path / "out"
    code = cli(["synthesize", "--image", case["image"], "--label", case["label"], "--out", str(out),
                "--style", "difftumor", "--generator", str(trained["folder"]), "--seed", "2",
                "--tumor-type", "medium"])  # fmt: skip
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["image.nii.gz", "label.nii.gz", "preview.png"]
    before = nib.load(case["image"])
    image, label = (nib.load(out / f"{k}.nii.gz") for k in ("image", "label"))
    assert image.shape == before.shape and np.allclose(image.affine, before.affine)
    tumour = np.asarray(label.dataobj) == 2
    assert tumour.any()
    assert not np.array_equal(np.asarray(image.dataobj), np.asarray(before.dataobj))


def test_report_labels_and_published_difftumor_columns() -> None:
    from tumorsweep.report.labels import config_label
    from tumorsweep.report.reference import match_published
    from tumorsweep.search_space import expand_grid, load_search_space

    swept = {"synthesis.style": "difftumor"}
    assert config_label("unet", "chen-val-0", swept) == "UNET(DiffTumor,Chen's Val)"
    assert config_label("unet", "hu-val", {"synthesis.style": "hu"}) == "UNET"
    semi = {"data.real_fraction": 0.0, "data.semi_supervised": True,
            "data.healthy_crop_organ_mm": 30.0, "synthesis.style": "difftumor",
            "eval.protocol": "chen2024", "eval.select_metric": "val_tumor_dice"}  # fmt: skip
    swept = ["model.name", "synthesis.style", "data.semi_supervised", "eval.protocol",
             "data.healthy_crop_organ_mm", "eval.select_metric"]  # fmt: skip
    for eval_set, tumour_dice in (
        ("chen-val-0", 0.69001),
        ("hu-val", 0.68217),
        ("global", 0.75031),
    ):
        rows = match_published("unet", eval_set, semi, swept)
        assert rows.set_index("metric")["value"]["tumor_dice"] == tumour_dice
        assert set(rows["protocol"]) == {"chen2024"}
        # the healthy-only arm, or the semi-supervised one scored otherwise: no published column
        for other in ({"data.semi_supervised": False}, {"eval.protocol": "hu2023"}):
            assert match_published("unet", eval_set, semi | other, swept).empty
    demo = load_search_space("difftumor", preset="demo")
    semi = {"data.semi_supervised": True, "eval.protocol": "chen2024",
            "eval.select_metric": "val_tumor_dice"}  # fmt: skip
    crop = {"data.healthy_crop_organ_mm": 30.0}
    assert expand_grid(demo) == [
        {"model.name": "unet", "synthesis.style": "hu"},
        {"model.name": "unet", "synthesis.style": "difftumor", **crop},
        {"model.name": "unet", "synthesis.style": "difftumor", **crop, **semi},
    ]
    assert demo.fixed == {"synthesis.generator": "auto", "eval.organ_masks": "truth"}
    hu = {"data.real_fraction": 0.0, "synthesis.style": "hu", "synthesis.location": "uniform",
          "synthesis.sphere_ratio": 0.0, "data.semi_supervised": False,
          "eval.select_metric": "val_mean_dice", "data.healthy_crop_organ_mm": None}  # fmt: skip
    assert not match_published("unet", "hu-val", hu, swept).empty  # Hu's column beside Hu's arm


class _CrashAfter:
    """A LocalSession that dies (as a lost worker would) after `reports` reports."""

    def __init__(self, inner, reports: int) -> None:
        self._inner, self._left = inner, reports

    def __getattr__(self, name: str):
        return getattr(self._inner, name)

    def report(self, metrics: dict, checkpoint: dict | None = None) -> None:
        self._inner.report(metrics, checkpoint)
        self._left -= 1
        if self._left == 0:
            raise RuntimeError("worker lost")


def test_training_resumes_from_its_checkpoint(cases: CaseLists, tmp_path: Path) -> None:
    from tumorsweep.difftumor.training import fit_generator
    from tumorsweep.generative.config import generator_config
    from tumorsweep.generative.patches import load_cases
    from tumorsweep.session import LocalSession

    short = {"training.autoencoder_epochs": 2, "training.diffusion_epochs": 2}
    config = generator_config(
        "demo",
        (2.0, 2.0, 2.0),
        TINY | short | {"training.checkpoint_every": 1, "training.crops_per_epoch": 16},
    )
    tumours = load_cases(cases.train_tumor, config)
    # reports: autoencoder epochs 1, 2, its stage end, early epoch 1, then the worker dies
    with pytest.raises(RuntimeError, match="worker lost"):
        fit_generator(config, tumours, _CrashAfter(LocalSession(tmp_path), 4))
    saved = torch.load(tmp_path / "state.pt", weights_only=True)
    assert (saved["stage"], saved["epoch"]) == (1, 1)  # the early model after one epoch
    resumed = LocalSession(tmp_path)
    fitted = fit_generator(config, tumours, resumed)
    assert [r.get("epoch") for r in resumed.reports] == [2, None, 1, 2, None]
    for name in ("autoencoder_l1", "diffusion_early_l1", "diffusion_late_l1"):
        assert len(fitted.history[name]) == 2
    assert set(fitted.weights) == {"autoencoder", "early", "late"}


def test_auto_generator_is_reused_from_the_cache(
    trained: dict, cases: CaseLists, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from tumorsweep.difftumor.auto import cache_key, resolve_auto, uses_auto
    from tumorsweep.generative.config import generator_config

    monkeypatch.setenv("TUMORSWEEP_CACHE", str(tmp_path))
    base = make_config("demo", {"synthesis.generator": "auto"})
    rows = [{"synthesis.style": "hu"}, {"synthesis.style": "difftumor"}]
    assert uses_auto(base, rows) and not uses_auto(base, rows[:1])
    with pytest.raises(TumorsweepError, match="'auto' can be set in the study's fixed fields"):
        uses_auto(base, [{"synthesis.style": "difftumor", "synthesis.generator": "auto"}])
    key = cache_key(generator_config("demo", base.data.spacing), cases)
    assert key != cache_key(generator_config("paper", base.data.spacing), cases)
    folder = tmp_path / "generators" / key
    resolve_auto(base, rows, cases, "demo", "unused", "unused", dry_run=True)
    assert f"would train {folder}" in capsys.readouterr().out
    shutil.copytree(trained["folder"], folder)
    resolved = resolve_auto(base, rows, cases, "demo", "unused", "unused")
    assert resolved.synthesis.generator == str(folder)
    assert f"reusing {folder}" in capsys.readouterr().out
    assert resolve_auto(base, rows[:1], cases, "demo", "unused", "unused") == base


def test_a_trial_trains_on_difftumor_tumours(
    trained: dict, cases: CaseLists, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The generator runs on the training batch (batch synthesis, counted), the trial logs its
    patch fractions per epoch and the synthesis preview."""
    from mlflow import MlflowClient

    from tumorsweep import tracking
    from tumorsweep.generative.batch import BatchDiffTumor
    from tumorsweep.train import run_local

    cfg = make_config(
        "demo",
        {
            "synthesis.style": "difftumor",
            "synthesis.generator": str(trained["folder"]),
            "synthesis.difftumor.ddim_steps": 5,
            "data.loader_workers": 0,
            "schedule.epochs": 2,
            "schedule.warmup_epochs": 1,
            "schedule.val_every": 2,
            "eval.overlap": 0.0,
        },
    )
    calls = []
    fill = BatchDiffTumor._fill

    def counted(self, image, label, events, model, rng):  # the real fill, counted
        calls.append(len(events))
        return fill(self, image, label, events, model, rng)

    monkeypatch.setattr(BatchDiffTumor, "_fill", counted)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = tracking.start_parent_run(uri, tracking.ensure_experiment(uri, "t"), "trial", {})
    out = run_local(cfg, cases, logger=tracking.MlflowTrialLogger(uri, run_id))
    assert calls and sum(calls) >= 2
    losses = [r["train_loss"] for r in out["reports"] if "train_loss" in r]
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert 0.0 <= out["final"]["liver_dice"] <= 1.0
    client = MlflowClient(uri)
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert tracking.PREVIEW_ARTIFACT in artifacts
    history = client.get_metric_history(run_id, tracking.PATCH_SYNTHETIC_FRACTION)
    assert [m.step for m in history] == [0, 1] and all(0 < m.value <= 1 for m in history)
    assert len(client.get_metric_history(run_id, tracking.PATCH_TUMOR_FRACTION)) == 2
