"""Read and write COCO panoptic data (JSON + PNG). No torch here: ``oanet pq`` must start fast."""

from __future__ import annotations

import numpy as np

OFFSET = 256 * 256 * 256  # one more than the largest segment id a 24-bit PNG can hold
VOID = 0
IGNORE = 255


def rgb2id(color: np.ndarray) -> np.ndarray:
    """Segment ids from an RGB panoptic image (id = R + 256*G + 256^2*B)."""
    color = np.asarray(color)
    if color.ndim == 3:
        color = color.astype(np.uint32)
        return color[..., 0] + 256 * color[..., 1] + 256 * 256 * color[..., 2]
    return color.astype(np.uint32)


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """RGB uint8 image from segment ids (inverse of rgb2id)."""
    ids = np.asarray(ids, dtype=np.uint32)
    rgb = np.empty(ids.shape + (3,), dtype=np.uint8)
    rgb[..., 0] = ids & 255
    rgb[..., 1] = (ids >> 8) & 255
    rgb[..., 2] = (ids >> 16) & 255
    return rgb
