"""The built-in occlusion benchmark: a synthetic dataset in COCO panoptic layout. No torch here.

Every image is a background of 2-4 textured stuff regions with 3-7 thing instances on top (plus, in
some images, a crowd region). Thing classes have distinct silhouettes and textures; who lies on top
is decided by a *depth order between classes* that neither "higher detection score on top" (the
frequent class on top) nor "smaller on top" reproduces, with a few context-dependent and random
exceptions. That is the situation of the paper's person-and-tie example (§3.2, Fig. 7): the frequent
person class would be pasted over the tie it wears.

Outputs (see docs/synthetic.md)::

    DIR/images/{train,val}/<id>.jpg
    DIR/annotations/panoptic_{train,val}.json + panoptic_{train,val}/<id>.png   (COCO panoptic)
    DIR/annotations/instances_{train,val}.json                                  (COCO instances,
        amodal and overlapping RLE masks; extra per-annotation keys ``segment_id`` = the id of the
        instance's segment in the panoptic PNG and ``depth`` = paint rank, 0 = farthest)

Each image is drawn from its own generator seeded by (seed, split, index), so the bytes written do
not depend on the number of worker processes.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from oanet.data.png_io import read_id_png, rgb2id, write_id_png
from oanet.errors import DataError, make_dir

GENERATOR_VERSION = 1
DEFAULT_TRAIN = 2000
DEFAULT_VAL = 300
DEFAULT_SIZE = 256
DEFAULT_SEED = 0
MIN_SIZE = 64  # below this the smallest shapes are a few pixels wide
MAX_SIZE = 2048
SPLITS = ("train", "val")
JPEG_QUALITY = 92


# --------------------------------------------------------------------------------------------------
# Classes


@dataclass(frozen=True)
class ThingClass:
    id: int
    name: str
    supercategory: str
    color: tuple[int, int, int]  # base colour of the texture and of the panoptic segment colour
    layer: float  # depth layer: higher lies on top
    weight: float  # relative sampling frequency
    size: tuple[float, float]  # range of the characteristic size, as a fraction of the image size


@dataclass(frozen=True)
class StuffClass:
    id: int
    name: str
    supercategory: str
    color: tuple[int, int, int]


# Layers (far -> near): star < person < ring < triangle < ball < cross < box < tie. Frequent
# classes (person, box) and large ones (person, box, ring) are not consistently on top or below.
THINGS: tuple[ThingClass, ...] = (
    ThingClass(1, "person", "person", (230, 150, 100), 1.0, 3.0, (0.40, 0.62)),
    ThingClass(2, "tie", "accessory", (190, 25, 55), 7.0, 0.35, (0.22, 0.32)),
    ThingClass(3, "ball", "shape", (245, 215, 40), 4.0, 1.5, (0.16, 0.30)),
    ThingClass(4, "box", "shape", (150, 95, 45), 6.0, 2.0, (0.18, 0.34)),
    ThingClass(5, "triangle", "shape", (205, 60, 205), 3.0, 1.0, (0.20, 0.36)),
    ThingClass(6, "star", "shape", (250, 250, 235), 0.0, 1.2, (0.22, 0.34)),
    ThingClass(7, "ring", "shape", (30, 200, 180), 2.0, 0.8, (0.24, 0.36)),
    ThingClass(8, "cross", "shape", (45, 45, 55), 5.0, 1.0, (0.18, 0.32)),
)
STUFF: tuple[StuffClass, ...] = (
    StuffClass(101, "sky", "sky", (135, 190, 240)),
    StuffClass(102, "wall", "wall", (165, 80, 60)),
    StuffClass(103, "grass", "plant", (70, 140, 60)),
    StuffClass(104, "water", "water", (30, 90, 170)),
    StuffClass(105, "road", "ground", (115, 115, 115)),
)
THING_BY_NAME = {c.name: c for c in THINGS}
STUFF_BY_NAME = {c.name: c for c in STUFF}

# Depth rules beyond the class layers (documented in docs/synthetic.md).
TIE_ON_PERSON_PROB = 0.85  # a tie is worn by a person whenever the image has one
PERSON_TIE_PROB = 0.45  # chance that a person gets a tie
FLOATING_LAYER = 8.0  # a ball mostly over water floats on top of everything
OUT_OF_ORDER_PROB = 0.05  # an instance whose layer is redrawn at random
ATTACH_PROB = 0.5  # an instance is placed overlapping an earlier one
CROWD_PROB = 0.15
CROWD_CLASSES = ("person", "ball", "star")
STUFF_VOID_PROB = 0.5  # void band along the stuff borders
THING_VOID_PROB = 0.25  # void band along a visible instance's outline
MIN_VISIBLE_FRACTION = 0.35
NUM_THINGS = (3, 7)


# --------------------------------------------------------------------------------------------------
# Geometry: boolean masks from vectorised tests on pixel-centre coordinates


@dataclass
class Grid:
    xs: np.ndarray  # float32 (H, W): x of pixel centres
    ys: np.ndarray

    @classmethod
    def square(cls, size: int) -> "Grid":
        coords = np.arange(size, dtype=np.float32) + 0.5
        ys, xs = np.meshgrid(coords, coords, indexing="ij")
        return cls(xs, ys)


@dataclass
class Shape:
    """One silhouette: kind, centre (pixels), rotation (radians) and size (pixels)."""

    kind: str
    cx: float
    cy: float
    angle: float
    size: float
    aspect: float = 1.0  # box only: height / width

    @property
    def radius(self) -> float:
        """Radius of a circle that holds the shape (for placement)."""
        return self.size * (0.5 * max(1.0, self.aspect) if self.kind == "box" else 0.5) * (
            1.45 if self.kind in ("box", "triangle") else 1.0
        )

    @property
    def extent(self) -> float:
        """Distance from the centre to the farthest silhouette point (at most)."""
        factor = {"box": 0.5 * math.hypot(1.0, self.aspect), "triangle": 1 / math.sqrt(3), "cross": 0.55}
        return self.size * factor.get(self.kind, 0.5) + 1.0

    def window(self, grid: Grid) -> tuple[slice, slice]:
        """Rows and columns of the image that can hold the shape: all work is done inside them."""
        h, w = grid.xs.shape
        r = self.extent
        rows = slice(int(np.clip(math.floor(self.cy - r), 0, h)), int(np.clip(math.ceil(self.cy + r) + 1, 0, h)))
        cols = slice(int(np.clip(math.floor(self.cx - r), 0, w)), int(np.clip(math.ceil(self.cx + r) + 1, 0, w)))
        return rows, cols

    def local(self, grid: Grid, window: tuple[slice, slice]) -> tuple[np.ndarray, np.ndarray]:
        """Coordinates in the shape's frame inside ``window``: u across, v along (down), origin at the centre."""
        cos, sin = math.cos(self.angle), math.sin(self.angle)
        dx, dy = grid.xs[window] - self.cx, grid.ys[window] - self.cy
        return cos * dx + sin * dy, -sin * dx + cos * dy


def polygon_mask(u: np.ndarray, v: np.ndarray, vertices: Sequence[tuple[float, float]]) -> np.ndarray:
    """Even-odd point-in-polygon test over all pixels at once (one pass per edge)."""
    inside = np.zeros(u.shape, dtype=bool)
    n = len(vertices)
    for i in range(n):
        (u0, v0), (u1, v1) = vertices[i], vertices[(i + 1) % n]
        if v0 == v1:
            continue
        crosses = (v0 > v) != (v1 > v)
        u_at = u0 + (v - v0) * (u1 - u0) / (v1 - v0)
        inside ^= crosses & (u < u_at)
    return inside


def _capsule(u, v, v_top: float, v_bottom: float, radius: float) -> np.ndarray:
    dv = np.clip(v, v_top, v_bottom) - v
    return u * u + dv * dv <= radius * radius


def _star_vertices(outer: float, inner: float, points: int = 5) -> list[tuple[float, float]]:
    verts = []
    for k in range(2 * points):
        r = outer if k % 2 == 0 else inner
        a = math.pi * k / points - math.pi / 2
        verts.append((r * math.cos(a), r * math.sin(a)))
    return verts


def shape_mask(shape: Shape, grid: Grid) -> np.ndarray:
    """Boolean (H, W) silhouette of ``shape``."""
    window = shape.window(grid)
    mask = np.zeros(grid.xs.shape, dtype=bool)
    mask[window] = _local_mask(shape, *shape.local(grid, window))
    return mask


def _local_mask(shape: Shape, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    s = shape.size
    if shape.kind == "person":  # a head on a capsule body, s = height
        head = 0.11 * s
        body = 0.16 * s
        top = -0.5 * s + 1.8 * head
        in_head = u * u + (v + 0.5 * s - head) ** 2 <= head * head
        return in_head | _capsule(u, v, top + body, 0.5 * s - body, body)
    if shape.kind == "tie":  # a kite: short top, long bottom, s = length
        w = 0.22 * s
        return polygon_mask(u, v, [(0, -0.5 * s), (w, -0.25 * s), (0, 0.5 * s), (-w, -0.25 * s)])
    if shape.kind == "ball":
        return u * u + v * v <= (0.5 * s) ** 2
    if shape.kind == "box":
        return (np.abs(u) <= 0.5 * s) & (np.abs(v) <= 0.5 * s * shape.aspect)
    if shape.kind == "triangle":  # equilateral, side s
        r = s / math.sqrt(3)
        verts = [(r * math.cos(a), r * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
        return polygon_mask(u, v, verts)
    if shape.kind == "star":
        return polygon_mask(u, v, _star_vertices(0.5 * s, 0.24 * s))
    if shape.kind == "ring":
        rho2 = u * u + v * v
        return (rho2 <= (0.5 * s) ** 2) & (rho2 >= (0.25 * s) ** 2)
    if shape.kind == "cross":
        arm = 0.17 * s
        return ((np.abs(u) <= arm) & (np.abs(v) <= 0.5 * s)) | ((np.abs(v) <= arm) & (np.abs(u) <= 0.5 * s))
    raise ValueError(f"unknown shape kind {shape.kind!r}")


def _shifted(a: np.ndarray, dy: int, dx: int, fill) -> np.ndarray:
    out = np.full_like(a, fill)
    h, w = a.shape
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = a[
        max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


_NEIGHBOURS = ((1, 0), (-1, 0), (0, 1), (0, -1))


def inner_edge(mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels of ``mask`` within ``width`` (4-connected steps) of a pixel outside it."""
    core = mask.copy()
    for _ in range(width):
        eroded = core.copy()
        for dy, dx in _NEIGHBOURS:
            eroded &= _shifted(core, dy, dx, True)
        core = eroded
    return mask & ~core


def label_boundary(labels: np.ndarray, width: int) -> np.ndarray:
    """Pixels within about ``width`` of a pixel with another label (both sides of each border)."""
    band = np.zeros(labels.shape, dtype=bool)
    rows = labels[1:, :] != labels[:-1, :]
    cols = labels[:, 1:] != labels[:, :-1]
    band[1:, :] |= rows
    band[:-1, :] |= rows
    band[:, 1:] |= cols
    band[:, :-1] |= cols
    for _ in range(width - 1):
        grown = band.copy()
        for dy, dx in _NEIGHBOURS:
            grown |= _shifted(band, dy, dx, False)
        band = grown
    return band


def mask_bbox(mask: np.ndarray) -> list[int]:
    """COCO [x, y, width, height] of a non-empty boolean mask (integer pixels)."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]


# --------------------------------------------------------------------------------------------------
# Stuff: 2-4 regions split by smooth curves, each class with its own texture


def _smooth_curve(rng: np.random.Generator, t: np.ndarray, base: float, size: int) -> np.ndarray:
    """base + two low-frequency sinusoids of ``t`` (pixels): a gently waving border."""
    out = np.full(t.shape, base, dtype=np.float32)
    for freq, amp in ((rng.uniform(0.4, 1.2), 0.06), (rng.uniform(1.5, 2.5), 0.015)):
        out += amp * size * np.sin(2 * np.pi * freq * t / size + rng.uniform(0, 2 * np.pi))
    return out


def stuff_layout(rng: np.random.Generator, grid: Grid) -> np.ndarray:
    """(H, W) int array of indices into STUFF: a top region over 1-3 ground regions."""
    size = grid.xs.shape[0]
    top = STUFF_BY_NAME["sky"] if rng.random() < 0.65 else STUFF_BY_NAME["wall"]
    ground = [STUFF_BY_NAME[n] for n in rng.permutation(["grass", "water", "road"])]
    n_ground = int(rng.choice([1, 2, 3], p=[0.35, 0.45, 0.2]))
    index = {c.id: i for i, c in enumerate(STUFF)}

    labels = np.full(grid.xs.shape, index[ground[0].id], dtype=np.int64)
    horizon = _smooth_curve(rng, grid.xs, rng.uniform(0.25, 0.5) * size, size)
    labels[grid.ys < horizon] = index[top.id]
    below = grid.ys >= horizon
    if n_ground >= 2:
        if n_ground == 3 or rng.random() < 0.5:  # a lower horizontal band
            lower = _smooth_curve(rng, grid.xs, rng.uniform(0.68, 0.8) * size, size)
            second = below & (grid.ys >= lower)
        else:  # a left/right split
            split = _smooth_curve(rng, grid.ys, rng.uniform(0.35, 0.65) * size, size)
            second = below & (grid.xs >= split)
        labels[second] = index[ground[1].id]
        if n_ground == 3:
            split = _smooth_curve(rng, grid.ys, rng.uniform(0.35, 0.65) * size, size)
            labels[second & (grid.xs >= split)] = index[ground[2].id]
    return labels


def stuff_texture(name: str, rng: np.random.Generator, x: np.ndarray, y: np.ndarray, size: int) -> np.ndarray:
    """(N, 3) float32 RGB texture of a stuff class at the N pixel centres ``x``, ``y``."""
    xs, ys = x / size, y / size  # 0..1
    base = (np.array(STUFF_BY_NAME[name].color, dtype=np.float32) + rng.uniform(-15, 15, 3)).astype(np.float32)
    noise = rng.standard_normal((x.size, 1), dtype=np.float32)
    if name == "sky":  # lighter towards the horizon
        return base * (0.8 + 0.45 * ys[:, None]) + 4 * noise
    if name == "wall":  # bricks with light mortar joints, one colour per brick
        rows = 8 + int(rng.integers(0, 5))
        row = np.floor(ys * rows)
        along = xs * rows / 2 + 0.5 * (row % 2)
        brick = (row * 97 + np.floor(along) * 31).astype(np.int64) % 16
        jitter = rng.uniform(0.8, 1.15, 16).astype(np.float32)[brick]
        mortar = (ys * rows % 1 < 0.12) | (along % 1 < 0.06)
        rgb = base * jitter[:, None] + 6 * noise
        rgb[mortar] = (205, 200, 190)
        return rgb
    if name == "grass":  # blades: vertical high-frequency stripes and strong noise
        blades = np.sin(2 * np.pi * xs * rng.uniform(35, 50) + 3 * np.sin(2 * np.pi * ys * 3))
        return base * (1 + 0.15 * blades[:, None]) + 16 * noise
    if name == "water":  # horizontal waves
        waves = np.sin(2 * np.pi * (ys * rng.uniform(14, 20) + 0.08 * np.sin(2 * np.pi * xs * 4)))
        return base * (1 + 0.25 * waves[:, None]) + 5 * noise
    if name == "road":  # fine grain, darker away from the viewer
        return base * (0.85 + 0.25 * ys[:, None]) + 10 * noise
    raise ValueError(f"unknown stuff class {name!r}")


# --------------------------------------------------------------------------------------------------
# Things: textures in the shape's own frame, so patterns turn with the shape


def thing_colors(shape: Shape, cls: ThingClass, rng: np.random.Generator, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(N, 3) float32 colours of the N pixels with local coordinates ``u``, ``v``."""
    s = shape.size
    base = np.array(cls.color, dtype=np.float32) + rng.uniform(-20, 20, 3)
    noise = 4.0 * rng.standard_normal((u.size, 1), dtype=np.float32)
    kind = shape.kind
    if kind == "person":  # skin-coloured head over a shaded body
        rgb = np.repeat(base[None], u.size, axis=0) * (1.1 - 0.3 * (v / s + 0.5))[:, None]
        head = v < -0.5 * s + 0.22 * s
        rgb[head] = np.array((250, 205, 165), dtype=np.float32)
        return rgb + noise
    if kind == "tie":  # diagonal stripes
        stripe = np.sin(2 * np.pi * (u + v) / max(4.0, 0.12 * s)) > 0.3
        other = np.array((245, 205, 70), dtype=np.float32)
        return np.where(stripe[:, None], other, base) + noise
    if kind == "ball":  # highlight towards the upper left
        rho = np.sqrt((u + 0.15 * s) ** 2 + (v + 0.15 * s) ** 2) / s
        return base * (1.2 - 0.7 * rho)[:, None] + noise
    if kind == "box":  # cardboard with a darker tape strip
        tape = np.abs(u) < 0.08 * s
        return base * np.where(tape, 0.7, 1.0)[:, None] + 2 * noise
    if kind == "triangle":
        return base * (1.1 - 0.35 * (v / s + 0.5))[:, None] + noise
    if kind == "star":
        return base * (1.0 - 0.5 * np.sqrt(u * u + v * v) / s)[:, None] + noise
    if kind == "ring":  # concentric bands
        bands = np.sin(2 * np.pi * np.sqrt(u * u + v * v) / max(3.0, 0.08 * s))
        return base * (1 + 0.2 * bands)[:, None] + noise
    if kind == "cross":
        return base + 2 * noise
    raise ValueError(f"unknown shape kind {kind!r}")


def paint(image: np.ndarray, mask: np.ndarray, shape: Shape, cls: ThingClass, rng: np.random.Generator,
          grid: Grid, edge_width: int) -> None:
    """Paint a textured shape into ``image`` (float32 HxWx3) with a darker outline, in place."""
    window = shape.window(grid)
    u, v = shape.local(grid, window)
    inside = mask[window]
    patch = image[window]  # a view: writing to it paints the image
    patch[inside] = thing_colors(shape, cls, rng, u[inside], v[inside])
    # the window leaves a margin around the shape, so eroding inside it equals eroding the whole mask
    patch[inner_edge(inside, edge_width)] *= 0.55


# --------------------------------------------------------------------------------------------------
# Scene: instances, depth, visibility


@dataclass
class Instance:
    cls: ThingClass
    shapes: list[Shape]  # one shape, or the members of a crowd
    mask: np.ndarray  # amodal
    layer: float
    iscrowd: bool = False

    @property
    def bottom(self) -> int:
        """Lowest image row of the instance: the nearer of two same-class instances lies lower."""
        return int(np.flatnonzero(self.mask.any(axis=1))[-1])

    def depth_key(self) -> tuple[float, int]:
        return (self.layer, self.bottom)


def _sample_class(rng: np.random.Generator) -> ThingClass:
    weights = np.array([c.weight for c in THINGS])
    return THINGS[int(rng.choice(len(THINGS), p=weights / weights.sum()))]


def _clip_centre(value: float, radius: float, size: int) -> float:
    """Keep most of a shape inside the image."""
    margin = min(0.8 * radius, 0.5 * size)
    return float(np.clip(value, margin, size - margin))


def _new_shape(rng: np.random.Generator, cls: ThingClass, size: int, placed: list[Instance]) -> Shape:
    length = rng.uniform(*cls.size) * size
    angle = {"person": rng.uniform(-0.25, 0.25), "tie": rng.uniform(-0.3, 0.3)}.get(
        cls.name, rng.uniform(0, 2 * math.pi)
    )
    aspect = rng.uniform(0.75, 1.3) if cls.name == "box" else 1.0
    persons = [p for p in placed if p.cls.name == "person" and not p.iscrowd]
    if cls.name == "tie" and persons and rng.random() < TIE_ON_PERSON_PROB:
        person = persons[int(rng.integers(len(persons)))].shapes[0]
        h = person.size
        length = rng.uniform(0.42, 0.52) * h
        # hangs from the neck along the body axis
        along = -0.5 * h + 0.24 * h + 0.5 * length
        cos, sin = math.cos(person.angle), math.sin(person.angle)
        return Shape("tie", person.cx - sin * along, person.cy + cos * along, person.angle, length)
    shape = Shape(cls.name, 0.0, 0.0, angle, length, aspect)
    singles = [p for p in placed if not p.iscrowd]
    if singles and rng.random() < ATTACH_PROB:
        partner = singles[int(rng.integers(len(singles)))].shapes[0]
        direction = rng.uniform(0, 2 * math.pi)
        distance = rng.uniform(0.15, 0.75) * (partner.radius + shape.radius)
        cx, cy = partner.cx + distance * math.cos(direction), partner.cy + distance * math.sin(direction)
    else:
        cx, cy = rng.uniform(0, size), rng.uniform(0, size)
    shape.cx, shape.cy = _clip_centre(cx, shape.radius, size), _clip_centre(cy, shape.radius, size)
    return shape


def _layer(cls: ThingClass, mask: np.ndarray, stuff: np.ndarray, rng: np.random.Generator) -> float:
    water = STUFF.index(STUFF_BY_NAME["water"])
    if cls.name == "ball" and (stuff[mask] == water).mean() > 0.5:
        return FLOATING_LAYER
    if rng.random() < OUT_OF_ORDER_PROB:
        return float(rng.uniform(-0.5, 8.5))
    return cls.layer


def paint_order(instances: Sequence[Instance]) -> list[int]:
    """Indices far -> near: crowds first, then by (layer, lowest row)."""
    return sorted(range(len(instances)), key=lambda i: (not instances[i].iscrowd, instances[i].depth_key()))


def visible_masks(instances: Sequence[Instance]) -> list[np.ndarray]:
    """Visible part of each instance given the depth order."""
    owner = np.full(instances[0].mask.shape, -1, dtype=np.int64)
    for i in paint_order(instances):
        owner[instances[i].mask] = i
    return [owner == i for i in range(len(instances))]


def _acceptable(instances: Sequence[Instance], min_pixels: int) -> bool:
    for inst, visible in zip(instances, visible_masks(instances)):
        area = int(visible.sum())
        if area < min_pixels or area < MIN_VISIBLE_FRACTION * inst.mask.sum():
            return False
    return True


def _crowd(rng: np.random.Generator, size: int, grid: Grid) -> Instance:
    cls = THING_BY_NAME[str(rng.choice(CROWD_CLASSES))]
    cx, cy = rng.uniform(0.25, 0.75) * size, rng.uniform(0.4, 0.8) * size
    shapes, mask = [], np.zeros(grid.xs.shape, dtype=bool)
    for _ in range(int(rng.integers(6, 13))):
        member = Shape(cls.name, cx + rng.normal(0, 0.08) * size, cy + rng.normal(0, 0.05) * size,
                       rng.uniform(-0.2, 0.2) if cls.name == "person" else rng.uniform(0, 2 * math.pi),
                       rng.uniform(0.07, 0.1) * size * (2.0 if cls.name == "person" else 1.0))
        shapes.append(member)
        mask |= shape_mask(member, grid)
    return Instance(cls, shapes, mask, layer=-1.0, iscrowd=True)


def compose_scene(rng: np.random.Generator, size: int, grid: Grid) -> tuple[np.ndarray, list[Instance]]:
    """Stuff labels (indices into STUFF) and the instances (crowd first if any)."""
    stuff = stuff_layout(rng, grid)
    min_pixels = int((0.06 * size) ** 2)
    instances: list[Instance] = []
    if rng.random() < CROWD_PROB:
        instances.append(_crowd(rng, size, grid))
    n_things = int(rng.integers(NUM_THINGS[0], NUM_THINGS[1] + 1))
    classes = sorted((_sample_class(rng) for _ in range(n_things)), key=lambda c: c.name != "person")
    # persons come first so that ties can be worn; a person may get a tie of its own
    extra_ties = sum(rng.random() < PERSON_TIE_PROB for c in classes if c.name == "person")
    classes += [THING_BY_NAME["tie"]] * int(extra_ties)
    for cls in classes:
        for _attempt in range(8):
            shape = _new_shape(rng, cls, size, instances)
            mask = shape_mask(shape, grid)
            if mask.sum() < min_pixels:
                continue
            candidate = Instance(cls, [shape], mask, _layer(cls, mask, stuff, rng))
            if _acceptable(instances + [candidate], min_pixels):
                instances.append(candidate)
                break
    return stuff, instances


# --------------------------------------------------------------------------------------------------
# One image: render, encode, write


def image_seed(seed: int, split: str, index: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, SPLITS.index(split), index])


def _segment_id(rng: np.random.Generator, color: Sequence[int], used: set) -> int:
    """A panoptic id near the category colour (so PNGs are viewable), unique within the image."""
    for jitter in range(1000):
        rgb = np.clip(np.array(color) + (rng.integers(-40, 41, 3) if jitter else 0), 0, 255).astype(np.uint8)
        seg_id = int(rgb2id(rgb[None, None])[0, 0])
        if seg_id != 0 and seg_id not in used:
            used.add(seg_id)
            return seg_id
    raise RuntimeError("no free segment id")  # unreachable for a few dozen segments


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def render_image(seed: int, split: str, index: int, size: int) -> dict[str, Any]:
    """Everything about one image: RGB, panoptic ids, segments and instance annotations (no I/O)."""
    rng = np.random.default_rng(image_seed(seed, split, index))
    grid = Grid.square(size)
    stuff, instances = compose_scene(rng, size, grid)
    band = max(1, round(size / 128))

    image = np.zeros((size, size, 3), dtype=np.float32)
    for k in np.flatnonzero(np.bincount(stuff.ravel(), minlength=len(STUFF))):
        region = stuff == k
        image[region] = stuff_texture(STUFF[k].name, rng, grid.xs[region], grid.ys[region], size)
    for i in paint_order(instances):
        inst = instances[i]
        for shape in inst.shapes:
            paint(image, shape_mask(shape, grid) if inst.iscrowd else inst.mask, shape, inst.cls, rng, grid, band)
    image += 3.0 * rng.standard_normal(image.shape, dtype=np.float32)
    rgb = np.clip(np.rint(image), 0, 255).astype(np.uint8)

    # panoptic segments as a label map (0 = void, j = segment j): stuff, void bands along stuff
    # borders, then the visible instances
    stuff_present = np.flatnonzero(np.bincount(stuff.ravel(), minlength=len(STUFF)))
    used: set = set()
    seg_ids, seg_info = [0], [(0, False)]  # (category id, iscrowd) per segment
    for k in stuff_present:
        seg_ids.append(_segment_id(rng, STUFF[k].color, used))
        seg_info.append((STUFF[k].id, False))
    label = np.searchsorted(stuff_present, stuff).astype(np.int32) + 1
    if rng.random() < STUFF_VOID_PROB:
        label[label_boundary(stuff, band)] = 0
    visible = visible_masks(instances) if instances else []
    inst_ids = []
    for inst, vis in zip(instances, visible):
        seg_id = _segment_id(rng, inst.cls.color, used)
        inst_ids.append(seg_id)
        seg_ids.append(seg_id)
        seg_info.append((inst.cls.id, inst.iscrowd))
        label[vis] = len(seg_ids) - 1
        if not inst.iscrowd and rng.random() < THING_VOID_PROB:
            edge = inner_edge(vis, band)
            if (vis & ~edge).sum() >= 0.6 * vis.sum():
                label[edge] = 0

    areas = np.bincount(label.ravel(), minlength=len(seg_ids))
    segments = []
    for j in np.argsort(seg_ids, kind="stable"):  # listed by id
        if j == 0 or areas[j] == 0:
            continue
        category_id, iscrowd = seg_info[j]
        segments.append({"id": seg_ids[j], "category_id": category_id, "area": int(areas[j]),
                         "bbox": mask_bbox(label == j), "iscrowd": int(iscrowd)})
    ids = np.asarray(seg_ids, dtype=np.uint32)[label]

    order = paint_order(instances)
    rank = {i: r for r, i in enumerate(order)}
    annotations = []
    for i, (inst, seg_id) in enumerate(zip(instances, inst_ids)):
        rle = _rle(inst.mask)
        annotations.append({"category_id": inst.cls.id, "segmentation": rle,
                            "area": int(mask_utils.area(rle)),
                            "bbox": [float(x) for x in mask_utils.toBbox(rle)],
                            "iscrowd": int(inst.iscrowd), "segment_id": seg_id, "depth": rank[i]})
    singles = [inst.mask for inst in instances if not inst.iscrowd]
    return {"rgb": rgb, "ids": ids, "segments": segments, "annotations": annotations,
            "stats": scene_stats(instances, singles, ids)}


def scene_stats(instances: Sequence[Instance], singles: Sequence[np.ndarray], ids: np.ndarray) -> dict:
    """Counts for the dataset summary: how many thing instances overlap another, crowd, void."""
    things = [inst for inst in instances if not inst.iscrowd]
    overlapping, same_class_pairs = 0, 0
    for i, a in enumerate(singles):
        if any((a & b).any() for j, b in enumerate(singles) if j != i):
            overlapping += 1
        same_class_pairs += sum(
            things[i].cls.id == things[j].cls.id and bool((a & singles[j]).any()) for j in range(i + 1, len(singles))
        )
    return {"things": len(things), "overlapping": overlapping, "same_class_overlap_pairs": same_class_pairs,
            "crowd": int(any(inst.iscrowd for inst in instances)), "void_pixels": int((ids == 0).sum()),
            "pixels": int(ids.size)}


def _file_stem(image_id: int) -> str:
    return f"{image_id:012d}"


def _image_id(split: str, index: int) -> int:
    # ids stay distinct across splits, so the two JSONs can be merged without clashes
    return SPLITS.index(split) * 10_000_000 + index + 1


def _render_and_write(task: tuple[str, str, int, int, int]) -> dict[str, Any]:
    root, split, index, size, seed = task
    out = render_image(seed, split, index, size)
    image_id = _image_id(split, index)
    stem = _file_stem(image_id)
    Image.fromarray(out["rgb"]).save(Path(root, "images", split, stem + ".jpg"), quality=JPEG_QUALITY)
    write_id_png(Path(root, "annotations", f"panoptic_{split}", stem + ".png"), out["ids"])
    for ann in out["annotations"]:
        ann["image_id"] = image_id
    return {
        "image": {"id": image_id, "file_name": stem + ".jpg", "width": size, "height": size},
        "panoptic": {"image_id": image_id, "file_name": stem + ".png", "segments_info": out["segments"]},
        "annotations": out["annotations"],
        "stats": out["stats"],
    }


# --------------------------------------------------------------------------------------------------
# The dataset


def categories(things_only: bool = False) -> list[dict]:
    cats = [{"id": c.id, "name": c.name, "supercategory": c.supercategory, "isthing": 1, "color": list(c.color)}
            for c in THINGS]
    if not things_only:
        cats += [{"id": c.id, "name": c.name, "supercategory": c.supercategory, "isthing": 0,
                  "color": list(c.color)} for c in STUFF]
    return cats


def split_paths(root: str | Path, split: str) -> dict[str, str]:
    """The paths of one split, keyed like oanet.config.SplitConfig's fields."""
    root = Path(root)
    return {
        "image_dir": str(root / "images" / split),
        "panoptic_json": str(root / "annotations" / f"panoptic_{split}.json"),
        "panoptic_dir": str(root / "annotations" / f"panoptic_{split}"),
        "instances_json": str(root / "annotations" / f"instances_{split}.json"),
    }


def _check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise DataError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def validate_arguments(train: Any, val: Any, size: Any, seed: Any, workers: Any) -> None:
    """Raise DataError (one line) for arguments generate_dataset cannot honour."""
    train, val = _check_count("train", train), _check_count("val", val)
    if train + val == 0:
        raise DataError("nothing to generate: train and val are both 0")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not MIN_SIZE <= size <= MAX_SIZE:
        raise DataError(f"size must be an integer from {MIN_SIZE} to {MAX_SIZE} pixels, got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1):
        raise DataError(f"workers must be a positive integer, got {workers!r}")


def _prepare_output(root: Path, overwrite: bool) -> None:
    if root.exists() and not root.is_dir():
        raise DataError(f"{root}: exists and is not a directory")
    if root.is_dir() and any(root.iterdir()):
        if not overwrite:
            raise DataError(f"{root}: directory exists and is not empty (pass --overwrite to replace the dataset)")
        # remove only what a previous run wrote: never wipe a directory the user may keep other files in
        for split in SPLITS:
            paths = split_paths(root, split)
            for key in ("image_dir", "panoptic_dir"):
                shutil.rmtree(paths[key], ignore_errors=True)
            for key in ("panoptic_json", "instances_json"):
                Path(paths[key]).unlink(missing_ok=True)
    for split in SPLITS:
        paths = split_paths(root, split)
        make_dir(paths["image_dir"], "dataset folder")
        make_dir(paths["panoptic_dir"], "dataset folder")


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _map(tasks: list, workers: int, progress: bool, desc: str):
    """Results of _render_and_write over ``tasks`` in order, in worker processes when workers > 1."""
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(tasks), desc=desc, unit="img")
    try:
        if workers <= 1 or len(tasks) <= 1:
            results = (_render_and_write(t) for t in tasks)
            for r in results:
                if bar is not None:
                    bar.update()
                yield r
            return
        chunk = max(1, min(16, len(tasks) // (4 * workers)))
        with multiprocessing.get_context("spawn" if os.name == "nt" else "fork").Pool(workers) as pool:
            for r in pool.imap(_render_and_write, tasks, chunksize=chunk):
                if bar is not None:
                    bar.update()
                yield r
    finally:
        if bar is not None:
            bar.close()


def _dump(path: str, data: dict) -> None:
    with open(path, "w") as f:
        json.dump(data, f, separators=(",", ":"))


def generate_dataset(out_dir: str | Path, train: int = DEFAULT_TRAIN, val: int = DEFAULT_VAL,
                     size: int = DEFAULT_SIZE, seed: int = DEFAULT_SEED, workers: Optional[int] = None,
                     overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Write the synthetic occlusion benchmark to ``out_dir`` in COCO panoptic layout.

    Returns ``{"root": str, "train": split_paths, "val": split_paths, "stats": {...}}``; each split's
    paths are keyed like ``SplitConfig`` (image_dir, panoptic_json, panoptic_dir, instances_json).
    The files are the same bytes for the same (train, val, size, seed), whatever ``workers``.
    """
    validate_arguments(train, val, size, seed, workers)
    root = Path(out_dir)
    _prepare_output(root, overwrite)
    workers = default_workers() if workers is None else int(workers)
    info = {"description": "oanet synthetic occlusion benchmark", "generator_version": GENERATOR_VERSION,
            "seed": int(seed), "size": int(size)}
    result: dict[str, Any] = {"root": str(root)}
    totals = {"images": 0, "things": 0, "overlapping": 0, "same_class_overlap_pairs": 0, "crowd_images": 0,
              "void_pixels": 0, "pixels": 0}
    for split, count in (("train", train), ("val", val)):
        tasks = [(str(root), split, i, int(size), int(seed)) for i in range(count)]
        images, panoptic, instances = [], [], []
        for record in _map(tasks, workers, progress, f"synth {split}"):
            images.append(record["image"])
            panoptic.append(record["panoptic"])
            for ann in record["annotations"]:
                instances.append({"id": len(instances) + 1, **ann})
            stats = record["stats"]
            totals["images"] += 1
            totals["crowd_images"] += stats["crowd"]
            for key in ("things", "overlapping", "same_class_overlap_pairs", "void_pixels", "pixels"):
                totals[key] += stats[key]
        paths = split_paths(root, split)
        _dump(paths["panoptic_json"], {"info": {**info, "split": split}, "images": images,
                                        "annotations": panoptic, "categories": categories()})
        _dump(paths["instances_json"], {"info": {**info, "split": split}, "images": images,
                                         "annotations": instances, "categories": categories(things_only=True)})
        result[split] = paths
    totals["overlap_fraction"] = totals["overlapping"] / max(1, totals["things"])
    totals["void_fraction"] = totals["void_pixels"] / max(1, totals["pixels"])
    result["stats"] = totals
    return result


# --------------------------------------------------------------------------------------------------
# How much the pasting order matters: fuse the ground-truth amodal masks in several orders

ORDERS = ("depth", "frequency", "larger_on_top", "smaller_on_top", "random")
ORDER_HELP = {
    "depth": "true depth (the annotation's paint order)",
    "frequency": "frequent class on top (what sorting by detection score does)",
    "larger_on_top": "decreasing area: larger instance on top",
    "smaller_on_top": "increasing area: smaller instance on top",
    "random": "random order",
}


def priority_order(annotations: Sequence[dict], order: str, class_rank: dict[int, int],
                   rng: np.random.Generator) -> list[int]:
    """Indices of ``annotations`` (non-crowd instances of one image), the one pasted on top first."""
    n = len(annotations)
    tiebreak = rng.permutation(n)  # drawn for every order so each order sees the same stream
    if order == "depth":
        keys = [(-a["depth"],) for a in annotations]
    elif order == "frequency":
        keys = [(class_rank[a["category_id"]], int(tiebreak[i])) for i, a in enumerate(annotations)]
    elif order == "larger_on_top":
        keys = [(-a["area"], int(tiebreak[i])) for i, a in enumerate(annotations)]
    elif order == "smaller_on_top":
        keys = [(a["area"], int(tiebreak[i])) for i, a in enumerate(annotations)]
    elif order == "random":
        keys = [(int(tiebreak[i]),) for i in range(n)]
    else:
        raise DataError(f"unknown order {order!r}; known: {', '.join(ORDERS)}")
    return sorted(range(n), key=lambda i: keys[i])


def fuse_in_order(gt_ids: np.ndarray, gt_segments: Sequence[dict], annotations: Sequence[dict],
                  priority: Sequence[int]) -> tuple[np.ndarray, list[dict]]:
    """Paste amodal instance masks (first in ``priority`` on top) over the GT stuff, crowd and void.

    Pixels no pasted instance covers keep their ground-truth id. Each pasted instance keeps the id of
    its own GT segment (``segment_id``), so the true depth order reproduces the GT exactly.
    """
    thing_ids = [s["id"] for s in gt_segments if not s["iscrowd"] and s["category_id"] in THING_IDS]
    ids = np.where(np.isin(gt_ids, thing_ids), 0, gt_ids).astype(np.uint32)
    category = {s["id"]: s["category_id"] for s in gt_segments}
    for i in reversed(list(priority)):  # bottom first, so the top one is painted last
        ann = annotations[i]
        ids[mask_utils.decode(ann["segmentation"]).astype(bool)] = ann["segment_id"]
        category[ann["segment_id"]] = ann["category_id"]
    segments = []
    present = np.unique(ids)
    for seg_id in present[present != 0]:
        mask = ids == seg_id
        segments.append({"id": int(seg_id), "category_id": category[int(seg_id)], "area": int(mask.sum()),
                         "bbox": mask_bbox(mask), "iscrowd": 0})
    return ids, segments


THING_IDS = frozenset(c.id for c in THINGS)


def class_frequency_rank(instances: dict) -> dict[int, int]:
    """Category id -> rank by number of non-crowd instances (0 = most frequent, ties by id)."""
    counts = {c["id"]: 0 for c in instances["categories"]}
    for ann in instances["annotations"]:
        if not ann.get("iscrowd", 0):
            counts[ann["category_id"]] = counts.get(ann["category_id"], 0) + 1
    ranked = sorted(counts, key=lambda cid: (-counts[cid], cid))
    return {cid: r for r, cid in enumerate(ranked)}


def _fuse_image(task: tuple) -> list[tuple[str, list[dict]]]:
    gt_png, panoptic_ann, annotations, orders, class_rank, seed, out_dirs = task
    gt_ids = read_id_png(gt_png)
    singles = [a for a in annotations if not a["iscrowd"]]
    out = []
    for order in orders:
        rng = np.random.default_rng([seed, panoptic_ann["image_id"]])
        ids, segments = fuse_in_order(gt_ids, panoptic_ann["segments_info"], singles,
                                      priority_order(singles, order, class_rank, rng))
        write_id_png(Path(out_dirs[order], panoptic_ann["file_name"]), ids)
        out.append((order, segments))
    return out


def evaluate_pq(gt_json: str, gt_dir: str, pred_json: str, pred_dir: str, workers: Optional[int] = None) -> dict:
    """{"All", "Things", "Stuff"} -> {"pq", "sq", "rq", "n"} (fractions) with oanet's PQ."""
    from oanet.evaluation.pq import pq_compute

    result = pq_compute(gt_json, gt_dir, pred_json, pred_dir, workers=workers, progress=False).to_dict()
    return {k: result[k] for k in ("All", "Things", "Stuff")}


def order_experiment(dataset_dir: str | Path, split: str = "val", orders: Sequence[str] = ORDERS,
                     out_dir: Optional[str | Path] = None, seed: int = 0, workers: Optional[int] = None,
                     evaluate=evaluate_pq) -> dict[str, dict]:
    """PQ of the GT amodal masks pasted in each of ``orders`` over the GT stuff, per order.

    Predictions are written as COCO panoptic to ``out_dir/<order>/`` (a temporary folder when None).
    ``evaluate(gt_json, gt_dir, pred_json, pred_dir, workers)`` returns {"All","Things","Stuff"} dicts.
    """
    unknown = [o for o in orders if o not in ORDERS]
    if unknown:
        raise DataError(f"unknown order(s) {', '.join(unknown)}; known: {', '.join(ORDERS)}")
    paths = split_paths(dataset_dir, split)
    for key in ("panoptic_json", "instances_json"):
        if not Path(paths[key]).is_file():
            raise FileNotFoundError(f"{paths[key]}: not found (generate the dataset with `oanet synth`)")
    with open(paths["panoptic_json"]) as f:
        panoptic = json.load(f)
    with open(paths["instances_json"]) as f:
        instances = json.load(f)
    by_image: dict[int, list[dict]] = {}
    for ann in instances["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    class_rank = class_frequency_rank(instances)

    with tempfile.TemporaryDirectory(prefix="oanet-order-") as tmp:
        root = Path(out_dir) if out_dir is not None else Path(tmp)
        pred_dirs = {o: str(root / o / "panoptic_pred") for o in orders}
        for d in pred_dirs.values():
            Path(d).mkdir(parents=True, exist_ok=True)
        tasks = [(str(Path(paths["panoptic_dir"], ann["file_name"])), ann, by_image.get(ann["image_id"], []),
                  tuple(orders), class_rank, seed, pred_dirs) for ann in panoptic["annotations"]]
        workers = default_workers() if workers is None else workers
        if workers > 1 and len(tasks) > 1:
            with multiprocessing.get_context("fork" if os.name != "nt" else "spawn").Pool(workers) as pool:
                fused = pool.map(_fuse_image, tasks, chunksize=max(1, len(tasks) // (4 * workers)))
        else:
            fused = [_fuse_image(t) for t in tasks]
        results = {}
        for order in orders:
            annotations = [{"image_id": ann["image_id"], "file_name": ann["file_name"], "segments_info": segs}
                           for ann, per_order in zip(panoptic["annotations"], fused)
                           for o, segs in per_order if o == order]
            pred_json = str(root / order / "panoptic_pred.json")
            _dump(pred_json, {"images": panoptic["images"], "annotations": annotations,
                              "categories": panoptic["categories"]})
            results[order] = evaluate(paths["panoptic_json"], paths["panoptic_dir"], pred_json, pred_dirs[order],
                                      workers)
    return results
