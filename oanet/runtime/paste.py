"""Paste RoI-resolution mask probabilities into the image, in numpy, as torchvision's Mask R-CNN does.

The PyTorch model pastes with ``torchvision.models.detection.roi_heads.paste_masks_in_image``: pad the
``M x M`` mask by one zero pixel, widen the box by ``(M + 2) / M`` and truncate it to integers,
resize the padded mask bilinearly (``align_corners=False``) to the integer box, clip to the image.
This module computes the same thing with the same float32 operations, for the selected detections
only, and binarises at ``thresh``. The box arithmetic is exact; the bilinear weights follow PyTorch's
CPU kernel term by term, so a pixel can only differ where a probability lies within float32 rounding
of the threshold (the ONNX graph does not paste: see docs/deploy.md for why).
"""

from __future__ import annotations

import numpy as np

# Upper bound on the float32 elements of one chunk's interpolation arrays (K x box height x box width).
_CHUNK_ELEMENTS = 1 << 23


def expand_boxes(boxes: np.ndarray, scale: float) -> np.ndarray:
    """torchvision's ``expand_boxes`` in float32: each box widened about its centre by ``scale``."""
    boxes = boxes.astype(np.float32, copy=False)
    half = np.float32(0.5)
    w_half = (boxes[:, 2] - boxes[:, 0]) * half * np.float32(scale)
    h_half = (boxes[:, 3] - boxes[:, 1]) * half * np.float32(scale)
    x_c = (boxes[:, 2] + boxes[:, 0]) * half
    y_c = (boxes[:, 3] + boxes[:, 1]) * half
    return np.stack([x_c - w_half, y_c - h_half, x_c + w_half, y_c + h_half], axis=1)


def _linear_taps(start: np.ndarray, extent: np.ndarray, size: np.ndarray, length: int, in_size: int):
    """Source indices and weights of 1-D bilinear resizing from ``in_size`` to ``size`` (per box), for
    output positions ``start + 0..length-1`` of boxes starting at ``start`` (PyTorch's
    ``compute_source_index_and_lambda``, align_corners=False). ``extent`` bounds the valid positions."""
    pos = np.arange(length, dtype=np.int64)[None, :]
    valid = pos < extent[:, None]
    dst = (pos + start[:, None]).astype(np.float32)  # index inside the resized mask
    ratio = (np.float32(in_size) / size.astype(np.float32))[:, None]
    src = np.maximum(ratio * (dst + np.float32(0.5)) - np.float32(0.5), np.float32(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    lam1 = np.clip(src - i0.astype(np.float32), np.float32(0), np.float32(1))
    same = (size == in_size)[:, None]  # PyTorch copies when the size does not change
    i0 = np.where(same, np.minimum(dst.astype(np.int64), in_size - 1), i0)
    lam1 = np.where(same, np.float32(0), lam1).astype(np.float32)
    i1 = i0 + (i0 < in_size - 1)
    return i0, i1, np.float32(1) - lam1, lam1, valid


def paste_masks(mask_probs: np.ndarray, boxes: np.ndarray, height: int, width: int, thresh: float = 0.5) -> np.ndarray:
    """``K x M x M`` probabilities + ``K x 4`` boxes (input pixels) -> ``K x height x width`` bool masks."""
    k = mask_probs.shape[0]
    out = np.zeros((k, height, width), dtype=bool)
    if k == 0:
        return out
    m = mask_probs.shape[-1]
    padded = np.pad(mask_probs.astype(np.float32, copy=False), ((0, 0), (1, 1), (1, 1)))
    # .to(int64) in torchvision truncates towards zero, as astype does.
    x0, y0, x1, y1 = expand_boxes(boxes, float(m + 2) / m).astype(np.int64).T
    w = np.maximum(x1 - x0 + 1, 1)
    h = np.maximum(y1 - y0 + 1, 1)
    vx0, vy0 = np.maximum(x0, 0), np.maximum(y0, 0)
    cols = np.maximum(np.minimum(x1 + 1, width) - vx0, 0)  # visible part of each resized mask
    rows = np.maximum(np.minimum(y1 + 1, height) - vy0, 0)
    order = np.argsort(rows * cols)  # chunks of similar sizes waste less on padding
    start = 0
    while start < k:
        stop = start + 1
        while stop < k and (stop + 1 - start) * rows[order[stop]] * cols[order[stop]] <= _CHUNK_ELEMENTS:
            stop += 1
        _paste_chunk(out, padded, order[start:stop], x0, y0, vx0, vy0, w, h, rows, cols, thresh)
        start = stop
    return out


def _paste_chunk(out, padded, idx, x0, y0, vx0, vy0, w, h, rows, cols, thresh) -> None:
    """Resize and place the masks ``idx`` (one vectorised pass over their largest visible box)."""
    n_rows, n_cols = int(rows[idx].max()), int(cols[idx].max())
    if n_rows == 0 or n_cols == 0:
        return
    k, size = len(idx), padded.shape[-1]
    cx0, cx1, wx0, wx1, _ = _linear_taps(vx0[idx] - x0[idx], cols[idx], w[idx], n_cols, size)
    ry0, ry1, wy0, wy1, _ = _linear_taps(vy0[idx] - y0[idx], rows[idx], h[idx], n_rows, size)
    # PyTorch's order of operations: along x, then along y, each (v0 * w0 + v1 * w1). Both passes
    # gather whole rows of a 2-D array (fast) instead of single elements.
    base = (np.arange(k) * size)[:, None]
    columns = padded[idx].transpose(0, 2, 1).reshape(k * size, size)  # row = one source column
    across = columns[base + cx0] * wx0[:, :, None] + columns[base + cx1] * wx1[:, :, None]  # k x n_cols x size
    across = np.ascontiguousarray(across.transpose(0, 2, 1)).reshape(k * size, n_cols)  # row = one source row
    value = across[base + ry0] * wy0[:, :, None]
    value += across[base + ry1] * wy1[:, :, None]  # k x n_rows x n_cols
    inside = value > np.float32(thresh)
    # One slice copy per mask to place it: each box has its own position and size.
    for j, i in enumerate(idx.tolist()):
        r, c = int(rows[i]), int(cols[i])
        out[i, vy0[i]:vy0[i] + r, vx0[i]:vx0[i] + c] = inside[j, :r, :c]
