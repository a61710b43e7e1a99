"""Pixel2Cancer's cellular automaton (`synthesis.style=ca`): the growth rules on hand-made tiny
grids, vessels blocking invasion until pressure breaks them, the label of necrotic voxels,
reproducibility by seed, CPU = CUDA for one seed, and its place in the machinery (transform
firing rule, CLI, preset, report label)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from synthesis_util import liver_case  # tests/ is on the path

from tumorsweep.cli import main as cli_main
from tumorsweep.config import make_config
from tumorsweep.errors import TumorsweepError
from tumorsweep.report.labels import knob_qualifier
from tumorsweep.synthesis import TumorSynthesisd
from tumorsweep.synthesis.cellular import (
    DEAD,
    FULL,
    OUTSIDE,
    PAD,
    _Grid,
    growth_step,
    neighbour_offsets,
    synthesize_ca,
)
from tumorsweep.synthesis.config import CellularConfig, SynthesisConfig, TextureConfig
from tumorsweep.synthesis.synthesize import synthesize_tumors

TISSUE_HU, VESSEL_HU = 100.0, 200.0


def tiny_grid(states: np.ndarray, vessel: np.ndarray | None = None, **knobs):
    """A grid whose organ is the whole box: HU 100 tissue, `vessel` voxels at 200 HU, and the
    given tumour states written over it (0 = healthy)."""
    cfg = CellularConfig(**knobs)
    image = np.full(states.shape, TISSUE_HU, dtype=np.float32)
    if vessel is not None:
        image[vessel] = VESSEL_HU
    grid = _Grid(
        torch.from_numpy(image), torch.ones(states.shape, dtype=torch.bool), cfg, levels=False
    )
    inner = grid.inner()
    mask = torch.from_numpy(states != 0)
    inner[mask] = torch.from_numpy(states.astype(np.int16))[mask]
    frontier = torch.nonzero(grid.state.reshape(grid.shape) > 0)
    flat = [grid.flat(tuple(int(c) - PAD for c in row)) for row in frontier]
    cells = [f for f in flat if 1 <= int(grid.state[f]) <= FULL]
    deltas = neighbour_offsets(grid.shape, cfg.neighbourhood_quirk, "cpu")
    return grid, torch.tensor(sorted(cells), dtype=torch.int64), deltas, cfg


def step(grid, frontier, deltas, cfg, seed=0, steps=1):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        frontier = growth_step(grid, frontier, deltas, None, cfg, gen)
    return grid.inner().numpy().copy(), frontier


def test_cells_below_five_only_grow():
    states = np.zeros((5, 5, 5), dtype=np.int16)
    states[1, 1, 1], states[3, 3, 3], states[1, 3, 2] = 1, 4, 3
    grid, frontier, deltas, cfg = tiny_grid(states)
    after, _ = step(grid, frontier, deltas, cfg)
    expected = states.copy()
    expected[1, 1, 1], expected[3, 3, 3], expected[1, 3, 2] = 2, 5, 4
    assert np.array_equal(after, expected)


@pytest.mark.parametrize("seed", range(5))
def test_a_full_cell_invades_exactly_one_healthy_neighbour_per_step(seed):
    states = np.zeros((3, 3, 3), dtype=np.int16)
    states[1, 1, 1] = FULL
    grid, frontier, deltas, cfg = tiny_grid(states, neighbourhood_quirk=False)
    after, frontier = step(grid, frontier, deltas, cfg, seed=seed)
    # it stays full; its first try that is not itself succeeds (all three hit itself with
    # p = 27^-3: not for these seeds), and nothing else changes
    assert after[1, 1, 1] == FULL
    others = np.delete(after.reshape(-1), 13)
    assert sorted(others.tolist()) == [0] * 25 + [1]
    assert frontier.numel() == 2  # the new cell joins the frontier


@pytest.mark.parametrize("seed", range(5))
def test_a_spreading_cell_grows_and_adds_one_increment(seed):
    states = np.zeros((3, 3, 3), dtype=np.int16)
    states[1, 1, 1] = 7
    grid, frontier, deltas, cfg = tiny_grid(states, neighbourhood_quirk=False)
    after, _ = step(grid, frontier, deltas, cfg, seed=seed)
    # +1 growth, then one successful try: on a neighbour (-> 1) or on itself (-> 9)
    assert after.sum() == 9
    assert after[1, 1, 1] in (8, 9)


def test_a_full_cell_surrounded_by_full_cells_changes_nothing():
    states = np.full((3, 3, 3), FULL, dtype=np.int16)
    grid, frontier, deltas, cfg = tiny_grid(states)
    after, _ = step(grid, frontier, deltas, cfg, steps=10)
    assert np.array_equal(after, states)


def test_the_quirk_offset_reaches_two_voxels_along_axis_0():
    shape = (8, 3, 3)
    quirk = neighbour_offsets(tuple(n + 2 * PAD for n in shape), True, "cpu")
    clean = neighbour_offsets(tuple(n + 2 * PAD for n in shape), False, "cpu")
    sx, sy = (shape[1] + 2 * PAD) * (shape[2] + 2 * PAD), shape[2] + 2 * PAD
    assert quirk.numel() == 28 and clean.numel() == 27
    assert int(quirk[27]) == 2 * sx - sy - 1
    assert int(clean[13]) == 0  # k = 13 is the cell itself
    # full cells at axis-0 index 0 and 1, nothing at 2, one healthy voxel at (3, 0, 0): only
    # the quirk offset of the cell (1, 1, 1) reaches it (p = 1 - (27/28)^3 per step)
    reached = {}
    for quirky in (True, False):
        states = np.zeros(shape, dtype=np.int16)
        states[:2] = FULL
        grid, frontier, deltas, cfg = tiny_grid(states, neighbourhood_quirk=quirky)
        inner = grid.inner()
        inner[2:] = OUTSIDE
        inner[3, 0, 0] = 0
        after, _ = step(grid, frontier, deltas, cfg, steps=60)
        reached[quirky] = int(after[3, 0, 0])
        assert np.all(after[:2] == FULL)
    assert reached == {True: reached[True], False: 0} and reached[True] > 0


def vessel_shell(state: int):
    """One tumour cell at the centre of a 3x3x3 organ whose 26 other voxels are vessels."""
    states = np.zeros((3, 3, 3), dtype=np.int16)
    states[1, 1, 1] = state
    vessel = np.ones((3, 3, 3), dtype=bool)
    vessel[1, 1, 1] = False
    return tiny_grid(states, vessel=vessel, neighbourhood_quirk=False)


def test_vessels_block_cells_below_full_and_take_no_pressure_from_them():
    grid, frontier, deltas, cfg = vessel_shell(5)
    # three steps: before each the cell is below 10 (+1 growth, +1 if a try hits itself)
    after, _ = step(grid, frontier, deltas, cfg, steps=3)
    assert 8 <= after[1, 1, 1] <= FULL
    shell = np.delete(after.reshape(-1), 13)
    assert np.all(shell == 160)  # no invasion, no push


def test_full_cells_push_vessels_which_break_only_past_their_capacity():
    grid, frontier, deltas, cfg = vessel_shell(FULL)
    gen = torch.Generator().manual_seed(3)
    history = []
    for _ in range(400):
        before = np.delete(grid.inner().numpy().reshape(-1), 13).astype(int)
        frontier = growth_step(grid, frontier, deltas, None, cfg, gen)
        after = np.delete(grid.inner().numpy().reshape(-1), 13).astype(int)
        history.append((before, after))
        if np.any(after < 160):
            break
    pushes = [after - before for before, after in history if np.all(after >= 160)]
    # pressure builds up by at most one push per try (3 tries) and saturates at 162
    assert all(0 <= int(d.sum()) <= 3 for d in pushes)
    assert max(int(after.max()) for _, after in history if np.all(after >= 160)) == 162
    before, after = history[-1]
    broken = np.flatnonzero(after < 160)
    assert broken.size >= 1, "no vessel broke in 400 steps"
    # a vessel breaks (into a tumour cell of state 1) only from 162 with >= 2 pushes
    assert np.all(after[broken] == 1) and np.all(before[broken] == 162)


def test_vessels_read_from_hu_block_growth_in_a_whole_event():
    """A wall two voxels thick (the quirk jumps 2) across the organ: at >= 160 HU it holds the
    tumour on its seed's side (a few voxels get through where pressure broke it); the same
    wall at tissue HU lets it through."""
    cfg = CellularConfig(
        steps=(30, 30), seeds=(1, 1), satellite_prob=0.0,
        necrosis_prob=0.0,
    )  # fmt: skip
    far_side = {}
    for wall_hu in (170.0, TISSUE_HU):
        image = np.full((12, 12, 12), TISSUE_HU, dtype=np.float32)
        image[6:8] = wall_hu
        far_side[wall_hu] = 0
        for seed in range(8):
            label = np.ones_like(image, dtype=np.uint8)
            added, tumour = synthesize_ca(image.copy(), label, cfg, TextureConfig(), seed)
            assert added > 0
            near = tumour.seeds[0][0] < 6
            far_side[wall_hu] += int(np.count_nonzero((label[8:] if near else label[:6]) == 2))
    assert far_side[TISSUE_HU] > 100
    assert far_side[170.0] <= 0.05 * far_side[TISSUE_HU]


def necrotic_event(necrotic_label: int):
    image, label = liver_case(shape=(48, 44, 40), radii=(20, 18, 16), seed=1)
    cfg = CellularConfig(
        steps=(40, 40), seeds=(1, 1), satellite_prob=0.0,
        necrosis_prob=1.0, necrosis_min_steps=10, necrotic_label=necrotic_label,
    )  # fmt: skip
    out_image, out_label = image.copy(), label.copy()
    added, tumour = synthesize_ca(out_image, out_label, cfg, TextureConfig(), seed=5)
    dead = np.zeros(label.shape, dtype=bool)
    dead[tumour.window] = tumour.states.numpy() == DEAD
    return image, label, out_image, out_label, added, tumour, dead


def test_necrotic_voxels_keep_the_tumour_label():
    image, label, out_image, out_label, added, tumour, dead = necrotic_event(2)
    assert tumour.necrosis and dead.sum() >= 10
    assert np.all(out_label[dead] == 2)
    assert added == int(((out_label == 2) & (label == 1)).sum())
    # the core is darker than the rest of the tumour (the second, necrosis drop)
    live = (out_label == 2) & ~dead
    assert out_image[dead].mean() < out_image[live].mean() - 10


def test_necrotic_label_zero_is_the_public_float_label_arithmetic():
    *_, out_label, _, _, dead = necrotic_event(0)
    assert dead.sum() >= 10 and np.all(out_label[dead] == 0)


def test_same_seed_same_tumour_other_seed_other_tumour():
    image, label = liver_case(shape=(48, 44, 40), radii=(20, 18, 16))
    config = SynthesisConfig(style="ca", ca={"steps": [20, 40]})
    runs = [synthesize_tumors(image, label, config, np.random.default_rng(s)) for s in (7, 7, 8)]
    assert np.array_equal(runs[0][1], runs[1][1]) and np.array_equal(runs[0][0], runs[1][0])
    assert (runs[0][1] == 2).sum() > 0
    assert not np.array_equal(runs[0][1], runs[2][1])
    # the image changes where the tumour is; the label only inside the liver
    assert np.array_equal(runs[0][1] == 0, label == 0)
    drop = (image - runs[0][0])[runs[0][1] == 2].mean()
    assert 20 < drop < 160


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_and_cuda_grow_the_same_tumour_for_a_seed():
    image, label = liver_case(shape=(48, 44, 40), radii=(20, 18, 16))
    results = {}
    for device in ("cpu", "cuda"):
        cfg = CellularConfig(steps=(40, 60), necrosis_min_steps=30, device=device)
        out_image, out_label = image.copy(), label.copy()
        synthesize_ca(out_image, out_label, cfg, TextureConfig(), seed=11)
        results[device] = (out_image, out_label)
    assert np.array_equal(results["cpu"][1], results["cuda"][1])
    assert np.abs(results["cpu"][0] - results["cuda"][0]).max() <= 1.0  # float32 truncation


def test_firing_rule_follows_healthy_only():
    image, label = liver_case(shape=(48, 44, 40), radii=(20, 18, 16))
    label[24, 22, 20] = 2  # a real tumour voxel
    sample = {"image": torch.from_numpy(image)[None], "label": torch.from_numpy(label)[None]}
    for healthy_only, fires in ((True, False), (False, True)):
        config = SynthesisConfig(
            style="ca", prob=1.0, healthy_only=healthy_only, ca={"steps": [5, 20]}
        )
        out = TumorSynthesisd(config=config, inplace=False).set_random_state(0)(dict(sample))
        assert bool(((out["label"][0] == 2).sum() > 1).item()) is fires


def test_cli_synthesize_style_ca(tmp_path, capsys):
    import nibabel as nib

    image, label = liver_case(shape=(40, 36, 32), radii=(16, 14, 12))
    paths = [tmp_path / "ct.nii.gz", tmp_path / "liver.nii.gz"]
    nib.save(nib.Nifti1Image(image, np.eye(4)), paths[0])
    nib.save(nib.Nifti1Image(label, np.eye(4)), paths[1])
    code = cli_main(
        ["synthesize", "--image", str(paths[0]), "--label", str(paths[1]),
         "--out", str(tmp_path / "out"), "--style", "ca", "--seed", "2"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    out_label = np.asarray(nib.load(tmp_path / "out" / "label.nii.gz").dataobj)
    assert (out_label == 2).sum() > 0
    assert (tmp_path / "out" / "preview.png").stat().st_size > 1000


def test_preset_and_knob_validation():
    cfg = make_config("pixel2cancer")
    assert cfg.synthesis.style == "ca" and cfg.synthesis.healthy_only is False
    assert cfg.data.window == (-175.0, 250.0) and cfg.synthesis.prob == 0.9
    assert cfg.synthesis.ca.invasion_prob == (1.0, 1.0, 1.0)  # as coded
    inverted = r"synthesis\.ca\.steps: .*low \(50\) must be <= high \(10\)"
    with pytest.raises(TumorsweepError, match=inverted):
        make_config("paper", {"synthesis.ca.steps.low": 50, "synthesis.ca.steps.high": 10})
    with pytest.raises(TumorsweepError, match="invasion_prob"):
        make_config("paper", {"synthesis.ca.invasion_prob": [1.0, 1.5, 0.1]})
    assert knob_qualifier("synthesis.style", "ca") == "Pixel2Cancer"


def test_synthesis_styles_study_meets_the_published_zhang_column():
    """The study's Zhang arm on Hu's Val matches the replication's 'Zhang et al.' column; its
    CA arm matches none (no published Pixel2Cancer column on this protocol)."""
    from tumorsweep.report.reference import match_published
    from tumorsweep.search_space import load_search_space

    space = load_search_space("synthesis_styles")
    swept = space.swept_names()
    assert swept == ["model.name", "synthesis.style"]
    common = {"data.real_fraction": 0.0, "synthesis.location": "uniform",
              "synthesis.sphere_ratio": 0.0}  # fmt: skip
    zhang = match_published("unet", "hu-val", {**common, "synthesis.style": "zhang"}, swept)
    assert set(zhang["label"]) == {"Zhang et al."}
    assert 0.51178 < float(zhang.loc[zhang["metric"] == "tumor_dice", "value"].iloc[0]) < 0.5118
    ca = match_published("unet", "hu-val", {**common, "synthesis.style": "ca"}, swept)
    assert ca.empty
