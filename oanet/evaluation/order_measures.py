"""``OrderMeasures``: pairwise order accuracy and PQ_th by occlusion level over a dataset
(:mod:`oanet.evaluation.occlusion` per image), for ``oanet merge`` and ``oanet evaluate``. numpy only."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from oanet.evaluation.occlusion import (
    MATCH_THRESH,
    LevelCounts,
    greedy_one_to_one,
    masks_vs_index,
    occlusion_levels,
    pairwise_agreement,
    panoptic_matches,
)


class OrderMeasures:
    """Accumulates, image by image, what each order gets right where instances overlap.

    ``add(image_id, masks, category_ids, ranks, fused)``: the pasted detections of one image
    (``N x H x W`` bool, their category ids in descending score order of priority, and per order the
    position of each in that order's pasting) and ``fused`` ``{order: (ids, segments)}``.
    """

    def __init__(self, gt_json: str | Path, gt_dir: str | Path, gt_instances: Optional[str | Path],
                 orders: Sequence[str]) -> None:
        from oanet.data.coco_panoptic import PanopticSplit

        self.split = PanopticSplit(gt_json, gt_dir, gt_dir, instances_json=gt_instances or None)
        self.orders = tuple(orders)
        self.pairs = 0
        self.agree = {o: 0 for o in orders}
        self.levels = {o: LevelCounts() for o in orders}
        self.images = 0

    def add(self, merged: Any) -> None:
        """``merged``: an :class:`oanet.merge.run.MergedImage` (or anything with its fields)."""
        masks = np.asarray(merged.masks.numpy() if hasattr(merged.masks, "numpy") else merged.masks, dtype=bool)
        self.add_image(merged.info.id, masks, np.asarray(merged.labels), merged.ranks, merged.fused)

    def add_image(self, image_id: Any, masks: np.ndarray, category_ids: np.ndarray, ranks: dict, fused: dict) -> None:
        ann = self.split.annotation(image_id)
        gt_index = self.split.load_index_map(image_id)
        k = len(ann.segment_ids)
        thing = self.split.label_space().is_thing(ann.category_ids) & ~ann.iscrowd
        amodal = self._amodal(image_id, ann, gt_index, thing)
        match = self._match(masks, category_ids, ranks, gt_index, ann, thing, amodal)
        pairs, agree = pairwise_agreement(masks, match, gt_index, {o: ranks[o] for o in self.orders})
        self.pairs += pairs
        for o in self.orders:
            self.agree[o] += agree[o]
        covered = self._covered(masks, match, gt_index, thing, amodal, k)
        level = occlusion_levels(covered)
        for o in self.orders:
            ids, segments = fused[o]
            self._count_levels(self.levels[o], ids, segments, gt_index, ann, thing, level)
        self.images += 1

    def _amodal(self, image_id: Any, ann: Any, gt_index: np.ndarray, thing: np.ndarray) -> Optional[np.ndarray]:
        """``K x H x W`` GT instance mask of each thing segment (the same-category instance that covers
        most of it), or None without an instances JSON. Non-things get empty masks."""
        if not self.split.has_instances:
            return None
        masks, cats, crowd = self.split.load_instance_masks(image_id)
        k = len(ann.segment_ids)
        out = np.zeros((k,) + gt_index.shape, dtype=bool)
        if not len(masks):
            return out
        overlap = masks_vs_index(masks.astype(bool), gt_index, k).T  # K x I
        overlap = np.where((ann.category_ids[:, None] == cats[None, :]) & ~crowd[None, :], overlap, 0)
        best = overlap.argmax(1)
        has = thing & (overlap.max(1) > 0)
        out[has] = masks[best[has]].astype(bool)
        # The visible part belongs to the object whatever the instance annotation says.
        out |= (gt_index[None] == np.arange(k)[:, None, None]) & thing[:, None, None]
        return out

    def _match(self, masks, category_ids, ranks, gt_index, ann, thing, amodal) -> np.ndarray:
        """Each detection's GT segment position, or -1 (greedy in descending score order)."""
        n, k = masks.shape[0], len(ann.segment_ids)
        if n == 0 or k == 0:
            return np.full(n, -1, dtype=np.int64)
        if amodal is not None:
            flat_pred, flat_gt = masks.reshape(n, gt_index.size), amodal.reshape(k, gt_index.size)
            inter = flat_pred.astype(np.float32) @ flat_gt.T.astype(np.float32)
            union = flat_pred.sum(1)[:, None] + flat_gt.sum(1)[None, :] - inter
            quality = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
        else:
            visible = masks_vs_index(masks, gt_index, k)
            area = np.bincount(gt_index[gt_index >= 0], minlength=k)
            quality = visible / np.maximum(area, 1)[None, :]
        allowed = (category_ids[:, None] == ann.category_ids[None, :]) & thing[None, :]
        by_score = np.argsort(ranks["score"], kind="stable") if "score" in ranks else np.arange(n)
        match = np.full(n, -1, dtype=np.int64)
        match[by_score] = greedy_one_to_one(quality[by_score], allowed[by_score], MATCH_THRESH)
        return match

    def _covered(self, masks, match, gt_index, thing, amodal, k) -> np.ndarray:
        """Per GT segment, the share of its amodal (else matched predicted) mask other GT things cover."""
        if amodal is not None:
            full = amodal
        else:
            full = (gt_index[None] == np.arange(k)[:, None, None])
            matched = np.flatnonzero(match >= 0)
            full[match[matched]] |= masks[matched]  # one detection per segment at most
        other_thing = masks_vs_index(full, gt_index, k)  # K x K pixels of amodal s on visible segment t
        other_thing = other_thing * thing[None, :]
        np.fill_diagonal(other_thing, 0)
        area = full.reshape(k, gt_index.size).sum(1)
        covered = np.where(area > 0, other_thing.sum(1) / np.maximum(area, 1), 0.0)
        return covered

    @staticmethod
    def _count_levels(counts: LevelCounts, ids, segments, gt_index, ann, thing, level) -> None:
        gt_match, gt_iou, fp, inter = panoptic_matches(np.asarray(ids), segments, gt_index, ann.category_ids,
                                                       ann.iscrowd)
        tp, fn = (gt_match >= 0) & thing, (gt_match < 0) & thing
        np.add.at(counts.tp, level[tp], 1)
        np.add.at(counts.fn, level[fn], 1)
        np.add.at(counts.iou, level[tp], gt_iou[tp])
        on_things = inter[fp] * thing[None, :]  # an FP belongs to the level of the GT thing it covers most
        has = on_things.max(1, initial=0) > 0
        if has.any():
            np.add.at(counts.fp, level[on_things.argmax(1)[has]], 1)

    def counts(self) -> dict:
        """The accumulated counts as plain containers (to gather them from other processes)."""
        return {"images": self.images, "pairs": self.pairs, "agree": dict(self.agree),
                "levels": {o: [getattr(c, k).tolist() for k in ("tp", "fn", "fp", "iou")] for o, c in self.levels.items()}}

    def add_counts(self, counts: dict) -> None:
        """Add another process's :meth:`counts`."""
        self.images += counts["images"]
        self.pairs += counts["pairs"]
        for o in self.orders:
            self.agree[o] += counts["agree"][o]
            for k, values in zip(("tp", "fn", "fp", "iou"), counts["levels"][o]):
                getattr(self.levels[o], k)[:] += np.asarray(values)

    def summary(self) -> dict:
        """``{"pairs", "pairwise_order_accuracy": {order: %}, "pq_th_by_occlusion": {order: [rows]}}``."""
        accuracy = {o: (round(100.0 * self.agree[o] / self.pairs, 2) if self.pairs else None) for o in self.orders}
        return {"images": self.images, "pairs": self.pairs, "pairwise_order_accuracy": accuracy,
                "pq_th_by_occlusion": {o: self.levels[o].table() for o in self.orders}}


def format_order_measures(summary: dict, orders: Sequence[str], titles: Optional[dict] = None) -> str:
    """The pairwise order accuracy and PQ_th per occlusion level, one column per order (22 + 26 wide)."""
    titles = titles or {}
    accuracy = summary["pairwise_order_accuracy"]
    lines = [f"{'':22}" + "".join(f"{titles.get(o, o):>26}" for o in orders)]
    lines.append(f"{'pairwise order acc. %':22}" + "".join(
        f"{accuracy[o]:26.2f}" if accuracy[o] is not None else f"{'-':>26}" for o in orders)
        + f"   ({summary['pairs']} overlapping pairs matched to GT)")
    levels = summary["pq_th_by_occlusion"]
    for k, row in enumerate(levels[orders[0]]):
        cells = "".join(f"{levels[o][k]['pq_th']:26.2f}" if levels[o][k]["pq_th"] is not None else f"{'-':>26}"
                        for o in orders)
        lines.append(f"{'PQ_th ' + row['level']:22}{cells}   ({row['tp'] + row['fn']} GT instances)")
    return "\n".join(lines)
