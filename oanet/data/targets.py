"""Training targets as pure numpy functions (no torch), per docs/design.md.

The panoptic side of every function takes a *segment index map*: for each pixel the position of
its segment in the image's ``segments_info`` (-1 for void), as made by
``coco_panoptic.segment_index_map``. Per-segment properties (thing index, channel, crowd flag) are
then arrays of length K, and a per-pixel target is a single fancy-indexing lookup.

Conventions:

- boxes are XYXY float32 in pixels with an exclusive maximum: a mask covering columns 3..5 has
  ``x1 = 3, x2 = 6`` (a pixel ``i`` spans ``[i, i + 1)``), so flipping ``x -> W - x`` is exact;
- crowd regions never become instances; in the stuff-branch target a crowd pixel gets its
  category's channel (the category is known, only the instance split is not); in the SRM target
  crowd pixels are ignored (their instance order is unknown).
"""

from __future__ import annotations

import numpy as np

from oanet.data.coco_panoptic import boxes_from_extents
from oanet.data.labels import IGNORE


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """XYXY float32 (N, 4), exclusive max, of binary masks (N, H, W); zeros for an empty mask."""
    masks = np.asarray(masks, dtype=bool)
    if masks.shape[0] == 0:
        return np.zeros((0, 4), dtype=np.float32)
    return boxes_from_extents(masks.any(axis=2), masks.any(axis=1)).astype(np.float32)


def _lookup_with_ignore(index: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values[index]`` per pixel, IGNORE where ``index == -1`` (void)."""
    # Appending IGNORE makes index -1 pick it: one gather, no mask.
    table = np.append(np.asarray(values, dtype=np.int64), IGNORE)
    return table[index]


def instances_from_masks(
    masks: np.ndarray, thing_indices: np.ndarray, iscrowd: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Instance targets from (possibly overlapping) annotation masks, e.g. COCO's instances JSON.

    ``masks`` (N, H, W): uint8 0/1, as pycocotools decodes them and ``instances_from_panoptic`` makes
    them, used as they are (no N*H*W pass); any other dtype is binarised (non-zero -> 1);
    ``thing_indices`` (N,) thing index 0..T-1 of each mask's category;
    ``iscrowd`` (N,). Crowd annotations and masks without pixels are dropped.
    Returns ``(boxes float32 (M, 4), labels int64 (M,), masks uint8 (M, H, W))``.
    """
    masks = np.asarray(masks)
    thing_indices = np.asarray(thing_indices, dtype=np.int64).reshape(-1)
    iscrowd = np.asarray(iscrowd, dtype=bool).reshape(-1)
    if not (len(masks) == len(thing_indices) == len(iscrowd)):
        raise ValueError(f"{len(masks)} masks, {len(thing_indices)} labels, {len(iscrowd)} crowd flags")
    if (thing_indices < 0).any():
        raise ValueError("instance masks must all belong to thing categories")
    keep = ~iscrowd & masks.reshape(len(masks), -1).any(axis=1)
    kept = masks[keep] if masks.dtype == np.uint8 else (masks[keep] != 0).astype(np.uint8)
    return masks_to_boxes(kept), thing_indices[keep], kept


def instances_from_panoptic(
    index: np.ndarray, segment_thing_index: np.ndarray, segment_iscrowd: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Non-overlapping instance targets cut from a panoptic map (Table 3's "pano-instance GT").

    ``index`` (H, W) segment positions (-1 void); ``segment_thing_index`` (K,) thing index of each
    segment, -1 for stuff; ``segment_iscrowd`` (K,). Every non-crowd thing segment with pixels
    becomes one instance, in segment order.
    Returns ``(boxes float32 (M, 4), labels int64 (M,), masks uint8 (M, H, W))``.
    """
    segment_thing_index = np.asarray(segment_thing_index, dtype=np.int64).reshape(-1)
    segment_iscrowd = np.asarray(segment_iscrowd, dtype=bool).reshape(-1)
    chosen = np.flatnonzero((segment_thing_index >= 0) & ~segment_iscrowd)
    # One broadcast comparison of the index map against the chosen segment positions.
    masks = (index[None, :, :] == chosen[:, None, None]).astype(np.uint8)
    return instances_from_masks(masks, segment_thing_index[chosen], np.zeros(len(chosen), dtype=bool))


def semantic_target(index: np.ndarray, segment_channel: np.ndarray) -> np.ndarray:
    """Stuff-branch target (H, W) int64: each pixel's segment channel, IGNORE (255) for void.

    ``segment_channel`` (K,) is ``LabelSpace.channel(category_ids, stuff_classes)``: with
    ``"all"`` thing t -> t and stuff s -> T + s, with ``"stuff"`` every thing -> 0 and stuff
    s -> 1 + s. Crowd segments keep their category's channel.
    """
    return _lookup_with_ignore(index, segment_channel)


def srm_target(
    masks: np.ndarray, index: np.ndarray, segment_thing_index: np.ndarray, segment_iscrowd: np.ndarray
) -> np.ndarray:
    """SRM target (H, W) int64 (paper §3.2, §4.2).

    Where two or more instance ``masks`` (N, H, W) overlap: the thing index of the panoptic segment
    at that pixel if it is a non-crowd thing segment. IGNORE everywhere else (fewer than two masks,
    void, stuff, crowd), so the module learns only the conflicting regions.
    """
    segment_thing_index = np.asarray(segment_thing_index, dtype=np.int64).reshape(-1)
    segment_iscrowd = np.asarray(segment_iscrowd, dtype=bool).reshape(-1)
    if len(masks) < 2:
        return np.full(index.shape, IGNORE, dtype=np.int64)
    # Masks are binary (uint8 0/1), so a uint16 sum counts them (up to 65535 masks) in one fast pass.
    overlap = np.asarray(masks).sum(axis=0, dtype=np.uint16) >= 2
    label = np.where((segment_thing_index >= 0) & ~segment_iscrowd, segment_thing_index, IGNORE)
    return np.where(overlap, _lookup_with_ignore(index, label), IGNORE)
