"""The result of a PQ evaluation: per-category statistics, the All/Things/Stuff summary, the COCO API's
table. No torch, no decoding here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

if TYPE_CHECKING:
    from oanet.evaluation.pq_inputs import Categories

# Rows of the per-image / accumulated statistics array, shape (4, number of categories).
IOU, TP, FP, FN = range(4)


def _summarise(stats: np.ndarray) -> dict[str, np.ndarray]:
    iou, tp, fp, fn = stats
    counted = tp + fp + fn > 0
    denominator = np.where(counted, tp + 0.5 * fp + 0.5 * fn, 1.0)
    return {
        "counted": counted,
        "pq": np.where(counted, iou / denominator, 0.0),
        "sq": np.where(tp > 0, iou / np.maximum(tp, 1), 0.0),
        "rq": np.where(counted, tp / denominator, 0.0),
    }


@dataclass(frozen=True)
class PQResult:
    """Accumulated statistics of an evaluation; ``to_dict()`` is the JSON of ``oanet pq --output``."""

    categories: Categories
    stats: np.ndarray  # (4, C): IoU sum, TP, FP, FN per category
    n_images: int

    def summary(self, isthing: Optional[bool] = None) -> dict[str, float | int]:
        """Mean PQ/SQ/RQ over the counted classes (TP+FP+FN > 0); all classes, things or stuff.

        With no counted class the means are 0.0 and n is 0 (where the COCO API divides by zero).
        """
        per = _summarise(self.stats)
        keep = per["counted"].copy()
        if isthing is not None:
            keep &= self.categories.isthing == isthing
        n = int(keep.sum())
        mean = (lambda v: float(v[keep].sum() / n)) if n else (lambda v: 0.0)
        return {"pq": mean(per["pq"]), "sq": mean(per["sq"]), "rq": mean(per["rq"]), "n": n}

    def per_class(self) -> dict[int, dict[str, float | int]]:
        """{COCO category id: {pq, sq, rq, tp, fp, fn}} for every GT category (zeros where never seen)."""
        per = _summarise(self.stats)
        return {
            int(cid): {
                "pq": float(per["pq"][k]),
                "sq": float(per["sq"][k]),
                "rq": float(per["rq"][k]),
                "tp": int(self.stats[TP, k]),
                "fp": int(self.stats[FP, k]),
                "fn": int(self.stats[FN, k]),
            }
            for k, cid in enumerate(self.categories.ids)
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "All": self.summary(None),
            "Things": self.summary(True),
            "Stuff": self.summary(False),
            "per_class": {str(cid): v for cid, v in self.per_class().items()},
        }


def format_table(result: PQResult) -> str:
    """The COCO API's summary table: PQ, SQ, RQ (x100, 2 decimals as `oanet evaluate`) and N for All,
    Things and Stuff."""
    lines = [f"{'':10s}| {'PQ':>6s}  {'SQ':>6s}  {'RQ':>6s} {'N':>5s}", "-" * 41]
    for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
        s = result.summary(isthing)
        lines.append(f"{name:10s}| {100 * s['pq']:6.2f}  {100 * s['sq']:6.2f}  {100 * s['rq']:6.2f} {s['n']:5d}")
    return "\n".join(lines)


def format_per_class_table(result: PQResult) -> str:
    """One row per counted class: id, name, kind, PQ/SQ/RQ (x100), TP/FP/FN."""
    lines = [f"{'id':>4s}  {'name':24s} {'kind':5s} | {'PQ':>6s}  {'SQ':>6s}  {'RQ':>6s} | {'TP':>6s} {'FP':>6s} {'FN':>6s}"]
    lines.append("-" * len(lines[0]))
    cats = result.categories
    for k, (cid, v) in enumerate(result.per_class().items()):
        if v["tp"] + v["fp"] + v["fn"] == 0:
            continue
        kind = "thing" if cats.isthing[k] else "stuff"
        lines.append(
            f"{cid:4d}  {cats.names[k][:24]:24s} {kind:5s} | {100 * v['pq']:6.2f}  {100 * v['sq']:6.2f}  "
            f"{100 * v['rq']:6.2f} | {v['tp']:6d} {v['fp']:6d} {v['fn']:6d}"
        )
    return "\n".join(lines)
