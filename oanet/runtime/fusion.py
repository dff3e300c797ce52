"""Panoptic fusion in numpy: the rules of :mod:`oanet.model.fusion`, for the PyTorch-free runtime.

The specification is docs/model.md ("Fusion") and the module docstring of ``oanet/model/fusion.py``;
this is its second implementation, function for function (``paste_order``, ``paste_instances``,
``panoptic_fusion``, ``fuse``), and it gives the same id map and segments **bit for bit** on the same
inputs (tests/test_runtime_fusion.py). Where the torch code compares integers with a Python float,
torch computes in float32 (its type promotion); so does this code, or a threshold that falls within
float32 rounding of an integer would decide differently.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from oanet.config import FusionConfig
from oanet.data.labels import LabelSpace, category_ids, channel_to_stuff_index
from oanet.orders import ORDER_SCORES
from oanet.result import fused_segments, thing_rows



def _argsort_desc(key: np.ndarray) -> np.ndarray:
    # Stable descending sort, as torch.sort(descending=True, stable=True): ties keep their order.
    return np.argsort(-key, kind="stable")


def paste_order(labels: np.ndarray, det_scores: np.ndarray, order_scores: np.ndarray) -> np.ndarray:
    """Indices in pasting order (first = on top), with same-class ties decided by detection score."""
    n = len(labels)
    if n == 0:
        return np.zeros(0, dtype=np.int64)

    def by_class_then_desc(key: np.ndarray) -> np.ndarray:
        idx = _argsort_desc(key)
        return idx[np.argsort(labels[idx], kind="stable")]

    by_order = by_class_then_desc(order_scores)
    by_det = by_class_then_desc(det_scores)
    reassigned = np.empty_like(order_scores)
    reassigned[by_det] = order_scores[by_order]
    idx = _argsort_desc(det_scores)
    return idx[_argsort_desc(reassigned[idx])]


def _topmost(candidates: np.ndarray) -> np.ndarray:
    """Per column of a bool ``N x P`` array the first row that is True (the topmost instance), else -1."""
    n = candidates.shape[0]
    # Weight row i by n - i and take the max over rows (a reduction numpy vectorises along axis 0;
    # argmax over axis 0 would copy and loop per column).
    rank_dtype = np.uint8 if n < 256 else np.int32
    rank = np.arange(n, 0, -1, dtype=rank_dtype)[:, None]
    best = (candidates.view(np.uint8) * rank).max(0, initial=0).astype(np.int64)
    return np.where(best > 0, n - best, -1)


def paste_instances(masks: np.ndarray, overlap_thresh: float) -> tuple[np.ndarray, np.ndarray]:
    """Sequentially paste binary ``N x H x W`` masks (in order; first on top).

    Returns ``(owner HxW int64, -1 = none, kept N bool)``: instance i is kept when its pixels not taken
    by kept instances before it are >= ``overlap_thresh`` of its area (and > 0); a dropped instance's
    pixels go to the next kept instance covering them.
    """
    n = masks.shape[0]
    h, w = masks.shape[-2:]
    if n == 0:
        return np.full((h, w), -1, dtype=np.int64), np.zeros(0, dtype=bool)
    flat = masks.reshape(n, h * w)
    flat = flat if flat.dtype == np.bool_ else flat != 0
    area = flat.sum(1, dtype=np.int64)
    # torch: `visible < overlap_thresh * area` on int tensors computes in float32.
    needed = np.float32(overlap_thresh) * area.astype(np.float32)
    kept = area > 0
    owner = _topmost(flat)
    visible = np.bincount(owner[owner >= 0], minlength=n)
    while True:
        failing = kept & ((visible.astype(np.float32) < needed) | (visible == 0))
        if not failing.any():
            break
        # Instances before the first failing one are final: drop exactly that one, hand its pixels on.
        first = int(np.flatnonzero(failing)[0])
        kept[first] = False
        pixels = np.flatnonzero(owner == first)
        new_owner = _topmost(flat[:, pixels] & kept[:, None])
        owner[pixels] = new_owner
        visible[first] = 0
        visible += np.bincount(new_owner[new_owner >= 0], minlength=n)
    return owner.reshape(h, w), kept


def panoptic_fusion(
    masks: np.ndarray,
    labels: np.ndarray,
    det_scores: np.ndarray,
    order_scores: np.ndarray,
    sem_seg_labels: np.ndarray,
    label_space: LabelSpace,
    stuff_classes: str,
    cfg: FusionConfig,
    *,
    ranking_scores: Optional[np.ndarray] = None,
    mask_thresh: float = 0.5,
) -> tuple[np.ndarray, list[dict]]:
    """Fuse one image's selected detections into ``(ids HxW int32, segments)``; see
    :func:`oanet.model.fusion.panoptic_fusion` (same arguments as numpy arrays, same result)."""
    ids, segments, _ = fusion_parts(masks, labels, det_scores, order_scores, sem_seg_labels, label_space, stuff_classes,
                                    cfg, ranking_scores=ranking_scores, mask_thresh=mask_thresh)
    return ids, segments


def fusion_parts(masks: np.ndarray, labels: np.ndarray, det_scores: np.ndarray, order_scores: np.ndarray,
                 sem_seg_labels: np.ndarray, label_space: LabelSpace, stuff_classes: str, cfg: FusionConfig, *,
                 ranking_scores: Optional[np.ndarray] = None,
                 mask_thresh: float = 0.5) -> tuple[np.ndarray, list[dict], np.ndarray]:
    """:func:`panoptic_fusion`, also returning which instance (index into ``masks``) each thing segment
    is, in segment order; see :func:`oanet.model.fusion.fusion_parts`."""
    thing_ids, stuff_ids = category_ids(label_space)
    h, w = sem_seg_labels.shape[-2:]
    labels = np.asarray(labels, dtype=np.int64)

    order = paste_order(labels, det_scores, order_scores)
    binary = masks[order] if masks.dtype == np.bool_ else masks[order] > np.float32(mask_thresh)
    owner, kept = paste_instances(binary, cfg.overlap_thresh)

    # Kept instances get ids 1..K in pasting order.
    segment_id_of = np.cumsum(kept, dtype=np.int64) * kept
    ids = np.zeros((h, w), dtype=np.int64)
    if len(order):
        ids = np.where(owner >= 0, segment_id_of[np.maximum(owner, 0)], 0)
    thing_areas = np.bincount(owner[owner >= 0], minlength=len(order))

    things = thing_rows(order[kept], labels, det_scores, ranking_scores, thing_areas[kept])
    stuff_rows: list = []

    # Stuff fills what the instances left.
    table = channel_to_stuff_index(len(thing_ids), len(stuff_ids), stuff_classes)
    stuff = np.where(ids == 0, table[sem_seg_labels.astype(np.int64)], -1).reshape(-1)
    num_stuff = len(stuff_ids)
    if num_stuff:
        valid = stuff >= 0
        areas = np.bincount(stuff[valid], minlength=num_stuff)
        # torch compares the int64 areas with the Python float limit in float32.
        big = areas.astype(np.float32) >= np.float32(max(cfg.min_stuff_area(h, w), 1))
        classes = np.flatnonzero(big)
        first_id = len(things) + 1
        stuff_segment_id = np.zeros(num_stuff, dtype=np.int64)
        stuff_segment_id[classes] = np.arange(first_id, first_id + len(classes))
        fill = np.where(valid, stuff_segment_id[np.maximum(stuff, 0)], 0).reshape(h, w)
        ids = np.where(fill > 0, fill, ids)
        stuff_rows = list(zip(classes.tolist(), areas[classes].tolist()))
    return ids.astype(np.int32), fused_segments(things, stuff_rows, thing_ids, stuff_ids), order[kept]


def fuse_selected(
    binary_masks: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray,
    ranking_scores: np.ndarray,
    sem_seg_labels: np.ndarray,
    label_space: LabelSpace,
    stuff_classes: str,
    cfg: FusionConfig,
    orders: Sequence[str] = ("score", "srm"),
) -> dict[str, tuple[np.ndarray, list[dict]]]:
    """:func:`fuse` on the selected detections only (binary ``K x H x W`` masks), in each order."""
    check_orders(orders)
    order_scores = {"scores": scores, "ranking_scores": ranking_scores}
    return {
        o: panoptic_fusion(binary_masks, labels, scores, order_scores[ORDER_SCORES[o]], sem_seg_labels, label_space,
                           stuff_classes, cfg, ranking_scores=ranking_scores)
        for o in orders
    }


def check_orders(orders: Sequence[str]) -> None:
    unknown = [o for o in orders if o not in ORDER_SCORES]
    if unknown:
        raise ValueError(f"unknown fusion order(s) {unknown}; expected some of {sorted(ORDER_SCORES)}")


def fuse(
    prediction: dict[str, np.ndarray],
    label_space: LabelSpace,
    stuff_classes: str,
    cfg: FusionConfig,
    orders: Sequence[str] = ("score", "srm"),
) -> dict[str, tuple[np.ndarray, list[dict]]]:
    """Fuse one model output (numpy arrays of :meth:`OANet.forward`'s keys: ``masks`` at the image
    size, ``labels``, ``scores``, ``ranking_scores``, ``selected``, ``sem_seg_labels``) in each of
    ``orders``. The detections pasted are exactly those the model ``selected``, in both orders, as in
    :func:`oanet.model.fusion.fuse`.
    """
    check_orders(orders)
    if "selected" not in prediction:
        raise ValueError("prediction lacks 'selected' (the detections the model ranked): fuse a model output")
    sem_seg_labels = prediction["sem_seg_labels"]
    keep = np.flatnonzero(prediction["selected"])
    return fuse_selected(
        prediction["masks"][keep] > np.float32(0.5),
        prediction["labels"][keep],
        prediction["scores"][keep],
        prediction["ranking_scores"][keep],
        sem_seg_labels,
        label_space,
        stuff_classes,
        cfg,
        orders,
    )


__all__: Sequence[str] = (
    "panoptic_fusion",
    "fuse",
    "fuse_selected",
    "paste_order",
    "paste_instances",
    "category_ids",
)
