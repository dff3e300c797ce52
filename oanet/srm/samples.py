"""Training samples of a standalone SRM, on the SRM's grid: no image, no detector.

Per image: the thing instances' masks and the visible thing class of each cell (IGNORE on stuff,
void and crowd), sampled onto the grid the ranker works on (:func:`oanet.srm.ranker.grid_size`).
The masks are the GT instance masks of ``--instances-json`` (COCO's overlap; the synthetic
benchmark's are amodal) or, without it, the panoptic segments themselves, which never overlap: the
perturbations (:func:`perturb`) then make the overlaps a detector makes. With ``--predictions``, the
masks are the detector's own results on these images.

The perturbations copy how detector masks err, batched over the instances of an image on the
grid: a shift of up to ``shift`` of the instance's size, a dilation or an erosion by one or two cells, and a spill:
the mask grows into the neighbouring instances it touches, as a mask of an occluded object grows
over its occluder (or a box-shaped mask over what stands in front).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

from oanet.data.labels import IGNORE
from oanet.srm.ranker import grid_indices, grid_size


@dataclass(frozen=True)
class Perturbation:
    """Probabilities and sizes (in grid cells) of the mask errors drawn per instance."""

    shift: float = 0.1  # of the instance's size (square root of its area)
    dilate_prob: float = 0.3
    erode_prob: float = 0.2
    spill_prob: float = 0.5
    spill: float = 0.15  # how far a spill reaches, of the instance's size
    spill_max_cells: int = 8
    drop_prob: float = 0.05
    completion: float = 0.6  # of the instance's size: how far a mask may grow from its visible part
    completion_max_cells: int = 16


# How hard to perturb (``oanet srm train --perturbation``). On the occlusion benchmark, with a Mask R-CNN
# trained on amodal masks, "none" and "light" rank best and "heavy" barely beats the score order: spills
# and partial completions put overlap cells under the wrong class as often as under the right one, which a
# per-class ranking cannot use (BENCHMARKS.md, "The SRM as a plug-in").
PERTURBATIONS = {
    "none": Perturbation(shift=0, dilate_prob=0, erode_prob=0, spill_prob=0, drop_prob=0, completion=0),
    "light": Perturbation(shift=0.03, dilate_prob=0.2, erode_prob=0.2, spill_prob=0, drop_prob=0, completion=0),
    "heavy": Perturbation(),
}


@dataclass
class GridSample:
    """One image on the grid: ``masks`` N x h x w bool, ``labels`` N thing indices, ``visible`` h x w."""

    masks: Tensor
    labels: Tensor
    visible: Tensor
    from_detector: bool = False
    # N x h x w: each instance's visible part (its panoptic segment), where its mask is amodal or overlaps
    # what the panoptic labels gave to another segment; None when the masks are the segments themselves.
    shown: Optional[Tensor] = None


def sample_cells(array: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """The value of ``array`` (``... x H x W``) under the centre of each grid cell."""
    rows = grid_indices(array.shape[-2], grid[0]).numpy()
    cols = grid_indices(array.shape[-1], grid[1]).numpy()
    return array[..., rows[:, None], cols[None, :]]


class AnnotationSamples:
    """``GridSample`` of image ``k`` of a panoptic split (optionally with instances or detections)."""

    def __init__(self, split: Any, short_side: int, max_size: int, stride: int,
                 predictions: Optional[dict] = None, score_thresh: float = 0.5) -> None:
        self.split = split
        self.label_space = split.label_space()
        self.short_side, self.max_size, self.stride = short_side, max_size, stride
        self.predictions = predictions  # image id -> COCO results rows
        self.score_thresh = score_thresh
        self.image_ids = [info.id for info in split.images]

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, k: int) -> GridSample:
        image_id = self.image_ids[k]
        info = self.split.image_info(image_id)
        grid = grid_size(info.height, info.width, self.short_side, self.max_size, self.stride)
        ann = self.split.annotation(image_id)
        where = str(self.split.panoptic_json)
        thing = self.label_space.thing_index(ann.category_ids, where)
        visible_class = np.where((thing >= 0) & ~ann.iscrowd, thing, IGNORE)
        index = sample_cells(self.split.load_index_map(image_id), grid)
        visible = np.where(index >= 0, visible_class[np.maximum(index, 0)], IGNORE)
        if self.predictions is not None:
            masks, labels = self._detections(image_id, info, grid)
        elif self.split.has_instances:
            full, cats, crowd = self.split.load_instance_masks(image_id)
            keep = ~crowd
            masks = sample_cells(full[keep], grid).astype(bool)
            labels = self.label_space.thing_index(cats[keep], str(self.split.instances_json))
            shown = visible_parts(masks, cats[keep], index, ann.category_ids)
            return GridSample(torch.from_numpy(np.ascontiguousarray(masks)), torch.from_numpy(labels.astype(np.int64)),
                              torch.from_numpy(visible.astype(np.int64)), False, torch.from_numpy(shown))
        else:
            keep = np.flatnonzero((thing >= 0) & ~ann.iscrowd)
            masks = index[None] == keep[:, None, None]
            labels = thing[keep]
        return GridSample(torch.from_numpy(np.ascontiguousarray(masks)), torch.from_numpy(labels.astype(np.int64)),
                          torch.from_numpy(visible.astype(np.int64)), self.predictions is not None)

    def _detections(self, image_id: Any, info: Any, grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        from oanet.merge.inputs import decode_rles

        rows = [r for r in self.predictions.get(image_id, []) if r["score"] >= self.score_thresh]
        masks = decode_rles(rows, info, "predictions")
        labels = self.label_space.thing_index([r["category_id"] for r in rows], "predictions")
        return sample_cells(masks, grid).astype(bool), labels


def visible_parts(masks: np.ndarray, categories: np.ndarray, index: np.ndarray, segment_categories: np.ndarray) -> np.ndarray:
    """Each instance mask's cells on the panoptic segment of its category it overlaps most (N x h x w)."""
    from oanet.evaluation.occlusion import masks_vs_index

    k = len(segment_categories)
    counts = masks_vs_index(masks, index, k) * (categories[:, None] == segment_categories[None, :])
    best = counts.argmax(1) if k else np.zeros(len(masks), dtype=np.int64)
    has = counts.max(1, initial=0) > 0
    return masks & (index[None] == np.where(has, best, -2)[:, None, None])


def _dilate(masks: Tensor, cells: int = 1) -> Tensor:
    """Grown by ``cells`` in every direction (a square), as ORs of shifted bool views: a byte per cell,
    several times faster than a float max-pool."""
    for _ in range(cells):
        rows = masks.clone()
        rows[:, 1:] |= masks[:, :-1]
        rows[:, :-1] |= masks[:, 1:]
        masks = rows.clone()
        masks[:, :, 1:] |= rows[:, :, :-1]
        masks[:, :, :-1] |= rows[:, :, 1:]
    return masks


def _erode(masks: Tensor, cells: int) -> Tensor:
    return ~_dilate(~masks, cells)


def _shift(masks: Tensor, dy: Tensor, dx: Tensor) -> Tensor:
    """Each mask moved by its own ``(dy, dx)`` cells; what enters from outside is empty."""
    n, h, w = masks.shape
    rows = torch.arange(h)[None, :] - dy[:, None]
    cols = torch.arange(w)[None, :] - dx[:, None]
    inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    gathered = masks[torch.arange(n)[:, None, None], rows.clamp(0, h - 1)[:, :, None], cols.clamp(0, w - 1)[:, None, :]]
    return gathered & inside


def _grow_within(start: Tensor, limit: Tensor, cells: Tensor) -> Tensor:
    """``start`` grown one cell at a time, each instance ``cells[i]`` times, never beyond ``limit``."""
    grown = start
    for step in range(1, int(cells.max()) + 1 if len(cells) else 1):
        grown = torch.where((cells >= step)[:, None, None], _dilate(grown, 1) & limit, grown)
    return grown


def perturb(masks: Tensor, cfg: Perturbation, generator: torch.Generator,
            shown: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """Masks as a detector would have predicted them, one draw per instance; returns ``(masks, kept)``.

    With ``shown`` (each instance's visible part), a mask starts from what is visible and completes a
    random share of its hidden part, grown from the visible edge: a detector's mask of an occluded
    object covers some of what hides it, rarely all (it never sees the hidden part).
    """
    n = masks.shape[0]
    if n == 0:
        return masks, torch.zeros(0, dtype=torch.bool)

    def draw(p: float) -> Tensor:
        return torch.rand(n, generator=generator) < p

    out = masks
    if shown is not None and cfg.completion > 0:
        size = masks.flatten(1).sum(1).float().sqrt()
        reach = (torch.rand(n, generator=generator) * cfg.completion * size).round().long()
        out = _grow_within(shown, masks, reach.clamp(max=cfg.completion_max_cells))
        out = torch.where(out.flatten(1).any(1)[:, None, None], out, masks)  # nothing visible: the whole mask
    if cfg.spill_prob > 0 and n > 1:
        # Grow into the other instances this one touches: the shared cells a detector's mask takes.
        others = (masks.sum(0, keepdim=True) - masks.to(torch.int32)) > 0
        cells = (cfg.spill * masks.flatten(1).sum(1).float().sqrt()).round().long().clamp(1, cfg.spill_max_cells)
        grown = masks
        for step in range(1, int(cells.max()) + 1):  # one cell at a time; each instance stops at its reach
            grown = torch.where((cells >= step)[:, None, None], _dilate(grown, 1), grown)
        out = torch.where(draw(cfg.spill_prob)[:, None, None], out | (grown & others & ~masks), out)
    out = torch.where(draw(cfg.dilate_prob)[:, None, None], _dilate(out, 1), out)
    out = torch.where(draw(cfg.erode_prob)[:, None, None] & (out.flatten(1).sum(1) > 16)[:, None, None],
                      _erode(out, 1), out)
    if cfg.shift > 0:
        reach = cfg.shift * out.flatten(1).sum(1).float().sqrt()
        dy, dx = ((torch.rand(2, n, generator=generator) * 2 - 1) * reach).round().long()
        out = _shift(out, dy, dx)
    kept = ~draw(cfg.drop_prob) & out.flatten(1).any(1)
    return out[kept], kept


def overlap_targets(masks: Tensor, visible: Tensor) -> Tensor:
    """Eq. 2's target: the visible thing class where two or more masks overlap, IGNORE elsewhere."""
    if masks.shape[0] < 2:
        return torch.full_like(visible, IGNORE)
    overlap = masks.to(torch.int32).sum(0) >= 2
    return torch.where(overlap, visible, torch.full_like(visible, IGNORE))


def read_predictions(path: str | Path, split: Any) -> dict:
    """A detector's COCO instance results on the split's images, grouped per image (checked)."""
    from oanet.fileio import read_json
    from oanet.merge.inputs import group_instances

    images = {info.id: info for info in split.images}
    return group_instances(read_json(path, "predictions"), str(path), images, split.label_space())
