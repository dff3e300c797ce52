"""``oanet convert two-channel``: panopticapi's 2-channel PNGs -> COCO panoptic. No torch.

The format of the panoptic segmentation paper, converted as panopticapi's
``converters/2channels2panoptic_coco_format.py`` converts it: channel 0 of each pixel is its
category id, channel 1 its instance id; every distinct (category, instance) pair is one segment,
ordered by category then instance; pixels of the void category (``--void``, 0) are void; a category
the categories file does not declare is an error. As in the reference a stuff category with several
instance ids gives several segments (the report counts them). Segment ids are 1, 2, ... in segment
order (the reference draws random colours); areas, boxes and ``iscrowd`` = 0, which the reference
leaves out, are added. An image's label PNG is its file name with the extension ``.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from oanet.convert.inputs import check_image, image_list, read_categories
from oanet.convert.runner import Converted, ImageTask, Plan
from oanet.convert.segments import count_drop, key_segments, read_colour_png, segment_records
from oanet.errors import DataError


def convert_image(path: Path, image_path: Optional[Path], category_ids: np.ndarray, thing: np.ndarray,
                  void: int) -> Converted:
    """One 2-channel PNG; ``category_ids`` sorted, ``thing`` their isthing."""
    rgb = read_colour_png(path, "2-channel PNG")
    check_image(image_path, rgb, path)
    # category * 256 + instance: the reference's order (category * 1000 + instance) for 8-bit channels
    stats = key_segments(((rgb & 255) << 8) | ((rgb >> 8) & 255))
    category = (stats.keys >> 8).astype(np.int64)
    instance = stats.keys & 255
    void_key = category == void
    position = np.minimum(np.searchsorted(category_ids, category), len(category_ids) - 1)
    known = category_ids[position] == category
    unknown = ~known & ~void_key
    if unknown.any():
        raise DataError(f"{path}: unknown category id(s) {sorted(set(category[unknown].tolist()))} in channel 0 "
                        f"(not in the categories file; void is {void})")
    kept = np.flatnonzero(~void_key)
    segment_ids = np.zeros(len(stats.keys), dtype=np.int64)
    segment_ids[kept] = np.arange(1, len(kept) + 1)
    dropped: dict[str, list[int]] = {}
    count_drop(dropped, f"void category {void}", int(void_key.sum()), stats.pixels(void_key))
    stuff_instances = ~void_key & ~thing[position] & (instance > 0)
    segments = segment_records(segment_ids[kept], category[kept], np.zeros(len(kept), bool), stats, kept)
    return Converted(stats.id_map(segment_ids), segments, dropped,
                     {"stuff_segments_with_an_instance_id": int(stuff_instances.sum())})


def plan(pngs: str | Path, categories_file: str | Path, split: str = "train", images_json: Optional[str | Path] = None,
         image_dir: Optional[str | Path] = None, void: int = 0) -> Plan:
    categories = read_categories(categories_file)
    order = np.argsort([c["id"] for c in categories])
    category_ids = np.array([categories[i]["id"] for i in order], dtype=np.int64)
    thing = np.array([bool(categories[i]["isthing"]) for i in order])
    entries, notes = image_list(pngs, "2-channel PNG", images_json, image_dir)
    tasks = [ImageTask(image, name, (Path(pngs) / name,) + ((image_path,) if image_path else ()), image_path)
             for image, name, image_path in entries]

    def convert(task: ImageTask) -> Converted:
        return convert_image(task.inputs[0], task.payload, category_ids, thing, void)

    return Plan("two-channel", split, categories, tasks, convert,
                {"void": int(void), "images": str(images_json) if images_json else None},
                Path(image_dir) if image_dir else None, notes)
