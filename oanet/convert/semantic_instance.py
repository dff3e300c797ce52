"""``oanet convert semantic-instance``: a semantic label PNG + an instance id PNG per image -> COCO
panoptic. No torch.

The semantic PNG holds category ids (8- or 16-bit greyscale, or palette indices), the instance PNG
(same kinds) instance ids with 0 for "none". Rules:

- a pixel whose category is an ``--ignore`` value (255) is void, whatever its instance id;
- a thing pixel belongs to the segment of its (category, instance id): instance ids may restart at 1
  for each category; a thing pixel with instance id 0 is an error;
- a stuff pixel belongs to the one segment of its category; a non-zero instance id there is an error;
- a category id that is neither declared nor ignored is an error.

Segments are ordered by category then instance id, with ids 1, 2, ... in that order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from oanet.convert.inputs import check_image, image_list, read_categories
from oanet.convert.runner import Converted, ImageTask, Plan
from oanet.convert.segments import check_same_size, count_drop, key_segments, read_label_png, segment_records
from oanet.errors import ConfigError, DataError


def _where(stats, k: int) -> str:
    x, y, w, h = stats.boxes[k].tolist()
    return f"{int(stats.areas[k])} pixels in the box x={x}..{x + w - 1}, y={y}..{y + h - 1}"


def convert_image(semantic_path: Path, instance_path: Path, image_path: Optional[Path], category_ids: np.ndarray,
                  thing: np.ndarray, names: Sequence[str], ignore: np.ndarray) -> Converted:
    """One image; ``category_ids`` sorted with their ``thing`` flags and ``names``."""
    semantic = read_label_png(semantic_path, "semantic PNG")
    instance = read_label_png(instance_path, "instance PNG")
    check_same_size(instance, (semantic.shape[1], semantic.shape[0]), instance_path, f"its semantic PNG {semantic_path}")
    check_image(image_path, semantic, semantic_path)
    # (category, instance) in one key; every check below runs on the distinct keys, not on pixels.
    stats = key_segments((semantic.astype(np.int64) << 16) | instance.astype(np.int64))
    category, inst = stats.keys >> 16, stats.keys & 0xFFFF
    ignored = np.isin(category, ignore)
    position = np.minimum(np.searchsorted(category_ids, category), len(category_ids) - 1)
    known = category_ids[position] == category
    unknown = ~known & ~ignored
    if unknown.any():
        raise DataError(f"{semantic_path}: unknown category id(s) {sorted(set(category[unknown].tolist()))} "
                        f"(neither in the categories file nor ignored: {ignore.tolist()})")
    is_thing = known & thing[position]
    bad = np.flatnonzero(is_thing & (inst == 0))
    if bad.size:
        k = int(bad[0])
        raise DataError(f"{instance_path}: thing pixels of '{names[position[k]]}' ({int(category[k])}) without an "
                        f"instance id (0): {_where(stats, k)}")
    bad = np.flatnonzero(known & ~is_thing & (inst != 0))
    if bad.size:
        k = int(bad[0])
        raise DataError(f"{instance_path}: instance id {int(inst[k])} on stuff category '{names[position[k]]}' "
                        f"({int(category[k])}): {_where(stats, k)}; stuff pixels must have instance 0")
    kept = np.flatnonzero(known & ~ignored)
    segment_ids = np.zeros(len(stats.keys), dtype=np.int64)
    segment_ids[kept] = np.arange(1, len(kept) + 1)
    dropped: dict[str, list[int]] = {}
    for value in np.unique(category[ignored]).tolist():  # the one or two ignore values, on K-sized arrays
        rows = ignored & (category == value)
        count_drop(dropped, f"ignore value {value}", 0, stats.pixels(rows))
    segments = segment_records(segment_ids[kept], category[kept], np.zeros(len(kept), bool), stats, kept)
    return Converted(stats.id_map(segment_ids), segments, dropped)


def plan(semantic_dir: str | Path, instance_dir: str | Path, categories_file: str | Path, split: str = "train",
         ignore: Sequence[int] = (255,), images_json: Optional[str | Path] = None,
         image_dir: Optional[str | Path] = None) -> Plan:
    categories = read_categories(categories_file)
    clash = sorted({c["id"] for c in categories} & {int(v) for v in ignore})
    if clash:
        raise ConfigError(f"{categories_file}: category id(s) {clash} are also --ignore values")
    categories_sorted = sorted(categories, key=lambda c: c["id"])
    category_ids = np.array([c["id"] for c in categories_sorted], dtype=np.int64)
    thing = np.array([bool(c["isthing"]) for c in categories_sorted])
    names = tuple(c["name"] for c in categories_sorted)
    ignore_values = np.array(sorted({int(v) for v in ignore}), dtype=np.int64)
    instance_dir = Path(instance_dir)
    if not instance_dir.is_dir():
        raise DataError(f"{instance_dir}: instance PNG folder not found")
    entries, notes = image_list(semantic_dir, "semantic PNG", images_json, image_dir)
    tasks = [ImageTask(image, name, (Path(semantic_dir) / name, instance_dir / name)
                       + ((image_path,) if image_path else ()), image_path) for image, name, image_path in entries]

    def convert(task: ImageTask) -> Converted:
        return convert_image(task.inputs[0], task.inputs[1], task.payload, category_ids, thing, names, ignore_values)

    return Plan("semantic-instance", split, categories, tasks, convert,
                {"ignore": ignore_values.tolist(), "images": str(images_json) if images_json else None},
                Path(image_dir) if image_dir else None, notes)
