"""``oanet convert cityscapes``: ``gtFine/{split}/{city}/*_instanceIds.png`` -> COCO panoptic. No torch.

The rules are those of ``cityscapesscripts.preparation.createPanopticImgs`` (tests compare segment
for segment): a pixel value ``v >= 1000`` is instance ``v % 1000`` of class ``v // 1000``; ``v < 1000``
is class ``v``, a crowd segment when the class has instances; the segment id is ``v`` itself;
classes that are ``ignoreInEval`` are dropped (void); ``--train-ids`` gives categories the 19 train
ids. Images are sorted by path, the image id is the file name before ``_gtFine_instanceIds.png``.
Unlike the reference, an unknown class or an instance id on a stuff class is an error, and an
image's ``file_name`` is the real ``{city}/{prefix}_leftImg8bit.png`` under ``leftImg8bit/{split}``.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from oanet.convert.runner import Converted, ImageTask, Plan
from oanet.convert.segments import GREY_16, count_drop, key_segments, read_label_png, segment_records
from oanet.errors import DataError

SUFFIX = "_gtFine_instanceIds.png"


class Label(NamedTuple):
    name: str
    id: int
    train_id: int
    category: str
    has_instances: bool
    ignore_in_eval: bool
    color: tuple[int, int, int]


# The Cityscapes label table (cityscapesscripts/helpers/labels.py: id, trainId, category,
# hasInstances, ignoreInEval, colour); shipped here so that converting needs no cityscapesscripts.
LABELS = (
    Label("unlabeled", 0, 255, "void", False, True, (0, 0, 0)),
    Label("ego vehicle", 1, 255, "void", False, True, (0, 0, 0)),
    Label("rectification border", 2, 255, "void", False, True, (0, 0, 0)),
    Label("out of roi", 3, 255, "void", False, True, (0, 0, 0)),
    Label("static", 4, 255, "void", False, True, (0, 0, 0)),
    Label("dynamic", 5, 255, "void", False, True, (111, 74, 0)),
    Label("ground", 6, 255, "void", False, True, (81, 0, 81)),
    Label("road", 7, 0, "flat", False, False, (128, 64, 128)),
    Label("sidewalk", 8, 1, "flat", False, False, (244, 35, 232)),
    Label("parking", 9, 255, "flat", False, True, (250, 170, 160)),
    Label("rail track", 10, 255, "flat", False, True, (230, 150, 140)),
    Label("building", 11, 2, "construction", False, False, (70, 70, 70)),
    Label("wall", 12, 3, "construction", False, False, (102, 102, 156)),
    Label("fence", 13, 4, "construction", False, False, (190, 153, 153)),
    Label("guard rail", 14, 255, "construction", False, True, (180, 165, 180)),
    Label("bridge", 15, 255, "construction", False, True, (150, 100, 100)),
    Label("tunnel", 16, 255, "construction", False, True, (150, 120, 90)),
    Label("pole", 17, 5, "object", False, False, (153, 153, 153)),
    Label("polegroup", 18, 255, "object", False, True, (153, 153, 153)),
    Label("traffic light", 19, 6, "object", False, False, (250, 170, 30)),
    Label("traffic sign", 20, 7, "object", False, False, (220, 220, 0)),
    Label("vegetation", 21, 8, "nature", False, False, (107, 142, 35)),
    Label("terrain", 22, 9, "nature", False, False, (152, 251, 152)),
    Label("sky", 23, 10, "sky", False, False, (70, 130, 180)),
    Label("person", 24, 11, "human", True, False, (220, 20, 60)),
    Label("rider", 25, 12, "human", True, False, (255, 0, 0)),
    Label("car", 26, 13, "vehicle", True, False, (0, 0, 142)),
    Label("truck", 27, 14, "vehicle", True, False, (0, 0, 70)),
    Label("bus", 28, 15, "vehicle", True, False, (0, 60, 100)),
    Label("caravan", 29, 255, "vehicle", True, True, (0, 0, 90)),
    Label("trailer", 30, 255, "vehicle", True, True, (0, 0, 110)),
    Label("train", 31, 16, "vehicle", True, False, (0, 80, 100)),
    Label("motorcycle", 32, 17, "vehicle", True, False, (0, 0, 230)),
    Label("bicycle", 33, 18, "vehicle", True, False, (119, 11, 32)),
    Label("license plate", -1, -1, "vehicle", False, True, (0, 0, 142)),
)
NUM_IDS = 34  # label ids 0..33 appear in the PNGs (the license plate's -1 never does)


def categories(train_ids: bool = False) -> list[dict]:
    """The COCO panoptic categories the reference writes: the labels that count in evaluation."""
    return [{"id": label.train_id if train_ids else label.id, "name": label.name, "color": list(label.color),
             "supercategory": label.category, "isthing": int(label.has_instances)}
            for label in LABELS if not label.ignore_in_eval]


class _Tables(NamedTuple):
    """Lookups by label id 0..33."""

    category: np.ndarray  # output category id (id or train id)
    thing: np.ndarray  # has instances
    ignored: np.ndarray  # ignoreInEval: dropped
    names: tuple[str, ...]


def _tables(train_ids: bool) -> _Tables:
    by_id = {label.id: label for label in LABELS if label.id >= 0}
    ids = range(NUM_IDS)
    return _Tables(
        np.array([by_id[i].train_id if train_ids else i for i in ids], dtype=np.int64),
        np.array([by_id[i].has_instances for i in ids], dtype=bool),
        np.array([by_id[i].ignore_in_eval for i in ids], dtype=bool),
        tuple(by_id[i].name for i in ids),
    )


def convert_image(path: Path, tables: _Tables) -> Converted:
    """One instanceIds PNG -> its segments (the segment id is the pixel value)."""
    values = read_label_png(path, "instanceIds PNG", GREY_16)
    stats = key_segments(values.astype(np.int64, copy=False))
    keys = stats.keys
    label = np.where(keys >= 1000, keys // 1000, keys)
    unknown = label >= NUM_IDS
    if unknown.any():
        raise DataError(f"{path}: unknown Cityscapes class id(s) {sorted(set(label[unknown].tolist()))} "
                        f"(values {keys[unknown][:5].tolist()}); label ids are 0..{NUM_IDS - 1}")
    thing = tables.thing[label]
    stuff_instance = (keys >= 1000) & ~thing
    if stuff_instance.any():
        k = int(np.argmax(stuff_instance))
        raise DataError(f"{path}: instance id {int(keys[k])} on class '{tables.names[label[k]]}' ({label[k]}), "
                        "which has no instances")
    ignored = tables.ignored[label]
    dropped: dict[str, list[int]] = {}
    for lab in np.unique(label[ignored]).tolist():  # a loop over the few dropped classes, on K-sized arrays
        rows = ignored & (label == lab)
        count_drop(dropped, f"ignoreInEval class '{tables.names[lab]}' ({lab})", int(rows.sum()), stats.pixels(rows))
    kept = np.flatnonzero(~ignored)
    crowd = (keys < 1000) & thing
    segments = segment_records(keys[kept], tables.category[label[kept]], crowd[kept], stats, kept)
    ids = stats.id_map(np.where(ignored, 0, keys))
    return Converted(ids, segments, dropped, {"crowd_segments": int(crowd[kept].sum())})


def plan(root: str | Path, split: str, train_ids: bool = False) -> Plan:
    """The conversion of ``root/gtFine/{split}``; DataError for a missing folder or an empty split."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: Cityscapes folder not found")
    split_dir = root / "gtFine" / split
    if not split_dir.is_dir():
        raise DataError(f"{split_dir}: folder not found (expected the layout gtFine/{split}/{{city}}/*{SUFFIX})")
    # The reference globs "*_instanceIds.png" and sorts the path strings: same order here.
    files = sorted(glob.glob(os.path.join(str(split_dir), "*", "*_instanceIds.png")))
    if not files:
        raise DataError(f"{split_dir}: no {{city}}/*_instanceIds.png files (empty split)")
    tasks = []
    for name in files:
        path = Path(name)
        base = path.name.replace(SUFFIX, "")
        image = {"id": base, "file_name": f"{path.parent.name}/{base}_leftImg8bit.png", "width": 0, "height": 0}
        tasks.append(ImageTask(image, path.name.replace("_instanceIds.png", "_panoptic.png"), (path,)))
    tables = _tables(train_ids)
    image_dir = root / "leftImg8bit" / split
    notes = () if image_dir.is_dir() else (f"{image_dir}: no image folder; training needs the leftImg8bit images",)
    return Plan("cityscapes", split, categories(train_ids), tasks, lambda task: convert_image(task.inputs[0], tables),
                {"train_ids": bool(train_ids)}, image_dir, notes)
