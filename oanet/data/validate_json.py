"""The JSON half of ``oanet check-data``: categories, images, annotations and segments, all problems
recorded, none raised. No torch.

:func:`oanet.data.labels.parse_categories` and :mod:`oanet.data.panoptic_json` raise on the first
problem (what training wants); these checks mirror theirs entry by entry and go on, leaving a bad entry
out of what the PNG checks see. The result is a :class:`JsonPlan`: one :class:`ImageJob` per annotation
whose PNG is to be checked, and what ``--fix`` needs to rewrite the JSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from oanet.data.labels import is_integer
from oanet.data.png_io import OFFSET
from oanet.data.validate_kinds import Problems


@dataclass(eq=False)
class ImageJob:
    """One annotated image to check: its files, size and the segments that parsed (JSON order)."""

    position: int  # index of the annotation in the JSON's 'annotations'
    image_id: Any
    png_name: str
    image_file: str
    width: int
    height: int
    segment_ids: np.ndarray  # int64 (K,)
    category_ids: np.ndarray  # int64 (K,)
    iscrowd: np.ndarray  # bool (K,)
    areas: np.ndarray  # float64 (K,), NaN where the JSON has none
    bboxes: np.ndarray  # float64 (K, 4), NaN where the JSON has none
    entries: np.ndarray  # int64 (K,): index of each segment in segments_info (bad ones are left out)


@dataclass
class JsonPlan:
    categories: dict  # id -> category dict, the valid entries (the first of a duplicated id)
    colours: dict  # (R, G, B) -> "category 1 'person'", for PNGs drawn in category colours
    jobs: list  # ImageJob per annotation to check, in the JSON's order
    unknown_image_annotations: list = field(default_factory=list)  # positions in 'annotations' (--fix drops)
    other_png_names: list = field(default_factory=list)  # PNGs named by annotations that are not checked
    n_images: int = 0


def _is_number(value: Any) -> bool:
    # Python's json reads NaN and Infinity: not an area or a coordinate.
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _good_colour(color: Any) -> bool:
    return color is None or (
        isinstance(color, (list, tuple)) and len(color) == 3 and all(is_integer(c) and 0 <= c <= 255 for c in color)
    )


def check_categories(raw: Any, problems: Problems) -> dict[int, dict]:
    """The valid categories by id; bad entries, duplicate ids and odd isthing values recorded."""
    if not isinstance(raw, list) or not raw:
        problems.add("bad-category", "categories", "missing, not a list, or empty: no category is declared")
        return {}
    categories: dict[int, dict] = {}
    for k, cat in enumerate(raw):
        if not isinstance(cat, dict) or "name" not in cat or not is_integer(cat.get("id")):
            problems.add("bad-category", f"categories[#{k}]", f"needs an integer 'id' and a 'name': {str(cat)[:80]}")
            continue
        where = f"category {int(cat['id'])} ({cat['name']})"
        if not _good_colour(cat.get("color")):
            # Still declared (its segments are not unknown), drawn in a generated colour.
            problems.add("bad-category", where, f"bad colour {cat['color']!r} (expected [R, G, B] in 0..255)")
            cat = {key: value for key, value in cat.items() if key != "color"}
        if int(cat["id"]) in categories:
            problems.add("duplicate-category-id", where, f"categories[#{k}] repeats id {int(cat['id'])}")
            continue
        if "isthing" not in cat:
            problems.add("isthing-missing", where, "no isthing")
        elif cat["isthing"] not in (0, 1) or isinstance(cat["isthing"], float):
            problems.add("bad-isthing", where, f"isthing is {cat['isthing']!r}")
        categories[int(cat["id"])] = cat
    return categories


def category_colours(categories: dict[int, dict]) -> dict[tuple, str]:
    return {
        tuple(int(c) for c in cat["color"]): f"category {cid} {cat['name']!r}"
        for cid, cat in categories.items() if cat.get("color") is not None
    }


def check_images(raw: list, problems: Problems) -> dict[Any, dict]:
    """The valid image entries by id (the first of a duplicated id)."""
    images: dict[Any, dict] = {}
    file_names: dict[str, Any] = {}
    for k, img in enumerate(raw):
        where = str(img.get("file_name", f"images[#{k}]")) if isinstance(img, dict) else f"images[#{k}]"
        ok = isinstance(img, dict) and {"id", "file_name", "width", "height"} <= set(img)
        image_id = img.get("id") if isinstance(img, dict) else None
        if ok and (isinstance(image_id, bool) or not isinstance(image_id, (int, float, str))):
            ok = False
        if ok and not all(is_integer(img[key]) and img[key] > 0 for key in ("width", "height")):
            ok = False
        if not ok:
            problems.add("bad-image", where, f"entry {str(img)[:100]}")
            continue
        if image_id in images:
            problems.add("duplicate-image-id", where, f"image id {image_id!r} again (first: {images[image_id]['file_name']})")
            continue
        name = str(img["file_name"])
        if name in file_names:
            problems.add("duplicate-image-file", name, f"images {file_names[name]!r} and {image_id!r}")
        file_names.setdefault(name, image_id)
        images[image_id] = img
    return images


def _segment_row(seg: Any) -> tuple | str:
    """(id, category id, iscrowd, area, bbox) of one segment, or why it cannot be read."""
    if not isinstance(seg, dict):
        return "not an object"
    sid, cid = seg.get("id"), seg.get("category_id")
    if not (is_integer(sid) and 0 < sid < OFFSET):
        return f"id {sid!r} is not an integer in 1..{OFFSET - 1}"
    if not is_integer(cid):
        return f"segment {int(sid)}: category_id {cid!r} is not an integer"
    area, bbox = seg.get("area"), seg.get("bbox")
    if area is not None and not _is_number(area):
        return f"segment {int(sid)}: area {area!r} is not a number"
    if bbox is not None and not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(map(_is_number, bbox))):
        return f"segment {int(sid)}: bbox {bbox!r} is not four numbers"
    area = np.nan if area is None else float(area)
    bbox = [np.nan] * 4 if bbox is None else [float(v) for v in bbox]
    return int(sid), int(cid), bool(seg.get("iscrowd", 0)), area, bbox


def _listed(values) -> str:
    values = list(values)
    return ", ".join(map(str, values[:6])) + (f" and {len(values) - 6} more" if len(values) > 6 else "")


def _plain_columns(infos: list) -> dict | None:
    """The columns of segments that are all plain JSON numbers with every key, one numpy conversion per
    column (COCO's case, 5x faster than row by row); None for anything else, which goes row by row."""
    try:
        columns = {
            "segment_ids": np.array([s["id"] for s in infos]),
            "category_ids": np.array([s["category_id"] for s in infos]),
            "iscrowd": np.array([s.get("iscrowd", 0) for s in infos]),
            "areas": np.array([s["area"] for s in infos]),
            "bboxes": np.array([s["bbox"] for s in infos]),
        }
    except (KeyError, TypeError, AttributeError, ValueError, OverflowError):
        return None
    n = len(infos)
    ids, cats, crowd, areas, boxes = columns.values()
    if not n or ids.dtype.kind != "i" or cats.dtype.kind != "i" or crowd.dtype.kind not in "ib":
        return None
    if areas.shape != (n,) or boxes.shape != (n, 4) or areas.dtype.kind not in "if" or boxes.dtype.kind not in "if":
        return None
    if ((ids <= 0) | (ids >= OFFSET)).any() or not (np.isfinite(areas).all() and np.isfinite(boxes).all()):
        return None
    return {"segment_ids": ids.astype(np.int64), "category_ids": cats.astype(np.int64), "iscrowd": crowd != 0,
            "areas": areas.astype(np.float64), "bboxes": boxes.astype(np.float64), "entries": np.arange(n)}


def _row_columns(infos: list, png_name: str, problems: Problems) -> dict:
    """The columns of the segments that can be read, one by one; the others recorded as bad-segment."""
    rows, entries, bad = [], [], []
    for k, seg in enumerate(infos):
        row = _segment_row(seg)
        if isinstance(row, str):
            bad.append(f"#{k}: {row}")
        else:
            rows.append(row)
            entries.append(k)
    if bad:
        problems.add("bad-segment", png_name, "; ".join(bad[:3]) + (" ..." if len(bad) > 3 else ""), len(bad))
    return {
        "segment_ids": np.array([r[0] for r in rows], dtype=np.int64),
        "category_ids": np.array([r[1] for r in rows], dtype=np.int64),
        "iscrowd": np.array([r[2] for r in rows], dtype=bool),
        "areas": np.array([r[3] for r in rows], dtype=np.float64),
        "bboxes": np.array([r[4] for r in rows], dtype=np.float64).reshape(len(rows), 4),
        "entries": np.array(entries, dtype=np.int64),
    }


class CategoryTable:
    """Sorted category ids and their isthing, for looking up a whole image's segments at once."""

    def __init__(self, categories: dict[int, dict]):
        self.ids = np.array(sorted(categories), dtype=np.int64)
        self.thing = np.array([bool(categories[c].get("isthing", 1)) for c in self.ids.tolist()], dtype=bool)

    def lookup(self, category_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(declared, isthing) per id; an undeclared id counts as a thing."""
        if not len(self.ids):
            return np.zeros(len(category_ids), dtype=bool), np.ones(len(category_ids), dtype=bool)
        pos = np.minimum(np.searchsorted(self.ids, category_ids), len(self.ids) - 1)
        known = self.ids[pos] == category_ids
        return known, np.where(known, self.thing[pos], True)


def parse_segments(infos: list, png_name: str, categories: CategoryTable, problems: Problems) -> dict:
    """The readable segments of one image as columns; the per-image JSON checks recorded."""
    columns = _plain_columns(infos) or _row_columns(infos, png_name, problems)
    ids, cats, crowd = columns["segment_ids"], columns["category_ids"], columns["iscrowd"]
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        problems.add("duplicate-segment-id", png_name, f"id {_listed(unique[counts > 1].tolist())}",
                     int((counts > 1).sum()))
    known, thing = categories.lookup(cats)
    if not known.all():
        pairs = [f"{c} (segment {s})" for s, c in zip(ids[~known].tolist(), cats[~known].tolist())]
        problems.add("unknown-category", png_name, f"category {_listed(pairs)}", int((~known).sum()))
    if crowd.any():
        problems.add("crowd", png_name, f"segment {_listed(ids[crowd].tolist())}", int(crowd.sum()))
    on_stuff = crowd & known & ~thing
    if on_stuff.any():
        problems.add("crowd-on-stuff", png_name, f"segment {_listed(ids[on_stuff].tolist())}", int(on_stuff.sum()))
    stuff, stuff_counts = np.unique(cats[known & ~thing], return_counts=True)
    if (stuff_counts > 1).any():
        repeated = [f"{c} x{n}" for c, n in zip(stuff.tolist(), stuff_counts.tolist()) if n > 1]
        problems.add("stuff-repeated", png_name, f"category {_listed(repeated)}", len(repeated))
    return columns


def _annotation_png(ann: dict, image: dict) -> str:
    # As PanopticSplit.png_path: the annotation's file_name, else the image's with .png.
    return str(ann.get("file_name") or Path(str(image["file_name"])).with_suffix(".png").name)


def check_annotations(raw: list, images: dict, categories: dict, problems: Problems, plan: JsonPlan) -> None:
    """One ImageJob per annotation of a known image into ``plan``; the rest recorded."""
    annotated: dict[Any, int] = {}
    pngs: dict[str, Any] = {}
    table = CategoryTable(categories)
    for k, ann in enumerate(raw):
        where = str(ann.get("file_name") or f"annotations[#{k}]") if isinstance(ann, dict) else f"annotations[#{k}]"
        image_id = ann.get("image_id") if isinstance(ann, dict) else None
        if (not isinstance(ann, dict) or isinstance(image_id, bool) or not isinstance(image_id, (int, float, str))
                or not isinstance(ann.get("segments_info"), list)):
            problems.add("bad-annotation", where, f"entry {str(ann)[:100]}")
            continue
        if image_id not in images:
            problems.add("unknown-image", where, f"image id {image_id!r} is not in 'images'")
            plan.unknown_image_annotations.append(k)
            plan.other_png_names.append(where)
            continue
        png_name = _annotation_png(ann, images[image_id])
        if image_id in annotated:
            problems.add("duplicate-annotation", png_name, f"image {image_id!r} again (first: annotations[#{annotated[image_id]}])")
            plan.other_png_names.append(png_name)
            continue
        annotated[image_id] = k
        if png_name in pngs:
            problems.add("duplicate-png", png_name, f"images {pngs[png_name]!r} and {image_id!r}")
            continue
        pngs[png_name] = image_id
        image = images[image_id]
        columns = parse_segments(ann["segments_info"], png_name, table, problems)
        plan.jobs.append(ImageJob(k, image_id, png_name, str(image["file_name"]), int(image["width"]),
                                  int(image["height"]), **columns))
    for image_id, image in images.items():
        if image_id not in annotated:
            problems.add("image-without-annotation", str(image["file_name"]), f"image id {image_id!r}")


def check_json(data: dict, json_name: str, problems: Problems) -> JsonPlan:
    """Every JSON-level check of a COCO panoptic dict whose 'images' and 'annotations' are lists."""
    categories = check_categories(data.get("categories"), problems)
    images = check_images(data["images"], problems)
    plan = JsonPlan(categories=categories, colours=category_colours(categories), jobs=[], n_images=len(images))
    check_annotations(data["annotations"], images, categories, problems, plan)
    used = set()
    for job in plan.jobs:
        used.update(job.category_ids.tolist())
    for cid, cat in categories.items():
        if cid not in used:
            problems.add("unused-category", f"category {cid} ({cat['name']})", "no segment")
    return plan
