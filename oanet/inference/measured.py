"""The order measures of :mod:`oanet.evaluation.occlusion` in ``oanet evaluate``, from the network's
own detections: an observer of the PyTorch predictor (it sees each image's output before its id maps
leave the device) and a sink that gathers the counts of every rank."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch

from oanet.evaluation.order_measures import OrderMeasures
from oanet.inference.loop import Ranks
from oanet.model.fusion import paste_order
from oanet.orders import ORDER_SCORES, ORDERS


class OrderMeasuresObserver:
    """``predictor.observer``: hands each image's selected detections (binary masks at the image's size,
    category ids, their position in each order's pasting) and fused maps to ``measures``."""

    def __init__(self, measures: OrderMeasures, label_space: Any, orders: Sequence[str] = ORDERS) -> None:
        self.measures = measures
        self.thing_ids = np.asarray(label_space.thing_ids)
        self.orders = tuple(orders)

    def __call__(self, image_id: Any, output: dict, fused: dict) -> None:
        keep = output["selected"].nonzero().squeeze(1)
        labels, scores = output["labels"][keep], output["scores"][keep]
        ranks = {}
        for o in self.orders:
            # The pasting order of oanet.model.fusion.fuse for this order, as positions (0 = on top).
            order = paste_order(labels, scores, output[ORDER_SCORES[o]][keep])
            position = torch.empty_like(order)
            position[order] = torch.arange(len(order), device=order.device)
            ranks[o] = position.cpu().numpy()
        masks = (output["masks"][keep] > 0.5).cpu().numpy()
        maps = {o: (fused[o][0].cpu().numpy(), fused[o][1]) for o in self.orders}
        self.measures.add_image(image_id, masks, self.thing_ids[labels.cpu().numpy()], ranks, maps)


class OrderMeasuresSink:
    """An inference-loop sink that does nothing per image (the observer counts) and sums every rank's
    counts at the end: ``finalize`` returns :meth:`OrderMeasures.summary` on rank 0."""

    name = "order_measures"

    def __init__(self, measures: OrderMeasures) -> None:
        self.measures = measures

    def process(self, item: Any, results: Any) -> None:
        pass

    def finalize(self, ranks: Ranks) -> Optional[dict]:
        gathered = ranks.gather(self.measures.counts())
        if not ranks.is_main:
            return None
        for counts in gathered[1:]:
            self.measures.add_counts(counts)
        return self.measures.summary()
