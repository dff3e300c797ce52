"""One image: the scene rendered to RGB, its panoptic segments and its COCO instance annotations (no I/O)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from oanet.data.coco_panoptic import segment_boxes, xyxy_to_coco
from oanet.data.morphology import inner_edge, label_boundary
from oanet.data.png_io import rgb2id
from oanet.data.synthetic.classes import SPLITS, STUFF, STUFF_VOID_PROB, THING_VOID_PROB
from oanet.data.synthetic.geometry import Grid, shape_mask
from oanet.data.synthetic.rendering import paint, stuff_texture
from oanet.data.synthetic.scene import Instance, compose_scene, paint_order, scene_stats, visible_masks


def image_seed(seed: int, split: str, index: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, SPLITS.index(split), index])


def render_image(seed: int, split: str, index: int, size: int) -> dict[str, Any]:
    """Everything about one image: RGB, panoptic ids, segments and instance annotations (no I/O).

    Every random draw comes from one generator seeded by ``(seed, split, index)``, in a fixed order:
    the scene, its pixels, then the segment ids and void bands.
    """
    rng = np.random.default_rng(image_seed(seed, split, index))
    grid = Grid.square(size)
    stuff, instances = compose_scene(rng, size, grid)
    band = max(1, round(size / 128))
    rgb = render_rgb(rng, stuff, instances, grid, band)
    ids, segments, instance_ids = panoptic_segments(rng, stuff, instances, band)
    singles = [inst.mask for inst in instances if not inst.iscrowd]
    return {"rgb": rgb, "ids": ids, "segments": segments, "annotations": instance_annotations(instances, instance_ids),
            "stats": scene_stats(instances, singles, ids)}


def render_rgb(rng: np.random.Generator, stuff: np.ndarray, instances: Sequence[Instance], grid: Grid,
               band: int) -> np.ndarray:
    """HxWx3 uint8: stuff textures, the instances painted far to near with ``band``-wide outlines, noise."""
    size = stuff.shape[0]
    image = np.zeros((size, size, 3), dtype=np.float32)
    for k in np.flatnonzero(np.bincount(stuff.ravel(), minlength=len(STUFF))):
        region = stuff == k
        image[region] = stuff_texture(STUFF[k].name, rng, grid.xs[region], grid.ys[region], size)
    for i in paint_order(instances):
        inst = instances[i]
        for shape in inst.shapes:
            paint(image, shape_mask(shape, grid) if inst.iscrowd else inst.mask, shape, inst.cls, rng, grid, band)
    image += 3.0 * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _segment_id(rng: np.random.Generator, color: Sequence[int], used: set) -> int:
    """A panoptic id near the category colour (so PNGs are viewable), unique within the image."""
    for jitter in range(1000):
        rgb = np.clip(np.array(color) + (rng.integers(-40, 41, 3) if jitter else 0), 0, 255).astype(np.uint8)
        seg_id = int(rgb2id(rgb[None, None])[0, 0])
        if seg_id != 0 and seg_id not in used:
            used.add(seg_id)
            return seg_id
    raise RuntimeError("no free segment id")  # unreachable for a few dozen segments


def panoptic_segments(rng: np.random.Generator, stuff: np.ndarray, instances: Sequence[Instance],
                      band: int) -> tuple[np.ndarray, list[dict], list[int]]:
    """The panoptic id map (uint32), its ``segments_info`` (by id) and each instance's segment id.

    Segments are first drawn as a label map (0 = void, j = segment j): stuff, void bands along stuff
    borders, then the visible instances, some with a void band along their outline.
    """
    stuff_present = np.flatnonzero(np.bincount(stuff.ravel(), minlength=len(STUFF)))
    used: set = set()
    seg_ids, seg_info = [0], [(0, False)]  # (category id, iscrowd) per segment
    for k in stuff_present:
        seg_ids.append(_segment_id(rng, STUFF[k].color, used))
        seg_info.append((STUFF[k].id, False))
    label = np.searchsorted(stuff_present, stuff).astype(np.int32) + 1
    if rng.random() < STUFF_VOID_PROB:
        label[label_boundary(stuff, band)] = 0
    visible = visible_masks(instances) if instances else []
    instance_ids = []
    for inst, vis in zip(instances, visible):
        seg_id = _segment_id(rng, inst.cls.color, used)
        instance_ids.append(seg_id)
        seg_ids.append(seg_id)
        seg_info.append((inst.cls.id, inst.iscrowd))
        label[vis] = len(seg_ids) - 1
        if not inst.iscrowd and rng.random() < THING_VOID_PROB:
            edge = inner_edge(vis, band)
            if (vis & ~edge).sum() >= 0.6 * vis.sum():
                label[edge] = 0

    areas = np.bincount(label.ravel(), minlength=len(seg_ids))
    boxes = xyxy_to_coco(segment_boxes(label - 1, len(seg_ids) - 1))  # segment j's box is row j - 1
    segments = []
    for j in np.argsort(seg_ids, kind="stable"):  # listed by id
        if j == 0 or areas[j] == 0:
            continue
        category_id, iscrowd = seg_info[j]
        segments.append({"id": seg_ids[j], "category_id": category_id, "area": int(areas[j]),
                         "bbox": [int(v) for v in boxes[j - 1]], "iscrowd": int(iscrowd)})
    return np.asarray(seg_ids, dtype=np.uint32)[label], segments, instance_ids


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def instance_annotations(instances: Sequence[Instance], segment_ids: Sequence[int]) -> list[dict]:
    """COCO instance annotations (amodal RLE masks) with ``segment_id`` and ``depth`` (paint rank)."""
    rank = {i: r for r, i in enumerate(paint_order(instances))}
    annotations = []
    for i, (inst, seg_id) in enumerate(zip(instances, segment_ids)):
        rle = _rle(inst.mask)
        annotations.append({"category_id": inst.cls.id, "segmentation": rle,
                            "area": int(mask_utils.area(rle)),
                            "bbox": [float(x) for x in mask_utils.toBbox(rle)],
                            "iscrowd": int(inst.iscrowd), "segment_id": seg_id, "depth": rank[i]})
    return annotations
