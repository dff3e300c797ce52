"""The oracle order: a model's own detections pasted in the true depth order.

Only a benchmark that knows who lies on top of whom can give it: the synthetic occlusion benchmark's
instances JSON has, per instance, ``depth`` (paint rank, 0 = farthest) and ``segment_id`` (its
segment in the panoptic PNG). The detections the model selected are matched one-to-one to the
non-crowd ground-truth instances by mask IoU (amodal prediction vs amodal annotation, greedily by
decreasing IoU, IoU > ``iou_thresh``, class-agnostic: an object's depth does not depend on the label
the detector gave it). The matched detections take the score-order positions of the matched
detections, re-ordered by their instance's depth (nearest on top); unmatched detections keep their
score-order position. Pasting in that order is what the best ordering module could do with these
detections, so ``(PQ_th(SRM) - PQ_th(score)) / (PQ_th(oracle) - PQ_th(score))`` is the share of the
attainable ordering gain the SRM captures. (It is not a strict maximum of PQ over all orders: an
order that buries a false positive can score higher. It is the order of the scene.)

:class:`OraclePredictor` adds this order to a predictor's score and SRM orders, in one forward pass::

    predictor = OraclePredictor(Predictor.from_checkpoint(path), DepthTruth(split.instances_json))
    evaluate(predictor, split, out_dir, orders=predictor.orders)   # score_order, srm_order, oracle_order

It needs each image's id (to find its instances), which the inference loop passes; calling it on a
bare image is an error.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from oanet.errors import DataError
from oanet.fileio import read_json
from oanet.inference.base import BasePredictor, Fused
from oanet.inference.torch_predictor import Predictor
from oanet.orders import ORACLE, ORDERS

IOU_THRESH = 0.5
ORACLE_ORDERS = (*ORDERS, ORACLE)


# --------------------------------------------------------------------------------------------
# matching and ordering (pure)


def mask_iou(pred: Tensor, gt: Tensor) -> Tensor:
    """``N x G`` IoU of binary masks ``pred`` (``N x H x W``) and ``gt`` (``G x H x W``), on their device."""
    n, g = pred.shape[0], gt.shape[0]
    if n == 0 or g == 0:
        return torch.zeros((n, g), device=pred.device)
    p = pred.reshape(n, -1).float()
    t = gt.reshape(g, -1).float()
    inter = p @ t.T
    union = p.sum(1)[:, None] + t.sum(1)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))


def greedy_match(iou: np.ndarray, thresh: float = IOU_THRESH) -> np.ndarray:
    """One-to-one matching of rows (detections) to columns (instances): the pair of largest IoU
    first, then the largest among the rows and columns still free, while IoU > ``thresh``. Returns
    the matched column per row, -1 for none. Ties go to the lower row, then the lower column."""
    iou = np.asarray(iou, dtype=np.float64)
    match = np.full(iou.shape[0], -1, dtype=np.int64)
    if iou.size == 0:
        return match
    rows, cols = np.nonzero(iou > thresh)
    # The matrix is small (detections x instances of one image): a loop over candidate pairs.
    taken_cols = set()
    for k in np.lexsort((cols, rows, -iou[rows, cols])):
        r, c = int(rows[k]), int(cols[k])
        if match[r] < 0 and c not in taken_cols:
            match[r] = c
            taken_cols.add(c)
    return match


def depth_order_scores(det_scores: Tensor, matched_depth: Tensor, matched: Tensor) -> Tensor:
    """Order scores (higher = pasted on top) for the oracle order.

    ``det_scores`` (N): detection scores; ``matched`` (N bool): whether detection i matched an
    instance; ``matched_depth`` (N): that instance's depth (higher = nearer; ignored where not
    matched). In the score order (detection score descending, stable), the positions of matched
    detections are refilled with the matched detections sorted by depth (nearest first, ties by
    detection score); unmatched detections stay where they are. Returns ``N - position``.
    """
    n = det_scores.shape[0]
    if n == 0:
        return det_scores.new_zeros((0,))
    by_score = torch.sort(det_scores, descending=True, stable=True).indices
    matched_by_score = by_score[matched[by_score]]
    nearest_first = matched_by_score[
        torch.sort(matched_depth[matched_by_score].float(), descending=True, stable=True).indices
    ]
    sequence = by_score.clone()
    sequence[matched[by_score]] = nearest_first
    scores = torch.empty(n, dtype=torch.float32, device=det_scores.device)
    scores[sequence] = torch.arange(n, 0, -1, dtype=torch.float32, device=det_scores.device)
    return scores


def oracle_scores(pred_masks: Tensor, det_scores: Tensor, gt_masks: Tensor, gt_depth: Tensor,
                  iou_thresh: float = IOU_THRESH) -> Tensor:
    """The oracle order's scores for detections with binary ``pred_masks`` (``N x H x W``) and
    ``det_scores`` (N), given the image's non-crowd instances ``gt_masks`` (``G x H x W``) and
    ``gt_depth`` (G, 0 = farthest). See :func:`greedy_match` and :func:`depth_order_scores`."""
    if tuple(pred_masks.shape[-2:]) != tuple(gt_masks.shape[-2:]):
        raise ValueError(f"masks are {tuple(pred_masks.shape[-2:])}, instances {tuple(gt_masks.shape[-2:])}")
    iou = mask_iou(pred_masks, gt_masks.to(pred_masks.device))
    match = torch.from_numpy(greedy_match(iou.cpu().numpy(), iou_thresh)).to(det_scores.device)
    depth = torch.zeros(det_scores.shape, dtype=torch.float32, device=det_scores.device)
    if len(gt_depth):
        depth = gt_depth.to(det_scores.device, torch.float32)[match.clamp(min=0)]
    return depth_order_scores(det_scores, depth, match >= 0)


# --------------------------------------------------------------------------------------------
# the ground truth's depth


class DepthTruth:
    """The non-crowd instances of a split with their depth, read from a COCO instances JSON that has
    ``depth`` per annotation (the synthetic benchmark's); masks are decoded per image on demand."""

    def __init__(self, instances_json: str | Path) -> None:
        self.path = Path(instances_json)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: instances JSON not found (the oracle order needs it)")
        data = read_json(self.path, "instances")
        if not isinstance(data, dict) or not isinstance(data.get("annotations"), list) \
                or not isinstance(data.get("images"), list):
            raise DataError(f"{self.path}: not a COCO instances JSON (needs images and annotations)")
        self.sizes = {img["id"]: (int(img["height"]), int(img["width"])) for img in data["images"]}
        self._per_image: dict[Any, list] = {image_id: [] for image_id in self.sizes}
        for ann in data["annotations"]:
            if ann.get("iscrowd", 0):
                continue
            if "depth" not in ann:
                raise DataError(
                    f"{self.path}: annotation {ann.get('id')} has no 'depth'; the oracle order needs the "
                    "synthetic benchmark's instances JSON (`oanet synth`)"
                )
            if ann.get("image_id") not in self._per_image:
                raise DataError(f"{self.path}: annotation {ann.get('id')} names unknown image {ann.get('image_id')!r}")
            self._per_image[ann["image_id"]].append((ann["segmentation"], float(ann["depth"])))

    def instances(self, image_id: Any, device: Any = "cpu") -> tuple[Tensor, Tensor]:
        """``(masks bool G x H x W, depth float G)`` of the image's non-crowd instances."""
        from pycocotools import mask as mask_utils

        if image_id not in self._per_image:
            raise DataError(f"{self.path}: no image with id {image_id!r} (the oracle order needs its instances)")
        height, width = self.sizes[image_id]
        anns = self._per_image[image_id]
        if not anns:
            return torch.zeros((0, height, width), dtype=torch.bool, device=device), torch.zeros(0, device=device)
        try:
            with warnings.catch_warnings():  # pycocotools' numpy-2 copy= deprecation notice
                warnings.simplefilter("ignore", DeprecationWarning)
                masks = mask_utils.decode([segmentation for segmentation, _ in anns])  # H x W x G
        except Exception as exc:  # pycocotools raises bare Exceptions on bad RLE
            raise DataError(f"{self.path}: image {image_id}: cannot decode a segmentation ({exc})") from None
        if masks.shape[:2] != (height, width):
            raise DataError(f"{self.path}: image {image_id}: masks are {masks.shape[1]}x{masks.shape[0]}, "
                            f"the image {width}x{height}")
        masks = torch.from_numpy(np.ascontiguousarray(masks.transpose(2, 0, 1))).to(device).bool()
        depth = torch.tensor([d for _, d in anns], dtype=torch.float32, device=device)
        return masks, depth


# --------------------------------------------------------------------------------------------
# the predictor


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
            raise DataError("the oracle order needs each image's id (run it through oanet.inference.evaluate)")
        fused = []
        with torch.inference_mode():
            outputs = self.predictor.forward_arrays(rgbs)
            for output, image_id in zip(outputs, image_ids):
                extra = {ORACLE: self._oracle_scores(output, image_id)} if ORACLE in orders else {}
                fused.append(fuse(output, self.label_space, self.stuff_classes, self.fusion, orders, order_scores=extra))
                if self.predictor.observer is not None:
                    self.predictor.observer(image_id, output, fused[-1])
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
