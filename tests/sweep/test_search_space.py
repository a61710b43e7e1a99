"""Search spaces: shipped studies validate; bad ones fail naming the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from tumorsweep.errors import TumorsweepError
from tumorsweep.search_space import (
    SEARCH_SPACE_DIR,
    config_key,
    expand_grid,
    load_search_space,
    param_space,
    trial_overrides,
)

SHIPPED = sorted(p.stem for p in SEARCH_SPACE_DIR.glob("*.yaml"))


def test_every_study_has_an_entry_point() -> None:
    assert SHIPPED == [
        "backbones", "difftumor", "gmm_location", "real_synthetic_mix", "sphere_ratio",
        "synthesis_styles", "texture",
    ]  # fmt: skip
    sweeps = Path(SEARCH_SPACE_DIR).parent / "sweeps"
    # released_checkpoints trains nothing: an evaluation study without a search space
    assert sorted(p.stem for p in sweeps.glob("*.py")) == sorted([*SHIPPED, "released_checkpoints"])


@pytest.mark.parametrize("study", SHIPPED)
@pytest.mark.parametrize("preset", ["paper", "demo"])
def test_shipped_spaces_validate(study: str, preset: str) -> None:
    space = load_search_space(study, preset=preset)
    assert space.study == study
    assert space.metric.startswith("best_val_")


def test_sphere_ratio_grid_is_the_published_one() -> None:
    space = load_search_space("sphere_ratio")
    rows = expand_grid(space)
    assert [r["synthesis.sphere_ratio"] for r in rows] == [0.0, 0.05, 0.10, 0.12, 0.15, 0.17, 0.25]
    assert space.seeds == 3
    assert load_search_space("sphere_ratio", preset="demo").seeds == 1


def test_gmm_rows_and_backbone_grid() -> None:
    gmm = load_search_space("gmm_location")
    assert gmm.grid_size() == 7
    assert gmm.swept_names() == [
        "synthesis.location",
        "synthesis.gmm_components",
        "synthesis.gmm_covariance",
    ]
    backbones = load_search_space("backbones")
    assert backbones.grid_size() == 16


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("study: s\nsweep:\n  synthesis.sphere_ratoi: {grid: [0.1]}\n", "synthesis.sphere_ratoi"),
        ("study: s\nsweep:\n  synthesis.sphere_ratio: {grid: [0.1, 1.5]}\n", "= 1.5"),
        ("study: s\nsweep:\n  synthesis.sphere_ratio: {uniform: [0.1, 0.5]}\n", "needs searcher"),
        ("study: s\nsweep:\n  synthesis.sphere_ratio: 0.3\n", "must be one of"),
        ("study: s\nsearcher: {type: annealing}\n", "searcher.type"),
        ("study: s\nfixed:\n  model.name: resnet\n", "unknown backbone 'resnet'"),
        ("study: [unclosed\n", "not valid YAML"),
        (
            "study: s\nsearcher: {type: optuna}\n"
            "sweep:\n  synthesis.texture.hu_drop_min: {uniform: [30.0, 90.0]}\n",
            "synthesis.texture.hu_drop_min is now synthesis.texture.hu_drop.low",
        ),
        (
            "study: s\nfixed:\n  synthesis.ca.steps_max: 60\n",
            "synthesis.ca.steps_max is now synthesis.ca.steps.high",
        ),
    ],
)
def test_bad_space_names_file_and_field(tmp_path: Path, body: str, needle: str) -> None:
    path = _write(tmp_path, body)
    with pytest.raises(TumorsweepError) as err:
        load_search_space(path)
    assert str(path) in str(err.value)
    assert needle in str(err.value)


def test_missing_space_lists_shipped(tmp_path: Path) -> None:
    with pytest.raises(TumorsweepError, match="sphere_ratio"):
        load_search_space("no_such_study")


def test_param_space_and_trial_overrides() -> None:
    space = load_search_space("gmm_location", preset="demo")
    params = param_space(space, seeds=[0, 1])
    assert params["seed"] == {"grid_search": [0, 1]}
    row = params["configs"]["grid_search"][1]
    overrides = trial_overrides({"configs": row, "seed": 1})
    assert overrides == {
        "seed": 1,
        "synthesis.location": "gmm",
        "synthesis.gmm_components": 1,
        "synthesis.gmm_covariance": "full",
    }
    key = config_key(overrides, space.swept_names())
    assert key == config_key({**overrides, "seed": 0}, space.swept_names())
    assert "gmm" in key


def test_optuna_space_refuses_several_seeds() -> None:
    space = load_search_space("texture", preset="demo")
    assert param_space(space, seeds=[7])["seed"] == 7
    with pytest.raises(TumorsweepError, match="need a grid searcher"):
        param_space(space, seeds=[0, 1])
