"""The public texture bank's start-up draws (`synthesis.texture.draws`).

The public code (MrGiovanni/SyntheticTumors@983dbeef TumorGenerated/TumorGenerated.py:20-36)
seeds numpy with 0 and builds ten textures, each drawing its scale, base and u0 once
(utils.py:57-69); every training event cuts its texture from one of them. `public_bank`
(default) uses those ten triplets, `per_event` draws fresh ones from the ranges."""

from __future__ import annotations

import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from refusals_util import one_line, tree
from synthesis_util import liver_case  # tests/ is on the path

from tumorsweep.cli import main
from tumorsweep.config import TrialConfig, apply_overrides
from tumorsweep.errors import TumorsweepError
from tumorsweep.search_space import SEARCH_SPACE_DIR, load_search_space
from tumorsweep.synthesis.config import (
    PUBLISHED_DRAW_RANGES,
    PUBLISHED_SIGMA_A,
    PUBLISHED_SIGMA_B,
    TextureConfig,
)
from tumorsweep.synthesis.texture import PUBLIC_BANK_DRAWS, draw_hu_texture, texture_draws


def public_bank_draws_oracle() -> list[tuple[int, int, float, float, float]]:
    """numpy's legacy RandomState(0) consumed in the public code's call order, written from
    its text: for sigma_a in [3, 6, 9, 12, 15], sigma_b in [4, 7] (TumorGenerated.py:30-35),
    get_predefined_texture draws uniform(0, 1, 420x300x320), scale ~ U(0.19, 0.21),
    base ~ U(0.04, 0.06), uniform(0, 1, 420x300x320), u0 ~ U(0.5, 0.55) (utils.py:57, 59, 60,
    64, 69); gaussian_filter, min/max and the Bernoulli comparison draw nothing. The big
    arrays are drawn in chunks (the same stream: a uniform array is its values in order)."""
    rs = np.random.RandomState(0)
    voxels = 420 * 300 * 320

    def burn(n: int, chunk: int = 1 << 23) -> None:
        while n > 0:
            rs.uniform(0, 1, size=min(n, chunk))
            n -= chunk

    rows = []
    for sigma_a in [3, 6, 9, 12, 15]:
        for sigma_b in [4, 7]:
            burn(voxels)
            scale = rs.uniform(0.19, 0.21)
            base = rs.uniform(0.04, 0.06)
            burn(voxels)
            u0 = rs.uniform(0.5, 0.55)
            rows.append((sigma_a, sigma_b, scale, base, u0))
    return rows


def test_chunked_uniform_draws_are_the_stream_of_one_array() -> None:
    """The oracle's chunking is sound: one array and the same count in chunks leave the
    legacy generator in the same state."""
    whole, chunked = np.random.RandomState(0), np.random.RandomState(0)
    values = whole.uniform(0, 1, size=1000)
    parts = np.concatenate([chunked.uniform(0, 1, size=n) for n in (300, 7, 693)])
    np.testing.assert_array_equal(values, parts)
    assert whole.uniform(0.5, 0.55) == chunked.uniform(0.5, 0.55)


def test_table_is_the_public_codes_seed0_draws() -> None:
    start = time.perf_counter()
    rows = public_bank_draws_oracle()
    print(f"oracle: {time.perf_counter() - start:.1f} s")
    # same textures, in the public loop's order, with exactly the public draws
    assert list(PUBLIC_BANK_DRAWS) == [(float(a), float(b)) for a, b, *_ in rows]
    for sigma_a, sigma_b, *draws in rows:
        assert PUBLIC_BANK_DRAWS[(float(sigma_a), float(sigma_b))] == tuple(draws)
    # the config's published sets and ranges are the public code's literals and the defaults
    assert PUBLISHED_SIGMA_A == (3, 6, 9, 12, 15) and PUBLISHED_SIGMA_B == (4, 7)
    assert PUBLISHED_DRAW_RANGES == {"scale": (0.19, 0.21), "base": (0.04, 0.06),
                                     "u0": (0.5, 0.55)}  # fmt: skip
    default = TextureConfig()
    assert default.draws == "public_bank"
    assert (default.sigma_a, default.sigma_b) == ([3, 6, 9, 12, 15], [4, 7])
    for name, (low, high) in PUBLISHED_DRAW_RANGES.items():
        assert (getattr(default, name).low, getattr(default, name).high) == (low, high)
    # the bank's u0s average 0.53057, above the range's mean 0.525
    assert abs(np.mean([d[2] for d in PUBLIC_BANK_DRAWS.values()]) - 0.530572) < 1e-6


def test_public_bank_event_uses_its_textures_draws_through_draw_hu_texture() -> None:
    """With public_bank, an event's texture is the one per_event gives with the ranges pinned
    to that texture's bank values, voxel for voxel (same stream: the three uniforms are drawn
    in both modes); a different u0 gives a different texture (the check can fail)."""
    box = ((0, 0, 0), (24, 20, 16))
    for (sigma_a, sigma_b), (scale, base, u0) in PUBLIC_BANK_DRAWS.items():
        bank = TextureConfig(sigma_a=[sigma_a], sigma_b=[sigma_b])
        pinned = TextureConfig(
            draws="per_event", sigma_a=[sigma_a], sigma_b=[sigma_b], scale=(scale, scale),
            base=(base, base), u0=(u0, u0),
        )  # fmt: skip
        seed = int(sigma_a * 10 + sigma_b)
        got = draw_hu_texture(np.random.default_rng(seed), *box, bank).sample(*box)
        want = draw_hu_texture(np.random.default_rng(seed), *box, pinned).sample(*box)
        np.testing.assert_array_equal(got, want)
        other = pinned.model_copy(update={"u0": pinned.u0.model_copy(update={"low": 0.5})})
        moved = draw_hu_texture(np.random.default_rng(seed), *box, other).sample(*box)
        assert not np.array_equal(got, moved)


def test_public_bank_u0_is_one_of_the_ten_and_per_event_draws_from_the_range() -> None:
    """Over 2000 events (sigmas drawn as an event draws them): public_bank gives exactly the
    bank triplet of the drawn texture, all ten turn up, mean u0 ~ 0.5306 (the bank's, each
    texture 1/10); per_event gives 2000 distinct u0 uniform on [0.5, 0.55] (mean 0.525,
    std 0.05 / sqrt(12); 4 standard errors)."""
    n = 2000
    for mode in ("public_bank", "per_event"):
        config = TextureConfig(draws=mode)
        rng = np.random.default_rng(3)
        draws = []
        for _ in range(n):
            sigmas = (float(rng.choice(config.sigma_a)), float(rng.choice(config.sigma_b)))
            draws.append((sigmas, texture_draws(rng, config, *sigmas)))
        u0 = np.array([d[1][2] for d in draws])
        if mode == "public_bank":
            assert all(PUBLIC_BANK_DRAWS[s] == d for s, d in draws)
            assert {s for s, _ in draws} == set(PUBLIC_BANK_DRAWS)
            bank_u0 = np.array([v[2] for v in PUBLIC_BANK_DRAWS.values()])
            assert abs(u0.mean() - bank_u0.mean()) < 4 * bank_u0.std() / np.sqrt(n)
        else:
            assert len(set(u0)) == n and u0.min() >= 0.5 and u0.max() <= 0.55
            assert abs(u0.mean() - 0.525) < 4 * 0.05 / np.sqrt(12 * n)
            scale = np.array([d[1][0] for d in draws])
            assert 0.19 <= scale.min() and scale.max() <= 0.21 and len(set(scale)) == n


def test_public_bank_draws_belong_to_the_public_bank_shape() -> None:
    with pytest.raises(ValueError, match="420x300x320 bank's textures only"):
        draw_hu_texture(np.random.default_rng(0), (0, 0, 0), (8, 8, 8), TextureConfig(),
                        bank_shape=(64, 64, 64))  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"synthesis.texture.u0.low": 0.4}, "u0 = [0.4, 0.55] is not the published U(0.5, 0.55)"),
        ({"synthesis.texture.scale": [0.2, 0.2]}, "scale = [0.2, 0.2] is not the published"),
        ({"synthesis.texture.base.high": 0.05}, "base = [0.04, 0.05] is not the published"),
        ({"synthesis.texture.sigma_a": [3, 5]}, "sigma_a 5 is not in the public bank"),
        ({"synthesis.texture.sigma_b": [2, 4, 9]}, "sigma_b 2, 9 is not in the public bank"),
    ],
    ids=["u0", "scale", "base", "sigma_a", "sigma_b"],
)
def test_public_bank_refuses_a_setting_it_would_not_use(overrides, needle) -> None:
    with pytest.raises(TumorsweepError) as err:
        apply_overrides(TrialConfig(), overrides, source="--set")
    message = str(err.value)
    assert message.startswith("--set: synthesis.texture: ") and "\n" not in message
    assert needle in message and "set synthesis.texture.draws=per_event" in message
    cfg = apply_overrides(TrialConfig(), {**overrides, "synthesis.texture.draws": "per_event"})
    assert cfg.synthesis.texture.draws == "per_event"


def test_sigma_subsets_of_the_bank_are_accepted() -> None:
    cfg = apply_overrides(TrialConfig(), {"synthesis.texture.sigma_a": [9.0, 15.0]})
    assert cfg.synthesis.texture.draws == "public_bank"


def test_cli_refuses_u0_without_per_event(tmp_path: Path, capsys) -> None:
    image, label = liver_case(shape=(40, 36, 32), radii=(16, 14, 12))
    (tmp_path / "in").mkdir()
    nib.save(nib.Nifti1Image(image, np.eye(4)), tmp_path / "in" / "ct.nii.gz")
    nib.save(nib.Nifti1Image(label, np.eye(4)), tmp_path / "in" / "liver.nii.gz")
    args = ["synthesize", "--image", str(tmp_path / "in" / "ct.nii.gz"), "--label",
            str(tmp_path / "in" / "liver.nii.gz"), "--out", str(tmp_path / "out"),
            "--u0", "0.4", "0.6", "--seed", "1"]  # fmt: skip
    before = tree(tmp_path)
    assert main(args) == 2
    one_line(capsys, "texture: u0 = [0.4, 0.6] is not the published", "--texture-draws per_event")
    assert tree(tmp_path) == before and not (tmp_path / "out").exists()
    assert main([*args, "--texture-draws", "per_event"]) == 0
    assert (tmp_path / "out" / "label.nii.gz").exists()


def test_texture_study_sweeps_u0_per_event_and_is_refused_without(tmp_path: Path) -> None:
    """The shipped study draws per event; the same space with the default draws fails the
    preflight, naming the field."""
    assert load_search_space("texture").fixed["synthesis.texture.draws"] == "per_event"
    raw = yaml.safe_load((SEARCH_SPACE_DIR / "texture.yaml").read_text())
    del raw["fixed"]["synthesis.texture.draws"]
    path = tmp_path / "texture.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(TumorsweepError) as err:
        load_search_space(path)
    assert '{"synthesis.texture.u0.' in str(err.value)  # the probe of a swept u0 end
    assert "is not the published U(0.5, 0.55)" in str(err.value)
    assert "set synthesis.texture.draws=per_event" in str(err.value)
