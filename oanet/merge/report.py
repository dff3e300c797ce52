"""PQ of each merge order against a ground truth, with the SRM plug-in's order measures, and its table."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from oanet.evaluation.order_measures import format_order_measures
from oanet.orders import ORDER_TITLES


def evaluate_merge(summary: dict, measures: Any, gt_json: str, gt_dir: str, out_dir: Path,
                   orders: Sequence[str]) -> dict:
    """``{"pq": {order: All/Things/Stuff}, "pairs", "pairwise_order_accuracy", "pq_th_by_occlusion"}``."""
    from oanet.evaluation.pq import pq_compute

    pq = {}
    for o in orders:
        json_path = Path(summary["outputs"][o])
        result = pq_compute(gt_json, gt_dir, str(json_path), str(json_path.parent / "panoptic"), progress=False)
        pq[o] = {k: v for k, v in result.to_dict().items() if k != "per_class"}
    return {"pq": pq, **measures.summary()}


def print_merge_report(evaluation: dict, orders: Sequence[str], log=print) -> None:
    """The PQ table per order, the pairwise order accuracy and PQ_th per occlusion level."""
    head = f"{'':22}" + "".join(f"{ORDER_TITLES.get(o, o):>26}" for o in orders)
    log(head)
    for part in ("All", "Things", "Stuff"):
        for metric in ("pq", "sq", "rq"):
            label = f"{metric.upper()}_{part[:2].lower()}" if part != "All" else metric.upper()
            log(f"{label:22}" + "".join(f"{100 * evaluation['pq'][o][part][metric]:26.2f}" for o in orders))
    log(format_order_measures(evaluation, orders, ORDER_TITLES).split("\n", 1)[1])
