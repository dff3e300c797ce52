"""A predictor that adds the oracle order (:mod:`oanet.evaluation.oracle`) to the score and SRM orders.

::

    predictor = OraclePredictor(Predictor.from_checkpoint(path), DepthTruth(split.instances_json))
    evaluate(predictor, split, out_dir, orders=predictor.orders)   # score_order, srm_order, oracle_order

One forward pass per image: the detections the model selected are pasted three times, ordered by
detection score, by the SRM ranking score and by the true depth of the instances they match. It needs
each image's id (to find its instances), which the inference loop passes; calling it on a bare image
is an error.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from oanet.base_predictor import BasePredictor, Fused
from oanet.engine.predictor import Predictor
from oanet.errors import DataError
from oanet.evaluation.oracle import IOU_THRESH, ORACLE, DepthTruth, oracle_scores
from oanet.result import ORDERS

ORACLE_ORDERS = (*ORDERS, ORACLE)


class OraclePredictor(BasePredictor):
    """``predictor``'s model and settings (threshold, fusion), fused in ``score``, ``srm`` and
    ``oracle`` order. ``truth`` holds the depth of the split's instances."""

    def __init__(self, predictor: Predictor, truth: DepthTruth, iou_thresh: float = IOU_THRESH) -> None:
        super().__init__(predictor.label_space, predictor.fusion, predictor.stuff_classes,
                         min_size=predictor.min_size, max_size=predictor.max_size, order="both")
        self.predictor = predictor
        self.truth = truth
        self.iou_thresh = float(iou_thresh)

    @property
    def orders(self) -> tuple[str, ...]:
        return ORACLE_ORDERS

    @property
    def model(self) -> torch.nn.Module:
        return self.predictor.model

    @property
    def cfg(self):
        return self.predictor.cfg

    @property
    def device(self) -> torch.device:
        return self.predictor.device

    def _fuse_batch(self, rgbs: Sequence[np.ndarray], orders: Sequence[str],
                    image_ids: Sequence[Any]) -> list[Fused]:
        from oanet.model.fusion import fuse

        if ORACLE in orders and any(image_id is None for image_id in image_ids):
            raise DataError("the oracle order needs each image's id (run it through oanet.engine.evaluate)")
        fused = []
        with torch.inference_mode():
            outputs = self.predictor.forward_arrays(rgbs)
            for output, image_id in zip(outputs, image_ids):
                extra = {ORACLE: self._oracle_scores(output, image_id)} if ORACLE in orders else {}
                fused.append(fuse(output, self.label_space, self.stuff_classes, self.fusion, orders, order_scores=extra))
        return [{order: (ids.cpu().numpy(), segments) for order, (ids, segments) in per_image.items()}
                for per_image in fused]

    def _oracle_scores(self, output: dict, image_id: Any) -> torch.Tensor:
        """One score per detection of ``output``: the selected ones in oracle order, 0 for the rest."""
        selected = output["selected"]
        gt_masks, gt_depth = self.truth.instances(image_id, output["masks"].device)
        if tuple(gt_masks.shape[-2:]) != tuple(output["masks"].shape[-2:]):
            raise DataError(f"{self.truth.path}: image {image_id} is {tuple(gt_masks.shape[-2:])} there, "
                            f"{tuple(output['masks'].shape[-2:])} as evaluated")
        scores = torch.zeros(output["scores"].shape, dtype=torch.float32, device=output["scores"].device)
        scores[selected] = oracle_scores(output["masks"][selected] > 0.5, output["scores"][selected],
                                         gt_masks, gt_depth, self.iou_thresh)
        return scores
