"""Built-in phantom abdominal CT generator: the embedded default dataset for demos and tests.

Anatomy is described in coordinates normalised to the field of view (each axis spans [-1, 1]
over the volume's extent in mm), so a case keeps its look at any spacing, just coarser. Smooth
random shape variation comes from a separable Gaussian-bump field that can be evaluated on any
sub-box of any grid, so each organ is painted only inside its bounding box. "Real" tumours
(label 2) are lobulated unions of spheres with rim enhancement or a necrotic core, sized in mm,
a process independent of `tumorsweep.synthesis` so training on synthetic tumours and evaluating on
these is never circular.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from tumorsweep.errors import TumorsweepError

# Tissue ids painted into the organ map; labels derive from them at the end.
AIR, FAT, MUSCLE, BONE, MARROW, CSF, LUNG, VISCERAL = 0, 1, 2, 3, 4, 5, 6, 7
BOWEL, GAS, STOMACH, SPLEEN, KIDNEY, AORTA, IVC = 8, 9, 10, 11, 12, 13, 14
LIVER, LIVER_VESSEL, TUMOR = 20, 21, 22

BLUR_MM = 0.7  # point-spread of the "scanner" (Gaussian sigma, mm)
TUMOR_RADIUS_MM = (4.0, 15.0)  # principal radius of a real tumour
TUMOR_COUNT_PROBS = (0.35, 0.3, 0.2, 0.15)  # 1, 2, 3 or 4 tumours per tumour case


class _SmoothField:
    """Random smooth scalar field (unit-ish std): Gaussian bumps on a coarse lattice.

    Separable, so evaluating on a rectilinear box costs three small matrix products and the
    same field can be sampled at arbitrary points (tumour placement) or on any grid.
    """

    def __init__(self, rng: np.random.Generator, nodes: int = 7, extent: float = 1.3) -> None:
        self.centres = np.linspace(-extent, extent, nodes, dtype=np.float32)
        self.width = np.float32(2 * extent / (nodes - 1))
        norm = np.sqrt(np.sum(np.exp(-(np.arange(-nodes, nodes + 1) ** 2))) ** 3)
        self.coeffs = (rng.standard_normal((nodes,) * 3) / norm).astype(np.float32)

    def _weights(self, u: np.ndarray) -> np.ndarray:
        return np.exp(-0.5 * ((u[:, None] - self.centres[None, :]) / self.width) ** 2)

    def on_box(self, ux: np.ndarray, uy: np.ndarray, uz: np.ndarray) -> np.ndarray:
        """Field on the rectilinear grid of 1-D normalised coordinates ux x uy x uz."""
        t = np.tensordot(self._weights(ux), self.coeffs, axes=(1, 0))
        t = np.tensordot(t, self._weights(uy), axes=(1, 1))
        return np.tensordot(t, self._weights(uz), axes=(1, 1))

    def at(self, points: np.ndarray) -> np.ndarray:
        """Field at (n, 3) normalised points."""
        wx, wy, wz = (self._weights(points[:, a].astype(np.float32)) for a in range(3))
        return np.einsum("na,nb,nc,abc->n", wx, wy, wz, self.coeffs)


@dataclass
class _Canvas:
    """HU volume and tissue map on a grid, with normalised 1-D axis coordinates."""

    shape: tuple[int, int, int]
    spacing: np.ndarray
    hu: np.ndarray
    tissue: np.ndarray

    @classmethod
    def empty(cls, shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> _Canvas:
        return cls(
            shape=shape,
            spacing=np.asarray(spacing, dtype=np.float64),
            hu=np.full(shape, -1000.0, dtype=np.float32),
            tissue=np.zeros(shape, dtype=np.uint8),
        )

    @property
    def half_fov(self) -> np.ndarray:
        """Half the field of view per axis in mm."""
        return np.asarray(self.shape) * self.spacing / 2

    def axis(self, a: int) -> np.ndarray:
        n = self.shape[a]
        return ((np.arange(n) - (n - 1) / 2) * self.spacing[a] / self.half_fov[a]).astype(
            np.float32
        )

    def box(self, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice, slice]:
        """Index slices covering the normalised box [lo, hi] (may be empty)."""
        slices = []
        for a in range(3):
            ax = self.axis(a)
            slices.append(
                slice(int(np.searchsorted(ax, lo[a])), int(np.searchsorted(ax, hi[a], "right")))
            )
        return tuple(slices)

    def coords(self, box: tuple[slice, slice, slice]) -> tuple[np.ndarray, ...]:
        """Broadcastable normalised coordinates (x[:,1,1], y[1,:,1], z[1,1,:]) of a box."""
        ux, uy, uz = (self.axis(a)[box[a]] for a in range(3))
        return ux[:, None, None], uy[None, :, None], uz[None, None, :]

    def paint(self, box: tuple[slice, ...], mask: np.ndarray, hu: float | np.ndarray, tissue: int):
        """Set HU and tissue id where `mask` is true inside `box` (later paint wins)."""
        target_hu = self.hu[box]
        target_hu[mask] = hu[mask] if isinstance(hu, np.ndarray) else hu
        self.tissue[box][mask] = tissue


def _ellipsoid_level(
    coords: tuple[np.ndarray, ...], centre: np.ndarray, radii: np.ndarray
) -> np.ndarray:
    """Quadratic level ((x-c)/r)^2 summed over axes: < 1 inside the ellipsoid."""
    x, y, z = coords
    return (
        ((x - centre[0]) / radii[0]) ** 2
        + ((y - centre[1]) / radii[1]) ** 2
        + ((z - centre[2]) / radii[2]) ** 2
    )


def _box_of(centre: np.ndarray, radii: np.ndarray, margin: float = 1.35) -> tuple:
    return centre - margin * radii, centre + margin * radii


def _warped_ellipsoid(
    canvas: _Canvas,
    centre: np.ndarray,
    radii: np.ndarray,
    field: _SmoothField | None = None,
    amplitude: float = 0.0,
) -> tuple[tuple[slice, ...], np.ndarray, np.ndarray]:
    """Box, inside-mask and level of an ellipsoid whose level is perturbed by a smooth field."""
    box = canvas.box(*_box_of(centre, radii, 1.0 + amplitude))
    coords = canvas.coords(box)
    level = _ellipsoid_level(coords, centre, radii)
    if field is not None and amplitude:
        level = level + amplitude * field.on_box(*(c.ravel() for c in coords))
    return box, level < 1.0, level


def _draw_body(canvas: _Canvas, rng: np.random.Generator) -> None:
    """Skin outline, subcutaneous fat, abdominal wall muscle, visceral fat, ribs."""
    radii = np.array([rng.uniform(0.84, 0.93), rng.uniform(0.64, 0.74)])
    fat = rng.uniform(0.05, 0.11)
    wall = rng.uniform(0.035, 0.05)
    centre_y = -0.06
    field = _SmoothField(rng, nodes=5)
    rib_phase = rng.uniform(0, 1)
    box = (slice(None),) * 3
    x, y, z = canvas.coords(box)
    wobble = 1.0 + 0.04 * field.on_box(x.ravel(), y.ravel(), z.ravel())
    power = 2.4

    def level(shrink: float) -> np.ndarray:
        return (np.abs(x) / (radii[0] - shrink)) ** power + (
            np.abs(y - centre_y) / (radii[1] - shrink)
        ) ** power

    canvas.paint(box, level(0.0) < wobble, -100.0, FAT)
    canvas.paint(box, level(fat) < wobble, 50.0, MUSCLE)
    canvas.paint(box, level(fat + wall) < wobble, -90.0, VISCERAL)
    # Ribs: oblique bony stripes in the abdominal wall, upper two thirds, not anteriorly.
    ring = (level(fat - 0.01) < wobble) & (level(fat + wall + 0.01) >= wobble)
    angle = np.arctan2(y - centre_y, x)
    z_mm = z * canvas.half_fov[2]
    period = 0.18 * canvas.half_fov[2]
    stripe = np.mod(z_mm / period + 0.5 * np.abs(np.sin(angle)) + rib_phase, 1.0) < 0.22
    ribs = ring & stripe & (z > -0.35) & (np.sin(angle) < 0.55)
    canvas.paint(box, ribs, 550.0, BONE)


def _draw_spine(canvas: _Canvas, rng: np.random.Generator) -> None:
    """Vertebral bodies with discs, spinal canal, posterior arch, paraspinal and psoas muscles."""
    y_body = rng.uniform(-0.42, -0.38)
    r_body = rng.uniform(0.10, 0.12)
    disc_period = 0.3 * canvas.half_fov[0]  # mm, scales with the patient
    disc_phase = rng.uniform(0, 1)
    lo, hi = np.array([-0.45, -0.85, -1.0]), np.array([0.45, -0.2, 1.0])
    box = canvas.box(lo, hi)
    x, y, z = canvas.coords(box)
    r_xy = np.sqrt(x**2 + ((y - y_body) / 1.1) ** 2)
    z_mm = z * canvas.half_fov[2]
    disc = np.mod(z_mm / disc_period + disc_phase, 1.0) < 0.22
    shape3 = (x.shape[0], y.shape[1], z.shape[2])
    for side in (-1, 1):  # paraspinal and psoas muscles
        para = ((x - side * 0.15) / 0.13) ** 2 + ((y - y_body + 0.22) / 0.11) ** 2 < 1
        canvas.paint(box, np.broadcast_to(para, shape3), 55.0, MUSCLE)
        psoas_r = 0.02 + 0.07 * np.clip(-z - 0.1, 0, 1)
        psoas = ((x - side * 0.17) ** 2 + (y - y_body - 0.02) ** 2) < psoas_r**2
        canvas.paint(box, np.broadcast_to(psoas, shape3), 52.0, MUSCLE)
    canvas.paint(box, np.broadcast_to(r_xy < r_body, shape3), 700.0, BONE)
    canvas.paint(box, np.broadcast_to(r_xy < r_body * 0.85, shape3), 230.0, MARROW)
    canvas.paint(box, np.broadcast_to((r_xy < r_body) & disc, shape3), 90.0, MUSCLE)
    canal_y = y_body - r_body - 0.05
    arch = (x**2 + (y - canal_y) ** 2 < 0.075**2) | (
        (np.abs(x) < 0.02) & (y < canal_y) & (y > canal_y - 0.16)
    )
    canvas.paint(box, np.broadcast_to(arch & ~disc, shape3), 600.0, BONE)
    canal = x**2 + (y - canal_y) ** 2 < 0.045**2
    canvas.paint(box, np.broadcast_to(canal, shape3), 15.0, CSF)


def _draw_tube(
    canvas: _Canvas,
    centre_xy: tuple[float, float],
    radii_xy: tuple[float, float],
    z_range: tuple[float, float],
    hu: float,
    tissue: int,
) -> None:
    """A vertical tube (aorta, IVC) of elliptic cross-section."""
    lo = np.array([centre_xy[0] - radii_xy[0], centre_xy[1] - radii_xy[1], z_range[0]])
    hi = np.array([centre_xy[0] + radii_xy[0], centre_xy[1] + radii_xy[1], z_range[1]])
    box = canvas.box(lo, hi)
    x, y, z = canvas.coords(box)
    inside = ((x - centre_xy[0]) / radii_xy[0]) ** 2 + ((y - centre_xy[1]) / radii_xy[1]) ** 2 < 1
    canvas.paint(box, np.broadcast_to(inside, (x.shape[0], y.shape[1], z.shape[2])), hu, tissue)


def _draw_lungs(canvas: _Canvas, rng: np.random.Generator) -> None:
    """Lung bases at the top of the volume, inside the visceral cavity."""
    z0 = rng.uniform(1.05, 1.2)
    for side in (-1, 1):
        centre = np.array([side * 0.42, -0.12, z0])
        radii = np.array([0.4, 0.5, 0.45])
        box, inside, _ = _warped_ellipsoid(canvas, centre, radii)
        inside &= canvas.tissue[box] == VISCERAL
        canvas.paint(box, inside, -850.0, LUNG)


def _draw_bowel(canvas: _Canvas, rng: np.random.Generator) -> None:
    """Bowel loops (soft tissue, some with gas) scattered in the lower and anterior cavity."""
    for _ in range(int(rng.integers(40, 56))):
        centre = np.array(
            [rng.uniform(-0.65, 0.65), rng.uniform(-0.25, 0.55), rng.uniform(-1.0, 0.15)]
        )
        radii = rng.uniform(0.09, 0.17, size=3)
        has_gas = rng.uniform() < 0.35
        hu = rng.uniform(25, 50)
        box, inside, level = _warped_ellipsoid(canvas, centre, radii)
        inside &= canvas.tissue[box] == VISCERAL
        canvas.paint(box, inside, hu, BOWEL)
        if has_gas:
            canvas.paint(box, inside & (level < 0.35), -950.0, GAS)


def _draw_stomach(canvas: _Canvas, rng: np.random.Generator) -> None:
    """Stomach: soft-tissue wall, fluid contents, gas rising anteriorly (patient supine)."""
    centre = np.array([rng.uniform(-0.38, -0.28), rng.uniform(0.1, 0.2), rng.uniform(0.25, 0.4)])
    radii = np.array([rng.uniform(0.2, 0.26), rng.uniform(0.17, 0.22), rng.uniform(0.28, 0.36)])
    field = _SmoothField(rng, nodes=6)
    gas_level = centre[1] + rng.uniform(0.06, 0.14)
    box, inside, level = _warped_ellipsoid(canvas, centre, radii, field, 0.35)
    cavity = (canvas.tissue[box] != LUNG) & (canvas.tissue[box] != FAT)
    cavity &= canvas.tissue[box] != MUSCLE
    inside &= cavity
    canvas.paint(box, inside, 45.0, STOMACH)
    lumen = inside & (level < 0.72)
    canvas.paint(box, lumen, 15.0, STOMACH)
    y = canvas.coords(box)[1]
    canvas.paint(box, lumen & (y > gas_level), -980.0, GAS)


def _draw_spleen(canvas: _Canvas, rng: np.random.Generator) -> None:
    """Spleen: crescent in the left upper posterior quadrant."""
    centre = np.array([rng.uniform(-0.6, -0.52), rng.uniform(-0.3, -0.2), rng.uniform(0.2, 0.4)])
    radii = np.array([rng.uniform(0.13, 0.17), rng.uniform(0.24, 0.3), rng.uniform(0.26, 0.34)])
    hu = rng.uniform(105, 120)
    field = _SmoothField(rng, nodes=6)
    box, inside, _ = _warped_ellipsoid(canvas, centre, radii, field, 0.3)
    bite = _ellipsoid_level(canvas.coords(box), centre + [0.16, 0.05, 0], radii * [0.9, 0.8, 0.9])
    inside &= (bite > 1.0) & (canvas.tissue[box] != MUSCLE) & (canvas.tissue[box] != FAT)
    canvas.paint(box, inside, hu, SPLEEN)


def _draw_kidneys(canvas: _Canvas, rng: np.random.Generator) -> None:
    """Kidneys: enhancing cortex, darker medulla, fatty sinus at the medial hilum."""
    for side, z_c in ((1, rng.uniform(-0.55, -0.4)), (-1, rng.uniform(-0.4, -0.25))):
        centre = np.array([side * rng.uniform(0.34, 0.4), rng.uniform(-0.4, -0.34), z_c])
        radii = np.array([0.12, 0.13, rng.uniform(0.34, 0.42)])
        box, inside, level = _warped_ellipsoid(canvas, centre, radii)
        canvas.paint(box, inside, 175.0, KIDNEY)
        canvas.paint(box, inside & (level < 0.45), 125.0, KIDNEY)
        x = canvas.coords(box)[0]
        sinus = inside & (level < 0.35) & (side * (x - centre[0]) < -0.04)
        canvas.paint(box, sinus, -60.0, VISCERAL)


@dataclass(frozen=True)
class _Liver:
    """Implicit liver: soft union of a right lobe and a left lobe, warped by a smooth field."""

    right_centre: np.ndarray
    right_radii: np.ndarray
    left_centre: np.ndarray
    left_radii: np.ndarray
    field: _SmoothField
    amplitude: float

    @classmethod
    def draw(cls, rng: np.random.Generator) -> _Liver:
        right_centre = np.array(
            [rng.uniform(0.34, 0.42), rng.uniform(-0.12, -0.02), rng.uniform(0.15, 0.3)]
        )
        right_radii = np.array(
            [rng.uniform(0.41, 0.47), rng.uniform(0.48, 0.55), rng.uniform(0.6, 0.72)]
        )
        left_centre = np.array(
            [rng.uniform(-0.12, 0.0), rng.uniform(0.14, 0.26), rng.uniform(0.3, 0.45)]
        )
        left_radii = np.array(
            [rng.uniform(0.3, 0.4), rng.uniform(0.18, 0.24), rng.uniform(0.22, 0.3)]
        )
        return cls(right_centre, right_radii, left_centre, left_radii, _SmoothField(rng), 0.22)

    def level(self, x: np.ndarray, y: np.ndarray, z: np.ndarray, warp: np.ndarray) -> np.ndarray:
        """Soft-min of the two lobes' levels plus warp: < 1 inside."""
        right = _ellipsoid_level((x, y, z), self.right_centre, self.right_radii)
        # The right lobe tapers towards the feet and flattens medially.
        right = right * (1.0 + 0.25 * np.clip(self.right_centre[2] - z, 0, None))
        left = _ellipsoid_level((x, y, z), self.left_centre, self.left_radii)
        k = 0.25
        soft_min = -k * np.log(np.exp(-right / k) + np.exp(-left / k))
        return soft_min + self.amplitude * warp

    def box(self) -> tuple[np.ndarray, np.ndarray]:
        lo = np.minimum(self.right_centre - self.right_radii, self.left_centre - self.left_radii)
        hi = np.maximum(self.right_centre + self.right_radii, self.left_centre + self.left_radii)
        pad = 0.25
        return lo - pad, hi + pad

    def level_at(self, points: np.ndarray) -> np.ndarray:
        x, y, z = points[:, 0], points[:, 1], points[:, 2]
        return self.level(x, y, z, self.field.at(points))


def _draw_liver(canvas: _Canvas, rng: np.random.Generator, liver: _Liver) -> None:
    """Liver parenchyma (~105-125 HU) with mild heterogeneity, kept inside the cavity."""
    base = rng.uniform(105, 125)
    texture = _SmoothField(rng, nodes=9)
    box = canvas.box(*liver.box())
    x, y, z = canvas.coords(box)
    flat = (x.ravel(), y.ravel(), z.ravel())
    level = liver.level(x, y, z, liver.field.on_box(*flat))
    inside = (level < 1.0) & np.isin(canvas.tissue[box], (VISCERAL, BOWEL, GAS, LUNG, STOMACH))
    hu = base + 4.0 * texture.on_box(*flat)
    canvas.paint(box, inside, hu.astype(np.float32), LIVER)


def _segment_distance(
    canvas: _Canvas, box: tuple[slice, ...], p: np.ndarray, q: np.ndarray
) -> np.ndarray:
    """Distance in mm from each voxel of `box` to the segment p-q (points in mm)."""
    x, y, z = (c * h for c, h in zip(canvas.coords(box), canvas.half_fov, strict=True))
    d = q - p
    t = ((x - p[0]) * d[0] + (y - p[1]) * d[1] + (z - p[2]) * d[2]) / max(float(d @ d), 1e-9)
    t = np.clip(t, 0.0, 1.0)
    return np.sqrt(
        (x - p[0] - t * d[0]) ** 2 + (y - p[1] - t * d[1]) ** 2 + (z - p[2] - t * d[2]) ** 2
    )


def _random_liver_points(
    rng: np.random.Generator, liver: _Liver, count: int, depth: float = 0.6
) -> np.ndarray:
    """`count` normalised points well inside the liver (level < depth), by rejection."""
    lo, hi = liver.box()
    found: list[np.ndarray] = []
    while len(found) < count:
        cand = rng.uniform(lo, hi, size=(64, 3))
        found.extend(cand[liver.level_at(cand) < depth])
    return np.array(found[:count])


def _draw_vessels(canvas: _Canvas, rng: np.random.Generator, liver: _Liver) -> None:
    """Portal and hepatic vein trees: bright tubes branching inside the liver only."""
    scale = float(np.mean(canvas.half_fov[:2]))  # mm per normalised unit in the axial plane
    hu = rng.uniform(150, 185)
    hilum = liver.right_centre + np.array([-0.2, 0.05, -0.25])
    hepatic_root = liver.right_centre + np.array([-0.22, -0.2, 0.35])
    segments: list[tuple[np.ndarray, np.ndarray, float]] = []
    for root, radius in ((hilum, 0.055), (hepatic_root, 0.045)):
        frontier = [(root, radius)]
        for _generation in range(3):
            grown = []
            for start, r in frontier:
                targets = _random_liver_points(rng, liver, 2 if len(frontier) > 1 else 3)
                for target in targets:
                    end = start + rng.uniform(0.45, 0.8) * (target - start)
                    segments.append((start, end, r))
                    grown.append((end, r * 0.68))
            frontier = grown
    half = canvas.half_fov
    for start, end, r in segments:
        p, q, r_mm = start * half, end * half, r * scale
        lo = (np.minimum(p, q) - r_mm) / half
        hi = (np.maximum(p, q) + r_mm) / half
        box = canvas.box(lo, hi)
        if any(s.stop <= s.start for s in box):
            continue
        vessel = (_segment_distance(canvas, box, p, q) < r_mm) & (canvas.tissue[box] == LIVER)
        canvas.paint(box, vessel, hu, LIVER_VESSEL)


def _draw_tumors(canvas: _Canvas, rng: np.random.Generator, liver: _Liver) -> None:
    """1-4 hypodense lobulated tumours in the liver, each plain, rim-enhancing or necrotic."""
    half = canvas.half_fov
    count = int(rng.choice(len(TUMOR_COUNT_PROBS), p=TUMOR_COUNT_PROBS)) + 1
    placed: list[tuple[np.ndarray, float]] = []
    lo_r, hi_r = np.log(TUMOR_RADIUS_MM[0]), np.log(TUMOR_RADIUS_MM[1])
    probe = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)])
    for _ in range(count):
        radius = float(np.exp(rng.uniform(lo_r, hi_r)))
        for _attempt in range(200):  # a centre whose 27-point neighbourhood lies in the liver
            centre = _random_liver_points(rng, liver, 1, depth=0.9)[0]
            points = centre + probe * (0.9 * radius / half)
            clear = all(np.linalg.norm((centre - c) * half) > radius + r + 3.0 for c, r in placed)
            if clear and np.all(liver.level_at(points) < 1.0):
                break
            radius = max(TUMOR_RADIUS_MM[0], radius * 0.97)
        else:
            continue
        placed.append((centre, radius))
        _paint_tumor(canvas, rng, centre * half, radius)


def _paint_tumor(canvas: _Canvas, rng: np.random.Generator, centre_mm: np.ndarray, radius: float):
    """Paint one lobulated tumour (union of 1-4 spheres) centred at `centre_mm`."""
    half = canvas.half_fov
    lobes = [(centre_mm, radius)]
    for _ in range(int(rng.integers(0, 4))):
        direction = rng.standard_normal(3)
        direction /= np.linalg.norm(direction)
        lobes.append(
            (
                centre_mm + direction * radius * rng.uniform(0.4, 0.7),
                radius * rng.uniform(0.45, 0.75),
            )
        )
    base = rng.uniform(35, 65)
    kind = rng.choice(["plain", "rim", "necrotic"], p=[0.35, 0.35, 0.3])
    rim_gain = rng.uniform(20, 40)
    core_hu = rng.uniform(10, 30)
    extent = radius * 2.0 + 2.0
    box = canvas.box((centre_mm - extent) / half, (centre_mm + extent) / half)
    x, y, z = (c * h for c, h in zip(canvas.coords(box), half, strict=True))
    # Signed depth below the surface in mm (positive inside), from the union of lobes.
    depth = np.full(canvas.hu[box].shape, -np.inf, dtype=np.float32)
    for c, r in lobes:
        dist = np.sqrt((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2)
        depth = np.maximum(depth, r - dist)
    in_liver = np.isin(canvas.tissue[box], (LIVER, LIVER_VESSEL))
    inside = (depth > 0) & in_liver
    hu = np.full(depth.shape, base, dtype=np.float32)
    if kind == "rim":
        hu += rim_gain * np.clip(1.0 - depth / 1.5, 0, 1)
    elif kind == "necrotic":
        core = np.clip((depth - 0.45 * radius) / 2.0, 0, 1)
        hu += (core_hu - base) * core
    # Soft 1 mm transition into the surrounding parenchyma.
    alpha = np.clip(depth / 1.0, 0, 1)
    blended = canvas.hu[box] * (1 - alpha) + hu * alpha
    canvas.paint(box, inside, blended.astype(np.float32), TUMOR)


def _gaussian_noise_gain(sigma: np.ndarray) -> float:
    """Std of white unit noise after scipy's gaussian_filter with per-axis `sigma` (voxels)."""
    gain = 1.0
    for s in sigma:
        if s <= 0:
            continue
        radius = int(4.0 * s + 0.5)
        w = np.exp(-0.5 * (np.arange(-radius, radius + 1) / s) ** 2)
        w /= w.sum()
        gain *= float(np.sqrt(np.sum(w**2)))
    return gain


def _validate_geometry(shape: tuple[int, ...], spacing: tuple[float, ...]) -> None:
    if len(shape) != 3 or any(int(n) < 16 for n in shape):
        raise TumorsweepError(f"phantom shape must be 3 sizes >= 16 voxels, got {tuple(shape)}")
    if len(spacing) != 3 or any(not (0.1 <= float(s) <= 10.0) for s in spacing):
        raise TumorsweepError(f"phantom spacing must be 3 values in [0.1, 10] mm, got {spacing}")


def make_phantom_case(
    rng: np.random.Generator,
    shape: tuple[int, int, int] = (128, 128, 96),
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    with_tumors: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """One abdominal CT phantom in RAS voxel order: (float32 HU image, uint8 label 0/1/2).

    Axis 0 points to the patient's right, axis 1 anterior, axis 2 superior. The anatomy spans
    the field of view in mm, so the same draws at another spacing give the same patient.
    """
    _validate_geometry(shape, spacing)
    shape = tuple(int(n) for n in shape)
    canvas = _Canvas.empty(shape, tuple(float(s) for s in spacing))
    _draw_body(canvas, rng)
    _draw_lungs(canvas, rng)
    _draw_bowel(canvas, rng)
    _draw_stomach(canvas, rng)
    liver = _Liver.draw(rng)
    _draw_liver(canvas, rng, liver)
    _draw_spleen(canvas, rng)
    _draw_kidneys(canvas, rng)
    _draw_tube(canvas, (rng.uniform(-0.1, -0.05), -0.22), (0.065, 0.065), (-1.0, 0.9), 165.0, AORTA)
    _draw_tube(canvas, (rng.uniform(0.1, 0.15), -0.18), (0.07, 0.055), (-1.0, 0.9), 135.0, IVC)
    _draw_spine(canvas, rng)
    _draw_vessels(canvas, rng, liver)
    if with_tumors:
        _draw_tumors(canvas, rng, liver)
    noise_std = rng.uniform(10.0, 20.0)
    sigma_vox = BLUR_MM / canvas.spacing
    sigma_vox = np.where(sigma_vox < 0.3, 0.0, sigma_vox)
    image = canvas.hu
    image += rng.standard_normal(shape, dtype=np.float32) * np.float32(
        noise_std / _gaussian_noise_gain(sigma_vox)
    )
    image = ndimage.gaussian_filter(image, sigma=tuple(sigma_vox), mode="nearest")
    np.clip(image, -1024.0, 3071.0, out=image)
    label = np.zeros(shape, dtype=np.uint8)
    label[(canvas.tissue == LIVER) | (canvas.tissue == LIVER_VESSEL)] = 1
    label[canvas.tissue == TUMOR] = 2
    return image.astype(np.float32, copy=False), label


def tumor_partition(tumor_cases: int) -> tuple[int, int, int]:
    """Default split of tumour cases into (train, validation, test) counts.

    Half (rounded down) are held out for testing, one in six (at least one) for checkpoint
    selection, the rest join training as the real-tumour control: 6 -> 2/1/3, 12 -> 4/2/6.
    """
    if tumor_cases <= 0:
        return 0, 0, 0
    if tumor_cases == 1:
        return 0, 0, 1
    if tumor_cases == 2:
        return 0, 1, 1
    test = tumor_cases // 2
    validation = max(1, tumor_cases // 6)
    return tumor_cases - test - validation, validation, test


def _oriented(
    image: np.ndarray, label: np.ndarray, spacing: tuple[float, float, float], orientation: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reorder RAS arrays to `orientation` (e.g. "LPS") with an affine keeping world positions.

    The volume centre sits at the world origin whatever the orientation, so MONAI's
    Orientationd back to RAS recovers the generated arrays exactly.
    """
    from nibabel import orientations as ornt

    code = tuple(orientation.upper())
    valid = len(code) == 3 and {"R", "L"} & set(code) and {"A", "P"} & set(code)
    if not (valid and {"S", "I"} & set(code)):
        raise TumorsweepError(
            f"orientation must be 3 axis codes like RAS or LPS, got {orientation!r}"
        )
    target = ornt.axcodes2ornt(code)
    ras_affine = np.diag([*spacing, 1.0])
    ras_affine[:3, 3] = -(np.asarray(image.shape) - 1) / 2 * np.asarray(spacing)
    transform = ornt.ornt_transform(ornt.axcodes2ornt(("R", "A", "S")), target)
    affine = ras_affine @ ornt.inv_ornt_aff(transform, image.shape)
    return (
        ornt.apply_orientation(image, transform),
        ornt.apply_orientation(label, transform),
        affine,
    )


def _case_entry(number: int, tumor: bool) -> dict:
    return {
        "image": f"./imagesTr/liver_{number}.nii.gz",
        "label": f"./labelsTr/liver_{number}.nii.gz",
        "tumor": tumor,
    }


def write_phantom_dataset(
    out_dir: str | Path,
    cases: int = 12,
    seed: int = 0,
    shape: tuple[int, int, int] = (128, 128, 96),
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    tumor_cases: int = 6,
    orientation: str = "RAS",
    preview: bool = False,
    partition: tuple[int, int, int] | None = None,
) -> Path:
    """Write an MSD Task03-style phantom dataset and return the path of its dataset.json.

    Cases liver_0 .. liver_{cases-tumor_cases-1} are healthy (labels 0/1); the last
    `tumor_cases` carry real tumours and are split by `tumor_partition` into training (real-
    tumour control), `validation` and `test` (or by `partition`, the (train, validation, test)
    counts, summing to `tumor_cases`). Case N is drawn from seed (seed, N), so a case
    does not depend on how many others are written. Images are int16 HU, labels uint8.
    """
    if cases < 1 or not 0 <= tumor_cases <= cases:
        raise TumorsweepError(
            f"need cases >= 1 and 0 <= tumor-cases <= cases, got cases={cases}, "
            f"tumor-cases={tumor_cases}"
        )
    _validate_geometry(shape, spacing)
    spacing = tuple(float(s) for s in spacing)
    root = Path(out_dir)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    first_tumor = cases - tumor_cases
    if partition is not None and (sum(partition) != tumor_cases or min(partition) < 0):
        raise TumorsweepError(
            f"partition {tuple(partition)}: (train, validation, test) counts must be >= 0 and "
            f"sum to tumor-cases={tumor_cases}"
        )
    n_train, n_val, _ = partition or tumor_partition(tumor_cases)
    lists: dict[str, list[dict]] = {"training": [], "validation": [], "test": []}
    previews = []
    for number in range(cases):
        tumor = number >= first_tumor
        rng = np.random.default_rng([seed, number])
        image, label = make_phantom_case(rng, shape, spacing, with_tumors=tumor)
        if preview and len(previews) < 4 and (tumor or not previews):
            previews.append((f"liver_{number}", image, label))
        _save_case(root, f"liver_{number}", *_oriented(image, label, spacing, orientation))
        rank = number - first_tumor
        role = "training" if not tumor or rank < n_train else "validation"
        role = "test" if tumor and rank >= n_train + n_val else role
        lists[role].append(_case_entry(number, tumor))
    generator = {"seed": seed, "shape": list(shape), "spacing": list(spacing),
                 "orientation": orientation.upper(), "tumor_cases": tumor_cases}  # fmt: skip
    path = root / "dataset.json"
    path.write_text(json.dumps(_description(lists, generator), indent=2) + "\n")
    if preview and previews:
        from tumorsweep.data.preview import write_preview

        write_preview(previews, root / "preview.png", spacing)
    return path


def _save_case(root: Path, name: str, image: np.ndarray, label: np.ndarray, affine) -> None:
    """One case as int16 HU image and uint8 label NIfTI files with the same qform and sform."""
    import nibabel as nib

    for folder, array, dtype in (("imagesTr", image, np.int16), ("labelsTr", label, np.uint8)):
        nifti = nib.Nifti1Image(np.round(array).astype(dtype), affine)
        nifti.header.set_xyzt_units("mm", "sec")
        nifti.set_qform(affine, code=1)
        nifti.set_sform(affine, code=1)
        nib.save(nifti, root / folder / f"{name}.nii.gz")


def _description(lists: dict[str, list[dict]], generator: dict) -> dict:
    """The dataset.json of a phantom dataset (MSD Task03 fields plus how it was generated)."""
    return {
        "name": "tumorsweep-phantom",
        "description": "Synthetic abdominal CT phantoms with liver and real-tumour labels",
        "reference": "tumorsweep tumorsweep.data.phantom",
        "licence": "CC0",
        "release": "1.0",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "liver", "2": "cancer"},
        "numTraining": len(lists["training"]),
        "numTest": len(lists["test"]),
        "generator": generator,
        **lists,
    }
