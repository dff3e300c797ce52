"""Paste RoI-resolution mask probabilities into the image, in numpy, as torchvision's Mask R-CNN does.

The PyTorch model pastes with ``torchvision.models.detection.roi_heads.paste_masks_in_image``: pad the
``M x M`` mask by one zero pixel, widen the box by ``(M + 2) / M`` and truncate it to integers,
resize the padded mask bilinearly (``align_corners=False``) to the integer box, clip to the image.
This module computes the same thing with the same float32 operations, for the selected detections
only, and binarises at ``thresh``. The integer boxes are exact; a binarised pixel can differ only
where a probability lies within float32 rounding of the threshold (bilinear resizing puts mask edges
at exactly 0.5, so a few such pixels per image are normal). The ONNX graph does not paste: see
docs/deploy.md for why.
"""

from __future__ import annotations

import numpy as np


def expand_boxes(boxes: np.ndarray, scale: float) -> np.ndarray:
    """torchvision's ``expand_boxes`` in float32: each box widened about its centre by ``scale``."""
    boxes = boxes.astype(np.float32, copy=False)
    half = np.float32(0.5)
    w_half = (boxes[:, 2] - boxes[:, 0]) * half * np.float32(scale)
    h_half = (boxes[:, 3] - boxes[:, 1]) * half * np.float32(scale)
    x_c = (boxes[:, 2] + boxes[:, 0]) * half
    y_c = (boxes[:, 3] + boxes[:, 1]) * half
    return np.stack([x_c - w_half, y_c - h_half, x_c + w_half, y_c + h_half], axis=1)


def linear_taps(first: int, count: int, out_size: int, in_size: int):
    """Source indices and weights of 1-D bilinear resizing from ``in_size`` to ``out_size``
    (``align_corners=False``) for output positions ``first .. first + count - 1``: PyTorch's
    ``compute_source_index_and_lambda`` in float32."""
    dst = np.arange(first, first + count, dtype=np.float32)
    if out_size == in_size:  # PyTorch copies when the size does not change
        low = np.minimum(dst.astype(np.int64), in_size - 1)
        return low, low, np.ones(count, np.float32), np.zeros(count, np.float32)
    ratio = np.float32(in_size) / np.float32(out_size)
    src = np.maximum(ratio * (dst + np.float32(0.5)) - np.float32(0.5), np.float32(0))
    low = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    lam1 = np.clip(src - low.astype(np.float32), np.float32(0), np.float32(1))
    high = low + (low < in_size - 1)
    return low, high, np.float32(1) - lam1, lam1


def paste_masks(mask_probs: np.ndarray, boxes: np.ndarray, height: int, width: int, thresh: float = 0.5) -> np.ndarray:
    """``K x M x M`` probabilities + ``K x 4`` boxes (input pixels) -> ``K x height x width`` bool masks."""
    k = mask_probs.shape[0]
    out = np.zeros((k, height, width), dtype=bool)
    if k == 0:
        return out
    m = mask_probs.shape[-1]
    padded = np.pad(mask_probs.astype(np.float32, copy=False), ((0, 0), (1, 1), (1, 1)))
    # .to(int64) in torchvision truncates towards zero, as astype does.
    x0, y0, x1, y1 = expand_boxes(boxes, float(m + 2) / m).astype(np.int64).T.tolist()
    threshold = np.float32(thresh)
    # One box-sized resize per mask, as torchvision's paste: vectorising over masks would pad every box
    # to the largest one (measured 10x slower on 100 detections at 512 px).
    for i in range(k):
        w, h = max(x1[i] - x0[i] + 1, 1), max(y1[i] - y0[i] + 1, 1)
        vx0, vy0 = max(x0[i], 0), max(y0[i], 0)
        cols, rows = min(x1[i] + 1, width) - vx0, min(y1[i] + 1, height) - vy0
        if rows <= 0 or cols <= 0:
            continue
        cx0, cx1, wx0, wx1 = linear_taps(vx0 - x0[i], cols, w, m + 2)
        ry0, ry1, wy0, wy1 = linear_taps(vy0 - y0[i], rows, h, m + 2)
        # PyTorch's order of operations: along x, then along y, each (v0 * w0 + v1 * w1).
        across = padded[i][:, cx0] * wx0 + padded[i][:, cx1] * wx1
        value = across[ry0] * wy0[:, None]
        value += across[ry1] * wy1[:, None]
        out[i, vy0:vy0 + rows, vx0:vx0 + cols] = value > threshold
    return out
