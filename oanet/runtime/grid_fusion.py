"""The grid fusion of :mod:`oanet.model.grid_fusion` in numpy, for the PyTorch-free runtime.

Function for function the same computation in the same float32 operations, so the id maps and
segments are bit-identical to the PyTorch ones on the same inputs (tests/test_runtime_fusion.py).
The one difference is where the stuff labels come from: the exported graph gives them at the image's
size (``sem_seg_labels``), and this code reads them at the grid's pixels and at the refined pixels,
which are the labels the PyTorch code computes there from the logits. Rules: :mod:`oanet.fusion_grid`.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from oanet.config import FusionConfig
from oanet.data.labels import LabelSpace, category_ids, channel_to_stuff_index
from oanet.fusion_grid import (
    FUSION_PIXELS,
    NOT_A_THING,
    MapStats,
    axes,
    cell_of,
    corner_ids,
    expand_cells,
    split_pixels,
    thing_candidates,
    whole_cells,
    with_stats,
)
from oanet.runtime.fusion import check_orders, fusion_parts
from oanet.runtime.paste import expand_boxes



class Grid:
    """The grid of an ``height x width`` image (:func:`oanet.fusion_grid.axes`)."""

    def __init__(self, height: int, width: int, max_pixels: Optional[int]) -> None:
        self.height, self.width = height, width
        self.rows, self.cols = axes(height, width, max_pixels)
        self.row_cells, self.col_cells = cell_of(height, self.rows), cell_of(width, self.cols)

    @property
    def is_image(self) -> bool:
        return len(self.rows) == self.height and len(self.cols) == self.width


def mask_extents(boxes: np.ndarray, mask_size: int) -> np.ndarray:
    """torchvision's paste geometry (``K x 4`` int64, inclusive); see the PyTorch function."""
    return expand_boxes(boxes, float(mask_size + 2) / mask_size).astype(np.int64).reshape(-1, 4)


def taps_at(positions: np.ndarray, out_size, in_size: int):
    """Bilinear source indices and weights at ``positions``; see :func:`oanet.model.grid_fusion.taps_at`."""
    out_size = np.asarray(out_size)
    ratio = np.float32(in_size) / out_size.astype(np.float32)
    src = np.maximum(ratio * (positions.astype(np.float32) + np.float32(0.5)) - np.float32(0.5), np.float32(0))
    low = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    lam1 = np.clip(src - low.astype(np.float32), np.float32(0), np.float32(1))
    high = low + (low < in_size - 1)
    same = out_size == in_size  # PyTorch copies when the size does not change
    low = np.where(same, np.minimum(positions, in_size - 1), low)
    high = np.where(same, low, high)
    lam1 = np.where(same, np.float32(0), lam1).astype(np.float32)
    return low, high, np.float32(1) - lam1, lam1


def paste_on_grid(padded: np.ndarray, extents: np.ndarray, grid: Grid) -> np.ndarray:
    """``K x gh x gw`` bool masks at the grid's pixels, each written inside its box only."""
    k, size = padded.shape[0], padded.shape[-1]
    out = np.zeros((k, len(grid.rows), len(grid.cols)), dtype=bool)
    for i in range(k):  # one box-sized resize per mask, as torchvision's paste
        x0, y0, x1, y1 = (int(v) for v in extents[i])
        j0, j1 = np.searchsorted(grid.rows, [max(y0, 0), min(y1 + 1, grid.height)])
        i0, i1 = np.searchsorted(grid.cols, [max(x0, 0), min(x1 + 1, grid.width)])
        if j1 <= j0 or i1 <= i0:
            continue
        ry0, ry1, wy0, wy1 = taps_at(grid.rows[j0:j1] - y0, max(y1 - y0 + 1, 1), size)
        cx0, cx1, wx0, wx1 = taps_at(grid.cols[i0:i1] - x0, max(x1 - x0 + 1, 1), size)
        across = padded[i][:, cx0] * wx0 + padded[i][:, cx1] * wx1
        out[i, j0:j1, i0:i1] = (across[ry0] * wy0[:, None] + across[ry1] * wy1[:, None]) > np.float32(0.5)
    return out


def mask_values_at(padded: np.ndarray, extents: np.ndarray, instance: np.ndarray, ys: np.ndarray,
                   xs: np.ndarray) -> np.ndarray:
    """Whether mask ``instance[p]`` covers pixel ``(ys[p], xs[p])`` (see the PyTorch function)."""
    size = padded.shape[-1]
    x0, y0, x1, y1 = extents[instance].T
    inside = (ys >= y0) & (ys <= y1) & (xs >= x0) & (xs <= x1)
    ly, lx = np.maximum(ys - y0, 0), np.maximum(xs - x0, 0)
    ry0, ry1, wy0, wy1 = taps_at(ly, np.maximum(y1 - y0 + 1, 1), size)
    cx0, cx1, wx0, wx1 = taps_at(lx, np.maximum(x1 - x0 + 1, 1), size)
    flat = padded.reshape(-1)
    base = instance * (size * size)

    def at(r: np.ndarray, c: np.ndarray) -> np.ndarray:
        return flat[base + r * size + c]

    value = (at(ry0, cx0) * wx0 + at(ry0, cx1) * wx1) * wy0 + (at(ry1, cx0) * wx0 + at(ry1, cx1) * wx1) * wy1
    return inside & (value > np.float32(0.5))


class Refiner:
    """Decides the pixels of the cells where segments meet (see the PyTorch class)."""

    def __init__(self, grid: Grid, grid_ids: np.ndarray, instances: np.ndarray, segments: list, padded: np.ndarray,
                 extents: np.ndarray, stuff: np.ndarray, segment_of_label: np.ndarray) -> None:
        self.grid, self.grid_ids, self.padded, self.extents, self.stuff = grid, grid_ids, padded, extents, stuff
        self.instances = instances
        self.num_things = sum(1 for s in segments if s["isthing"])
        self.segment_of_label = segment_of_label

    def decide(self, ys: np.ndarray, xs: np.ndarray, cand: np.ndarray) -> np.ndarray:
        p, slot = np.nonzero(cand != NOT_A_THING)
        hit = mask_values_at(self.padded, self.extents, self.instances[cand[p, slot] - 1], ys[p], xs[p])
        covered = np.zeros(cand.shape, dtype=bool)
        covered[p[hit], slot[hit]] = True
        first = covered.argmax(1)
        answer = np.where(covered.any(1), cand[np.arange(len(cand)), first], 0)
        rest = np.flatnonzero(answer == 0)
        if rest.size:
            answer[rest] = self.segment_of_label[self.stuff[ys[rest], xs[rest]].astype(np.int64) + 1]
        return answer.astype(np.int32)

    def full_size(self, segments: list) -> tuple[np.ndarray, list[dict]]:
        grid, ids = self.grid, self.grid_ids
        stats = MapStats(len(segments), grid.row_cells, grid.col_cells)
        if grid.is_image:
            stats.add_cells(ids, np.ones(ids.shape, dtype=bool))
            return ids, with_stats(segments, stats)
        whole = whole_cells(ids)
        stats.add_cells(ids, whole)
        full = expand_cells(ids, grid.row_cells, grid.col_cells)
        cj, ci = np.nonzero(~whole)
        cand = thing_candidates(corner_ids(ids, cj, ci), self.num_things)
        for ys, xs, cell in split_pixels(cj, ci, grid.row_cells, grid.col_cells):
            answer = self.decide(ys, xs, cand[cell])
            full[ys, xs] = answer
            stats.add_pixels(ys, xs, answer)
        return full, with_stats(segments, stats)


def segment_of_label(segments: list, label_space: LabelSpace, stuff_classes: str) -> np.ndarray:
    """Per stuff-branch channel, shifted by one (entry 0: label -1), its stuff segment's id or 0."""
    thing_ids, stuff_ids = category_ids(label_space)
    table = channel_to_stuff_index(len(thing_ids), len(stuff_ids), stuff_classes)
    by_stuff = np.zeros(len(stuff_ids) + 1, dtype=np.int64)
    index = {int(c): i for i, c in enumerate(stuff_ids)}
    for seg in segments:
        if not seg["isthing"]:
            by_stuff[index[int(seg["category_id"])]] = seg["id"]
    return np.concatenate([[0], by_stuff[table]])


def fuse_grid(
    boxes: np.ndarray,
    mask_probs: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray,
    ranking_scores: np.ndarray,
    sem_seg_labels: np.ndarray,
    label_space: LabelSpace,
    stuff_classes: str,
    cfg: FusionConfig,
    orders: Sequence[str] = ("score", "srm"),
    max_pixels: Optional[int] = FUSION_PIXELS,
) -> dict[str, tuple[np.ndarray, list[dict]]]:
    """The selected detections (``boxes`` in input pixels, RoI ``mask_probs``, ...) and the stuff labels at
    the image's size -> ``{order: (ids H x W int32, segments with area and bbox)}``; see
    :func:`oanet.model.grid_fusion.fuse_grid`."""
    check_orders(orders)
    height, width = sem_seg_labels.shape
    grid = Grid(height, width, max_pixels)
    padded = np.pad(mask_probs.astype(np.float32, copy=False), ((0, 0), (1, 1), (1, 1)))
    extents = mask_extents(boxes, mask_probs.shape[-1])
    masks = paste_on_grid(padded, extents, grid)
    grid_labels = sem_seg_labels[grid.rows][:, grid.cols]
    labels = np.asarray(labels, dtype=np.int64)
    order_scores = {"score": scores, "srm": ranking_scores}
    fused = {}
    for o in orders:
        ids, segments, instances = fusion_parts(masks, labels, scores, order_scores[o], grid_labels, label_space,
                                                stuff_classes, cfg, ranking_scores=ranking_scores)
        lookup = segment_of_label(segments, label_space, stuff_classes)
        fused[o] = Refiner(grid, ids, instances, segments, padded, extents, sem_seg_labels, lookup).full_size(segments)
    return fused


__all__ = ["fuse_grid", "paste_on_grid", "Grid"]
