"""Pixel2Cancer's cellular-automaton tumours (Lai et al., MICCAI 2024) in torch: `style=ca`.

Written from the public code's behaviour (MrGiovanni/Pixel2Cancer, see
docs/synthesis-styles.md and the reading notes it cites); no code of it is used. One code path
runs on the CPU and on a GPU (`synthesis.ca.device`):

* States on the organ's bounding box (label >= 1), padded by 2 so every neighbour offset is an
  index: 0 healthy tissue, 1..10 tumour (10 = full), 160..162 vessel or boundary under
  pressure (any voxel outside the organ or at >= `vessel_hu` HU), -1 necrotic, -100 padding.
* Work per step follows the tumour: a sorted list of the tumour cells that can still change
  anything (the "frontier": cells below 10, and full cells with a neighbour that is tissue
  below 10 or a vessel). A full cell whose neighbours are all full stays so for good, so it is
  dropped from the list (exact: its tries could only fail). Dense passes over the box happen
  once per event (density levels, the final states), the HU mapping on the tumour's window.
* Synchronous updates: every check of a step reads the state before the step, and the
  increments of all cells are added together (index_add, so collisions add up like the
  original's atomics). The public CUDA kernel reads neighbours from the tensor it is writing
  (thread-order dependent); here a vessel breaks when its pre-step value plus the step's
  pushes exceeds its capacity by 2 (the original: a push that finds it above 162 breaks it).
* One `torch.Generator` (CPU, seeded per event) draws everything; draws are made on the CPU
  and moved to the device, and the frontier list is sorted, so the same seed gives the same
  tumour on any device. (The original seeds curand from `clock64()`: not reproducible.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from tumorsweep.synthesis.config import CellularConfig, TextureConfig
from tumorsweep.synthesis.texture import draw_hu_texture

FULL = 10  # the public "threshold": a full tumour cell
SEED_STATE = FULL // 2  # foci start at 5; cells spread from 5 on
DEAD = -1
PAD = 2  # the quirk offset reaches +2 along axis 0
OUTSIDE = -100  # padding: every try there fails
_PRUNE_EVERY = 4  # steps between frontier prunings (any period is exact)


@dataclass
class CellularTumour:
    """One event's automaton result: states in {-1, 0..10} (int16, zero outside the organ) on
    `window` of the organ box (the tumour's bounding box, widened in-plane by the mapping's
    reach), whether a necrotic core was made, the growth steps drawn, the foci."""

    states: torch.Tensor
    window: tuple[slice, slice, slice]
    necrosis: bool
    steps: int
    seeds: list[tuple[int, int, int]]


def density_levels(image: torch.Tensor, organ: torch.Tensor, cfg: CellularConfig) -> torch.Tensor:
    """The public `Quantify`: level 0/1/2 for HU below organ_hu_min + 1/3, 2/3 of the way to
    vessel_hu, 3 (vessel or boundary) at >= vessel_hu or outside the organ; int8."""
    step = (cfg.vessel_hu - cfg.organ_hu_min) / 3
    level = (image >= cfg.organ_hu_min + step).to(torch.int8)
    level += image >= cfg.organ_hu_min + 2 * step
    level += image >= cfg.vessel_hu
    level[~organ] = 3
    return level


def neighbour_offsets(shape: tuple[int, int, int], quirk: bool, device) -> torch.Tensor:
    """Flat-index offsets of a try's k = 0..26 (the 3x3x3 box, self included; k = 9a + 3b + c
    is offset (a-1, b-1, c-1)) and, with the quirk, k = 27 = (+2, -1, -1)."""
    sy, sx = shape[2], shape[1] * shape[2]
    ks = range(28 if quirk else 27)
    deltas = [(k // 9 - 1) * sx + ((k % 9) // 3 - 1) * sy + (k % 3 - 1) for k in ks]
    return torch.tensor(deltas, dtype=torch.int64, device=device)


def _draw_int(gen: torch.Generator, low: int, high: int) -> int:
    """One integer of U{low..high} (inclusive) from the event's generator."""
    return int(torch.randint(low, high + 1, (1,), generator=gen))


def _uniform(gen: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=gen, dtype=torch.float64))


class _Grid:
    """The padded flat state of one event (int16), the padded density levels only where the
    invasion draw needs them, and index helpers."""

    def __init__(self, image: torch.Tensor, organ: torch.Tensor, cfg: CellularConfig, levels):
        self.box = tuple(int(n) for n in image.shape)
        self.shape = tuple(n + 2 * PAD for n in self.box)
        self.vessel = int(round(cfg.vessel_hu))
        self.capacity = self.vessel + cfg.pressure_capacity
        inner = (slice(PAD, -PAD),) * 3
        state = torch.full(self.shape, OUTSIDE, dtype=torch.int16, device=image.device)
        blocked = (image >= cfg.vessel_hu).logical_or_(~organ)
        state[inner] = blocked.to(torch.int16).mul_(self.vessel)
        self.state = state.reshape(-1)
        self.level = None
        if levels:
            padded = torch.full(self.shape, 3, dtype=torch.int8, device=image.device)
            padded[inner] = density_levels(image, organ, cfg)
            self.level = padded.reshape(-1)
        self.strides = (self.shape[1] * self.shape[2], self.shape[2], 1)
        self.born: list[torch.Tensor] = []

    def flat(self, coords: tuple[int, int, int]) -> int:
        return sum((c + PAD) * s for c, s in zip(coords, self.strides, strict=True))

    def inner(self) -> torch.Tensor:
        """The box's states (a view)."""
        return self.state.reshape(self.shape)[(slice(PAD, -PAD),) * 3]


def _wrapped(coords: list[int], box: tuple[int, ...], wrap: bool) -> tuple[int, int, int] | None:
    """A box coordinate as numpy indexing would read it (negative indices from the end when
    `wrap`), or None where the read would fail (the original's try/except skips it)."""
    out = []
    for c, n in zip(coords, box, strict=True):
        if wrap and -n <= c < 0:
            c += n
        if not 0 <= c < n:
            return None
        out.append(c)
    return tuple(out)


def _plant_seeds(grid: _Grid, cfg: CellularConfig, gen: torch.Generator) -> list:
    """Foci on uniformly drawn healthy organ voxels (state 0), set to 5; each, with
    `satellite_prob`, with satellites at offsets U{-k..k-1}^3 kept where the state is 0."""
    state = grid.state
    shape, box = grid.shape, grid.box
    seeds: list[tuple[int, int, int]] = []
    strides = grid.strides
    tissue = None  # the list of healthy voxels, built only if rejection sampling stalls
    for _ in range(_draw_int(gen, cfg.seeds.low, cfg.seeds.high)):
        # uniform over the voxels still at 0 (the original draws from their list): a uniform
        # box voxel until one is healthy tissue
        index = -1
        for _attempt in range(200):
            coords = [_draw_int(gen, 0, n - 1) for n in box]
            flat = grid.flat(tuple(coords))
            if int(state[flat]) == 0:
                index = flat
                break
        if index < 0:
            if tissue is None:
                tissue = torch.nonzero(state == 0).reshape(-1).cpu()
            free = tissue[state[tissue.to(state.device)].cpu() == 0]
            if free.numel() == 0:
                break
            index = int(free[_draw_int(gen, 0, free.numel() - 1)])
        coords = tuple((index // s) % n - PAD for s, n in zip(strides, shape, strict=True))
        state[index] = SEED_STATE
        seeds.append(coords)
        if float(torch.rand((), generator=gen)) < cfg.satellite_prob:
            k = cfg.satellite_offset
            for _ in range(_draw_int(gen, cfg.satellites.low, cfg.satellites.high)):
                offset = torch.randint(-k, k, (3,), generator=gen).tolist()
                target = [c + o for c, o in zip(coords, offset, strict=True)]
                where = _wrapped(target, grid.box, cfg.satellite_wrap)
                if where is not None and int(state[grid.flat(where)]) == 0:
                    state[grid.flat(where)] = SEED_STATE
                    seeds.append(where)
    return seeds


def _first_success(ok: torch.Tensor) -> torch.Tensor:
    """Tries that happen: those with no success before them in their row."""
    hits = ok.to(torch.int8).cumsum(1)
    return (hits - ok.to(torch.int8)) == 0


def _draws(gen: torch.Generator, rows: int, cols: int, device) -> torch.Tensor:
    """U[0, 1) draws from the CPU generator, moved to the device (device-independent)."""
    return torch.rand((rows, cols), generator=gen).to(device)


def growth_step(
    grid: _Grid,
    frontier: torch.Tensor,
    deltas: torch.Tensor,
    invasion: torch.Tensor | None,
    cfg: CellularConfig,
    gen: torch.Generator,
) -> torch.Tensor:
    """One synchronous growth step on the frontier cells; returns the new frontier.

    From the pre-step state s of every frontier cell: 1 <= s < 10 grows by one; s >= 5
    spreads: up to `max_tries` offsets, stopping at the first success; a try on tissue or
    tumour below 10 (passing the invasion draw of its density level) adds one there; a full
    cell's try on a vessel pushes it (and is used up); anything else fails."""
    state, device = grid.state, grid.state.device
    s0 = state[frontier]
    growing = frontier[s0 < FULL]
    spreads = s0 >= SEED_STATE
    cells, cell_state = frontier[spreads], s0[spreads]
    n = cells.numel()
    k = (_draws(gen, n, cfg.max_tries, device) * (deltas.numel() - 1e-4)).long()
    targets = cells[:, None] + deltas[k]
    t0 = state[targets]
    ok = (t0 >= 0) & (t0 < FULL)
    if invasion is not None:
        chance = invasion[grid.level[targets].long()]
        ok &= _draws(gen, n, cfg.max_tries, device) < chance
    live = _first_success(ok)
    push = live & (t0 >= grid.vessel) & (cell_state >= FULL)[:, None]
    invaded = targets[ok & live]
    newborn = targets[ok & live & (t0 == 0)]
    pushed = targets[push]
    # all reads done: apply the step
    state[growing] += 1
    if invaded.numel():
        state.index_add_(0, invaded, torch.ones_like(invaded, dtype=state.dtype))
        state[invaded] = state[invaded].clamp_(max=FULL)  # duplicates write the same value
    # newborn cells were at 0 before the step and broken vessels at >= vessel: neither is in
    # the frontier, so the frontier only grows by concatenation (sorted parts: deterministic)
    born = [torch.unique(newborn)]
    if pushed.numel():
        state.index_add_(0, pushed, torch.ones_like(pushed, dtype=state.dtype))
        value = state[pushed]
        broke = value >= grid.capacity + 2
        state[pushed] = torch.where(broke, 1, value.clamp(max=grid.capacity)).to(state.dtype)
        if bool(broke.any()):
            vessels = torch.unique(pushed[broke])
            if grid.level is not None:
                grid.level[vessels] = 0  # the original sets its density to the lowest level
            born.append(vessels)
    grid.born += born
    return torch.cat([frontier, *born])


def prune_full(grid: _Grid, frontier: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """Drop full cells none of whose neighbours is tissue below 10 or a vessel: every try of
    theirs fails from now on (neighbour states never go back down)."""
    state = grid.state
    full = state[frontier] >= FULL
    cells = frontier[full]
    around = state[cells[:, None] + deltas[None, :]]
    active = (((around >= 0) & (around < FULL)) | (around >= grid.vessel)).any(1)
    return torch.cat([frontier[~full], cells[active]])


def _necrosis(
    grid: _Grid, seeds: list, steps: int, deltas: torch.Tensor, cfg: CellularConfig, gen
) -> None:
    """The public death phase: every seed point dies, plus 5-19 random points per seed within
    +-(steps/10 - 2) that are full, then floor(steps/divisor + 1) synchronous steps in which
    each dead cell makes up to `max_tries` tries and kills the first full neighbour hit."""
    state = grid.state
    killed = []
    for seed in seeds:
        state[grid.flat(seed)] = DEAD
        killed.append(grid.flat(seed))
    bias = int(steps / 10 - 2)  # numpy's randint(-b, b) with a float b: U{-int(b)..int(b)-1}
    for seed in seeds:
        for _ in range(_draw_int(gen, cfg.necrosis_points.low, cfg.necrosis_points.high)):
            if bias <= 0:
                break
            offset = torch.randint(-bias, bias, (3,), generator=gen).tolist()
            where = _wrapped([c + o for c, o in zip(seed, offset, strict=True)], grid.box,
                             cfg.satellite_wrap)  # fmt: skip
            if where is not None and int(state[grid.flat(where)]) == FULL:
                state[grid.flat(where)] = DEAD
                killed.append(grid.flat(where))
    dead = torch.tensor(sorted(set(killed)), dtype=torch.int64, device=state.device)
    for step in range(int(steps / cfg.necrosis_steps_divisor + 1)):
        if step % 2 == 1:
            around = state[dead[:, None] + deltas[None, :]]
            dead = dead[(around == FULL).any(1)]
        if dead.numel() == 0:
            break
        k = _draws(gen, dead.numel(), cfg.max_tries, state.device) * (deltas.numel() - 1e-4)
        targets = dead[:, None] + deltas[k.long()]
        ok = state[targets] == FULL
        killed = torch.unique(targets[ok & _first_success(ok)])
        state[killed] = DEAD
        dead = torch.unique(torch.cat([dead, killed]))


def grow_tumour(
    image: torch.Tensor, organ: torch.Tensor, cfg: CellularConfig, gen: torch.Generator
) -> CellularTumour | None:
    """Grow one event's tumour on an organ box (`image` HU float, `organ` bool, same shape,
    on the device to run on); None when the organ has no healthy voxel to seed."""
    invasion = None
    if any(p < 1 for p in cfg.invasion_prob):
        invasion = torch.tensor([*cfg.invasion_prob, 0.0], dtype=torch.float32, device=image.device)
    grid = _Grid(image, organ, cfg, levels=invasion is not None)
    deltas = neighbour_offsets(grid.shape, cfg.neighbourhood_quirk, image.device)
    steps = _draw_int(gen, cfg.steps.low, cfg.steps.high)
    seeds = _plant_seeds(grid, cfg, gen)
    if not seeds:
        return None
    frontier = torch.tensor(sorted({grid.flat(s) for s in seeds}), dtype=torch.int64,
                            device=image.device)  # fmt: skip
    grid.born.append(frontier)
    for step in range(steps + 1):  # the public loop runs steps + 1 times
        if frontier.numel() == 0:
            break
        frontier = growth_step(grid, frontier, deltas, invasion, cfg, gen)
        if step % _PRUNE_EVERY == _PRUNE_EVERY - 1:
            frontier = prune_full(grid, frontier, deltas)
    necrosis = bool(
        float(torch.rand((), generator=gen)) < cfg.necrosis_prob and steps > cfg.necrosis_min_steps
    )
    if necrosis:
        _necrosis(grid, seeds, steps, deltas, cfg, gen)
    # the window: every cell that ever held tumour, widened in-plane by 3 (the mapping's
    # blurs reach 2), clipped to the box
    cells = torch.cat(grid.born)
    window = []
    for axis, (stride, n) in enumerate(zip(grid.strides, grid.shape, strict=True)):
        coord = (cells // stride) % n - PAD
        margin = 0 if axis == 0 else 3
        lo, hi = int(coord.min()) - margin, int(coord.max()) + 1 + margin
        window.append(slice(max(lo, 0), min(hi, grid.box[axis])))
    window = tuple(window)
    states = grid.inner()[window]
    states = torch.where(states >= grid.vessel, 0, states).clamp(max=FULL)
    states = torch.where(organ[window], states, 0).to(torch.int16)
    return CellularTumour(states, window, necrosis, steps, seeds)


def blur_inplane(values: torch.Tensor) -> torch.Tensor:
    """OpenCV's 3x3 GaussianBlur with sigma 0 per slice along axis 0: the kernel [1/4, 1/2,
    1/4] along axes 1 and 2, reflect-101 borders (torch's 'reflect')."""
    out = values
    for axis in (1, 2):
        if out.shape[axis] < 2:
            continue  # reflect-101 of one voxel is itself: the blur is the identity
        moved = out.movedim(axis, -1)
        flat = moved.reshape(-1, 1, moved.shape[-1])
        padded = F.pad(flat, (1, 1), mode="reflect")
        blurred = 0.25 * padded[..., :-2] + 0.5 * padded[..., 1:-1] + 0.25 * padded[..., 2:]
        out = blurred.reshape(moved.shape).movedim(-1, axis)
    return out


def map_to_hu(
    image: torch.Tensor,
    level: torch.Tensor,
    states: torch.Tensor,
    texture: torch.Tensor,
    necrosis: bool,
    cfg: CellularConfig,
    gen: torch.Generator,
) -> torch.Tensor:
    """The public liver mapping on a window: with p = blur(states, dead as 10) / 10, vessels
    where p >= 1/2 scale by (level_0 + step/2) / vessel_hu (110/160) and level-2 voxels where
    p != 0 by level_2 / vessel_hu (140/160); I -= T * drop * p; with necrosis I += T * drop2 *
    blur(-1 on dead cells); where p >= 1/2 on level >= 2 the image becomes blur(I * [p != 0]);
    truncated to integers (the original's int16 cast). Returns the new window image."""
    step = (cfg.vessel_hu - cfg.organ_hu_min) / 3
    p = blur_inplane(torch.where(states == DEAD, FULL, states).to(torch.float32)) / FULL
    out = image.to(torch.float32).clone()
    out[(level == 3) & (p >= 0.5)] *= (cfg.organ_hu_min + step / 2) / cfg.vessel_hu
    out[(level == 2) & (p != 0)] *= (cfg.organ_hu_min + 2 * step) / cfg.vessel_hu
    drop = _uniform(gen, cfg.hu_drop.low, cfg.hu_drop.high)
    out -= texture * drop * p
    if necrosis:
        core = blur_inplane(-(states == DEAD).to(torch.float32))
        out += texture * _uniform(gen, cfg.necrosis_drop.low, cfg.necrosis_drop.high) * core
    smooth = blur_inplane(out * (p != 0))
    chosen = (p >= 0.5) & (level >= 2)
    out[chosen] = smooth[chosen]
    return torch.trunc(out)


def synthesize_ca(
    image: np.ndarray,
    label: np.ndarray,
    cfg: CellularConfig,
    texture_cfg: TextureConfig,
    seed: int,
) -> tuple[int, CellularTumour | None]:
    """One Pixel2Cancer event on the organ box arrays (HU float image, label 0/1/2), in place.

    The tumour's voxels inside the organ become label 2 (necrotic ones `necrotic_label`);
    the image changes on the tumour's window (the blur may reach one voxel past the organ, as
    in the original). Everything random comes from `seed`: a torch Generator for the
    automaton and drops, a numpy Generator for the texture. Returns (tumour voxels added, the
    tumour)."""
    device = torch.device(cfg.device)
    gen = torch.Generator().manual_seed(int(seed))
    organ_np = label >= 1
    image_t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).to(device)
    organ_t = torch.from_numpy(organ_np).to(device)
    tumour = grow_tumour(image_t, organ_t, cfg, gen)
    if tumour is None:
        return 0, None
    window = tumour.window
    lo = tuple(s.start for s in window)
    hi = tuple(s.stop for s in window)
    texture = draw_hu_texture(np.random.default_rng(int(seed)), lo, hi, texture_cfg).sample(lo, hi)
    mapped = map_to_hu(
        image_t[window],
        density_levels(image_t[window], organ_t[window], cfg),
        tumour.states,
        torch.from_numpy(texture).to(device),
        tumour.necrosis,
        cfg,
        gen,
    )
    image[window] = mapped.cpu().numpy().astype(image.dtype, copy=False)
    states = tumour.states.cpu().numpy()
    view = label[window]
    inside = view >= 1
    grown = inside & (states > 0)
    dead = inside & (states == DEAD)
    added = int(np.count_nonzero(grown & (view != 2)))
    view[grown] = 2
    if cfg.necrotic_label == 2:
        added += int(np.count_nonzero(dead & (view != 2)))
        view[dead] = 2
    else:  # the public float labels: organ label + (-1)
        view[dead] = view[dead] - 1
    return added, tumour
