"""Panoptic quality, equal to the official COCO panoptic API (``oanet pq``). No torch here.

::

    from oanet.evaluation import format_table, pq_compute
    result = pq_compute("gt.json", "gt_pngs/", "pred.json", "pred_pngs/")
    print(format_table(result))
"""

from oanet.evaluation.differences import panoptic_map_difference
from oanet.evaluation.pq import PQResult, evaluate_image, format_per_class_table, format_table, pq_compute

__all__ = ["pq_compute", "PQResult", "evaluate_image", "format_table", "format_per_class_table",
           "panoptic_map_difference"]
