"""A COCO panoptic JSON (and optionally its instances JSON) checked and turned into flat columns. No torch.

The columns (see :class:`oanet.data.split_index.SplitIndex`) hold, in the order of ``images``: the images'
ids, sizes and file names, every segment of every image back to back with per-image offsets, and each
image's instance annotations as one compact record. A COCO-train-sized split is 1.3 M segments: the
checks run on whole columns at once; when one fails (or an entry is unusual, such as a float id), the
annotations go through :func:`oanet.data.panoptic_json.parse_annotation` one by one, which raises the
same error, naming the image, that it always did.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from oanet.data.instances import index_instances
from oanet.data.labels import parse_categories
from oanet.data.panoptic_json import ImageInfo, PanopticAnnotation, parse_annotation, parse_images
from oanet.fileio import read_json
from oanet.data.png_io import OFFSET
from oanet.errors import DataError

SCHEMA = 1  # of the columns below; a cache written with another schema is rebuilt
INT64 = np.iinfo(np.int64)


def build_columns(panoptic_json: Path, instances_json: Optional[Path] = None) -> tuple[dict, dict]:
    """``(columns, meta)`` of a split, every check of the JSONs done; DataError naming the file otherwise."""
    where = str(panoptic_json)
    data = read_json(panoptic_json)
    if not isinstance(data, dict) or not {"categories", "images", "annotations"} <= set(data):
        raise DataError(f"{where}: not a COCO panoptic JSON (needs categories, images, annotations)")
    categories = parse_categories(data["categories"], where)
    images = parse_images(data["images"], where)
    if not images:
        raise DataError(f"{where}: the split has no images")
    position = {img.id: i for i, img in enumerate(images)}
    known = np.array(sorted(c.id for c in categories), dtype=np.int64)
    columns, meta = image_columns(images)
    columns.update(annotation_columns(data["annotations"], where, position, known))
    meta.update(schema=SCHEMA, categories=data["categories"], has_instances=instances_json is not None)
    del data
    if instances_json is not None:
        things = {c.id for c in categories if c.isthing}
        columns.update(instance_columns(Path(instances_json), images, position, things, where))
    return columns, meta


# --------------------------------------------------------------------------------------------
# images


def image_columns(images: Sequence[ImageInfo]) -> tuple[dict, dict]:
    """Sizes and file names; ids as an int64 column with its sort order when they are all integers
    (COCO), else kept in ``meta["image_ids"]``."""
    columns = {
        "widths": np.array([img.width for img in images], dtype=np.int32),
        "heights": np.array([img.height for img in images], dtype=np.int32),
        **text_columns("file_names", [img.file_name for img in images]),
    }
    ids = [img.id for img in images]
    if all(type(i) is int and INT64.min <= i <= INT64.max for i in ids):
        ids = np.array(ids, dtype=np.int64)
        order = np.argsort(ids, kind="stable")
        columns.update(image_ids=ids, id_order=order, sorted_ids=ids[order])
        return columns, {"image_ids": None}
    return columns, {"image_ids": ids}


def text_columns(name: str, texts: Sequence[str]) -> dict:
    """``name`` (UTF-8 bytes back to back) and ``name + "_offsets"`` (int64, len + 1)."""
    encoded = [t.encode() for t in texts]
    return {name: encoded, f"{name}_offsets": offsets_of([len(b) for b in encoded])}


def offsets_of(lengths: Sequence[int]) -> np.ndarray:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


# --------------------------------------------------------------------------------------------
# panoptic annotations


def annotation_columns(raw: Any, where: str, position: dict, known: np.ndarray) -> dict:
    """The segments of every image (in ``images`` order) as columns; every check of
    :func:`parse_annotation`, plus one annotation per image."""
    if not isinstance(raw, list):
        raise DataError(f"{where}: 'annotations' must be a list")
    columns = _fast_annotation_columns(raw, position, known)
    if columns is None:
        columns = _checked_annotation_columns(raw, where, position, known)
    return columns


def _fast_annotation_columns(raw: list, position: dict, known: np.ndarray) -> Optional[dict]:
    """The columns when every annotation is plain and valid, else None (then the entry-by-entry checks
    find the first problem and name it)."""
    owner = np.full(len(position), -1, dtype=np.int64)
    for k, ann in enumerate(raw):
        if not (type(ann) is dict and type(ann.get("segments_info")) is list and type(ann.get("image_id")) in (int, str)):
            return None
        i = position.get(ann["image_id"])
        if i is None or owner[i] >= 0:
            return None
        owner[i] = k
    if (owner < 0).any():
        return None
    per_image = [raw[k]["segments_info"] for k in owner.tolist()]
    segments = [s for image_segments in per_image for s in image_segments]
    try:
        ids = [s["id"] for s in segments]
        categories = [s["category_id"] for s in segments]
        if any(type(v) is not int for v in ids) or any(type(v) is not int for v in categories):
            return None
        segment_ids = np.array(ids, dtype=np.int64)
        category_ids = np.array(categories, dtype=np.int64)
        n = len(segments)
        bboxes = np.array([s.get("bbox", [0, 0, 0, 0]) for s in segments], dtype=np.float64).reshape(n, 4)
        areas = np.array([s.get("area", 0) for s in segments], dtype=np.int64).reshape(n)
        iscrowd = np.array([bool(s.get("iscrowd", 0)) for s in segments], dtype=bool)
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError):
        return None
    offsets = offsets_of([len(s) for s in per_image])
    if n and ((segment_ids <= 0) | (segment_ids >= OFFSET)).any():
        return None
    if not np.isin(category_ids, known).all():
        return None
    # one segment id per image: ids are < 2^24, so (image, id) packs into one int64
    image_of = np.repeat(np.arange(len(per_image), dtype=np.int64), np.diff(offsets))
    if np.unique(image_of * OFFSET + segment_ids).size != n:
        return None
    return _segment_columns(offsets, segment_ids, category_ids, iscrowd, areas, bboxes,
                            [str(raw[k].get("file_name", "")) for k in owner.tolist()])


def _checked_annotation_columns(raw: list, where: str, position: dict, known: np.ndarray) -> dict:
    """Entry by entry, as the JSON orders them: the first problem raises DataError naming the image."""
    parsed: list[Optional[PanopticAnnotation]] = [None] * len(position)
    for ann in raw:
        ann = parse_annotation(ann, where, known)
        i = position.get(ann.image_id)
        if i is None:
            raise DataError(f"{where}: annotation for unknown image id {ann.image_id}")
        if parsed[i] is not None:
            raise DataError(f"{where}: image {ann.image_id} has more than one annotation")
        parsed[i] = ann
    missing = [image_id for image_id, i in position.items() if parsed[i] is None]
    if missing:
        raise DataError(f"{where}: {len(missing)} image(s) without annotation, e.g. {missing[:5]}")
    return _segment_columns(
        offsets_of([len(a) for a in parsed]),
        np.concatenate([a.segment_ids for a in parsed]).astype(np.int64),
        np.concatenate([a.category_ids for a in parsed]),
        np.concatenate([a.iscrowd for a in parsed]),
        np.concatenate([a.areas for a in parsed]),
        np.concatenate([a.bboxes for a in parsed]).reshape(-1, 4),
        [a.file_name for a in parsed],
    )


def _segment_columns(offsets, segment_ids, category_ids, iscrowd, areas, bboxes, png_names) -> dict:
    return {
        "segment_offsets": offsets,
        "segment_ids": segment_ids.astype(np.uint32),
        "category_ids": category_ids.astype(np.int32),  # parse_categories keeps ids below 2^24
        "iscrowd": iscrowd.astype(bool),
        "areas": areas.astype(np.int64),
        "bboxes": bboxes.astype(np.float64),
        **text_columns("png_names", png_names),
    }


# --------------------------------------------------------------------------------------------
# instances


def instance_columns(instances_json: Path, images: Sequence[ImageInfo], position: dict, things: set,
                     panoptic_json: str) -> dict:
    """The instances JSON checked against the split's images: each image's annotations as one record
    (:func:`oanet.data.instances.index_instances`), back to back in ``images`` order; an image without
    annotations has an empty record."""
    where = str(instances_json)
    data = read_json(instances_json)
    if not isinstance(data, dict) or not {"images", "annotations", "categories"} <= set(data):
        raise DataError(f"{where}: not a COCO instances JSON (needs images, annotations, categories)")
    instance_images = {img.id: img for img in parse_images(data["images"], where)}
    for img in images:
        other = instance_images.get(img.id)
        if other is None:
            raise DataError(f"{where}: image {img.id} ({img.file_name}) of the panoptic split is missing")
        if (other.width, other.height) != (img.width, img.height):
            raise DataError(
                f"{where}: image {img.id} is {other.width}x{other.height} there but "
                f"{img.width}x{img.height} in {panoptic_json}"
            )
    del instance_images
    records = index_instances(data["annotations"], where, position, things, panoptic_json)
    del data
    ordered = [records.get(img.id, b"") for img in images]
    return {"instances": ordered, "instances_offsets": offsets_of([len(r) for r in ordered])}
