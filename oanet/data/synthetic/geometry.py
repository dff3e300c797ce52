"""Silhouettes as boolean masks, from vectorised tests on pixel-centre coordinates."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np


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
