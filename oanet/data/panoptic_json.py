"""The records of a COCO panoptic split and the checks its JSON gets, one entry at a time. No torch.

:mod:`oanet.data.split_index` runs these checks on a whole JSON (vectorised where it can, falling back
to these functions for the exact error); :mod:`oanet.data.coco_panoptic` re-exports the public names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from oanet.data.png_io import OFFSET
from oanet.errors import DataError
from oanet.fileio import read_json


@dataclass(frozen=True)
class ImageInfo:
    id: Any  # int for COCO; kept as the JSON has it
    file_name: str
    width: int
    height: int

    def to_dict(self) -> dict:
        return {"id": self.id, "file_name": self.file_name, "width": self.width, "height": self.height}


@dataclass(frozen=True, eq=False)
class PanopticAnnotation:
    """One image's ``segments_info`` as parallel arrays (segment order of the JSON)."""

    image_id: Any
    file_name: str  # the panoptic PNG's name
    segment_ids: np.ndarray  # uint32 (K,)
    category_ids: np.ndarray  # int64 (K,)
    iscrowd: np.ndarray  # bool (K,)
    areas: np.ndarray  # int64 (K,), as declared in the JSON
    bboxes: np.ndarray  # float64 (K, 4), COCO [x, y, w, h] as declared

    def __len__(self) -> int:
        return len(self.segment_ids)


def check_image_id(image_id: Any, where: str) -> Any:
    """Image ids are looked up in dicts: a number or a string, never a list or an object."""
    if isinstance(image_id, bool) or not isinstance(image_id, (int, float, str)):
        raise DataError(f"{where}: image id {image_id!r} is not a number or a string")
    return image_id


def parse_images(raw: Any, where: str) -> list[ImageInfo]:
    if not isinstance(raw, list):
        raise DataError(f"{where}: 'images' must be a list")
    images = []
    for img in raw:
        try:
            info = ImageInfo(img["id"], str(img["file_name"]), int(img["width"]), int(img["height"]))
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{where}: image entry needs id, file_name, width, height: {img!r}") from None
        check_image_id(info.id, where)
        if info.width <= 0 or info.height <= 0:
            raise DataError(f"{where}: image {info.id} has size {info.width}x{info.height}")
        images.append(info)
    ids = [i.id for i in images]
    if len(set(ids)) != len(ids):
        seen, dup = set(), []
        for i in ids:
            (dup.append(i) if i in seen else seen.add(i))
        raise DataError(f"{where}: duplicate image id(s) {sorted(set(dup), key=str)[:10]}")
    return images


def read_images(panoptic_json: str | Path) -> list[ImageInfo]:
    """The validated ``images`` of a COCO panoptic JSON (id, file name, size), in the JSON's order.

    DataError naming the file for a JSON that is not COCO panoptic, an entry without id, file_name,
    width and height, a non-positive size or a duplicate id.
    """
    data = read_json(panoptic_json)
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise DataError(f"{panoptic_json}: not a COCO panoptic JSON (needs 'images' and 'annotations')")
    return parse_images(data["images"], str(panoptic_json))


def parse_annotation(ann: Any, where: str, known_categories: np.ndarray) -> PanopticAnnotation:
    """One entry of ``annotations`` checked: DataError naming ``where`` and the image otherwise."""
    if not isinstance(ann, dict) or "image_id" not in ann or "segments_info" not in ann:
        raise DataError(f"{where}: annotation without image_id and segments_info")
    image_id = check_image_id(ann["image_id"], where)
    here = f"{where}: image {image_id}"
    segments = ann["segments_info"]
    try:
        segment_ids = np.array([s["id"] for s in segments], dtype=np.int64)
        category_ids = np.array([s["category_id"] for s in segments], dtype=np.int64)
    except (KeyError, TypeError, ValueError, OverflowError):
        raise DataError(f"{here}: every segment needs an integer 'id' and 'category_id'") from None
    if any(isinstance(v, float) and not v.is_integer() for seg in segments for v in (seg["id"], seg["category_id"])):
        raise DataError(f"{here}: every segment needs an integer 'id' and 'category_id' (got a fraction)")
    if ((segment_ids <= 0) | (segment_ids >= OFFSET)).any():
        raise DataError(f"{here}: segment ids must be in 1..{OFFSET - 1}, got {segment_ids.min()}..{segment_ids.max()}")
    unique_ids, counts = np.unique(segment_ids, return_counts=True)
    if (counts > 1).any():
        raise DataError(f"{here}: duplicate segment id(s) {unique_ids[counts > 1].tolist()}")
    unknown = np.setdiff1d(category_ids, known_categories)
    if unknown.size:
        raise DataError(f"{here}: unknown category id(s) {unknown.tolist()}")
    try:
        bboxes = np.array([s.get("bbox", [0, 0, 0, 0]) for s in segments], dtype=np.float64).reshape(len(segments), 4)
        areas = np.array([s.get("area", 0) for s in segments], dtype=np.int64).reshape(len(segments))
    except (TypeError, ValueError, OverflowError):
        raise DataError(f"{here}: every segment's 'area' must be a number and 'bbox' four numbers")
    return PanopticAnnotation(
        image_id=image_id,
        file_name=str(ann.get("file_name", "")),
        segment_ids=segment_ids.astype(np.uint32),
        category_ids=category_ids,
        iscrowd=np.array([bool(s.get("iscrowd", 0)) for s in segments], dtype=bool),
        areas=areas,
        bboxes=bboxes,
    )


def with_colors_from(raw_categories: list, categories_json: str | Path) -> list:
    """``raw_categories`` with the colours of ``categories_json`` where they have none."""
    colors = {int(c["id"]): c.get("color") for c in read_json(categories_json) if isinstance(c, dict) and "id" in c}
    return [cat if cat.get("color") is not None else {**cat, "color": colors.get(int(cat["id"]))} for cat in raw_categories]
