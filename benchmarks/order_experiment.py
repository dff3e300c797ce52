"""How much the pasting order matters: the ground-truth amodal masks of the synthetic occlusion
benchmark pasted in several orders over the GT stuff, each scored with PQ. No torch.

The true depth order reproduces the ground truth exactly (PQ 100); "frequency" (frequent class on top)
is what sorting by detection score does. See docs/synthetic.md and benchmarks/synth_order.py.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from oanet.fileio import read_json
from oanet.data.coco_panoptic import segment_boxes, segment_index_map, xyxy_to_coco
from oanet.data.labels import VOID
from oanet.data.png_io import read_id_png, write_id_png
from oanet.data.synthetic.classes import THING_IDS
from oanet.data.synthetic.writer import split_paths, write_json
from oanet.errors import DataError
from oanet.evaluation.pq import pq_compute
from oanet.parallel import default_workers

GT_ORDERS = ("depth", "frequency", "larger_on_top", "smaller_on_top", "random")
GT_ORDER_HELP = {
    "depth": "true depth (the annotation's paint order)",
    "frequency": "frequent class on top (what sorting by detection score does)",
    "larger_on_top": "decreasing area: larger instance on top",
    "smaller_on_top": "increasing area: smaller instance on top",
    "random": "random order",
}


def priority_order(annotations: Sequence[dict], order: str, class_rank: dict[int, int],
                   rng: np.random.Generator) -> list[int]:
    """Indices of ``annotations`` (non-crowd instances of one image), the one pasted on top first."""
    n = len(annotations)
    tiebreak = rng.permutation(n)  # drawn for every order so each order sees the same stream
    if order == "depth":
        keys = [(-a["depth"],) for a in annotations]
    elif order == "frequency":
        keys = [(class_rank[a["category_id"]], int(tiebreak[i])) for i, a in enumerate(annotations)]
    elif order == "larger_on_top":
        keys = [(-a["area"], int(tiebreak[i])) for i, a in enumerate(annotations)]
    elif order == "smaller_on_top":
        keys = [(a["area"], int(tiebreak[i])) for i, a in enumerate(annotations)]
    elif order == "random":
        keys = [(int(tiebreak[i]),) for i in range(n)]
    else:
        raise DataError(f"unknown order {order!r}; known: {', '.join(GT_ORDERS)}")
    return sorted(range(n), key=lambda i: keys[i])


def fuse_in_order(gt_ids: np.ndarray, gt_segments: Sequence[dict], annotations: Sequence[dict],
                  priority: Sequence[int]) -> tuple[np.ndarray, list[dict]]:
    """Paste amodal instance masks (first in ``priority`` on top) over the GT stuff, crowd and void.

    Pixels no pasted instance covers keep their ground-truth id. Each pasted instance keeps the id of
    its own GT segment (``segment_id``), so the true depth order reproduces the GT exactly.
    """
    thing_ids = [s["id"] for s in gt_segments if not s["iscrowd"] and s["category_id"] in THING_IDS]
    ids = np.where(np.isin(gt_ids, thing_ids), 0, gt_ids).astype(np.uint32)
    category = {s["id"]: s["category_id"] for s in gt_segments}
    for i in reversed(list(priority)):  # bottom first, so the top one is painted last
        ann = annotations[i]
        ids[mask_utils.decode(ann["segmentation"]).astype(bool)] = ann["segment_id"]
        category[ann["segment_id"]] = ann["category_id"]
    present = np.unique(ids)
    segment_ids = present[present != VOID]
    index, areas = segment_index_map(ids, segment_ids)
    boxes = xyxy_to_coco(segment_boxes(index, len(segment_ids)))
    segments = [{"id": int(seg_id), "category_id": category[int(seg_id)], "area": int(area),
                 "bbox": [int(v) for v in box], "iscrowd": 0}
                for seg_id, area, box in zip(segment_ids, areas, boxes)]
    return ids, segments




def class_frequency_rank(instances: dict) -> dict[int, int]:
    """Category id -> rank by number of non-crowd instances (0 = most frequent, ties by id)."""
    counts = {c["id"]: 0 for c in instances["categories"]}
    for ann in instances["annotations"]:
        if not ann.get("iscrowd", 0):
            counts[ann["category_id"]] = counts.get(ann["category_id"], 0) + 1
    ranked = sorted(counts, key=lambda cid: (-counts[cid], cid))
    return {cid: r for r, cid in enumerate(ranked)}


def _fuse_image(task: tuple) -> list[tuple[str, list[dict]]]:
    gt_png, panoptic_ann, annotations, orders, class_rank, seed, out_dirs = task
    gt_ids = read_id_png(gt_png)
    singles = [a for a in annotations if not a["iscrowd"]]
    out = []
    for order in orders:
        rng = np.random.default_rng([seed, panoptic_ann["image_id"]])
        ids, segments = fuse_in_order(gt_ids, panoptic_ann["segments_info"], singles,
                                      priority_order(singles, order, class_rank, rng))
        write_id_png(Path(out_dirs[order], panoptic_ann["file_name"]), ids)
        out.append((order, segments))
    return out


def evaluate_pq(gt_json: str, gt_dir: str, pred_json: str, pred_dir: str, workers: Optional[int] = None) -> dict:
    """{"All", "Things", "Stuff"} -> {"pq", "sq", "rq", "n"} (fractions) with oanet's PQ."""
    result = pq_compute(gt_json, gt_dir, pred_json, pred_dir, workers=workers, progress=False).to_dict()
    return {k: result[k] for k in ("All", "Things", "Stuff")}


def order_experiment(dataset_dir: str | Path, split: str = "val", orders: Sequence[str] = GT_ORDERS,
                     out_dir: Optional[str | Path] = None, seed: int = 0, workers: Optional[int] = None,
                     evaluate=evaluate_pq) -> dict[str, dict]:
    """PQ of the GT amodal masks pasted in each of ``orders`` over the GT stuff, per order.

    Predictions are written as COCO panoptic to ``out_dir/<order>/`` (a temporary folder when None).
    ``evaluate(gt_json, gt_dir, pred_json, pred_dir, workers)`` returns {"All","Things","Stuff"} dicts.
    """
    unknown = [o for o in orders if o not in GT_ORDERS]
    if unknown:
        raise DataError(f"unknown order(s) {', '.join(unknown)}; known: {', '.join(GT_ORDERS)}")
    paths = split_paths(dataset_dir, split)
    for key in ("panoptic_json", "instances_json"):
        if not Path(paths[key]).is_file():
            raise FileNotFoundError(f"{paths[key]}: not found (generate the dataset with `oanet synth`)")
    panoptic = read_json(paths["panoptic_json"], "panoptic")
    instances = read_json(paths["instances_json"], "instances")
    by_image: dict[int, list[dict]] = {}
    for ann in instances["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    class_rank = class_frequency_rank(instances)

    with tempfile.TemporaryDirectory(prefix="oanet-order-") as tmp:
        root = Path(out_dir) if out_dir is not None else Path(tmp)
        pred_dirs = {o: str(root / o / "panoptic_pred") for o in orders}
        for d in pred_dirs.values():
            Path(d).mkdir(parents=True, exist_ok=True)
        tasks = [(str(Path(paths["panoptic_dir"], ann["file_name"])), ann, by_image.get(ann["image_id"], []),
                  tuple(orders), class_rank, seed, pred_dirs) for ann in panoptic["annotations"]]
        workers = default_workers() if workers is None else workers
        if workers > 1 and len(tasks) > 1:
            with multiprocessing.get_context("fork" if os.name != "nt" else "spawn").Pool(workers) as pool:
                fused = pool.map(_fuse_image, tasks, chunksize=max(1, len(tasks) // (4 * workers)))
        else:
            fused = [_fuse_image(t) for t in tasks]
        results = {}
        for order in orders:
            annotations = [{"image_id": ann["image_id"], "file_name": ann["file_name"], "segments_info": segs}
                           for ann, per_order in zip(panoptic["annotations"], fused)
                           for o, segs in per_order if o == order]
            pred_json = str(root / order / "panoptic_pred.json")
            write_json(pred_json, {"images": panoptic["images"], "annotations": annotations,
                                   "categories": panoptic["categories"]})
            results[order] = evaluate(paths["panoptic_json"], paths["panoptic_dir"], pred_json, pred_dirs[order],
                                      workers)
    return results
