"""Evaluate a model on a COCO panoptic split in both fusion orders from one forward pass.

Every image goes through the network once; its detections are pasted twice, ordered by detection
score (the heuristic merge the paper replaces) and by the SRM ranking score (Eq. 3). Both sets of
predictions are written in COCO panoptic format and scored with ``oanet.evaluation.pq``, so the
difference between the two numbers is exactly what the spatial ranking module buys.

Layout of ``out_dir``::

    score_order/panoptic.json, score_order/panoptic/<image>.png
    srm_order/panoptic.json,   srm_order/panoptic/<image>.png
    results.json               {"score_order": <pq dict>, "srm_order": <pq dict>}
    order_differences.json     per image: share of pixels whose segment differs between the orders
    gt_subset.json             the ground truth restricted to the evaluated images (with --max-images)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from oanet.config import Config, SplitConfig
from oanet.errors import DataError, make_dir

ORDERS = ("score", "srm")
ORDER_TITLES = {"score": "score order (heuristic)", "srm": "SRM order"}
GROUPS = ("All", "Things", "Stuff")
METRICS = ("pq", "sq", "rq")


def order_dir_name(order: str) -> str:
    return f"{order}_order"


# --------------------------------------------------------------------------------------------
# reporting (pure)


def comparison_rows(score: Mapping, srm: Mapping) -> list[dict]:
    """One row per group (All/Things/Stuff): both orders' PQ/SQ/RQ in percent and SRM - score."""
    rows = []
    for group in GROUPS:
        a, b = score.get(group, {}), srm.get(group, {})
        row: dict[str, Any] = {"group": group, "n": int(b.get("n", a.get("n", 0)))}
        for metric in METRICS:
            va, vb = 100.0 * float(a.get(metric, 0.0)), 100.0 * float(b.get(metric, 0.0))
            row[f"score_{metric}"], row[f"srm_{metric}"], row[f"diff_{metric}"] = va, vb, vb - va
        rows.append(row)
    return rows


def format_comparison(score: Mapping, srm: Mapping) -> str:
    """A fixed-width table of the score order vs the SRM order and their difference (in %)."""
    rows = comparison_rows(score, srm)
    head1 = f"{'':8} {'':>4} | {ORDER_TITLES['score']:^23} | {ORDER_TITLES['srm']:^23} | {'SRM - score':^23}"
    head2 = f"{'':8} {'n':>4} | " + " | ".join(" ".join(f"{m.upper():>7}" for m in METRICS) for _ in range(3))
    lines = [head1, head2, "-" * len(head2)]
    for row in rows:
        cells = [
            " ".join(f"{row[f'score_{m}']:7.2f}" for m in METRICS),
            " ".join(f"{row[f'srm_{m}']:7.2f}" for m in METRICS),
            " ".join(f"{row[f'diff_{m}']:+7.2f}" for m in METRICS),
        ]
        lines.append(f"{row['group']:8} {row['n']:>4} | " + " | ".join(cells))
    return "\n".join(lines)


def format_comparison_markdown(score: Mapping, srm: Mapping) -> str:
    """The same comparison as a Markdown table (for report.md)."""
    header = (
        "| | n | PQ (score) | PQ (SRM) | ΔPQ | SQ (score) | SQ (SRM) | ΔSQ | RQ (score) | RQ (SRM) | ΔRQ |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    lines = [header]
    for row in comparison_rows(score, srm):
        cells = []
        for m in METRICS:
            cells += [f"{row[f'score_{m}']:.2f}", f"{row[f'srm_{m}']:.2f}", f"{row[f'diff_{m}']:+.2f}"]
        lines.append(f"| {row['group']} | {row['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _unmatched_share(a: np.ndarray, b: np.ndarray) -> float:
    """Share of pixels outside the largest overlap of each segment of ``a`` with a segment of ``b``."""
    width = int(b.max()) + 1
    pairs, counts = np.unique(a * width + b, return_counts=True)
    first = pairs // width
    # Largest overlap per segment of a: sort by (segment of a, count) and keep each segment's last.
    order = np.lexsort((counts, first))
    is_last = np.ones(len(order), dtype=bool)
    is_last[:-1] = first[order][1:] != first[order][:-1]
    return float(1.0 - counts[order][is_last].sum() / a.size)


def panoptic_map_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Share of pixels whose segment differs between two id maps, up to a renaming of the ids.

    Every segment of one map is matched to the segment of the other it overlaps most; the pixels
    outside those overlaps are where the maps disagree. Taken both ways and the larger kept, so a
    merge of segments counts as much as a split. Ids are free labels: two maps that differ only in
    their numbering score 0.
    """
    a = np.asarray(a, dtype=np.int64).reshape(-1)
    b = np.asarray(b, dtype=np.int64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"id maps differ in size: {a.size} vs {b.size} pixels")
    if a.size == 0:
        return 0.0
    return max(_unmatched_share(a, b), _unmatched_share(b, a))


# --------------------------------------------------------------------------------------------
# inference


def _restrict_ground_truth(gt_json: Path, image_ids: set, out_path: Path) -> Path:
    """A copy of the ground-truth JSON holding only ``image_ids`` (to score a --max-images run)."""
    data = json.loads(gt_json.read_text())
    data["images"] = [img for img in data["images"] if img["id"] in image_ids]
    data["annotations"] = [ann for ann in data["annotations"] if ann["image_id"] in image_ids]
    out_path.write_text(json.dumps(data))
    return out_path


def _checked_label_space(label_space, gt_json: Path):
    """The model's label space, refused when the split's categories are not the ones it predicts."""
    from oanet.data.coco_panoptic import read_json
    from oanet.data.labels import LabelSpace, parse_categories

    split_space = LabelSpace(parse_categories(read_json(gt_json).get("categories"), str(gt_json)))
    if label_space is None:  # a checkpoint without one: the split's categories, in the same order rules
        return split_space
    model_ids = [c.id for c in label_space.categories]
    split_ids = [c.id for c in split_space.categories]
    missing = sorted(set(model_ids) - set(split_ids))
    if missing or [c.isthing for c in label_space.categories] != [
        split_space.category(i).isthing for i in model_ids
    ]:
        raise DataError(
            f"{gt_json}: the split's categories do not match the model's "
            f"(model predicts ids {model_ids}, split has {split_ids})"
        )
    return label_space


def evaluate(
    model,
    cfg: Config,
    label_space,
    split: SplitConfig,
    out_dir: str | Path,
    workers: Optional[int] = None,
    max_images: Optional[int] = None,
    batch_size: int = 1,
    num_workers: Optional[int] = None,
    progress: bool = True,
) -> dict:
    """Run ``model`` over ``split``, fuse every image in both orders, score both with PQ.

    Returns ``{"score_order": <pq dict>, "srm_order": <pq dict>}`` (the JSON of ``oanet pq --output``
    for each order) and writes it, with the predictions, under ``out_dir`` (see the module doc).
    """
    import torch
    from tqdm import tqdm

    from oanet.data.coco_panoptic import PanopticWriter
    from oanet.engine.predict import ImageListDataset, check_resizable, collate_images, fuse_both_orders, image_record
    from oanet.evaluation.pq import pq_compute

    gt_json, gt_dir, image_dir = Path(split.panoptic_json), Path(split.panoptic_dir), Path(split.image_dir)
    for path, what in ((gt_json, "panoptic JSON"), (gt_dir, "panoptic PNG folder"), (image_dir, "image folder")):
        if not path.exists():
            raise FileNotFoundError(f"{path}: {what} of the evaluation split not found")
    out_dir = make_dir(out_dir)

    label_space = _checked_label_space(label_space, gt_json)
    dataset = ImageListDataset.from_panoptic_json(gt_json, image_dir, max_images=max_images)
    evaluated_gt = gt_json
    if max_images is not None:
        evaluated_gt = _restrict_ground_truth(gt_json, set(dataset.image_ids), out_dir / "gt_subset.json")

    writers = {}
    for order in ORDERS:
        folder = out_dir / order_dir_name(order)
        writers[order] = PanopticWriter(folder / "panoptic.json", folder / "panoptic", label_space)
    device = next(model.parameters()).device
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=cfg.data.num_workers if num_workers is None else num_workers,
        collate_fn=collate_images,
    )
    differences = {}
    model.eval()
    with torch.no_grad():
        for images, infos in tqdm(loader, desc="evaluate", unit="batch", disable=not progress):
            for image, info in zip(images, infos):
                check_resizable(image, cfg, info["path"])
            outputs = model([image.to(device, non_blocking=True) for image in images])
            for image, output, info in zip(images, outputs, infos):
                fused = fuse_both_orders(output, label_space, cfg)
                for order in ORDERS:
                    writers[order].add(image_record(image, info), *fused[order])
                differences[info["file_name"]] = panoptic_map_difference(fused["score"][0], fused["srm"][0])

    results = {}
    for order in ORDERS:
        pred_json = writers[order].close()
        pq = pq_compute(evaluated_gt, gt_dir, pred_json, writers[order].png_dir, workers=workers, progress=progress)
        results[f"{order}_order"] = pq.to_dict()
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    (out_dir / "order_differences.json").write_text(json.dumps(differences, indent=2))
    return results
