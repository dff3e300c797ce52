"""Plausibly wrong panoptic predictions made from a ground truth, to test and benchmark PQ evaluators.

Each GT segment is kept, shifted, eroded, dilated, relabelled with a wrong category or dropped, and a few
spurious rectangles are added, so every branch of the PQ matching is exercised: matches above and below
IoU 0.5, false positives and negatives, predictions on void and on crowd regions. Deterministic for a
seed. No torch here.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from oanet.data.morphology import dilate, erode, shift
from oanet.data.png_io import read_id_png, write_id_png
from oanet.fileio import write_json_atomic

OPERATIONS = ("keep", "shift", "erode", "dilate", "wrong_class", "drop")


def perturb_image(
    gt_ids: np.ndarray,
    segments_info: list[Mapping[str, Any]],
    category_ids: np.ndarray,
    rng: np.random.Generator,
    n_extra: int = 2,
) -> tuple[np.ndarray, list[dict]]:
    """A perturbed prediction (id map, segments_info) of one GT image."""
    h, w = gt_ids.shape
    pred = np.zeros((h, w), dtype=np.uint32)
    fresh_ids = rng.choice(np.arange(1, 256**3, dtype=np.int64), size=len(segments_info) + n_extra, replace=False)
    painted: list[tuple[int, int]] = []  # (id, category_id)
    for k, segment in enumerate(segments_info):
        mask = gt_ids == segment["id"]
        category = int(segment["category_id"])
        operation = OPERATIONS[rng.integers(len(OPERATIONS))]
        if operation == "drop":
            continue
        if operation == "shift":
            mask = shift(mask, int(rng.integers(-12, 13)), int(rng.integers(-12, 13)))
        elif operation == "erode":
            mask = erode(mask, int(rng.integers(1, 6)))
        elif operation == "dilate":
            mask = dilate(mask, int(rng.integers(1, 6)))
        elif operation == "wrong_class":
            category = int(rng.choice(category_ids))
        pred[mask] = fresh_ids[k]
        painted.append((int(fresh_ids[k]), category))
    for e in range(n_extra):
        y0, x0 = int(rng.integers(0, h - 1)), int(rng.integers(0, w - 1))
        y1, x1 = y0 + int(rng.integers(1, h // 3 + 2)), x0 + int(rng.integers(1, w // 3 + 2))
        segment_id = int(fresh_ids[len(segments_info) + e])
        pred[y0:y1, x0:x1] = segment_id
        painted.append((segment_id, int(rng.choice(category_ids))))

    # Later paint covers earlier: keep the segments that still own pixels, with their areas.
    keys = np.array(sorted(i for i, _ in painted), dtype=np.uint32)
    rows = np.searchsorted(np.concatenate([[0], keys]).astype(np.uint32), pred)
    area = np.bincount(rows.ravel(), minlength=len(keys) + 1)[1:]
    area_of = dict(zip(keys.tolist(), area.tolist()))
    info = [
        {"id": i, "category_id": c, "iscrowd": 0, "area": int(area_of[i])} for i, c in painted if area_of[i] > 0
    ]
    return pred, info


def write_perturbed_predictions(
    gt_json: str | os.PathLike,
    gt_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    seed: int = 0,
    copies: int = 1,
    n_extra: int = 2,
) -> tuple[Path, Path, Path, Path]:
    """A GT set replicated ``copies`` times and one perturbed prediction per image, under ``out_dir``.

    Returns (gt JSON, gt PNG folder, prediction JSON, prediction PNG folder). With ``copies > 1`` the GT
    PNGs are hard-linked (copied where links are impossible) under new image ids, each with its own
    perturbation: a benchmark set of any size from a few real images.
    """
    gt_json, gt_dir, out_dir = Path(gt_json), Path(gt_dir), Path(out_dir)
    gt = json.loads(gt_json.read_text())
    category_ids = np.array([c["id"] for c in gt["categories"]], dtype=np.int64)
    out_gt_dir, out_pred_dir = out_dir / "gt", out_dir / "pred"
    out_gt_dir.mkdir(parents=True, exist_ok=True)
    out_pred_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    images, gt_annotations, pred_annotations = [], [], []
    images_by_id = {im["id"]: im for im in gt.get("images", [])}
    for copy in range(copies):
        for ann in gt["annotations"]:
            image_id = ann["image_id"] if copies == 1 else copy * 10**7 + int(ann["image_id"])
            file_name = ann["file_name"] if copies == 1 else f"{copy:04d}_{ann['file_name']}"
            _link_or_copy(gt_dir / ann["file_name"], out_gt_dir / file_name)
            gt_ids = read_id_png(gt_dir / ann["file_name"])
            pred_ids, info = perturb_image(gt_ids, ann["segments_info"], category_ids, rng, n_extra)
            write_id_png(out_pred_dir / file_name, pred_ids)
            gt_annotations.append({**ann, "image_id": image_id, "file_name": file_name})
            pred_annotations.append({"image_id": image_id, "file_name": file_name, "segments_info": info})
            image = dict(images_by_id.get(ann["image_id"], {"height": gt_ids.shape[0], "width": gt_ids.shape[1]}))
            images.append({**image, "id": image_id, "file_name": file_name.replace(".png", ".jpg")})

    out_gt_json, out_pred_json = out_dir / "gt.json", out_dir / "pred.json"
    write_json_atomic(out_gt_json, {**gt, "images": images, "annotations": gt_annotations})
    write_json_atomic(out_pred_json, {"images": images, "categories": gt["categories"], "annotations": pred_annotations})
    return out_gt_json, out_gt_dir, out_pred_json, out_pred_dir


def _link_or_copy(src: Path, dst: Path) -> None:
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)

