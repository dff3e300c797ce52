"""``merge_panoptic``: any detector's instances + a semantic prediction -> a panoptic segmentation.

The rules are those of panopticapi's ``combine_semantic_and_instance_predictions.py``, so that
``order="score"`` gives its segments and pixels exactly:

1. instances with ``score >= score_thresh`` are pasted, first on top, in descending score order (ties
   in the input's order); an empty mask is skipped;
2. an instance whose pixels already taken are more than ``overlap_thresh`` of its area is dropped;
3. each stuff class of the semantic prediction takes its pixels that no instance took, if they are at
   least ``stuff_area`` pixels.

``order="srm"`` changes only the order of step 1: instances are pasted by the SRM's Eq. 3 ranking
scores (a :class:`~oanet.srm.SpatialRanker`), class by class as OANet's fusion does (within one class
the detection score decides, since the SRM's class channels cannot tell two instances apart). Both
run through OANet's own fusion (:func:`oanet.model.fusion.panoptic_fusion`), on the masks' device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from oanet.config import FusionConfig
from oanet.data.labels import LabelSpace
from oanet.errors import ConfigError, DataError
from oanet.merge.inputs import stuff_indices
from oanet.merge.settings import MergeSettings  # noqa: F401  (re-exported: oanet.merge.MergeSettings)
from oanet.model.fusion import panoptic_fusion, paste_order
from oanet.orders import ORDERS

MERGE_ORDERS = ORDERS  # ("score", "srm")


@dataclass
class Instances:
    """One image's detections: ``masks`` ``N x H x W`` (bool / 0-1), ``category_ids`` and ``scores`` ``N``."""

    masks: Any
    category_ids: Any
    scores: Any

    @classmethod
    def from_results(cls, rows: Sequence[dict], height: int, width: int, where: str = "") -> "Instances":
        """From COCO instance results of one image (dicts with category_id, score, RLE segmentation)."""
        from oanet.data.panoptic_json import ImageInfo
        from oanet.merge.inputs import decode_rles

        info = ImageInfo(rows[0]["image_id"] if rows else 0, where or "<image>", width, height)
        masks = decode_rles(rows, info, where or "instances")
        return cls(masks, np.array([r["category_id"] for r in rows], dtype=np.int64),
                   np.array([r["score"] for r in rows], dtype=np.float64))


def _as_tensor(x: Any, dtype: Optional[torch.dtype] = None, device: Any = None) -> Tensor:
    t = x if isinstance(x, Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    return t.to(device=device, dtype=dtype) if (dtype or device) else t


def selected_detections(instances: Instances, label_space: LabelSpace, score_thresh: float, device: Any = "cpu",
                        where: str = "") -> dict[str, Tensor]:
    """The detections a merge pastes (score >= threshold), in input order: masks, thing indices, scores."""
    scores = np.asarray(instances.scores, dtype=np.float64).reshape(-1)
    category_ids = np.asarray(instances.category_ids, dtype=np.int64).reshape(-1)
    masks = instances.masks
    if masks.ndim != 3 or masks.shape[0] != len(scores) or len(category_ids) != len(scores):
        raise DataError(f"{where or 'instances'}: {masks.shape[0] if masks.ndim == 3 else '?'} masks, "
                        f"{len(category_ids)} category ids and {len(scores)} scores")
    keep = np.flatnonzero(scores >= score_thresh)
    thing = label_space.thing_index(category_ids[keep], where)
    if (thing < 0).any():
        raise DataError(f"{where or 'instances'}: stuff category id(s) {sorted(set(category_ids[keep][thing < 0].tolist()))} "
                        "among the instances")
    if isinstance(masks, Tensor):
        binary = (masks[torch.from_numpy(keep).to(masks.device)] if len(keep) < len(scores) else masks) != 0
    else:
        # One pass over a decoder's (possibly strided) output into a C-ordered bool array; no copy first.
        binary = torch.from_numpy((masks[keep] if len(keep) < len(scores) else masks) != 0)
    return {"masks": binary.to(device), "labels": torch.from_numpy(thing).to(device),
            "scores": torch.from_numpy(scores[keep]).to(device)}


def merge_panoptic(instances: Instances | dict, semantic: Any, *, order: str = "score", ranker: Any = None,
                   label_space: Optional[LabelSpace] = None, settings: Optional[MergeSettings] = None,
                   where: str = "") -> Any:
    """Merge one image: ``(ids H x W int32 tensor, segments)``, or ``{order: (ids, segments)}`` for ``order="both"``.

    ``instances``: an :class:`Instances` (or a dict with its fields); ``semantic``: the ``H x W`` map
    of category ids of a semantic model (0 and 255 are void; thing ids are ignored: instances own
    things);
    ``ranker``: the :class:`~oanet.srm.SpatialRanker` for ``"srm"`` (its label space is used when
    ``label_space`` is None). Segments carry ``id``, ``category_id``, ``isthing``, ``score``,
    ``ranking_score`` (the SRM's, or None) and ``area``.
    """
    orders = MERGE_ORDERS if order == "both" else (order,)
    if any(o not in MERGE_ORDERS for o in orders):
        raise ConfigError(f"order must be score, srm or both, got {order!r}")
    if "srm" in orders and ranker is None:
        raise ConfigError("the srm order needs a ranker (oanet.srm.SpatialRanker.from_file(...))")
    label_space = label_space or (ranker.label_space if ranker is not None else None)
    if label_space is None:
        raise ConfigError("merge_panoptic needs a label_space (or a ranker that carries one)")
    settings = settings or MergeSettings()
    if isinstance(instances, dict):
        instances = Instances(**instances)
    device = ranker.device if ranker is not None else "cpu"
    det = selected_detections(instances, label_space, settings.score_thresh, device, where)
    ranking = ranker.rank_channels(det["masks"], det["labels"]) if ranker is not None and "srm" in orders else None
    semantic = stuff_indices(label_space, semantic.cpu().numpy() if isinstance(semantic, Tensor) else semantic,
                             where or "semantic")
    fused = fuse_selected(det, semantic, orders, ranking, label_space, settings, where)
    return fused if order == "both" else fused[order]


def fuse_selected(det: dict[str, Tensor], semantic: Any, orders: Sequence[str], ranking: Optional[Tensor],
                  label_space: LabelSpace, settings: MergeSettings, where: str = "") -> dict:
    """``{order: (ids, segments)}`` of the detections :func:`selected_detections` chose; ``semantic``
    is ``H x W`` stuff indices of ``label_space``, -1 for void (:func:`oanet.merge.inputs.stuff_indices`)."""
    sem = _as_tensor(semantic, torch.long, det["masks"].device)
    if tuple(sem.shape) != tuple(det["masks"].shape[-2:]):
        raise DataError(f"{where or 'semantic'}: semantic map is {tuple(sem.shape)}, masks are {tuple(det['masks'].shape[-2:])}")
    # Stuff labels are given as stuff indices; in the "stuff" channel space stuff s is channel 1 + s.
    sem_channels = torch.where(sem >= 0, sem + 1, -1)
    cfg = FusionConfig(score_thresh=settings.score_thresh)
    fused = {}
    for o in orders:
        scores = det["scores"] if o == "score" else ranking
        fused[o] = panoptic_fusion(det["masks"], det["labels"], det["scores"], scores, sem_channels, label_space, "stuff",
                                   cfg, ranking_scores=ranking, per_class=(o == "srm"),
                                   max_covered=settings.overlap_thresh, min_stuff_area=settings.stuff_area)
    return fused


def pasting_order(det: dict[str, Tensor], order: str, ranking: Optional[Tensor]) -> Tensor:
    """The indices of ``det`` (see :func:`selected_detections`) in the order ``order`` pastes them."""
    if order == "score":
        return paste_order(det["labels"], det["scores"], det["scores"], per_class=False)
    return paste_order(det["labels"], det["scores"], ranking, per_class=True)
