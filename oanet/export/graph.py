"""The module that ``oanet export`` traces: one image in, everything fusion needs out.

:class:`PanopticGraph` runs a trained OANet's own modules and functions, in the order of
``OANet._forward_inference``, on one image of any size, and returns the graph outputs listed in
:mod:`oanet.runtime.metadata`. What differs from eager inference, and why:

- Sizes are traced values, never Python ints, so one graph serves every image size: the original
  size comes from ``image.shape``, the resized size is computed in float64 as in eager PyTorch
  (:func:`resize_image`), and the boxes are scaled back with traced ratios (torchvision's
  ``resize_boxes`` builds its ratios with ``torch.tensor``, which a trace freezes).
- The mask head runs on the selected detections only (:func:`selected_masks`; the others' masks are
  0, and nothing reads them), and the masks stay at RoI resolution (``N x M x M``): the runtime
  pastes the selected ones (:mod:`oanet.runtime.paste`) instead of the graph pasting all N at the
  image size (torchvision's traceable paste is a Loop that breaks with zero detections and would
  output ``N x H x W`` floats).
- The stuff branch is reduced to its argmax at the input size in the graph, as in eager inference
  (:func:`traced_stuff_labels`): that is all fusion reads of it.
- Where onnxruntime runs traced code slowly, the graph computes the same values another way: the
  stuff resampling (:func:`traced_stuff_labels`) and torchvision's RoIAlign level merge
  (:func:`merge_levels`).
- The box head's score threshold is a traced input, frozen to the configured value after export
  (:func:`oanet.export.exporter.freeze_input`): torchvision skips NMS when no box passes it, and a
  trace would keep that shortcut forever if the sample image had no detection above it. Tracing with
  every box passing (and every detection selected) records the general path, which handles zero.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads, maskrcnn_inference

from oanet.model.oanet import STUFF_STRIDE, OANet


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


def _linear_taps(out_len: Tensor, resized_len: Tensor, feature_len: Tensor, stride: int):
    """Source rows (or columns) and weights of :func:`resample_to_original`'s bilinear sampling along
    one axis: output pixel centre -> resized image -> feature coordinate, clamped as grid_sample's
    ``padding_mode="border"`` clamps it (``align_corners=False``). ``feature_len``: int64 tensor."""
    last = feature_len - 1
    pos = torch.arange(out_len, dtype=torch.float32)
    coord = (pos + 0.5) * (resized_len / out_len) / stride - 0.5
    coord = torch.minimum(coord.clamp(min=0), last.to(torch.float32))
    low = coord.floor()
    weight = coord - low
    low = low.to(torch.int64)
    high = torch.minimum(low + 1, last)
    return low, high, 1 - weight, weight


def traced_stuff_labels(logits: Tensor, resized: tuple, original: tuple, stride: int) -> Tensor:
    """:func:`oanet.model.oanet.stuff_labels` in a traceable form (``C x h' x w'`` -> ``H x W`` int64).

    The same algorithm: each output pixel takes the class its four neighbouring feature cells agree
    on; only the other pixels are resampled over all channels. The differences are for export: no
    Python branch on the number of such pixels (zero is a valid count), and the bilinear sampling of
    those pixels gathers rows of a channels-last copy of the logits (onnxruntime's GridSample is 10-30x
    slower than PyTorch's). Values differ from grid_sample's by float rounding only, so a label can
    differ only at an exact tie.
    """
    fh, fw = torch._shape_as_tensor(logits)[-2:].unbind(0)
    y0, y1, wy0, wy1 = _linear_taps(original[0], resized[0], fh, stride)
    x0, x1, wx0, wx1 = _linear_taps(original[1], resized[1], fw, stride)
    coarse = logits.argmax(0)
    rows0, rows1 = coarse.index_select(0, y0), coarse.index_select(0, y1)
    labels = rows0.index_select(1, x0)
    agree = (
        (labels == rows0.index_select(1, x1)) & (labels == rows1.index_select(1, x0)) & (labels == rows1.index_select(1, x1))
    )
    width = x0.shape[0]
    pixels = (~agree).reshape(-1).nonzero().squeeze(1)
    ys, xs = pixels // width, pixels % width
    cells = logits.flatten(1).transpose(0, 1)  # h'w' x C: a cell's C values are one row

    def pick(values: Tensor, index: Tensor) -> Tensor:
        return values.index_select(0, index)

    top, bottom = pick(y0, ys) * fw, pick(y1, ys) * fw
    left, right = pick(x0, xs), pick(x1, xs)
    wl, wr = pick(wx0, xs)[:, None], pick(wx1, xs)[:, None]
    wt, wb = pick(wy0, ys)[:, None], pick(wy1, ys)[:, None]
    values = ((pick(cells, top + left) * wl + pick(cells, top + right) * wr) * wt
              + (pick(cells, bottom + left) * wl + pick(cells, bottom + right) * wr) * wb)
    return labels.reshape(-1).scatter(0, pixels, values.argmax(1)).reshape(labels.shape)


def merge_levels(levels: Tensor, unmerged_results: list) -> Tensor:
    """Drop-in for torchvision's ``_onnx_merge_levels`` (the traced MultiScaleRoIAlign): the per-level
    RoIAlign results put back in RoI order with one gather by the inverse permutation, where
    torchvision scatters every level into a zero tensor (four full-size ScatterElements per pooler)."""
    order = torch.cat([torch.where(levels == level)[0] for level in range(len(unmerged_results))])
    inverse = torch.zeros_like(order).scatter(0, order, torch.arange(order.shape[0], dtype=order.dtype))
    return torch.cat(unmerged_results).index_select(0, inverse)


@contextlib.contextmanager
def faster_level_merge():
    """Trace MultiScaleRoIAlign with :func:`merge_levels` (same values; eager code is not affected)."""
    from torchvision.ops import poolers

    original = poolers._onnx_merge_levels
    poolers._onnx_merge_levels = merge_levels
    try:
        yield
    finally:
        poolers._onnx_merge_levels = original


def scale_boxes(boxes: Tensor, ratio_height: Tensor, ratio_width: Tensor) -> Tensor:
    """Boxes of the resized image -> boxes of the original image (torchvision's resize_boxes)."""
    xmin, ymin, xmax, ymax = boxes.unbind(1)
    return torch.stack((xmin * ratio_width, ymin * ratio_height, xmax * ratio_width, ymax * ratio_height), dim=1)


def detect(roi_heads: RoIHeads, features, proposals, image_sizes, box_score_thresh: Tensor):
    """The box branch of ``RoIHeads.forward`` at inference, for one image: ``(boxes, scores, labels)``
    with torchvision's labels (1..T), the box score threshold a traced value."""
    box_features = roi_heads.box_head(roi_heads.box_roi_pool(features, proposals, image_sizes))
    class_logits, box_regression = roi_heads.box_predictor(box_features)
    configured = roi_heads.score_thresh
    roi_heads.score_thresh = box_score_thresh  # read by postprocess_detections (`scores > score_thresh`)
    try:
        boxes, scores, labels = roi_heads.postprocess_detections(class_logits, box_regression, proposals, image_sizes)
    finally:
        roi_heads.score_thresh = configured
    return boxes[0], scores[0], labels[0]


def selected_masks(roi_heads: RoIHeads, features, boxes, labels, index: Tensor, image_sizes) -> Tensor:
    """The mask branch of ``RoIHeads.forward`` on the detections ``index`` only: ``N x 1 x M x M``
    probabilities, zero for the others. Nothing uses an unselected detection's mask (the SRM ranks and
    fusion pastes the selected ones), and the mask head costs as much as the box head and RPN together."""
    mask_features = roi_heads.mask_roi_pool(features, [boxes.index_select(0, index)], image_sizes)
    mask_logits = roi_heads.mask_predictor(roi_heads.mask_head(mask_features))
    probs = maskrcnn_inference(mask_logits, [labels.index_select(0, index)])[0]
    size = probs.shape[-1]
    return probs.new_zeros((boxes.shape[0], 1, size, size)).index_copy(0, index, probs)


class PanopticGraph(nn.Module):
    """``forward(image 3xHxW in 0..1, score_thresh, box_score_thresh) -> graph outputs`` of one image."""

    def __init__(self, model: OANet) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor, score_thresh: Tensor, box_score_thresh: Tensor):
        model = self.model
        height, width = image.shape[-2], image.shape[-1]
        image_list = transform_image(model, image)
        sizes = image_list.image_sizes
        instance_features, stuff_features = model.backbone(image_list.tensors)
        proposals, _ = model.rpn(image_list, instance_features)
        boxes, scores, torchvision_labels = detect(model.roi_heads, instance_features, proposals, sizes, box_score_thresh)
        selected = scores >= score_thresh
        index = selected.nonzero().squeeze(1)
        masks = selected_masks(model.roi_heads, instance_features, boxes, torchvision_labels, index, sizes)
        stuff_logits = model.stuff_head(stuff_features)

        labels = torchvision_labels - 1
        padded = image_list.tensors.shape[-2:]
        network_scale = {"boxes": boxes, "labels": labels, "scores": scores, "masks": masks}
        ranks = model.rank_detections([network_scale], [selected], (padded[0], padded[1]))[0]

        resized_h, resized_w = sizes[0]
        # true division of traced ints: float32(original) / float32(resized), as torchvision's ratios
        original_boxes = scale_boxes(boxes, height / resized_h, width / resized_w)
        sem_seg_labels = traced_stuff_labels(stuff_logits[0], (resized_h, resized_w), (height, width), STUFF_STRIDE)
        return original_boxes, labels, scores, masks[:, 0], ranks, selected, sem_seg_labels
