"""Binary morphology on boolean masks with 4-connected steps: shift, dilate, erode, edges. numpy only.

Pixels outside the image count as neither inside nor outside a mask: dilation brings nothing in from
beyond the border and erosion does not eat a mask at the border, so a shape cut by the image edge
keeps its cut side.
"""

from __future__ import annotations

import numpy as np

NEIGHBOURS = ((1, 0), (-1, 0), (0, 1), (0, -1))


def shift(a: np.ndarray, dy: int, dx: int, fill=False) -> np.ndarray:
    """``a`` moved by (dy, dx) pixels; what leaves the image is lost, what enters is ``fill``."""
    out = np.full_like(a, fill)
    h, w = a.shape
    if abs(dy) >= h or abs(dx) >= w:
        return out
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = a[
        max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    """``mask`` grown by ``steps`` 4-connected steps."""
    for _ in range(steps):
        grown = mask.copy()
        for dy, dx in NEIGHBOURS:
            grown |= shift(mask, dy, dx, False)
        mask = grown
    return mask


def erode(mask: np.ndarray, steps: int) -> np.ndarray:
    """``mask`` shrunk by ``steps`` 4-connected steps (not from the image border)."""
    for _ in range(steps):
        core = mask.copy()
        for dy, dx in NEIGHBOURS:
            core &= shift(mask, dy, dx, True)
        mask = core
    return mask


def inner_edge(mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels of ``mask`` within ``width`` (4-connected steps) of a pixel outside it."""
    return mask & ~erode(mask, width)


def label_boundary(labels: np.ndarray, width: int = 1) -> np.ndarray:
    """Pixels within about ``width`` of a pixel with another label (both sides of each border)."""
    band = np.zeros(labels.shape, dtype=bool)
    rows = labels[1:, :] != labels[:-1, :]
    cols = labels[:, 1:] != labels[:, :-1]
    band[1:, :] |= rows
    band[:-1, :] |= rows
    band[:, 1:] |= cols
    band[:, :-1] |= cols
    return dilate(band, max(0, width - 1))
