"""What a fusion order gets right where instances overlap: pairwise order accuracy and PQ_th by occlusion.

PQ mixes the order of overlapping instances with everything else a model does. These two measures
isolate it (docs/srm.md):

- **Pairwise order accuracy.** Take the pasted detections matched one-to-one to ground-truth thing
  segments (greedy by score, same category; the match is IoU >= 0.5 with the GT instance's amodal
  mask when an instances JSON gives one, else the detection covering >= 50 % of the segment's visible
  pixels). For every pair of matched detections whose masks overlap, the GT says which is in front:
  the one whose segment owns more of the overlap's pixels (a pair with a tie, e.g. an overlap that
  belongs to a third object, is skipped). The accuracy of an order is the share of pairs it pastes
  the same way round.
- **PQ_th by occlusion level.** Each non-crowd GT thing segment gets an occlusion level: the share of
  its amodal mask (the GT instance mask; without one, its matched detection's mask) that other GT
  things cover. Per level, PQ_th pools the thing segments of the level: TP and FN by their GT
  segment, an FP by the GT thing it overlaps most (one overlapping nothing is in no level), matched
  by the PQ rule (same category, IoU > 0.5, void pixels out of the union). Pooled over classes rather
  than averaged, since a level holds few instances of most classes.

numpy only. Per image, all pair counts come from the pixels where two or more masks overlap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

# Occlusion levels: [lower, upper) share of the amodal mask covered.
LEVELS = ((0.0, 0.1, "none <10%"), (0.1, 0.3, "light 10-30%"), (0.3, 0.5, "medium 30-50%"),
          (0.5, 1.01, "heavy >=50%"))
MATCH_THRESH = 0.5


def pair_counts(codes_a: np.ndarray, codes_b: np.ndarray, na: int, nb: int) -> np.ndarray:
    """``na x nb`` counts of the pixel pairs ``(codes_a[p], codes_b[p])``; code -1 is not counted."""
    ok = (codes_a >= 0) & (codes_b >= 0)
    return np.bincount(codes_a[ok] * nb + codes_b[ok], minlength=na * nb).reshape(na, nb)


def masks_vs_index(masks: np.ndarray, index: np.ndarray, num_segments: int) -> np.ndarray:
    """``N x K`` pixel counts of each mask on each segment of ``index`` (H x W, -1 = none)."""
    n = masks.shape[0]
    inst, pixel = np.nonzero(masks.reshape(n, index.size))
    return pair_counts(inst, index.reshape(-1)[pixel], n, num_segments)


def greedy_one_to_one(quality: np.ndarray, allowed: np.ndarray, thresh: float) -> np.ndarray:
    """Row ``i`` (rows in priority order) -> its column, or -1: best still-free column with quality >= thresh."""
    match = np.full(quality.shape[0], -1, dtype=np.int64)
    taken = np.zeros(quality.shape[1], dtype=bool)
    q = np.where(allowed, quality, -1.0)
    for i in range(quality.shape[0]):  # per detection, over at most ~100 rows: the order is the rule
        row = np.where(taken, -1.0, q[i])
        if row.size and row.max() >= thresh:
            j = int(row.argmax())
            match[i], taken[j] = j, True
    return match


def pairwise_agreement(masks: np.ndarray, match: np.ndarray, gt_index: np.ndarray,
                       ranks: dict[str, np.ndarray]) -> tuple[int, dict[str, int]]:
    """``(pairs, {order: agreeing pairs})`` of one image (see the module doc)."""
    n = masks.shape[0]
    matched = match >= 0
    if n < 2 or matched.sum() < 2:
        return 0, {o: 0 for o in ranks}
    flat = masks.reshape(n, gt_index.size)
    shared = np.flatnonzero(flat.sum(0) >= 2)
    if not shared.size:
        return 0, {o: 0 for o in ranks}
    a = flat[:, shared].astype(np.int32)
    own = (gt_index.reshape(-1)[shared][None, :] == match[:, None]) & matched[:, None]
    owned = own.astype(np.int32) @ a.T  # [i, j]: overlap pixels of i and j that i's GT segment owns
    i, j = np.nonzero(np.triu(matched[:, None] & matched[None, :] & (match[:, None] != match[None, :]), 1))
    vi, vj = owned[i, j], owned[j, i]
    decided = vi != vj
    i, j, truth = i[decided], j[decided], vi[decided] > vj[decided]
    return int(decided.sum()), {o: int(((r[i] < r[j]) == truth).sum()) for o, r in ranks.items()}


def occlusion_levels(covered: np.ndarray) -> np.ndarray:
    """The level (index into LEVELS) of each covered share."""
    edges = np.array([lo for lo, _, _ in LEVELS[1:]])
    return np.searchsorted(edges, covered, side="right")


@dataclass
class LevelCounts:
    tp: np.ndarray = field(default_factory=lambda: np.zeros(len(LEVELS)))
    fn: np.ndarray = field(default_factory=lambda: np.zeros(len(LEVELS)))
    fp: np.ndarray = field(default_factory=lambda: np.zeros(len(LEVELS)))
    iou: np.ndarray = field(default_factory=lambda: np.zeros(len(LEVELS)))

    def table(self) -> list[dict]:
        rows = []
        for k, (_, _, name) in enumerate(LEVELS):
            denom = self.tp[k] + 0.5 * self.fn[k] + 0.5 * self.fp[k]
            pq = 100.0 * self.iou[k] / denom if denom else None
            rows.append({"level": name, "pq_th": None if pq is None else round(float(pq), 3),
                         "tp": int(self.tp[k]), "fn": int(self.fn[k]), "fp": int(self.fp[k])})
        return rows


def panoptic_matches(pred_ids: np.ndarray, pred_segments: Sequence[dict], gt_index: np.ndarray,
                     gt_categories: np.ndarray, gt_crowd: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PQ matching of one image's predicted thing segments to its GT segments.

    Returns ``(gt_match K: predicted position or -1, gt_iou K, pred_fp P bool, intersections P x K)``
    over the predicted things ``[s for s in pred_segments if s['isthing']]``.
    """
    things = [s for s in pred_segments if s["isthing"]]
    k, p = len(gt_categories), len(things)
    position = thing_positions(pred_ids, things)
    inter = pair_counts(position, gt_index.reshape(-1), p, k)
    pred_area = np.bincount(position[position >= 0], minlength=p)
    gt_area = np.bincount(gt_index.reshape(-1)[gt_index.reshape(-1) >= 0], minlength=k)
    on_void = np.bincount(position[(position >= 0) & (gt_index.reshape(-1) < 0)], minlength=p)
    pred_cat = np.array([s["category_id"] for s in things], dtype=np.int64)
    union = pred_area[:, None] + gt_area[None, :] - inter - on_void[:, None]
    iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    ok = (pred_cat[:, None] == gt_categories[None, :]) & ~gt_crowd[None, :] & (iou > MATCH_THRESH)
    gt_match = np.full(k, -1, dtype=np.int64)
    gt_iou = np.zeros(k)
    rows, cols = np.nonzero(ok)  # IoU > 0.5 matches are unique both ways
    gt_match[cols], gt_iou[cols] = rows, iou[rows, cols]
    matched_pred = np.zeros(p, dtype=bool)
    matched_pred[rows] = True
    same_crowd = ((pred_cat[:, None] == gt_categories[None, :]) & gt_crowd[None, :]) * inter
    ignored = (on_void + same_crowd.sum(1)) > 0.5 * np.maximum(pred_area, 1)
    return gt_match, gt_iou, ~matched_pred & ~ignored, inter


def thing_positions(pred_ids: np.ndarray, things: Sequence[dict]) -> np.ndarray:
    """Flat ``H*W``: each pixel's position in ``things`` (its segment), -1 elsewhere."""
    flat = pred_ids.reshape(-1).astype(np.int64)
    if not things:
        return np.full(flat.shape, -1, dtype=np.int64)
    ids = np.array([s["id"] for s in things], dtype=np.int64)
    order = np.argsort(ids)
    pos = np.minimum(np.searchsorted(ids[order], flat), len(ids) - 1)
    return np.where(ids[order][pos] == flat, order[pos], -1)


__all__ = ("LEVELS", "pairwise_agreement", "panoptic_matches", "occlusion_levels", "masks_vs_index",
           "greedy_one_to_one", "LevelCounts")
