"""``oanet convert ade20k``: ADEChallengeData2016 -> COCO panoptic, by the rules of Mask2Former's
``datasets/prepare_ade20k_pan_seg.py``. No torch.

- Images: ``images/{training,validation}/*.jpg`` sorted; the image id is the name before its first dot.
- Categories: the 150 SceneParsing classes, ids 0..149 (semantic PNG value - 1), with their palette;
  the 100 classes of the instance challenge are things (``INSTANCE_CLASS_TO_LABEL``), the rest stuff.
- Stuff: one segment per stuff class of ``annotations/{dir}/{id}.png`` (0 is void; thing classes
  there are left to the instance map).
- Things: one segment per instance of ``annotations_instance/{dir}/{id}.png`` (R: instance class
  1..100, G: instance id, 0 none), pasted over the stuff; an instance must have one class.

Segments are ordered as the reference orders them (stuff by class, then things by instance id);
segment ids are 1, 2, ... in that order instead of the reference's random colours. Where the
reference keeps a stuff segment's area and box from before the things were pasted over it, they are
computed here from the pixels the PNG holds, and a stuff segment left with no pixel is dropped (PQ
and ``oanet train`` reject declared segments absent from the PNG); the report counts both.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np

from oanet.convert.runner import Converted, ImageTask, Plan
from oanet.convert.segments import (check_same_size, count_drop, image_size, key_segments, read_colour_png,
                                    read_label_png, segment_records)
from oanet.errors import DataError

SPLITS = {"train": "training", "val": "validation"}
_THING_KEY = 1 << 16  # keys at or above: things (65536 + instance id * 256 + instance class)

# The 150 classes (names exactly as the reference spells them, "window " included) and palette.
CLASSES = (
    ('wall', (120, 120, 120)),
    ('building', (180, 120, 120)),
    ('sky', (6, 230, 230)),
    ('floor', (80, 50, 50)),
    ('tree', (4, 200, 3)),
    ('ceiling', (120, 120, 80)),
    ('road, route', (140, 140, 140)),
    ('bed', (204, 5, 255)),
    ('window ', (230, 230, 230)),
    ('grass', (4, 250, 7)),
    ('cabinet', (224, 5, 255)),
    ('sidewalk, pavement', (235, 255, 7)),
    ('person', (150, 5, 61)),
    ('earth, ground', (120, 120, 70)),
    ('door', (8, 255, 51)),
    ('table', (255, 6, 82)),
    ('mountain, mount', (143, 255, 140)),
    ('plant', (204, 255, 4)),
    ('curtain', (255, 51, 7)),
    ('chair', (204, 70, 3)),
    ('car', (0, 102, 200)),
    ('water', (61, 230, 250)),
    ('painting, picture', (255, 6, 51)),
    ('sofa', (11, 102, 255)),
    ('shelf', (255, 7, 71)),
    ('house', (255, 9, 224)),
    ('sea', (9, 7, 230)),
    ('mirror', (220, 220, 220)),
    ('rug', (255, 9, 92)),
    ('field', (112, 9, 255)),
    ('armchair', (8, 255, 214)),
    ('seat', (7, 255, 224)),
    ('fence', (255, 184, 6)),
    ('desk', (10, 255, 71)),
    ('rock, stone', (255, 41, 10)),
    ('wardrobe, closet, press', (7, 255, 255)),
    ('lamp', (224, 255, 8)),
    ('tub', (102, 8, 255)),
    ('rail', (255, 61, 6)),
    ('cushion', (255, 194, 7)),
    ('base, pedestal, stand', (255, 122, 8)),
    ('box', (0, 255, 20)),
    ('column, pillar', (255, 8, 41)),
    ('signboard, sign', (255, 5, 153)),
    ('chest of drawers, chest, bureau, dresser', (6, 51, 255)),
    ('counter', (235, 12, 255)),
    ('sand', (160, 150, 20)),
    ('sink', (0, 163, 255)),
    ('skyscraper', (140, 140, 200)),
    ('fireplace', (250, 10, 15)),
    ('refrigerator, icebox', (20, 255, 0)),
    ('grandstand, covered stand', (31, 255, 0)),
    ('path', (255, 31, 0)),
    ('stairs', (255, 224, 0)),
    ('runway', (153, 255, 0)),
    ('case, display case, showcase, vitrine', (0, 0, 255)),
    ('pool table, billiard table, snooker table', (255, 71, 0)),
    ('pillow', (0, 235, 255)),
    ('screen door, screen', (0, 173, 255)),
    ('stairway, staircase', (31, 0, 255)),
    ('river', (11, 200, 200)),
    ('bridge, span', (255, 82, 0)),
    ('bookcase', (0, 255, 245)),
    ('blind, screen', (0, 61, 255)),
    ('coffee table', (0, 255, 112)),
    ('toilet, can, commode, crapper, pot, potty, stool, throne', (0, 255, 133)),
    ('flower', (255, 0, 0)),
    ('book', (255, 163, 0)),
    ('hill', (255, 102, 0)),
    ('bench', (194, 255, 0)),
    ('countertop', (0, 143, 255)),
    ('stove', (51, 255, 0)),
    ('palm, palm tree', (0, 82, 255)),
    ('kitchen island', (0, 255, 41)),
    ('computer', (0, 255, 173)),
    ('swivel chair', (10, 0, 255)),
    ('boat', (173, 255, 0)),
    ('bar', (0, 255, 153)),
    ('arcade machine', (255, 92, 0)),
    ('hovel, hut, hutch, shack, shanty', (255, 0, 255)),
    ('bus', (255, 0, 245)),
    ('towel', (255, 0, 102)),
    ('light', (255, 173, 0)),
    ('truck', (255, 0, 20)),
    ('tower', (255, 184, 184)),
    ('chandelier', (0, 31, 255)),
    ('awning, sunshade, sunblind', (0, 255, 61)),
    ('street lamp', (0, 71, 255)),
    ('booth', (255, 0, 204)),
    ('tv', (0, 255, 194)),
    ('plane', (0, 255, 82)),
    ('dirt track', (0, 10, 255)),
    ('clothes', (0, 112, 255)),
    ('pole', (51, 0, 255)),
    ('land, ground, soil', (0, 194, 255)),
    ('bannister, banister, balustrade, balusters, handrail', (0, 122, 255)),
    ('escalator, moving staircase, moving stairway', (0, 255, 163)),
    ('ottoman, pouf, pouffe, puff, hassock', (255, 153, 0)),
    ('bottle', (0, 255, 10)),
    ('buffet, counter, sideboard', (255, 112, 0)),
    ('poster, posting, placard, notice, bill, card', (143, 255, 0)),
    ('stage', (82, 0, 255)),
    ('van', (163, 255, 0)),
    ('ship', (255, 235, 0)),
    ('fountain', (8, 184, 170)),
    ('conveyer belt, conveyor belt, conveyer, conveyor, transporter', (133, 0, 255)),
    ('canopy', (0, 255, 92)),
    ('washer, automatic washer, washing machine', (184, 0, 255)),
    ('plaything, toy', (255, 0, 31)),
    ('pool', (0, 184, 255)),
    ('stool', (0, 214, 255)),
    ('barrel, cask', (255, 0, 112)),
    ('basket, handbasket', (92, 255, 0)),
    ('falls', (0, 224, 255)),
    ('tent', (112, 224, 255)),
    ('bag', (70, 184, 160)),
    ('minibike, motorbike', (163, 0, 255)),
    ('cradle', (153, 0, 255)),
    ('oven', (71, 255, 0)),
    ('ball', (255, 0, 163)),
    ('food, solid food', (255, 204, 0)),
    ('step, stair', (255, 0, 143)),
    ('tank, storage tank', (0, 255, 235)),
    ('trade name', (133, 255, 0)),
    ('microwave', (255, 0, 235)),
    ('pot', (245, 0, 255)),
    ('animal', (255, 0, 122)),
    ('bicycle', (255, 245, 0)),
    ('lake', (10, 190, 212)),
    ('dishwasher', (214, 255, 0)),
    ('screen', (0, 204, 255)),
    ('blanket, cover', (20, 0, 255)),
    ('sculpture', (255, 255, 0)),
    ('hood, exhaust hood', (0, 153, 255)),
    ('sconce', (0, 41, 255)),
    ('vase', (0, 255, 204)),
    ('traffic light', (41, 0, 255)),
    ('tray', (41, 255, 0)),
    ('trash can', (173, 0, 255)),
    ('fan', (0, 245, 255)),
    ('pier', (71, 0, 255)),
    ('crt screen', (122, 0, 255)),
    ('plate', (0, 255, 184)),
    ('monitor', (0, 92, 255)),
    ('bulletin board', (184, 255, 0)),
    ('shower', (0, 133, 255)),
    ('radiator', (255, 214, 0)),
    ('glass, drinking glass', (25, 194, 194)),
    ('clock', (102, 255, 0)),
    ('flag', (92, 0, 255)),
)

# SceneParsing label (1-based) of each instance-challenge class 1..100
# (Mask2Former's datasets/ade20k_instance_catid_mapping.txt).
INSTANCE_CLASS_TO_LABEL = (
    8, 9, 11, 13, 15, 16, 19, 20, 21, 23, 24, 25, 28, 31, 32, 33, 34, 36, 37, 38,
    39, 40, 42, 43, 44, 45, 46, 48, 50, 51, 54, 56, 57, 58, 59, 63, 65, 66, 67, 68,
    70, 71, 72, 73, 74, 75, 76, 77, 79, 81, 82, 83, 84, 86, 87, 88, 89, 90, 91, 93,
    94, 96, 98, 99, 103, 104, 105, 108, 109, 111, 112, 113, 116, 117, 119, 120, 121, 122, 124, 125,
    126, 127, 128, 130, 131, 133, 134, 135, 136, 137, 138, 139, 140, 143, 144, 145, 147, 148, 149, 150,
)
THING_IDS = frozenset(label - 1 for label in INSTANCE_CLASS_TO_LABEL)
_CATEGORY_OF_INSTANCE_CLASS = np.array([-1] + [label - 1 for label in INSTANCE_CLASS_TO_LABEL], dtype=np.int64)
# By semantic PNG value 0..255: 1 for a stuff class, 2 for a thing class, 0 void, -1 unknown.
_VALUE_KIND = np.array([0] + [2 if i in THING_IDS else 1 for i in range(len(CLASSES))]
                       + [-1] * (255 - len(CLASSES)), dtype=np.int64)


def categories() -> list[dict]:
    return [{"name": name, "id": i, "isthing": int(i in THING_IDS), "color": list(color)}
            for i, (name, color) in enumerate(CLASSES)]


def _thing_classes(path: Path, keys: np.ndarray) -> np.ndarray:
    """The category of each thing key, checking that every instance has exactly one known class."""
    instance = (keys - _THING_KEY) >> 8
    klass = keys & 255
    values, counts = np.unique(instance, return_counts=True)
    if (counts > 1).any():
        bad = int(values[counts > 1][0])
        raise DataError(f"{path}: instance {bad} has pixels of several instance classes "
                        f"{klass[instance == bad].tolist()} (R channel); an instance has one class")
    unknown = (klass == 0) | (klass >= len(_CATEGORY_OF_INSTANCE_CLASS))
    if unknown.any():
        raise DataError(f"{path}: instance {int(instance[unknown][0])} has instance class {int(klass[unknown][0])} "
                        f"(R channel); expected 1..{len(_CATEGORY_OF_INSTANCE_CLASS) - 1}")
    return _CATEGORY_OF_INSTANCE_CLASS[klass]


def convert_image(semantic_path: Path, instance_path: Path, image_path: Path) -> Converted:
    size = image_size(image_path)
    semantic = read_label_png(semantic_path, "semantic PNG", (("greyscale", 8), ("palette", 8)))
    instance = read_colour_png(instance_path, "instance PNG")
    check_same_size(semantic, size, semantic_path, f"its image {image_path.name}")
    check_same_size(instance, size, instance_path, f"its image {image_path.name}")
    value_count = np.bincount(semantic.reshape(-1), minlength=256)
    unknown = np.flatnonzero((_VALUE_KIND == -1) & (value_count > 0))
    if unknown.size:
        raise DataError(f"{semantic_path}: unknown class value(s) {unknown.tolist()}; "
                        f"expected 1..{len(CLASSES)} (0: void)")
    instance_id = (instance >> 8) & 255
    in_instance = instance_id > 0
    keys_map = np.where(in_instance, _THING_KEY + (instance_id << 8) + (instance & 255), semantic.astype(np.uint32))
    stats = key_segments(keys_map)
    keys = stats.keys.astype(np.int64)
    is_thing = keys >= _THING_KEY
    kind = np.where(is_thing, 2, _VALUE_KIND[np.minimum(keys, 255)])
    stuff = ~is_thing & (kind == 1)
    category = np.where(is_thing, 0, keys - 1)
    category[is_thing] = _thing_classes(instance_path, keys[is_thing])
    dropped: dict[str, list[int]] = {}
    loose = ~is_thing & (kind == 2)  # thing-class pixels of the semantic map outside any instance
    count_drop(dropped, "thing class in the semantic PNG outside the instance PNG", int(loose.sum()),
               stats.pixels(loose))
    # What the reference would still declare: stuff classes whose every pixel is under an instance.
    under = np.bincount(semantic[in_instance], minlength=256) if in_instance.any() else np.zeros(256, np.int64)
    stuff_under = (_VALUE_KIND == 1) & (under > 0)
    hidden = stuff_under & (under == value_count)
    count_drop(dropped, "stuff class entirely under instances", int(hidden.sum()), int(under[hidden].sum()))
    kept = np.flatnonzero(stuff | is_thing)
    segment_ids = np.zeros(len(keys), dtype=np.int64)
    segment_ids[kept] = np.arange(1, len(kept) + 1)
    segments = segment_records(segment_ids[kept], category[kept], np.zeros(len(kept), bool), stats, kept)
    counters = {"void_pixels": stats.pixels((keys == 0) | loose),
                "stuff_pixels_under_instances": int(under[stuff_under].sum())}
    return Converted(stats.id_map(segment_ids), segments, dropped, counters)


def plan(root: str | Path, split: str) -> Plan:
    """The conversion of one split ("train" or "val") of ``root`` (ADEChallengeData2016)."""
    root = Path(root)
    if split not in SPLITS:
        raise DataError(f"ADE20K split must be one of {sorted(SPLITS)}, got {split!r}")
    folder = SPLITS[split]
    for sub in ("images", "annotations", "annotations_instance"):
        if not (root / sub / folder).is_dir():
            raise DataError(f"{root / sub / folder}: folder not found (expected ADEChallengeData2016's layout "
                            "images/, annotations/, annotations_instance/)")
    image_dir = root / "images" / folder
    files = sorted(glob.glob(os.path.join(str(image_dir), "*.jpg")))
    if not files:
        raise DataError(f"{image_dir}: no .jpg images (empty split)")
    tasks = []
    for name in files:
        path = Path(name)
        image_id = path.name.split(".")[0]
        inputs = (root / "annotations" / folder / f"{image_id}.png",
                  root / "annotations_instance" / folder / f"{image_id}.png", path)
        tasks.append(ImageTask({"id": image_id, "file_name": path.name, "width": 0, "height": 0},
                               f"{image_id}.png", inputs))
    return Plan("ade20k", split, categories(), tasks, lambda task: convert_image(*task.inputs), {}, image_dir)
