"""``oanet convert``: other datasets' label formats -> COCO panoptic (JSON + RGB id PNGs + a report). No torch.

One module per source builds a :class:`Plan` (categories, one task per image, the per-image
conversion); :func:`run_plan` runs any plan, in parallel, atomically per file and resumably
(docs/data.md, "From other formats")::

    from oanet.convert import cityscapes, run_plan
    report = run_plan(cityscapes.plan("datasets/cityscapes", "val"), "datasets/cityscapes_panoptic")
"""

from oanet.convert import ade20k, cityscapes, coco_detection, semantic_instance, two_channel
from oanet.convert.runner import Converted, ImageTask, Plan, run_plan
from oanet.convert.segments import KeySegments, key_segments

__all__ = ["run_plan", "Plan", "ImageTask", "Converted", "key_segments", "KeySegments",
           "cityscapes", "ade20k", "two_channel", "semantic_instance", "coco_detection"]
