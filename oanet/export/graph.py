"""The module that ``oanet export`` traces: one image in, everything fusion needs out.

:class:`PanopticGraph` runs a trained OANet's own modules and functions, in the order of
``OANet._forward_inference``, on one image of any size, and returns the graph outputs listed in
:mod:`oanet.runtime.metadata`. What differs from eager inference, and why:

- Sizes are traced values, never Python ints, so one graph serves every image size: the original
  size comes from ``image.shape``, the resized size is computed in float64 as in eager PyTorch
  (:func:`resize_image`), and the boxes are scaled back with traced ratios (torchvision's
  ``resize_boxes`` builds its ratios with ``torch.tensor``, which a trace freezes).
- The masks stay at RoI resolution (``N x M x M``). The runtime pastes only the selected detections
  (:mod:`oanet.runtime.paste`) instead of the graph pasting all N at the image size: torchvision's
  traceable paste is a Loop that breaks with zero detections and would output ``N x H x W`` floats.
- The stuff branch's softmax is reduced to its argmax at the input size in the graph: that is all
  fusion reads of it, and it keeps the ``C x H x W`` probabilities inside onnxruntime.
- The box head's score threshold is a traced input, frozen to the configured value after export
  (:func:`oanet.export.exporter.freeze_input`): torchvision skips NMS when no box passes it, and a
  trace would keep that shortcut forever if the sample image had no detection above it. Tracing with
  every box passing (and every detection selected) records the general path, which handles zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList

from oanet.model.oanet import STUFF_STRIDE, OANet, resample_to_original


def resize_image(image: Tensor, min_size: int, max_size: int) -> Tensor:
    """GeneralizedRCNNTransform's inference resize with the output size computed in float64, as eager
    PyTorch computes it. Traced, torchvision's resize computes it in float32 and can lose a pixel
    (123 px * (128 / 123) floors to 127), which shifts every box of such an image."""
    size = torch._shape_as_tensor(image)[-2:].to(torch.float64)
    # 1-D tensors throughout: the exporter computes 0-dim (scalar) float64 arithmetic in float32.
    extremes = torch.cat((size.amin(0, keepdim=True), size.amax(0, keepdim=True)))
    limits = torch.tensor([min_size, max_size], dtype=torch.float64)
    scale = (limits / extremes).amin(0, keepdim=True)
    out = torch.floor(size * scale).to(torch.int64)
    return F.interpolate(image[None], size=(out[0], out[1]), mode="bilinear", align_corners=False)[0]


def transform_image(model: OANet, image: Tensor) -> ImageList:
    """``model.transform([image])`` at inference (normalise, resize, pad), with :func:`resize_image`."""
    transform = model.transform
    image = resize_image(transform.normalize(image), int(transform.min_size[-1]), int(transform.max_size))
    batch = transform.batch_images([image], size_divisible=transform.size_divisible)
    return ImageList(batch, [(image.shape[-2], image.shape[-1])])


def scale_boxes(boxes: Tensor, ratio_height: Tensor, ratio_width: Tensor) -> Tensor:
    """Boxes of the resized image -> boxes of the original image (torchvision's resize_boxes)."""
    xmin, ymin, xmax, ymax = boxes.unbind(1)
    return torch.stack((xmin * ratio_width, ymin * ratio_height, xmax * ratio_width, ymax * ratio_height), dim=1)


class PanopticGraph(nn.Module):
    """``forward(image 3xHxW in 0..1, score_thresh, box_score_thresh) -> graph outputs`` of one image."""

    def __init__(self, model: OANet) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor, score_thresh: Tensor, box_score_thresh: Tensor):
        model = self.model
        height, width = image.shape[-2], image.shape[-1]
        image_list = transform_image(model, image)
        instance_features, stuff_features = model.backbone(image_list.tensors)
        proposals, _ = model.rpn(image_list, instance_features)
        roi_heads = model.roi_heads
        configured = roi_heads.score_thresh
        roi_heads.score_thresh = box_score_thresh  # read by postprocess_detections (`scores > score_thresh`)
        try:
            detections, _ = roi_heads(instance_features, proposals, image_list.image_sizes)
        finally:
            roi_heads.score_thresh = configured
        stuff_logits = model.stuff_head(stuff_features)

        det = detections[0]
        labels = det["labels"] - 1
        selected = det["scores"] >= score_thresh
        padded = image_list.tensors.shape[-2:]
        network_scale = {"boxes": det["boxes"], "labels": labels, "scores": det["scores"], "masks": det["masks"]}
        ranks = model.rank_detections([network_scale], [selected], (padded[0], padded[1]))[0]

        resized_h, resized_w = image_list.image_sizes[0]
        # true division of traced ints: float32(original) / float32(resized), as torchvision's ratios
        boxes = scale_boxes(det["boxes"], height / resized_h, width / resized_w)
        sem_seg = resample_to_original(stuff_logits[0], (resized_h, resized_w), (height, width), STUFF_STRIDE)
        sem_seg = sem_seg.softmax(0).argmax(0)
        return boxes, labels, det["scores"], det["masks"][:, 0], ranks, selected, sem_seg
