"""Panoptic fusion: instance masks + stuff labels -> one non-overlapping panoptic id map.

Rules (paper §3.2 and §4.2, the usual Mask R-CNN + semantic heuristic):

1. The detections the model selected (detection score >= ``score_thresh``, the same ones the SRM
   ranked) are binarised at 0.5 and pasted in descending order of ``order_scores`` (detection scores
   for the heuristic, Eq. 3 ranking scores for the SRM, or a caller's own scores: see :func:`fuse`).
   Within one class the SRM's per-class channel cannot tell instances apart, so the class's ranking
   scores are handed to its instances in detection-score order: the class keeps its positions in the
   cross-class order, and same-class overlaps are decided by the detection score. A caller's own
   scores rank every instance, so they are used as they are (``per_class=False``).
2. An instance whose still-unassigned part is smaller than ``overlap_thresh`` of its own area is
   dropped and takes no pixels (so later instances may use them).
3. Remaining pixels take the stuff branch's argmax when it is a stuff class; pixels whose argmax is a
   thing channel stay void (the instance branch owns things).
4. Per stuff class, a region smaller than ``stuff_area_limit * (short side / stuff_area_reference_size)^2``
   pixels becomes void (4900 at an 800-px short side, paper §4.2; the paper speaks of connected areas,
   the per-class area is the standard implementation and needs no connected-component pass).

Everything is tensor ops on the input's device. Pasting is sequential by nature; it is computed with
an "owner" map (the first pasted instance covering each pixel, one argmax over N) and, per dropped
instance, a re-assignment of only that instance's pixels, so the cost is O(N*H*W) plus O(N*|mask|)
per drop instead of one full pass per instance.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from oanet.config import FusionConfig
from oanet.data.labels import category_ids, channel_to_stuff_index
from oanet.orders import ORDER_SCORES
from oanet.result import fused_segments, thing_rows


def paste_order(labels: Tensor, det_scores: Tensor, order_scores: Tensor, per_class: bool = True) -> Tensor:
    """Indices in pasting order (first = on top), with same-class ties decided by detection score.

    With ``per_class`` (the SRM's scores), within each class the class's order scores, sorted, are
    reassigned to its instances sorted by detection score; then instances are sorted by the
    reassigned score (detection score breaks ties). Without, instances are sorted by ``order_scores``
    as given (detection score breaks ties).
    """
    n = labels.numel()
    if n == 0:
        return labels.new_zeros((0,), dtype=torch.long)
    if not per_class:
        idx = torch.sort(det_scores, descending=True, stable=True).indices
        return idx[torch.sort(order_scores[idx], descending=True, stable=True).indices]

    def by_class_then_desc(key: Tensor) -> Tensor:
        idx = torch.sort(key, descending=True, stable=True).indices
        return idx[torch.sort(labels[idx], stable=True).indices]

    by_order = by_class_then_desc(order_scores)
    by_det = by_class_then_desc(det_scores)
    reassigned = torch.empty_like(order_scores)
    reassigned[by_det] = order_scores[by_order]
    idx = torch.sort(det_scores, descending=True, stable=True).indices
    return idx[torch.sort(reassigned[idx], descending=True, stable=True).indices]


def paste_instances(masks: Tensor, overlap_thresh: float, max_covered: Optional[float] = None) -> tuple[Tensor, Tensor]:
    """Sequentially paste binary ``N x H x W`` masks (already in order; first on top).

    Returns ``(owner HxW int64, -1 = none, kept N bool)``. ``masks`` may be bool or 0/1 numbers. Instance i is kept when its pixels not
    taken by kept instances before it are >= ``overlap_thresh`` of its area (and > 0). With
    ``max_covered`` instead (panopticapi's ``overlap_thr``), it is dropped when its pixels already taken
    are more than ``max_covered`` of its area, compared in float64 as that script compares them.
    """
    n = masks.shape[0]
    h, w = masks.shape[-2:]
    device = masks.device
    if n == 0:
        return torch.full((h, w), -1, dtype=torch.long, device=device), torch.zeros(0, dtype=torch.bool, device=device)
    masks = masks.view(torch.uint8) if masks.dtype == torch.bool else (masks != 0).view(torch.uint8)
    flat = masks.reshape(n, h * w)
    area = _areas(masks)
    kept = area > 0
    # Weight instance i by n - i: the max over instances is the topmost one covering the pixel. A
    # weighted amax is several times faster than max/argmax with indices over dim 0.
    rank_dtype = torch.uint8 if n < 256 else torch.int32
    rank = torch.arange(n, 0, -1, device=device, dtype=rank_dtype)

    def topmost(candidates: Tensor, weights: Tensor, dim: int) -> Tensor:
        best = (candidates.to(rank_dtype) * weights).amax(dim).long()
        return torch.where(best > 0, n - best, -1)

    owner = topmost(flat, rank[:, None], 0)
    visible = torch.bincount(owner[owner >= 0], minlength=n)
    order = torch.arange(n, device=device)
    rule = (overlap_thresh, max_covered)
    first = _first_failing(kept, visible, area, order, rule)
    if first == n:
        return owner.reshape(h, w), kept
    # Dropping an instance frees its pixels; only pixels covered by >= 2 masks can go to another
    # instance, so the drops work on those alone, pixel-major (one contiguous row of N per pixel).
    shared = (flat.sum(0, dtype=_count_dtype(n)) >= 2).nonzero().squeeze(1)
    shared_masks = flat[:, shared].t().contiguous()
    shared_owner = owner[shared]
    while first < n:
        # Instances before the first failing one are final (they only depend on earlier ones), so drop
        # exactly that one and hand its shared pixels to the next kept instance covering them.
        kept[first] = False
        visible[first] = 0
        pixels = (shared_owner == first).nonzero().squeeze(1)
        new_owner = topmost(shared_masks[pixels], rank * kept.to(rank_dtype), 1)
        shared_owner[pixels] = new_owner
        visible += torch.bincount(new_owner[new_owner >= 0], minlength=n)
        first = _first_failing(kept, visible, area, order, rule)
    # Pixels of dropped instances that no other mask covers become unowned.
    owner = torch.where(kept[owner.clamp(min=0)], owner, -1)
    owner[shared] = shared_owner
    return owner.reshape(h, w), kept


def _count_dtype(n: int) -> torch.dtype:
    """The smallest integer dtype that holds counts up to ``n`` (summing in it needs no widened copy)."""
    return torch.uint8 if n < 256 else torch.int16 if n < 32768 else torch.int32


def _areas(masks: Tensor) -> Tensor:
    """Pixel counts (int32) of ``N x H x W`` 0/1 uint8 masks: row sums first, in a dtype that holds ``W``,
    so no ``N x H x W`` widened copy is made (that copy costs more than the sums)."""
    return masks.sum(2, dtype=_count_dtype(masks.shape[-1])).sum(1, dtype=torch.int32)


def _first_failing(kept: Tensor, visible: Tensor, area: Tensor, order: Tensor, rule: tuple) -> int:
    """Index of the first kept instance whose visible part is too small (n if none): one host sync.
    ``rule``: ``(overlap_thresh, max_covered)`` of :func:`paste_instances`."""
    overlap_thresh, max_covered = rule
    if max_covered is None:
        too_hidden = visible < overlap_thresh * area
    else:
        too_hidden = (area - visible).double() / area.double().clamp(min=1) > max_covered
    # visible == 0 too: with overlap_thresh 0 a fully hidden instance would be kept as an empty segment
    failing = kept & (too_hidden | (visible == 0))
    return int(torch.where(failing, order, len(order)).min())


def panoptic_fusion(
    masks: Tensor,
    labels: Tensor,
    det_scores: Tensor,
    order_scores: Tensor,
    sem_seg_labels: Tensor,
    label_space: Any,
    stuff_classes: str,
    cfg: FusionConfig,
    *,
    ranking_scores: Optional[Tensor] = None,
    mask_thresh: float = 0.5,
    per_class: bool = True,
    max_covered: Optional[float] = None,
    min_stuff_area: Optional[float] = None,
) -> tuple[Tensor, list[dict]]:
    """Fuse one image's selected detections into ``(ids HxW int32, segments)``.

    Every instance given takes part (the model selected them: see :func:`fuse`). ``masks``:
    ``N x H x W`` probabilities (or binary); ``labels``: thing indices 0..T-1; ``det_scores`` /
    ``order_scores``: ``N``; ``sem_seg_labels``: ``H x W`` argmax of the stuff branch (its channel
    space per ``stuff_classes``); ``label_space``: see :func:`category_ids`. Segment ids are 1..K,
    things first in pasting order; 0 is void. Segments: ``id``, ``category_id`` (COCO), ``isthing``,
    ``score`` (detection score; None for stuff), ``ranking_score`` (``ranking_scores`` of the
    instance when given; None for stuff), ``area``. ``per_class``: see :func:`paste_order`.
    ``sem_seg_labels`` may hold -1 (void: no stuff there). ``max_covered`` (see :func:`paste_instances`)
    and ``min_stuff_area`` (pixels, instead of ``cfg``'s scaled limit) give panopticapi's rules
    (:mod:`oanet.merge`).
    """
    ids, segments, _ = fusion_parts(masks, labels, det_scores, order_scores, sem_seg_labels, label_space,
                                    stuff_classes, cfg, ranking_scores=ranking_scores, mask_thresh=mask_thresh,
                                    per_class=per_class, max_covered=max_covered, min_stuff_area=min_stuff_area)
    return ids, segments


def fusion_parts(masks: Tensor, labels: Tensor, det_scores: Tensor, order_scores: Tensor, sem_seg_labels: Tensor,
                 label_space: Any, stuff_classes: str, cfg: FusionConfig, *, ranking_scores: Optional[Tensor] = None,
                 mask_thresh: float = 0.5, per_class: bool = True, max_covered: Optional[float] = None,
                 min_stuff_area: Optional[float] = None) -> tuple[Tensor, list[dict], Tensor]:
    """:func:`panoptic_fusion`, also returning which instance (index into ``masks``) each thing segment
    is, in segment order (the grid fusion decides the pixels of a large image with it)."""
    thing_ids, stuff_ids = category_ids(label_space)
    order = paste_order(labels, det_scores, order_scores, per_class)
    binary = masks[order] if masks.dtype == torch.bool else masks[order] > mask_thresh
    owner, kept = paste_instances(binary, cfg.overlap_thresh, max_covered)

    # Kept instances get ids 1..K in pasting order. Lookups are shifted by one so that -1 (no owner,
    # no stuff) indexes entry 0: one gather per map instead of a mask, a clamp and a select.
    segment_id_of = torch.cumsum(kept.long(), 0) * kept
    ids = _shifted_lookup(segment_id_of, owner)
    thing_areas = torch.bincount(owner.reshape(-1) + 1, minlength=len(order) + 1)[1:]

    things = thing_rows(order[kept], labels, det_scores, ranking_scores, thing_areas[kept])
    if min_stuff_area is None:
        min_stuff_area = cfg.min_stuff_area(*sem_seg_labels.shape[-2:])
    ids, stuff_rows = _fill_stuff(ids, owner, sem_seg_labels, len(thing_ids), len(stuff_ids), len(things) + 1,
                                  stuff_classes, min_stuff_area)
    return ids.to(torch.int32), fused_segments(things, stuff_rows, thing_ids, stuff_ids), order[kept]


def _fill_stuff(ids: Tensor, owner: Tensor, sem_seg_labels: Tensor, num_thing: int, num_stuff: int, first_id: int,
                stuff_classes: str, min_stuff_area: float) -> tuple[Tensor, list]:
    """Stuff fills what the instances left: one segment per stuff class of at least ``min_stuff_area``
    pixels, ids from ``first_id``. Returns the id map and ``[(stuff index, area)]``."""
    if not num_stuff:
        return ids, []
    device = sem_seg_labels.device
    # A trailing -1 entry: label -1 (void) indexes it and takes no stuff class.
    table = torch.from_numpy(np.append(channel_to_stuff_index(num_thing, num_stuff, stuff_classes), -1)).to(device)
    stuff = torch.where(owner < 0, table[sem_seg_labels.long()], -1)  # owner < 0 exactly where ids == 0
    areas = torch.bincount(stuff.reshape(-1) + 1, minlength=num_stuff + 1)[1:]
    big = areas >= max(min_stuff_area, 1)
    classes = big.nonzero().squeeze(1)
    stuff_segment_id = torch.zeros(num_stuff, dtype=torch.long, device=device)
    stuff_segment_id[classes] = torch.arange(first_id, first_id + len(classes), device=device)
    ids = ids + _shifted_lookup(stuff_segment_id, stuff)  # the two are never both non-zero
    return ids, list(zip(classes.tolist(), areas[classes].tolist()))


def _shifted_lookup(values: Tensor, index: Tensor) -> Tensor:
    """``values[index]`` where ``index >= 0``, 0 where ``index == -1``."""
    return torch.cat([values.new_zeros(1), values])[index + 1]




def fuse(
    prediction: dict[str, Tensor],
    label_space: Any,
    stuff_classes: str,
    cfg: FusionConfig,
    orders: Sequence[str] = ("score", "srm"),
    order_scores: Optional[Mapping[str, Tensor]] = None,
) -> dict[str, tuple[Tensor, list[dict]]]:
    """Fuse one model output (docs/design.md) in each of ``orders``: ``{order: (ids, segments)}``.

    ``"score"`` pastes by detection score (the heuristic), ``"srm"`` by the SRM ranking score. Any
    other order is named by a key of ``order_scores``, whose value gives one score per detection of
    ``prediction`` (higher = pasted on top); those scores rank every instance, including instances of
    one class (e.g. the true depth order of :mod:`oanet.experiments.oracle`). The detections pasted
    are exactly those the model ``selected`` (the ones the SRM ranked), in every order;
    ``cfg.score_thresh`` is the model's default for that choice and is not read here.
    """
    order_scores = dict(order_scores or {})
    shadowing = sorted(set(order_scores) & set(ORDER_SCORES))
    if shadowing:
        raise ValueError(f"order_scores may not redefine the built-in order(s) {shadowing}")
    unknown = [o for o in orders if o not in ORDER_SCORES and o not in order_scores]
    if unknown:
        known = sorted(ORDER_SCORES) + sorted(order_scores)
        raise ValueError(f"unknown fusion order(s) {unknown}; expected some of {known}")
    if "selected" not in prediction:
        raise ValueError("prediction lacks 'selected' (the detections the model ranked): fuse a model output")
    num_detections = prediction["scores"].shape[0]
    for name, scores in order_scores.items():
        if tuple(scores.shape) != (num_detections,):
            raise ValueError(f"order_scores[{name!r}] has shape {tuple(scores.shape)}; expected ({num_detections},)")
    sem_seg_labels = prediction["sem_seg_labels"]
    keep = prediction["selected"].nonzero().squeeze(1)
    # Only the selected detections are binarised (once, for every order): most of the
    # detections_per_img are usually below the score threshold.
    common = dict(
        masks=_selected_rows(prediction["masks"], keep) > 0.5,
        labels=prediction["labels"][keep],
        det_scores=prediction["scores"][keep],
        sem_seg_labels=sem_seg_labels,
        label_space=label_space,
        stuff_classes=stuff_classes,
        cfg=cfg,
        ranking_scores=prediction["ranking_scores"][keep],
    )
    fused = {}
    for o in orders:
        if o in ORDER_SCORES:
            fused[o] = panoptic_fusion(order_scores=prediction[ORDER_SCORES[o]][keep], **common)
        else:
            fused[o] = panoptic_fusion(order_scores=order_scores[o].to(keep.device)[keep], per_class=False, **common)
    return fused


def _selected_rows(masks: Tensor, keep: Tensor) -> Tensor:
    """``masks[keep]``; a view, not an ``N x H x W`` copy, when ``keep`` is a run of consecutive
    indices, as the model's are (its detections come sorted by score, and it selects by a threshold)."""
    if len(keep):
        start, last = keep[[0, -1]].tolist()
        if last - start + 1 == len(keep):
            return masks[start : last + 1]
    return masks[keep]


__all__: Sequence[str] = (
    "panoptic_fusion",
    "fuse",
    "paste_order",
    "paste_instances",
    "category_ids",
)
