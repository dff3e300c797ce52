"""How much two panoptic maps of one image differ, up to a renaming of their segment ids. No torch.

Used to find the images where pasting by the SRM's ranking score and by detection score disagree.
"""

from __future__ import annotations

import numpy as np


def _unmatched_share(a: np.ndarray, b: np.ndarray) -> float:
    """Share of pixels outside the largest overlap of each segment of ``a`` with a segment of ``b``."""
    width = int(b.max()) + 1
    pairs, counts = np.unique(a * width + b, return_counts=True)
    first = pairs // width
    # Largest overlap per segment of a: sort by (segment of a, count) and keep each segment's last.
    order = np.lexsort((counts, first))
    is_last = np.ones(len(order), dtype=bool)
    is_last[:-1] = first[order][1:] != first[order][:-1]
    return float(1.0 - counts[order][is_last].sum() / a.size)


def panoptic_map_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Share of pixels whose segment differs between two id maps, up to a renaming of the ids.

    Every segment of one map is matched to the segment of the other it overlaps most; the pixels
    outside those overlaps are where the maps disagree. Taken both ways and the larger kept, so a
    merge of segments counts as much as a split. Ids are free labels: two maps that differ only in
    their numbering score 0.
    """
    a = np.asarray(a, dtype=np.int64).reshape(-1)
    b = np.asarray(b, dtype=np.int64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"id maps differ in size: {a.size} vs {b.size} pixels")
    if a.size == 0:
        return 0.0
    return max(_unmatched_share(a, b), _unmatched_share(b, a))
