"""The score-order merge on run-length intervals: panopticapi's rules without decoding a mask.

A mask is a set of pixel intervals ``(starts, ends)`` (sorted, disjoint, ``end`` exclusive) over the
image flattened column by column, as COCO RLE stores it (pixel ``x * H + y``). The merge works on those
intervals: an instance's visible part is its intervals minus the union of those pasted before it,
stuff takes what is left, and the id map is written once, at the end, by one ``np.repeat``. Its cost
follows the number of runs (a few thousand per image), not the number of pixels, and it needs no
PyTorch. :func:`oanet.merge.merge.merge_panoptic` gives the same segments and pixels through OANet's
fusion (tests/test_merge.py checks both against panopticapi); ``oanet merge --order score`` uses this
one when no order measure needs the masks.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from oanet.data.instances import compressed_rle_runs_many, segmentation_runs
from oanet.data.labels import LabelSpace
from oanet.data.panoptic_json import ImageInfo
from oanet.errors import DataError
from oanet.result import fused_segments

Intervals = tuple[np.ndarray, np.ndarray]
_EMPTY = np.zeros(0, dtype=np.int64)
_EMPTY.flags.writeable = False  # returned as "no intervals" by many functions: nobody may fill it


def intervals_of_runs(runs: np.ndarray) -> Intervals:
    """The ones of RLE run lengths (zeros first) as merged, non-empty intervals."""
    return intervals_of_runs_many([runs])[0]


def intervals_of_runs_many(runs: Sequence[np.ndarray]) -> list[Intervals]:
    """:func:`intervals_of_runs` of many masks' run lengths in one pass (one image's RLEs)."""
    if not runs:
        return []
    sizes = np.array([len(r) for r in runs])
    flat = np.concatenate(runs)
    mask = np.repeat(np.arange(len(runs)), sizes)
    local = np.arange(flat.size) - np.repeat(np.cumsum(sizes) - sizes, sizes)  # index within its mask
    end = np.cumsum(flat) - np.repeat(np.cumsum([0] + [int(r.sum()) for r in runs[:-1]]), sizes)
    start = end - flat
    ones = (local % 2 == 1) & (flat > 0)  # odd runs are ones
    start, end, mask = start[ones], end[ones], mask[ones]
    if not start.size:
        return [(_EMPTY, _EMPTY) for _ in runs]
    breaks = np.flatnonzero((start[1:] != end[:-1]) | (mask[1:] != mask[:-1]))  # join only within a mask
    first, last = np.concatenate([[0], breaks + 1]), np.concatenate([breaks, [len(start) - 1]])
    start, end, mask = start[first], end[last], mask[first]
    split = np.searchsorted(mask, np.arange(len(runs) + 1))
    return [(start[split[k]:split[k + 1]], end[split[k]:split[k + 1]]) for k in range(len(runs))]


def merge_touching(starts: np.ndarray, ends: np.ndarray) -> Intervals:
    """Sorted disjoint intervals with those that touch (one's end is the next's start) joined."""
    if starts.size < 2:
        return starts, ends
    breaks = np.flatnonzero(starts[1:] != ends[:-1])
    return np.concatenate([starts[:1], starts[breaks + 1]]), np.concatenate([ends[breaks], ends[-1:]])


def length(a: Intervals) -> int:
    return int((a[1] - a[0]).sum())


def _covered(a: Intervals, points: np.ndarray) -> np.ndarray:
    """Whether each point lies in one of ``a``'s intervals."""
    if not a[0].size:
        return np.zeros(points.shape, dtype=bool)
    k = np.searchsorted(a[0], points, side="right") - 1
    return (k >= 0) & (a[1][np.maximum(k, 0)] > points)


def _elementary(a: Intervals, b: Intervals) -> Intervals:
    """The pieces between consecutive distinct endpoints of ``a`` and ``b``: each lies wholly inside or
    outside every interval of both (no empty piece)."""
    points = np.sort(np.concatenate([a[0], a[1], b[0], b[1]]))
    points = points[np.concatenate([[True], points[1:] != points[:-1]])]
    return points[:-1], points[1:]


def _combine(a: Intervals, b: Intervals, keep_a_only: bool) -> Intervals:
    """``a \\ b`` (``keep_a_only``) or ``a | b``, on the elementary pieces between all endpoints."""
    lo, hi = _elementary(a, b)
    in_a, in_b = _covered(a, lo), _covered(b, lo)
    keep = in_a & ~in_b if keep_a_only else in_a | in_b
    return merge_touching(lo[keep], hi[keep])


def difference(a: Intervals, b: Intervals) -> Intervals:
    if not a[0].size or not b[0].size:
        return a
    return _combine(a, b, keep_a_only=True)


def union(a: Intervals, b: Intervals) -> Intervals:
    if not a[0].size:
        return b
    if not b[0].size:
        return a
    return _combine(a, b, keep_a_only=False)


def _by_label(starts: np.ndarray, ends: np.ndarray, labels: np.ndarray) -> dict[int, Intervals]:
    """Intervals sorted by start, grouped by their label (each group keeps that order, touching ones joined)."""
    order = np.argsort(labels, kind="stable")
    labels = labels[order]
    first = np.flatnonzero(np.concatenate([[True], labels[1:] != labels[:-1]])) if labels.size else _EMPTY
    bounds = np.append(first, labels.size)
    return {int(labels[i]): merge_touching(starts[order[i:j]], ends[order[i:j]]) for i, j in zip(bounds[:-1], bounds[1:])}


def labelled_difference(regions: dict[int, Intervals], b: Intervals) -> dict[int, Intervals]:
    """``{label: r \\ b}`` for disjoint ``regions``, in one pass over all their intervals."""
    starts, ends, label = _sorted_labelled(list(regions.values()), list(regions))
    if not starts.size:
        return {}
    lo, hi = _elementary((starts, ends), b)
    # Elementary pieces (not joined yet: two regions may touch); each lies in one region's interval.
    k = np.searchsorted(starts, lo, side="right") - 1
    keep = (k >= 0) & (ends[np.maximum(k, 0)] > lo) & ~_covered(b, lo)
    return _by_label(lo[keep], hi[keep], label[k[keep]])


def disjoint_union(a: Intervals, b: Intervals) -> Intervals:
    """``a | b`` for sets with no pixel in common: their intervals interleaved, touching ones joined."""
    if not a[0].size:
        return b
    starts, ends = np.concatenate([a[0], b[0]]), np.concatenate([a[1], b[1]])
    order = np.argsort(starts, kind="stable")
    return merge_touching(starts[order], ends[order])


def label_intervals(labels: np.ndarray) -> dict[int, Intervals]:
    """``{label: intervals}`` of an ``H x W`` label map, column-major; label -1 (none) left out."""
    flat = np.ascontiguousarray(labels.T).ravel()
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [flat.size]])
    values = flat[starts]
    some = values >= 0
    return _by_label(starts[some], ends[some], values[some])


def paint(pieces: Sequence[Intervals], height: int, width: int) -> np.ndarray:
    """The ``H x W`` int32 id map where the ``k``-th piece set has id ``k + 1`` (sets are disjoint)."""
    size = height * width
    starts = np.concatenate([p[0] for p in pieces] + [_EMPTY])
    ends = np.concatenate([p[1] for p in pieces] + [_EMPTY])
    values = np.repeat(np.arange(1, len(pieces) + 1, dtype=np.int32), [len(p[0]) for p in pieces])
    order = np.argsort(starts, kind="stable")
    starts, ends, values = starts[order], ends[order], values[order]
    gaps = starts - np.concatenate([[0], ends[:-1]])
    # gap, piece, gap, piece, ..., final gap: one repeat writes the whole column-major map
    lengths = np.empty(2 * len(starts) + 1, dtype=np.int64)
    lengths[0:-1:2], lengths[1::2], lengths[-1] = gaps, ends - starts, size - (ends[-1] if len(ends) else 0)
    fill = np.zeros(len(lengths), dtype=np.int32)
    fill[1::2] = values
    return np.ascontiguousarray(np.repeat(fill, lengths).reshape(width, height).T)


def boxes(pieces: Sequence[Intervals], height: int) -> list[list[int]]:
    """COCO ``[x, y, w, h]`` of each non-empty piece set, all sets at once. A run that wraps to the next
    column spans rows 0..H-1 (it ends one column at the bottom and starts the next at the top)."""
    if not pieces:
        return []
    starts = np.concatenate([p[0] for p in pieces])
    ends = np.concatenate([p[1] for p in pieces]) - 1
    first = np.cumsum([0] + [len(p[0]) for p in pieces[:-1]])  # each set's first interval
    x0, x1 = starts // height, ends // height
    one_column = x0 == x1
    y0 = np.where(one_column, starts % height, 0)
    y1 = np.where(one_column, ends % height, height - 1)
    left, top = np.minimum.reduceat(x0, first), np.minimum.reduceat(y0, first)
    right, bottom = np.maximum.reduceat(x1, first), np.maximum.reduceat(y1, first)
    return np.stack([left, top, right - left + 1, bottom - top + 1], axis=1).tolist()


def _runs(row: dict, info: ImageInfo, path: str) -> Intervals:
    try:
        return intervals_of_runs(segmentation_runs(row["segmentation"], info.height, info.width))
    except ValueError as exc:
        raise DataError(f"{path}: image {info.id} ({info.file_name}), category {row.get('category_id')}: {exc}") from None


def masks_of(rows: Sequence[dict], info: ImageInfo, path: str) -> list[Intervals]:
    """Each row's mask as intervals: compressed RLEs of the image's size in one decoding pass; anything
    else, or any problem, row by row (so that the error names the row)."""
    size = [info.height, info.width]
    plain = all(isinstance(r["segmentation"], dict) and isinstance(r["segmentation"].get("counts"), (str, bytes))
                and r["segmentation"].get("size") == size for r in rows)
    runs = compressed_rle_runs_many([r["segmentation"]["counts"] for r in rows]) if plain else None
    if runs is None or any(int(r.sum()) != info.height * info.width for r in runs):
        return [_runs(row, info, path) for row in rows]
    return intervals_of_runs_many(runs)


def paste_things(rows: Sequence[dict], info: ImageInfo, path: str, max_covered: float) -> tuple[list, list, Intervals]:
    """panopticapi's instance loop: ``rows`` (scores above the threshold) pasted by descending score,
    ties in input order. Returns the kept rows, their visible intervals and the union of their masks.

    The loop is over instances because each one's fate depends on those kept before it; each step is
    vectorised over that instance's runs."""
    order = sorted(range(len(rows)), key=lambda k: -rows[k]["score"])  # stable: ties keep input order
    masks = masks_of(rows, info, path)
    kept, pieces, used = [], [], (_EMPTY, _EMPTY)
    for k in order:
        mask = masks[k]
        area = length(mask)
        if area == 0:
            continue
        visible = difference(mask, used)
        if (area - length(visible)) / area > max_covered:  # float64, as panopticapi compares
            continue
        kept.append(rows[k])
        pieces.append(visible)
        used = disjoint_union(used, visible)  # = used | mask, without a pass over mask's covered part
    return kept, pieces, used


def stuff_regions(inputs: Any, info: ImageInfo) -> dict[int, Intervals]:
    """``{stuff index: its predicted pixels}``: from label PNGs, or from COCO-stuff RLEs where, of two
    overlapping ones, the first listed keeps the overlap (as :func:`oanet.merge.inputs.semantic_labels`)."""
    from oanet.merge.inputs import read_label_png, stuff_indices

    space: LabelSpace = inputs.label_space
    if inputs.semantic_dir is not None:
        from pathlib import Path

        path = inputs.semantic_dir / Path(info.file_name).with_suffix(".png").name
        return label_intervals(stuff_indices(space, read_label_png(path, info), str(path)))
    rows = inputs.semantic_results.get(info.id, [])
    if not rows:
        return {}
    indices = space.stuff_index([r["category_id"] for r in rows])
    masks = masks_of(rows, info, inputs.semantic_path)
    starts, ends, labels = _sorted_labelled(masks, indices)
    if (starts[1:] < ends[:-1]).any():  # overlapping masks (a semantic model's are not): the first listed keeps it
        claimed, pieces = (_EMPTY, _EMPTY), []
        for mask in masks:
            pieces.append(difference(mask, claimed))
            claimed = union(claimed, mask)
        starts, ends, labels = _sorted_labelled(pieces, indices)
    return _by_label(starts, ends, labels)


def _sorted_labelled(masks: Sequence[Intervals], labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All intervals of ``masks`` sorted by start, with the label of the mask each comes from."""
    starts = np.concatenate([m[0] for m in masks] + [_EMPTY])
    ends = np.concatenate([m[1] for m in masks] + [_EMPTY])
    label = np.repeat(np.asarray(labels, dtype=np.int64), [len(m[0]) for m in masks])
    order = np.argsort(starts, kind="stable")
    return starts[order], ends[order], label[order]


def merge_score_runs(inputs: Any, info: ImageInfo, settings: Any) -> tuple[np.ndarray, list[dict]]:
    """One image's score-order merge: ``(ids H x W int32, segments with area and bbox)``, the output of
    :func:`oanet.merge.merge.merge_panoptic` ``(order="score")`` on the same inputs."""
    space: LabelSpace = inputs.label_space
    rows = [r for r in inputs.instances.get(info.id, []) if r["score"] >= settings.score_thresh]
    kept, pieces, used = paste_things(rows, info, inputs.instances_path, settings.overlap_thresh)
    thing_index = space.thing_index([r["category_id"] for r in kept]) if kept else []
    things = [(int(t), float(r["score"]), None, length(p)) for t, r, p in zip(thing_index, kept, pieces)]
    stuff = []
    for s, left in sorted(labelled_difference(stuff_regions(inputs, info), used).items()):
        area = length(left)
        if area >= max(settings.stuff_area, 1):
            stuff.append((s, area))
            pieces.append(left)
    segments = fused_segments(things, stuff, space.thing_ids, space.stuff_ids)
    for segment, box in zip(segments, boxes(pieces, info.height)):
        segment["bbox"] = box
    return paint(pieces, info.height, info.width), segments
