"""Pixels: stuff regions split by smooth curves, each class with its own texture; things textured in
their own frame, so patterns turn with the shape, and outlined."""

from __future__ import annotations

import numpy as np

from oanet.data.morphology import inner_edge
from oanet.data.synthetic.classes import STUFF, STUFF_BY_NAME, ThingClass
from oanet.data.synthetic.geometry import Grid, Shape


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

