"""OANet: Mask R-CNN instance branch + stuff branch on a shared FPN, plus the spatial ranking module.

``model(images, targets)`` in training mode returns the seven losses of Eq. 1; in eval mode
``model(images)`` returns one dict per image (docs/design.md), at the original image size.
The instance branch is torchvision's RegionProposalNetwork + RoIHeads, composed, not rewritten;
labels cross its boundary as thing indices 0..T-1 and get torchvision's background offset inside.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads, maskrcnn_inference
from torchvision.models.detection.transform import resize_boxes
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead

from oanet.config import ModelConfig, RoIHeadsConfig, RPNConfig
from oanet.errors import ConfigError
from oanet.model.autocast import full_precision, keep_geometry_float32
from oanet.model.backbone import OANetBackbone
from oanet.model.poolers import build_roi_pool
from oanet.model.srm import (
    SpatialRankingModule,
    occupancy_map,
    paste_masks_at_stride,
    ranking_scores,
    subsample,
)
from oanet.data.labels import num_channels
from oanet.model.stuff_head import StuffHead
from oanet.model.stuff_labels import feature_coordinates, resample_to_original, stuff_labels  # noqa: F401 (re-exported)
from oanet.model.transform import PanopticTransform

LOSS_KEYS = ("rpn_cls", "rpn_bbox", "cls", "bbox", "mask", "seg", "srm")
_TORCHVISION_LOSS_NAMES = {
    "loss_objectness": "rpn_cls",
    "loss_rpn_box_reg": "rpn_bbox",
    "loss_classifier": "cls",
    "loss_box_reg": "bbox",
    "loss_mask": "mask",
}
STUFF_STRIDE = 4  # the stuff head predicts at P2's stride


def build_rpn(cfg: RPNConfig, in_channels: int) -> RegionProposalNetwork:
    if len(cfg.anchor_sizes) != 5:
        raise ConfigError(f"rpn.anchor_sizes: need one size per FPN level P2-P6 (5), got {list(cfg.anchor_sizes)}")
    anchor_generator = AnchorGenerator(
        sizes=tuple((int(s),) for s in cfg.anchor_sizes),
        aspect_ratios=(tuple(float(a) for a in cfg.aspect_ratios),) * len(cfg.anchor_sizes),
    )
    head = RPNHead(in_channels, anchor_generator.num_anchors_per_location()[0])
    return RegionProposalNetwork(
        anchor_generator,
        head,
        fg_iou_thresh=cfg.fg_iou_thresh,
        bg_iou_thresh=cfg.bg_iou_thresh,
        batch_size_per_image=cfg.batch_size_per_image,
        positive_fraction=cfg.positive_fraction,
        pre_nms_top_n={"training": cfg.pre_nms_top_n_train, "testing": cfg.pre_nms_top_n_test},
        post_nms_top_n={"training": cfg.post_nms_top_n_train, "testing": cfg.post_nms_top_n_test},
        nms_thresh=cfg.nms_thresh,
    )


def build_roi_heads(cfg: RoIHeadsConfig, in_channels: int, num_thing_classes: int) -> RoIHeads:
    num_classes = num_thing_classes + 1  # + background, torchvision's class 0
    box_roi_pool = build_roi_pool(7, cfg.pooler_sampling_ratio, cfg.pooler_aligned)
    box_head = TwoMLPHead(in_channels * 7 * 7, cfg.box_representation_size)
    box_predictor = FastRCNNPredictor(cfg.box_representation_size, num_classes)
    mask_roi_pool = build_roi_pool(14, cfg.pooler_sampling_ratio, cfg.pooler_aligned)
    mask_head = MaskRCNNHeads(in_channels, [cfg.mask_head_channels] * 4, 1)
    mask_predictor = MaskRCNNPredictor(cfg.mask_head_channels, cfg.mask_head_channels, num_classes)
    return RoIHeads(
        box_roi_pool,
        box_head,
        box_predictor,
        fg_iou_thresh=cfg.fg_iou_thresh,
        bg_iou_thresh=cfg.bg_iou_thresh,
        batch_size_per_image=cfg.batch_size_per_image,
        positive_fraction=cfg.positive_fraction,
        bbox_reg_weights=None,
        score_thresh=cfg.score_thresh,
        nms_thresh=cfg.nms_thresh,
        detections_per_img=cfg.detections_per_img,
        mask_roi_pool=mask_roi_pool,
        mask_head=mask_head,
        mask_predictor=mask_predictor,
    )


class OANet(nn.Module):
    """The end-to-end panoptic network of the paper (Fig. 2), composed of its parts as torchvision's
    ``GeneralizedRCNN`` is: any module with the same interface can take the place of one.

    * ``transform``: a :class:`~oanet.model.transform.PanopticTransform` (resize, normalise, batch);
    * ``backbone``: ``images -> (instance features, stuff features)``, two ordered dicts of FPN levels
      (the same dict when the branches share the FPN) with an ``out_channels`` attribute;
    * ``rpn``, ``roi_heads``: torchvision's ``RegionProposalNetwork`` and ``RoIHeads`` (with a mask
      head), over ``num_thing_classes + 1`` classes (torchvision's background is class 0);
    * ``stuff_head``: stuff features -> stride-4 logits, with a ``loss(logits, targets)`` method;
    * ``srm``: a :class:`~oanet.model.srm.SpatialRankingModule`, or None (rank by detection score).

    ``score_thresh`` is the default detection score from which a detection is selected (ranked and
    pasted). :meth:`from_config` (or :func:`build_model`) builds every part from a ``ModelConfig``.
    """

    def __init__(
        self,
        *,
        transform: nn.Module,
        backbone: nn.Module,
        rpn: nn.Module,
        roi_heads: nn.Module,
        stuff_head: nn.Module,
        srm: Optional[nn.Module],
        num_thing_classes: int,
        num_stuff_classes: int,
        score_thresh: float = 0.5,
    ) -> None:
        super().__init__()
        if num_thing_classes < 1:
            raise ConfigError("model.num_thing_classes must be >= 1 (it is filled from the dataset's categories)")
        if num_stuff_classes < 0:
            raise ConfigError("model.num_stuff_classes must be >= 0")
        self.cfg: Optional[ModelConfig] = None  # the config it was built from (from_config), if any
        self.num_thing_classes = int(num_thing_classes)
        self.num_stuff_classes = int(num_stuff_classes)
        self.score_thresh = float(score_thresh)
        self.transform = transform
        self.backbone = backbone
        self.rpn = rpn
        self.roi_heads = roi_heads
        self.stuff_head = stuff_head
        self.srm = srm

    @classmethod
    def from_config(cls, cfg: ModelConfig) -> "OANet":
        """Every part as ``cfg`` describes it (the paper's network; docs/model.md)."""
        if cfg.num_thing_classes < 1:
            raise ConfigError("model.num_thing_classes must be >= 1 (it is filled from the dataset's categories)")
        transform = PanopticTransform(
            min_size=tuple(int(s) for s in cfg.min_size),
            max_size=cfg.max_size,
            image_mean=list(cfg.pixel_mean),
            image_std=list(cfg.pixel_std),
            size_divisible=32,
            input_format=cfg.input_format,
            input_scale=cfg.input_scale,
        )
        backbone = OANetBackbone(cfg.backbone, cfg.sharing)
        channels = backbone.out_channels
        rpn = build_rpn(cfg.rpn, channels)
        roi_heads = build_roi_heads(cfg.roi_heads, channels, cfg.num_thing_classes)
        keep_geometry_float32(rpn, roi_heads)  # under autocast (docs/model.md)
        # Parts are made in this order so that a seed gives the same initial weights as ever (the
        # stuff head before the SRM: a network without the SRM starts from the same weights).
        try:
            stuff_head = StuffHead(channels, num_channels(cfg.num_thing_classes, cfg.num_stuff_classes,
                                                          cfg.stuff_head.classes), cfg.stuff_head)
            srm = (SpatialRankingModule(cfg.num_thing_classes, cfg.srm.kernel, cfg.srm.stride, cfg.srm.loss_weight)
                   if cfg.srm.enabled else None)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        model = cls(transform=transform, backbone=backbone, rpn=rpn, roi_heads=roi_heads, stuff_head=stuff_head, srm=srm,
                    num_thing_classes=cfg.num_thing_classes, num_stuff_classes=cfg.num_stuff_classes,
                    score_thresh=cfg.fusion.score_thresh)
        model.cfg = cfg
        return model

    # ------------------------------------------------------------------------------------------
    def forward(
        self, images: list[Tensor], targets: Optional[list[dict]] = None, *, score_thresh: Optional[float] = None,
        full_size: bool = True,
    ):
        """Training: ``(images, targets) -> losses``. Inference: ``images -> [dict per image]``.

        ``score_thresh`` (inference; default ``self.score_thresh``) is the detection score from
        which a detection is *selected*: ranked by the SRM and pasted by fusion. It is an argument
        here, and fusion reads the outcome (``selected``) from the output, so the two can never
        disagree about which detections take part.

        ``full_size=False`` (inference) returns nothing at the original size: the selected detections'
        RoI masks (``mask_probs``, ``N x M x M``, zero for the others: the mask head runs on the
        selected ones only) and the stuff logits, for :func:`oanet.model.grid_fusion.fuse_grid`, instead
        of ``masks`` and ``sem_seg_labels`` at the original size (docs/design.md).
        """
        if self.training:
            if targets is None:
                raise ValueError("OANet in training mode needs targets")
            return self._forward_train(images, targets)
        thresh = self.score_thresh if score_thresh is None else float(score_thresh)
        return self._forward_inference(images, thresh, full_size)

    def _check_and_offset_targets(self, targets: list[dict]) -> list[dict]:
        required = ["boxes", "labels", "masks", "sem_seg"] + (["srm"] if self.srm is not None else [])
        out = []
        for i, target in enumerate(targets):
            missing = [k for k in required if k not in target]
            if missing:
                raise ValueError(f"target {i} lacks {', '.join(missing)} (see docs/design.md)")
            boxes = target["boxes"]
            if boxes.numel() and bool((boxes[:, 2:] <= boxes[:, :2]).any()):
                raise ValueError(f"target {i} has a box with non-positive width or height")
            # Shallow copy: the caller's targets are not modified.
            out.append(dict(target, labels=target["labels"] + 1))
        return out

    def _forward_train(self, images: list[Tensor], targets: list[dict]) -> dict[str, Tensor]:
        targets = self._check_and_offset_targets(targets)
        image_list, targets = self.transform(images, targets)
        instance_features, stuff_features = self.backbone(image_list.tensors)

        proposals, rpn_losses = self.rpn(image_list, instance_features, targets)
        _, roi_losses = self.roi_heads(instance_features, proposals, image_list.image_sizes, targets)
        losses = {_TORCHVISION_LOSS_NAMES[k]: v for k, v in {**rpn_losses, **roi_losses}.items()}

        stuff_logits = self.stuff_head(stuff_features)
        losses["seg"] = self.stuff_head.loss(stuff_logits, torch.stack([t["sem_seg"] for t in targets]))

        if self.srm is not None:
            stride = self.srm.stride
            occupancy = torch.stack(
                [
                    occupancy_map(subsample(t["masks"], stride), t["labels"] - 1, self.num_thing_classes)
                    for t in targets
                ]
            )
            srm_targets = subsample(torch.stack([t["srm"] for t in targets]), stride)
            losses["srm"] = self.srm.loss(self.srm(occupancy), srm_targets)
        else:
            # Kept so the loss dict always has the same keys; nothing to train.
            losses["srm"] = stuff_logits.new_zeros(())
        return {k: losses[k] for k in LOSS_KEYS}

    @torch.no_grad()
    def _forward_inference(self, images: list[Tensor], score_thresh: float, full_size: bool) -> list[dict]:
        original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        image_list, _ = self.transform(images)
        instance_features, stuff_features = self.backbone(image_list.tensors)
        proposals, _ = self.rpn(image_list, instance_features)
        if full_size:
            detections, _ = self.roi_heads(instance_features, proposals, image_list.image_sizes)
        else:
            detections = detect_selected(self.roi_heads, instance_features, proposals, image_list.image_sizes,
                                         score_thresh)
        stuff_logits = self.stuff_head(stuff_features)

        for det in detections:
            det["labels"] = det["labels"] - 1
        padded = tuple(image_list.tensors.shape[-2:])
        selected = [det["scores"] >= score_thresh for det in detections]
        ranks = self.rank_detections(detections, selected, padded)

        if full_size:
            detections = self.transform.postprocess(detections, image_list.image_sizes, original_sizes)
        results = []
        for i, det in enumerate(detections):
            h, w = image_list.image_sizes[i]
            # The stuff branch at stride 4 over the resized image (softmax it for probabilities).
            logits = full_precision(stuff_logits[i, :, : -(-h // STUFF_STRIDE), : -(-w // STUFF_STRIDE)])
            if full_size:
                # Masks and the stuff argmax at the original size, which is what fusion needs.
                result = {"boxes": det["boxes"], "labels": det["labels"], "scores": det["scores"],
                          "masks": det["masks"][:, 0], "ranking_scores": ranks[i], "selected": selected[i],
                          "sem_seg_logits": logits,
                          "sem_seg_labels": stuff_labels(stuff_logits[i], (h, w), original_sizes[i], STUFF_STRIDE)}
            else:
                # What the grid fusion (oanet.model.grid_fusion) reads: nothing at the original size.
                result = {"boxes": resize_boxes(det["boxes"], (h, w), original_sizes[i]), "labels": det["labels"],
                          "scores": det["scores"], "mask_probs": det["masks"][:, 0], "ranking_scores": ranks[i],
                          "selected": selected[i], "sem_seg_logits": logits,
                          "stuff_logits": full_precision(stuff_logits[i]),  # padded, as stuff_labels reads them
                          "image_size": (int(h), int(w)), "original_size": original_sizes[i]}
            results.append(result)
        return results

    def rank_detections(
        self, detections: list[dict], selected: list[Tensor], padded_size: tuple[int, int]
    ) -> list[Tensor]:
        """Eq. 3 ranking scores from network-scale detections (labels 0..T-1, masks N x 1 x M x M).

        Only the ``selected`` detections (bool N per image) are fed to the SRM and ranked; the others
        get 0. Without the SRM the ranking score is the detection score.
        """
        if self.srm is None:
            return [det["scores"].clone() for det in detections]
        stride = self.srm.stride
        size = (padded_size[0] // stride, padded_size[1] // stride)
        kept, occupancies = [], []
        for det, keep in zip(detections, selected):
            # Indices, index_select and scatter rather than boolean masks: the same values, and the
            # ONNX export (oanet.export) traces this method as it is.
            index = keep.nonzero().squeeze(1)
            soft = paste_masks_at_stride(
                det["masks"][:, 0].index_select(0, index), det["boxes"].index_select(0, index), size, stride
            )
            binary = soft > 0.5
            labels = det["labels"].index_select(0, index)
            kept.append((index, soft, binary, labels))
            occupancies.append(occupancy_map(binary, labels, self.num_thing_classes))
        probs = full_precision(self.srm(torch.stack(occupancies))).softmax(1)
        ranks = []
        for i, (det, (index, soft, binary, labels)) in enumerate(zip(detections, kept)):
            rank = ranking_scores(probs[i], binary, labels, soft_masks=soft)
            ranks.append(torch.zeros_like(det["scores"]).scatter(0, index, rank))
        return ranks


def detect_selected(roi_heads: RoIHeads, features, proposals: list[Tensor], image_sizes: list,
                    score_thresh: float) -> list[dict]:
    """``RoIHeads.forward`` at inference with the mask head run on the selected detections only
    (score >= ``score_thresh``): ``masks`` are ``N x 1 x M x M`` probabilities, zero for the others.
    Nothing reads an unselected detection's mask (the SRM ranks and fusion pastes the selected), and
    the mask head costs about what the box head and the RPN cost together."""
    box_features = roi_heads.box_head(roi_heads.box_roi_pool(features, proposals, image_sizes))
    class_logits, box_regression = roi_heads.box_predictor(box_features)
    boxes, scores, labels = roi_heads.postprocess_detections(class_logits, box_regression, proposals, image_sizes)
    index = [(s >= score_thresh).nonzero().squeeze(1) for s in scores]
    mask_features = roi_heads.mask_roi_pool(features, [b[i] for b, i in zip(boxes, index)], image_sizes)
    mask_logits = roi_heads.mask_predictor(roi_heads.mask_head(mask_features))
    probs = maskrcnn_inference(mask_logits, [lab[i] for lab, i in zip(labels, index)])
    size = mask_logits.shape[-1]
    return [
        {"boxes": b, "scores": s, "labels": lab,
         "masks": p.new_zeros((len(b), 1, size, size)).index_copy(0, i, p)}
        for b, s, lab, i, p in zip(boxes, scores, labels, index, probs)
    ]


def build_model(cfg: ModelConfig) -> OANet:
    """:meth:`OANet.from_config`."""
    return OANet.from_config(cfg)
