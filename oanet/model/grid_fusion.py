"""Panoptic fusion of an image of any size in bounded memory, from the network's own outputs.

:func:`fuse_grid` takes a model output of ``model(images, full_size=False)`` (RoI masks, boxes and
stuff logits: nothing at the image's size) and returns the id map at the image's size. The rules
are :mod:`oanet.model.fusion`'s; where they are applied is :mod:`oanet.fusion_grid`'s: decisions on a
grid of at most ``max_pixels`` of the image's pixels (the image itself when it is that small), then
each pixel where segments meet decided on its own. Each selected mask is pasted inside its box only,
as bool, at the grid's pixels, with the arithmetic of torchvision's full-size paste; nothing of
``N x H x W`` is ever made. :mod:`oanet.runtime.grid_fusion` is the same in numpy, bit for bit
(tests/test_runtime_fusion.py).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from oanet.config import FusionConfig
from oanet.data.labels import category_ids, channel_to_stuff_index
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
from oanet.model.autocast import full_precision
from oanet.model.fusion import fusion_parts
from oanet.model.oanet import STUFF_STRIDE
from oanet.model.stuff_labels import coarse_labels, stuff_labels, stuff_labels_at
from oanet.orders import ORDER_SCORES


class Grid:
    """The grid of an ``height x width`` image (:func:`oanet.fusion_grid.axes`) on ``device``."""

    def __init__(self, height: int, width: int, max_pixels: Optional[int], device: torch.device) -> None:
        self.height, self.width = height, width
        self.rows_np, self.cols_np = axes(height, width, max_pixels)
        self.rows = torch.from_numpy(self.rows_np).to(device)
        self.cols = torch.from_numpy(self.cols_np).to(device)
        self.row_cells_np, self.col_cells_np = cell_of(height, self.rows_np), cell_of(width, self.cols_np)
        self.row_cells = torch.from_numpy(self.row_cells_np).to(device)
        self.col_cells = torch.from_numpy(self.col_cells_np).to(device)

    @property
    def is_image(self) -> bool:
        return len(self.rows_np) == self.height and len(self.cols_np) == self.width


def mask_extents(boxes: Tensor, mask_size: int) -> Tensor:
    """torchvision's paste geometry: each box widened by ``(M + 2) / M`` and truncated to integers
    (``K x 4`` int64 ``x0 y0 x1 y1``, inclusive), for masks padded by one pixel."""
    from torchvision.models.detection.roi_heads import expand_boxes

    return expand_boxes(boxes.float(), float(mask_size + 2) / mask_size).to(torch.int64)


def taps_at(positions: Tensor, out_size: Tensor, in_size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Bilinear source indices and weights (``align_corners=False``, PyTorch's formula in float32) of
    output positions ``positions`` when resizing ``in_size`` to ``out_size`` (a tensor: one size per
    position, or one for all)."""
    src = (torch.tensor(float(in_size), dtype=torch.float32, device=positions.device) / out_size.to(torch.float32)
           * (positions.to(torch.float32) + 0.5) - 0.5).clamp(min=0)
    low = src.floor().long().clamp(max=in_size - 1)
    lam1 = (src - low.to(torch.float32)).clamp(0, 1)
    high = low + (low < in_size - 1).long()
    same = out_size == in_size  # PyTorch copies when the size does not change
    low = torch.where(same, positions.clamp(max=in_size - 1), low)
    high = torch.where(same, low, high)
    lam1 = torch.where(same, torch.zeros_like(lam1), lam1)
    return low, high, 1 - lam1, lam1


def paste_on_grid(padded: Tensor, extents: Tensor, grid: Grid) -> Tensor:
    """Binary masks (``> 0.5``) of the padded RoI masks ``padded`` (``K x (M+2) x (M+2)``) at the grid's
    pixels: ``K x gh x gw`` bool, each written inside its box only."""
    k, size = padded.shape[0], padded.shape[-1]
    out = torch.zeros((k, len(grid.rows_np), len(grid.cols_np)), dtype=torch.bool, device=padded.device)
    boxes = extents.cpu().numpy()
    # One box-sized resize per mask, as torchvision's paste: vectorising over masks would pad every box
    # to the largest one.
    for i in range(k):
        x0, y0, x1, y1 = (int(v) for v in boxes[i])
        j0, j1 = np.searchsorted(grid.rows_np, [max(y0, 0), min(y1 + 1, grid.height)])
        i0, i1 = np.searchsorted(grid.cols_np, [max(x0, 0), min(x1 + 1, grid.width)])
        if j1 <= j0 or i1 <= i0:
            continue
        height, width = torch.tensor(max(y1 - y0 + 1, 1)), torch.tensor(max(x1 - x0 + 1, 1))
        ry0, ry1, wy0, wy1 = taps_at(grid.rows[j0:j1] - y0, height.to(padded.device), size)
        cx0, cx1, wx0, wx1 = taps_at(grid.cols[i0:i1] - x0, width.to(padded.device), size)
        # PyTorch's order of operations: along x, then along y, each (v0 * w0 + v1 * w1).
        across = padded[i][:, cx0] * wx0 + padded[i][:, cx1] * wx1
        out[i, j0:j1, i0:i1] = (across[ry0] * wy0[:, None] + across[ry1] * wy1[:, None]) > 0.5
    return out


def mask_values_at(padded: Tensor, extents: Tensor, instance: Tensor, ys: Tensor, xs: Tensor) -> Tensor:
    """Whether mask ``instance[p]`` covers pixel ``(ys[p], xs[p])``: the value :func:`paste_on_grid` (and
    torchvision's full-size paste) gives that pixel, ``> 0.5``, one pixel per pair."""
    size = padded.shape[-1]
    x0, y0, x1, y1 = extents[instance].unbind(1)
    inside = (ys >= y0) & (ys <= y1) & (xs >= x0) & (xs <= x1)
    ly, lx = (ys - y0).clamp(min=0), (xs - x0).clamp(min=0)
    ry0, ry1, wy0, wy1 = taps_at(ly, (y1 - y0 + 1).clamp(min=1), size)
    cx0, cx1, wx0, wx1 = taps_at(lx, (x1 - x0 + 1).clamp(min=1), size)
    flat = padded.reshape(-1)
    base = instance * (size * size)

    def at(r: Tensor, c: Tensor) -> Tensor:
        return flat[base + r * size + c]

    value = (at(ry0, cx0) * wx0 + at(ry0, cx1) * wx1) * wy0 + (at(ry1, cx0) * wx0 + at(ry1, cx1) * wx1) * wy1
    return inside & (value > 0.5)


class Refiner:
    """Decides the pixels of the cells where segments meet by the full-size rule, from one order's
    grid fusion (:mod:`oanet.fusion_grid`)."""

    def __init__(self, grid: Grid, grid_ids: Tensor, instances: Tensor, segments: list, padded: Tensor,
                 extents: Tensor, stuff: "LogitStuff", segment_of_label: Tensor) -> None:
        self.grid, self.grid_ids, self.padded, self.extents, self.stuff = grid, grid_ids, padded, extents, stuff
        self.instances = instances
        self.num_things = sum(1 for s in segments if s["isthing"])
        self.segment_of_label = segment_of_label

    def decide(self, ys: Tensor, xs: Tensor, cand: Tensor) -> Tensor:
        """The id of each pixel: the first of its thing candidates (``n x 4``, :func:`thing_candidates`)
        whose mask covers it, else the stuff segment of its stuff label (0 when that class has none)."""
        p, slot = (cand != NOT_A_THING).nonzero(as_tuple=True)
        hit = mask_values_at(self.padded, self.extents, self.instances[cand[p, slot] - 1], ys[p], xs[p])
        covered = torch.zeros_like(cand, dtype=torch.bool)
        covered[p[hit], slot[hit]] = True
        first = covered.to(torch.uint8).argmax(1, keepdim=True)
        answer = torch.where(covered.any(1), cand.gather(1, first)[:, 0], 0)
        rest = (answer == 0).nonzero().squeeze(1)
        if rest.numel():
            answer[rest] = self.segment_of_label[self.stuff.at(ys[rest], xs[rest]) + 1]
        return answer.to(torch.int32)

    def full_size(self, segments: list) -> tuple[Tensor, list[dict]]:
        """The id map at the image's size and ``segments`` with its areas and boxes."""
        grid, ids = self.grid, self.grid_ids
        # The bookkeeping (which cells, which pixels, areas and boxes) is numpy on small arrays, shared
        # with the numpy fusion; the pixels themselves are decided on the model's device.
        host = ids.cpu().numpy()
        stats = MapStats(len(segments), grid.row_cells_np, grid.col_cells_np)
        if grid.is_image:
            stats.add_cells(host, np.ones(host.shape, dtype=bool))
            return ids, with_stats(segments, stats)
        whole = whole_cells(host)
        stats.add_cells(host, whole)
        if ids.device.type == "cpu":
            full = torch.from_numpy(expand_cells(host, grid.row_cells_np, grid.col_cells_np))
        else:
            full = ids.index_select(0, grid.row_cells).index_select(1, grid.col_cells)
        cj, ci = np.nonzero(~whole)
        device = ids.device
        cand = torch.from_numpy(thing_candidates(corner_ids(host, cj, ci), self.num_things)).to(device)
        for ys, xs, cell in split_pixels(cj, ci, grid.row_cells_np, grid.col_cells_np):
            ys_d, xs_d = torch.from_numpy(ys).to(device), torch.from_numpy(xs).to(device)
            answer = self.decide(ys_d, xs_d, cand[torch.from_numpy(cell).to(device)])
            full[ys_d, xs_d] = answer
            stats.add_pixels(ys, xs, answer.cpu().numpy())
        return full, with_stats(segments, stats)


class LogitStuff:
    """Stuff labels at original pixels from the stride-4 logits (:mod:`oanet.model.stuff_labels`)."""

    def __init__(self, logits: Tensor, image_size: tuple[int, int], original_size: tuple[int, int]) -> None:
        self.logits, self.image_size, self.original_size = logits, tuple(image_size), tuple(original_size)
        self.coarse: Optional[tuple[Tensor, Tensor]] = None

    def on_grid(self, rows: Tensor, cols: Tensor) -> Tensor:
        return stuff_labels(self.logits, self.image_size, self.original_size, STUFF_STRIDE, rows, cols)

    def at(self, ys: Tensor, xs: Tensor) -> Tensor:
        if self.coarse is None:  # once per image, not once per chunk of pixels
            self.coarse = coarse_labels(full_precision(self.logits))
        return stuff_labels_at(self.logits, self.image_size, self.original_size, STUFF_STRIDE, ys, xs, self.coarse)


def segment_of_label(segments: list, label_space: Any, stuff_classes: str, device: torch.device) -> Tensor:
    """Per stuff-branch channel, shifted by one (entry 0: label -1), the id of its stuff segment; 0 for
    thing channels and for classes without a segment (too small)."""
    thing_ids, stuff_ids = category_ids(label_space)
    table = channel_to_stuff_index(len(thing_ids), len(stuff_ids), stuff_classes)
    by_stuff = np.zeros(len(stuff_ids) + 1, dtype=np.int64)  # entry -1: no stuff
    index = {int(c): i for i, c in enumerate(stuff_ids)}
    for seg in segments:
        if not seg["isthing"]:
            by_stuff[index[int(seg["category_id"])]] = seg["id"]
    return torch.from_numpy(np.concatenate([[0], by_stuff[table]])).to(device)


def fuse_grid(
    prediction: dict,
    label_space: Any,
    stuff_classes: str,
    cfg: FusionConfig,
    orders: Sequence[str] = ("score", "srm"),
    max_pixels: Optional[int] = FUSION_PIXELS,
) -> dict[str, tuple[Tensor, list[dict]]]:
    """Fuse one output of ``model(images, full_size=False)`` in each of ``orders``: ``{order: (ids H x W
    int32, segments)}``, the segments with the map's ``area`` and ``bbox``. ``max_pixels``: the grid's
    budget (None or 0: decide at every pixel, the full-size fusion)."""
    unknown = [o for o in orders if o not in ORDER_SCORES]
    if unknown:
        raise ValueError(f"unknown fusion order(s) {unknown}; expected some of {sorted(ORDER_SCORES)}")
    height, width = prediction["original_size"]
    keep = prediction["selected"].nonzero().squeeze(1)
    probs = prediction["mask_probs"][keep]
    grid = Grid(height, width, max_pixels, probs.device)
    padded = F.pad(probs, (1, 1, 1, 1))
    extents = mask_extents(prediction["boxes"][keep], probs.shape[-1])
    stuff = LogitStuff(prediction["stuff_logits"], prediction["image_size"], (height, width))
    masks = paste_on_grid(padded, extents, grid)
    sem_seg_labels = stuff.on_grid(grid.rows, grid.cols)
    labels, scores, ranks = prediction["labels"][keep], prediction["scores"][keep], prediction["ranking_scores"][keep]
    fused = {}
    for o in orders:
        ids, segments, instances = fusion_parts(masks, labels, scores, prediction[ORDER_SCORES[o]][keep],
                                                sem_seg_labels, label_space, stuff_classes, cfg, ranking_scores=ranks)
        lookup = segment_of_label(segments, label_space, stuff_classes, ids.device)
        refiner = Refiner(grid, ids, instances, segments, padded, extents, stuff, lookup)
        fused[o] = refiner.full_size(segments)
    return fused


__all__ = ["fuse_grid", "paste_on_grid", "mask_extents", "Grid"]
