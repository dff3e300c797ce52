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
        self.per_image: dict = {}  # image id -> what it added to the counts (a resumed run adds it back)

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
        before = self.measures.counts()
        self.measures.add_image(image_id, masks, self.thing_ids[labels.cpu().numpy()], ranks, maps)
        self.per_image[image_id] = counts_difference(self.measures.counts(), before)


def counts_difference(after: dict, before: dict) -> dict:
    """``after - before`` of two :meth:`OrderMeasures.counts`: one image's share."""
    return {"images": after["images"] - before["images"], "pairs": after["pairs"] - before["pairs"],
            "agree": {o: after["agree"][o] - before["agree"][o] for o in after["agree"]},
            "levels": {o: [[a - b for a, b in zip(ka, kb)] for ka, kb in zip(after["levels"][o], before["levels"][o])]
                       for o in after["levels"]}}


class OrderMeasuresSink:
    """An inference-loop sink that does nothing per image (the observer counts) and sums every rank's
    counts at the end: ``finalize`` returns :meth:`OrderMeasures.summary` on rank 0."""

    name = "order_measures"

    def __init__(self, measures: OrderMeasures, observer: Optional[OrderMeasuresObserver] = None) -> None:
        self.measures = measures
        self.observer = observer  # with it, each image's counts are kept for a resumed run

    @property
    def resumable(self) -> bool:
        return self.observer is not None

    def resume_state(self, item: Any) -> Optional[dict]:
        return self.observer.per_image.pop(item.image_id, None)

    def resume_restore(self, index: int, state: Optional[dict]) -> None:
        if state is not None:
            self.measures.add_counts(state)

    def process(self, item: Any, results: Any) -> None:
        pass

    def finalize(self, ranks: Ranks) -> Optional[dict]:
        gathered = ranks.gather(self.measures.counts())
        if not ranks.is_main:
            return None
        for counts in gathered[1:]:
            self.measures.add_counts(counts)
        return self.measures.summary()
