"""The grid of pixels a large image is fused on, and its id map's areas and boxes. numpy only, no torch.

A photo of 12 MP costs the network what a 0.3 MP image costs it (the network resizes its input), but
fusing at the photo's size would cost 40 times more. So both fusions (:mod:`oanet.model.grid_fusion`
on PyTorch, :mod:`oanet.runtime.grid_fusion` on numpy) decide on a *grid* of the image's own pixels:

* an image of at most ``max_pixels`` pixels is its own grid: every pixel, the fusion of old;
* a larger one is sampled at ``gh x gw`` of its pixels (``gh * gw <= max_pixels``, the same aspect):
  grid row ``j`` is image row ``((2j + 1) H) // (2 gh)``, the pixel nearest the centre of a *cell* of
  about ``H / gh`` rows, and every image row belongs to the cell whose centre is nearest (columns
  alike). Masks and stuff labels are read at the grid's pixels exactly as the full-size fusion reads
  them, and the fusion's decisions (which instances are kept, which stuff classes are large enough)
  are made there.

The id map at the image's size is then made of *cells*, the pixels between four neighbouring grid
pixels (grid rows ``j`` and ``j + 1``, columns ``i`` and ``i + 1``; the border cells reach the image's
border). A cell whose four corners hold one id takes it; in the others (where segments meet) every
pixel is decided by the full-size rule itself: the topmost kept instance among the corners' whose
pasted mask covers the pixel, else the stuff there. This module holds what both fusions share: the
grid's geometry, which pixels are decided one by one, and the segments' areas and boxes, which come
from the cells and the decided pixels instead of a pass over the whole map.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

# The smallest grid: COCO's images (up to 640 x 640) are fused at every pixel. A larger image's grid is
# never coarser than the network's input either (see grid_size).
FUSION_PIXELS = 640 * 640
REFINE_CHUNK = 1 << 18  # refined pixels handled at once: bounds the temporary memory per step
NOT_A_THING = np.iinfo(np.int32).max  # a candidate slot without a thing (sorts after every segment id)


def network_size(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """The size torchvision's inference resize gives an image (scale in float64, sizes truncated): the
    network's input, without padding."""
    scale = min(min_size / min(height, width), max_size / max(height, width))
    return int(height * scale), int(width * scale)


def grid_budget(fusion_pixels: Optional[int], network: tuple[int, int]) -> Optional[int]:
    """The grid's pixels for an image whose network input is ``network`` (``(h, w)``): ``fusion_pixels``,
    or the network input's pixels when there are more (a grid never coarser than what the network saw);
    None (fuse at every pixel) stays None."""
    return None if fusion_pixels is None else max(int(fusion_pixels), network[0] * network[1])


def grid_size(height: int, width: int, max_pixels: Optional[int]) -> tuple[int, int]:
    """``(gh, gw)``: the image's own size when it has at most ``max_pixels`` pixels (or ``max_pixels`` is
    None or 0), else the largest grid of that many pixels with the image's aspect."""
    if not max_pixels or height * width <= max_pixels:
        return height, width
    scale = math.sqrt(max_pixels / (height * width))
    return max(1, min(height, int(height * scale))), max(1, min(width, int(width * scale)))


def sample_positions(length: int, count: int) -> np.ndarray:
    """The image rows (or columns) of a grid of ``count`` over ``length``: ``((2j + 1) L) // (2 count)``,
    the centre of the ``j``-th of ``count`` equal parts."""
    return (2 * np.arange(count, dtype=np.int64) + 1) * length // (2 * count)


def axes(height: int, width: int, max_pixels: Optional[int]) -> tuple[np.ndarray, np.ndarray]:
    """The grid's image rows and columns (int64), ``arange`` of each side for an image within the budget."""
    gh, gw = grid_size(height, width, max_pixels)
    return sample_positions(height, gh), sample_positions(width, gw)


def cell_of(length: int, samples: np.ndarray) -> np.ndarray:
    """The cell of each of ``length`` image rows (or columns): ``j`` for rows from grid row ``j`` up to
    grid row ``j + 1`` (cell 0 from the image's first row)."""
    return np.maximum(np.searchsorted(samples, np.arange(length), side="right") - 1, 0)


def corner_ids(grid_ids: np.ndarray, cj: np.ndarray, ci: np.ndarray) -> np.ndarray:
    """The ids at the four corners of cells ``(cj, ci)`` (``n x 4``; the last cells' missing corners
    repeat their own)."""
    gh, gw = grid_ids.shape
    cj1, ci1 = np.minimum(cj + 1, gh - 1), np.minimum(ci + 1, gw - 1)
    return np.stack([grid_ids[cj, ci], grid_ids[cj, ci1], grid_ids[cj1, ci], grid_ids[cj1, ci1]], 1)


def whole_cells(grid_ids: np.ndarray) -> np.ndarray:
    """Cells whose four corners hold one id (``gh x gw`` bool): they take it, pixel for pixel."""
    right = np.concatenate([grid_ids[:, 1:], grid_ids[:, -1:]], 1)
    below = np.concatenate([grid_ids[1:], grid_ids[-1:]], 0)
    diagonal = np.concatenate([right[1:], right[-1:]], 0)
    return (grid_ids == right) & (grid_ids == below) & (grid_ids == diagonal)


def expand_cells(grid_ids: np.ndarray, row_cells: np.ndarray, col_cells: np.ndarray) -> np.ndarray:
    """The map at the image's size with each cell's id (``take`` twice: 4x faster than fancy indexing)."""
    return np.take(np.take(grid_ids, row_cells, 0), col_cells, 1)


def thing_candidates(corners: np.ndarray, num_things: int) -> np.ndarray:
    """Per cell, the thing ids among its corners (``corner_ids``) ascending, each once, the rest
    ``NOT_A_THING``. Thing ids are in pasting order, so the first candidate covering a pixel is the
    topmost kept instance there."""
    cand = np.where((corners >= 1) & (corners <= num_things), corners, NOT_A_THING).astype(np.int64)
    cand.sort(1)
    repeated = cand[:, 1:] == cand[:, :-1]
    cand[:, 1:][repeated] = NOT_A_THING
    return cand


def split_pixels(cj: np.ndarray, ci: np.ndarray, row_cells: np.ndarray, col_cells: np.ndarray,
                 chunk: int = REFINE_CHUNK):
    """The pixels of cells ``(cj, ci)``, about ``chunk`` at a time (at least one cell): yields ``(ys, xs,
    cell)``, ``cell`` indexing ``cj`` / ``ci``."""
    row_count, col_count = np.bincount(row_cells), np.bincount(col_cells)
    row_start, col_start = np.cumsum(row_count) - row_count, np.cumsum(col_count) - col_count
    sizes = row_count[cj] * col_count[ci]
    starts = np.cumsum(sizes) - sizes  # each cell's first pixel in the concatenation of all
    first = 0
    while first < len(cj):
        last = max(first + 1, int(np.searchsorted(starts, starts[first] + chunk, side="left")))
        cell = np.repeat(np.arange(first, last), sizes[first:last])
        offset = np.arange(len(cell)) + starts[first] - starts[cell]  # pixel within its cell, row-major
        width = col_count[ci[cell]]
        yield row_start[cj[cell]] + offset // width, col_start[ci[cell]] + offset % width, cell
        first = last


class MapStats:
    """Areas and XYXY boxes (exclusive max) of the segments 1..K of an id map assembled from a grid's
    cells (each filling its pixels with one id) and refined pixels (each with its own id): sums over
    cells and over the refined pixels, never a pass over the whole map. ``row_cells`` / ``col_cells``:
    :func:`cell_of` of the map's rows / columns."""

    def __init__(self, num_segments: int, row_cells: np.ndarray, col_cells: np.ndarray) -> None:
        self.k1 = num_segments + 1
        self.height, self.width = len(row_cells), len(col_cells)
        self.row_count = np.bincount(row_cells)
        self.col_count = np.bincount(col_cells)
        self.row_start = np.concatenate([[0], np.cumsum(self.row_count)[:-1]])
        self.col_start = np.concatenate([[0], np.cumsum(self.col_count)[:-1]])
        self.areas = np.zeros(self.k1, dtype=np.int64)
        self.rows = np.zeros((self.k1, self.height), dtype=bool)  # segment present in image row
        self.cols = np.zeros((self.k1, self.width), dtype=bool)

    def add_cells(self, grid_ids: np.ndarray, whole: np.ndarray) -> None:
        """The cells ``whole`` (bool, grid-shaped) of ``grid_ids``, each filling all its pixels."""
        gh, gw = grid_ids.shape
        k2 = self.k1 + 1  # one more bucket: the cells that are not whole
        ids = np.where(whole, grid_ids, self.k1).astype(np.int64)
        # Per grid row (weighted by the cells' widths) and per grid column, one bincount each.
        per_row = np.bincount((ids + k2 * np.arange(gh)[:, None]).ravel(), minlength=k2 * gh,
                              weights=np.broadcast_to(self.col_count.astype(np.float64), (gh, gw)).ravel())
        per_row = per_row.reshape(gh, k2)[:, : self.k1]
        # float64 sums of integers far below 2**53: exact
        self.areas += (self.row_count.astype(np.float64) @ per_row).round().astype(np.int64)
        per_col = np.bincount((ids + k2 * np.arange(gw)[None, :]).ravel(), minlength=k2 * gw).reshape(gw, k2)
        self._spread(self.rows, per_row.T > 0, self.row_start, self.row_count)
        self._spread(self.cols, per_col[:, : self.k1].T > 0, self.col_start, self.col_count)

    @staticmethod
    def _spread(table: np.ndarray, present: np.ndarray, start: np.ndarray, count: np.ndarray) -> None:
        # Only a segment's first and last image row matter for its box: mark those of its first and last cell.
        seg = np.flatnonzero(present.any(1))
        first = present[seg].argmax(1)
        last = present.shape[1] - 1 - present[seg, ::-1].argmax(1)
        table[seg, start[first]] = True
        table[seg, start[last] + count[last] - 1] = True

    def add_pixels(self, ys: np.ndarray, xs: np.ndarray, ids: np.ndarray) -> None:
        """Refined pixels at ``(ys, xs)`` with their ids."""
        ids = ids.astype(np.int64)
        self.areas += np.bincount(ids, minlength=self.k1)
        self.rows |= np.bincount(ids * self.height + ys, minlength=self.k1 * self.height).reshape(self.k1, -1) > 0
        self.cols |= np.bincount(ids * self.width + xs, minlength=self.k1 * self.width).reshape(self.k1, -1) > 0

    def boxes(self) -> np.ndarray:
        """``(K + 1) x 4`` XYXY boxes, row 0 = void; zeros for a segment without pixels."""
        from oanet.data.coco_panoptic import boxes_from_extents

        return boxes_from_extents(self.rows, self.cols)


def with_stats(segments: Sequence[dict], stats: MapStats) -> list[dict]:
    """``segments`` (ids 1..K) with the map's ``area`` and ``bbox`` (COCO ``[x, y, w, h]``)."""
    from oanet.data.coco_panoptic import xyxy_to_coco

    boxes = xyxy_to_coco(stats.boxes())
    return [dict(seg, area=int(stats.areas[seg["id"]]), bbox=[int(v) for v in boxes[seg["id"]]]) for seg in segments]


__all__ = ["FUSION_PIXELS", "network_size", "grid_budget", "grid_size", "axes", "sample_positions", "cell_of", "corner_ids", "whole_cells",
           "expand_cells", "thing_candidates", "split_pixels", "MapStats", "with_stats"]
