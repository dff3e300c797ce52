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
    segment_scores.json        per order and PNG: each thing segment's detection and ranking score
    order_measures.json        pairwise order accuracy and PQ_th by occlusion level per order (PyTorch
                               models; :mod:`oanet.evaluation.occlusion`)
    gt_subset.json             the ground truth restricted to the evaluated images (with --max-images)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from oanet.config import SplitConfig
from oanet.errors import DataError, make_dir
from oanet.fileio import read_json, write_json_atomic
from oanet.orders import ORDER_TITLES, ORDERS, order_key

GROUPS = ("All", "Things", "Stuff")
METRICS = ("pq", "sq", "rq")


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


# --------------------------------------------------------------------------------------------
# inference


def _restrict_ground_truth(gt_json: Path, image_ids: set, out_path: Path) -> Path:
    """A copy of the ground-truth JSON holding only ``image_ids`` (to score a --max-images run)."""
    data = read_json(gt_json, "panoptic")
    data["images"] = [img for img in data["images"] if img["id"] in image_ids]
    data["annotations"] = [ann for ann in data["annotations"] if ann["image_id"] in image_ids]
    return write_json_atomic(out_path, data)


def check_label_space(label_space, gt_json: Path) -> None:
    """Refuse a split whose categories are not the ones the model predicts (ids and isthing)."""
    from oanet.data.labels import LabelSpace, parse_categories

    split_space = LabelSpace(parse_categories(read_json(gt_json).get("categories"), str(gt_json)))
    model_ids = [c.id for c in label_space.categories]
    split_ids = [c.id for c in split_space.categories]
    missing = sorted(set(model_ids) - set(split_ids))
    if missing or [c.isthing for c in label_space.categories] != [split_space.category(i).isthing for i in model_ids]:
        raise DataError(
            f"{gt_json}: the split's categories do not match the model's "
            f"(model predicts ids {model_ids}, split has {split_ids})"
        )


@dataclass
class Evaluation:
    """What :func:`evaluate` measured (on rank 0; ``results`` is None on the other ranks)."""

    results: Optional[dict]  # {"score_order": <pq dict>, "srm_order": <pq dict>, ...one per order}
    differences: dict = field(default_factory=dict)  # file name -> share of pixels the orders disagree on
    most_different: list = field(default_factory=list)  # (ImageItem, {order: PanopticResult}, difference)
    out_dir: Optional[Path] = None
    order_measures: Optional[dict] = None  # OrderMeasures.summary(), where the model's detections were seen


def evaluate(
    predictor,
    split: SplitConfig,
    out_dir: str | Path,
    *,
    workers: Optional[int] = None,
    max_images: Optional[int] = None,
    batch_size: int = 1,
    loader_threads: int = 2,
    keep_most_different: int = 0,
    progress: bool = True,
    orders: Sequence[str] = ORDERS,
    order_measures: bool = True,
    resume: bool = True,
) -> Evaluation:
    """Run ``predictor`` over ``split``, fuse every image in both orders, score both with PQ.

    Writes the predictions, ``results.json`` and ``order_differences.json`` under ``out_dir`` (see
    the module doc). Under torchrun the images are sharded over the ranks; the files and numbers are
    those of one process. ``keep_most_different`` keeps that many images (pixels and results) where
    the orders differ most, for reports. ``orders`` may add orders a predictor provides besides the
    two (e.g. ``"oracle"`` of :class:`oanet.experiments.oracle.OraclePredictor`); each gets its folder
    and its ``<order>_order`` entry in the results. ``order_measures``: also measure the score and SRM
    orders on the detections themselves (``order_measures.json``; PyTorch predictors only).
    ``resume``: skip the images an earlier run into ``out_dir`` completed (:mod:`oanet.inference.resume`;
    the files are those of an uninterrupted run); False predicts every image again.
    """
    from oanet.inference.loop import ImageFiles, current_ranks, run_inference
    from oanet.inference.sinks import (SEGMENT_SCORES, OrderDifferences, PanopticJsonWriter, PanopticQuality,
                                       SegmentScores)

    gt_json, gt_dir, image_dir = Path(split.panoptic_json), Path(split.panoptic_dir), Path(split.image_dir)
    for path, what in ((gt_json, "panoptic JSON"), (gt_dir, "panoptic PNG folder"), (image_dir, "image folder")):
        if not path.exists():
            raise FileNotFoundError(f"{path}: {what} of the evaluation split not found")
    out_dir = make_dir(out_dir)
    ranks = current_ranks()
    check_label_space(predictor.label_space, gt_json)
    files = ImageFiles.from_panoptic_json(gt_json, image_dir, max_images=max_images)
    evaluated_gt = gt_json
    if max_images is not None:
        evaluated_gt = out_dir / "gt_subset.json"
        if ranks.is_main:
            _restrict_ground_truth(gt_json, set(files.image_ids), evaluated_gt)

    missing = [o for o in ORDERS if o not in orders]
    if missing:
        raise ValueError(f"evaluate compares the score and SRM orders; orders lacks {missing}")
    writers = [PanopticJsonWriter(out_dir / order_key(o), o, predictor.label_space) for o in orders]
    sinks = [*writers, OrderDifferences(out_dir / "order_differences.json", keep=keep_most_different),
             SegmentScores(out_dir / SEGMENT_SCORES, orders),
             PanopticQuality(writers, evaluated_gt, gt_dir, workers=workers, progress=progress)]
    observed = _observable(predictor) if order_measures else None
    if observed is not None:
        from oanet.evaluation.order_measures import OrderMeasures
        from oanet.inference.measured import OrderMeasuresObserver, OrderMeasuresSink

        measures = OrderMeasures(gt_json, gt_dir, split.instances_json, ORDERS)
        observer = OrderMeasuresObserver(measures, predictor.label_space)
        observed.observer = observer
        sinks.append(OrderMeasuresSink(measures, observer))
    from oanet.inference.resume import plan

    mine, sinks, _ = plan(out_dir, predictor, sinks, files.file_names, ranks, "evaluate", enabled=resume,
                          orders=list(orders), batch_size=batch_size, split=str(gt_json.resolve()),
                          image_dir=str(image_dir.resolve()), order_measures=observed is not None)
    try:
        outcome = run_inference(predictor, files.items(mine, loader_threads), sinks, total=len(mine),
                                batch_size=batch_size, orders=tuple(orders), progress=progress, desc="evaluate",
                                ranks=ranks)
    finally:
        if observed is not None:
            observed.observer = None
    ranks.barrier()
    if not ranks.is_main:
        return Evaluation(results=None, out_dir=out_dir)
    write_json_atomic(out_dir / "results.json", outcome["pq"], indent=2)
    measured = outcome.get("order_measures")
    if measured is not None:
        write_json_atomic(out_dir / "order_measures.json", measured, indent=2)
    differences = outcome["order_differences"]
    return Evaluation(outcome["pq"], differences["differences"], differences["most_different"], out_dir, measured)


def _observable(predictor: Any) -> Any:
    """The PyTorch predictor whose ``observer`` sees the detections (itself, or the one a wrapper such as
    the oracle predictor runs), or None (an ONNX model: its detections stay inside the runtime)."""
    inner = getattr(predictor, "predictor", predictor)
    return inner if hasattr(inner, "observer") else None
