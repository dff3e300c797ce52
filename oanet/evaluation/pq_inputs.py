"""The inputs of PQ: the two COCO panoptic JSONs, read and validated, images paired by id, and each
image's declared segments as sorted arrays. No torch.

Everything inconsistent is a DataError naming the file or the image (where the COCO API would skip or
miscount): a fractional or out-of-range id, an unknown or duplicate category, a duplicate segment id,
a missing prediction for a ground-truth image.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

import numpy as np

from oanet.data.coco_panoptic import check_image_id
from oanet.fileio import read_json
from oanet.errors import DataError

MAX_SEGMENT_ID = 256**3 - 1  # a 24-bit RGB PNG holds no larger id

JsonSource = Union[str, "os.PathLike[str]", Mapping[str, Any]]


def load_panoptic_json(source: JsonSource, role: str) -> tuple[dict, str]:
    """The JSON dict of a COCO panoptic file (or an already-loaded dict) and a name for errors."""
    if isinstance(source, Mapping):
        data, name = source, f"<{role} dict>"
    else:
        data, name = read_json(source, role), str(source)
    if not isinstance(data, Mapping) or not isinstance(data.get("annotations"), list):
        raise DataError(f"{name}: not a COCO panoptic JSON (no 'annotations' list)")
    return data, name


@dataclass(frozen=True)
class Categories:
    """The GT JSON's categories; statistics arrays are indexed by the position in ``ids`` (sorted)."""

    ids: np.ndarray  # int64 (C,) COCO category ids, ascending
    isthing: np.ndarray  # bool (C,)
    names: tuple[str, ...]
    index_of: dict  # COCO id -> index

    @classmethod
    def from_json(cls, gt: Mapping, name: str) -> "Categories":
        entries = gt.get("categories")
        if not isinstance(entries, list) or not entries:
            raise DataError(f"{name}: no 'categories' list in the ground-truth JSON")
        try:
            rows = sorted((int(c["id"]), bool(c["isthing"]), str(c.get("name", c["id"]))) for c in entries)
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{name}: every category needs an integer 'id' and 'isthing' ({exc!r})") from None
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        if np.any(ids[1:] == ids[:-1]):
            raise DataError(f"{name}: duplicate category ids {sorted(set(ids[1:][ids[1:] == ids[:-1]].tolist()))}")
        return cls(
            ids=ids,
            isthing=np.array([r[1] for r in rows], dtype=bool),
            names=tuple(r[2] for r in rows),
            index_of={int(i): k for k, i in enumerate(ids)},
        )

    def __len__(self) -> int:
        return len(self.ids)


def annotation_label(ann: Mapping) -> str:
    return f"image {ann.get('image_id', '?')} ({ann.get('file_name', '?')})"


def _integer(value) -> int:
    """``int(value)`` that refuses a fractional number instead of truncating it to another id."""
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{value!r} is not an integer")
    return int(value)


def pair_annotations(gt: Mapping, gt_name: str, pred: Mapping, pred_name: str) -> list[tuple[dict, dict]]:
    """(GT annotation, predicted annotation) per GT image, paired by image_id like the COCO API."""
    by_image: dict = {}
    for k, ann in enumerate(pred["annotations"]):
        if not isinstance(ann, Mapping) or "image_id" not in ann:
            raise DataError(f"{pred_name}: annotation #{k} has no 'image_id'")
        check_image_id(ann["image_id"], f"{pred_name}: annotation #{k}")
        if ann["image_id"] in by_image:
            raise DataError(f"{pred_name}: two predictions for image {ann['image_id']}")
        by_image[ann["image_id"]] = ann
    pairs, seen = [], set()
    for k, ann in enumerate(gt["annotations"]):
        if not isinstance(ann, Mapping) or "image_id" not in ann:
            raise DataError(f"{gt_name}: annotation #{k} has no 'image_id'")
        image_id = check_image_id(ann["image_id"], f"{gt_name}: annotation #{k}")
        if image_id in seen:
            raise DataError(f"{gt_name}: two ground-truth annotations for image {image_id}")
        seen.add(image_id)
        if image_id not in by_image:
            raise DataError(f"{pred_name}: no prediction for image {image_id} ({ann.get('file_name', '?')})")
        pairs.append((ann, by_image[image_id]))
    if not pairs:
        raise DataError(f"{gt_name}: the ground-truth JSON has no annotations")
    return pairs


@dataclass(frozen=True)
class Segments:
    """The segments one image declares, sorted by id (PNG ids are looked up by binary search)."""

    ids: np.ndarray  # uint32 (K,), ascending, all > 0
    category: np.ndarray  # int64 (K,) index into Categories
    iscrowd: np.ndarray  # bool (K,)
    area: np.ndarray  # float64 (K,) the JSON's area (used for GT only)
    # (category index -> row) of the crowd region each category ignores: the COCO API keeps one crowd
    # segment per category, the last one listed.
    crowd_category: np.ndarray  # int64
    crowd_row: np.ndarray  # int64


def parse_segments(ann: Mapping, categories: Categories, role: str, with_area: bool) -> Segments:
    """Validated segments of one annotation; DataError names the image and the problem."""
    infos = ann.get("segments_info")
    if not isinstance(infos, list):
        raise DataError(f"{role} {annotation_label(ann)}: no 'segments_info' list")
    columns = _segment_columns(infos, with_area)
    if columns is None:  # not plain JSON numbers: convert one by one, and word what is wrong
        columns = _segment_columns_checked(infos, categories, with_area, f"{role} {annotation_label(ann)}")
    ids, category_ids, crowd, areas = columns

    problem = None
    bad_ids = ids[(ids <= 0) | (ids > MAX_SEGMENT_ID)]
    position = np.minimum(np.searchsorted(categories.ids, category_ids), len(categories) - 1)
    known = categories.ids[position] == category_ids
    if bad_ids.size:
        problem = f"segment ids {bad_ids[:10].tolist()} outside 1..{MAX_SEGMENT_ID} (0 is VOID)"
    elif not known.all():
        unknown = sorted(set(category_ids[~known].tolist()))
        problem = f"unknown category ids {unknown[:10]} (not in the ground-truth categories)"
    elif with_area and (areas <= 0).any():
        problem = "segment areas must be positive"
    if problem:
        raise DataError(f"{role} {annotation_label(ann)}: {problem}")

    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    duplicated = sorted_ids[1:][sorted_ids[1:] == sorted_ids[:-1]]
    if duplicated.size:
        raise DataError(
            f"{role} {annotation_label(ann)}: duplicate segment ids {sorted(set(duplicated.tolist()))[:10]}"
        )
    category = position.astype(np.int64, copy=False)  # the index of each category id in the sorted ids
    row_of_position = np.empty(len(ids), dtype=np.int64)
    row_of_position[order] = np.arange(len(ids))
    last_crowd = {category[k]: row_of_position[k] for k in np.flatnonzero(crowd)}  # later ones overwrite
    return Segments(
        ids=sorted_ids.astype(np.uint32),
        category=category[order],
        iscrowd=crowd[order],
        area=areas[order],
        crowd_category=np.array(list(last_crowd.keys()), dtype=np.int64),
        crowd_row=np.array(list(last_crowd.values()), dtype=np.int64),
    )


def _segment_columns(infos: list, with_area: bool) -> Optional[tuple[np.ndarray, ...]]:
    """(ids, category ids, iscrowd, areas) of segments whose values are JSON integers (areas: numbers), one
    numpy conversion per column; None for anything else (missing keys, strings, fractions, no segment)."""
    try:
        ids = np.array([s["id"] for s in infos])
        category_ids = np.array([s["category_id"] for s in infos])
        crowd = np.array([s.get("iscrowd", 0) for s in infos])
        areas = np.array([s["area"] for s in infos]) if with_area else np.zeros(len(infos))
    except (KeyError, TypeError, AttributeError, ValueError, OverflowError):
        return None
    # Python ints within int64 come out as int64 ("i"); bools, larger ints, floats and strings do not.
    if not infos or ids.dtype.kind != "i" or category_ids.dtype.kind != "i":
        return None
    if any(column.shape != (len(infos),) for column in (ids, category_ids, crowd, areas)):  # lists as values
        return None
    if crowd.dtype.kind not in "ib" or areas.dtype.kind not in "if":
        return None
    return ids.astype(np.int64), category_ids.astype(np.int64), crowd != 0, areas.astype(np.float64)


def _segment_columns_checked(
    infos: list, categories: Categories, with_area: bool, label: str
) -> tuple[np.ndarray, ...]:
    """``_segment_columns`` value by value, for any values ``int``/``float`` take, with the checks of
    ``parse_segments`` done on the Python values (ids or categories of any size); DataError otherwise."""
    try:
        ids = [_integer(s["id"]) for s in infos]
        category_ids = [_integer(s["category_id"]) for s in infos]
        iscrowd = [bool(s.get("iscrowd", 0)) for s in infos]
        areas = [float(s["area"]) for s in infos] if with_area else [0.0] * len(infos)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        need = "'id', 'category_id' and 'area'" if with_area else "'id' and 'category_id'"
        raise DataError(f"{label}: every segment needs {need} ({exc!r})") from None
    bad_ids = [i for i in ids if not 0 < i <= MAX_SEGMENT_ID]
    if bad_ids:
        raise DataError(f"{label}: segment ids {bad_ids[:10]} outside 1..{MAX_SEGMENT_ID} (0 is VOID)")
    unknown = sorted({c for c in category_ids if c not in categories.index_of})
    if unknown:
        raise DataError(f"{label}: unknown category ids {unknown[:10]} (not in the ground-truth categories)")
    return (
        np.array(ids, dtype=np.int64),
        np.array(category_ids, dtype=np.int64),
        np.array(iscrowd, dtype=bool),
        np.array(areas, dtype=np.float64),
    )
