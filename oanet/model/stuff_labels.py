"""The stuff branch's labels at image pixels: bilinear resampling of its stride-4 logits, then argmax.

:func:`stuff_labels` gives them on a grid of the image's rows and columns (all of them by default),
:func:`stuff_labels_at` at single pixels; both compute a pixel's label the same way, whatever else
is asked with it, so a label on a coarse grid equals the label of that pixel in the full-size map
(:mod:`oanet.model.grid_fusion` relies on it).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from oanet.model.autocast import full_precision

RESAMPLED_VALUES = 1 << 24  # logits resampled per grid_sample call (64 MB): bounds the temporary memory


def feature_coordinates(
    image_size: tuple[int, int], original_size: tuple[int, int], stride: int, like: Tensor,
    rows: Optional[Tensor] = None, cols: Optional[Tensor] = None,
) -> tuple[Tensor, Tensor]:
    """Where the centres of original pixel rows ``rows`` and columns ``cols`` (default: all) fall on a
    stride-``stride`` feature map of the resized image ``image_size``: ``(fy, fx)`` in feature cells, on
    ``like``'s device and dtype."""
    (h, w), (oh, ow) = image_size, original_size
    ys = torch.arange(oh, device=like.device) if rows is None else rows
    xs = torch.arange(ow, device=like.device) if cols is None else cols
    fy = (ys.to(like.dtype) + 0.5) * (h / oh) / stride
    fx = (xs.to(like.dtype) + 0.5) * (w / ow) / stride
    return fy, fx


def resample_to_original(
    logits: Tensor, image_size: tuple[int, int], original_size: tuple[int, int], stride: int
) -> Tensor:
    """Bilinearly map ``C x h' x w'`` stride-``stride`` logits of a padded batch to the original image.

    One grid_sample straight to ``original_size`` (instead of upsampling to the padded input, cropping
    and resizing again) keeps the peak memory at ``C x H x W`` of the original image. ``image_size``
    is the resized, unpadded image inside the padded batch.
    """
    logits = full_precision(logits)  # pixel coordinates need float32 (bfloat16: 8 significant bits)
    oh, ow = original_size
    fh, fw = logits.shape[-2:]
    fy, fx = feature_coordinates(image_size, original_size, stride, logits)
    gy = (2 * fy / fh - 1)[:, None].expand(oh, ow)
    gx = (2 * fx / fw - 1)[None, :].expand(oh, ow)
    grid = torch.stack((gx, gy), dim=-1)[None]
    return F.grid_sample(logits[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]


def _corner_cells(fy: Tensor, fx: Tensor, fh: int, fw: int) -> tuple[Tensor, Tensor]:
    """The top-left of the four feature cells bilinear sampling reads at each point (rows, columns)."""
    # grid_sample (align_corners=False, border padding) samples input coordinate f - 0.5, clamped.
    return (fy - 0.5).clamp(0, fh - 1).floor().long(), (fx - 0.5).clamp(0, fw - 1).floor().long()


def coarse_labels(logits: Tensor) -> tuple[Tensor, Tensor]:
    """Per feature cell, its argmax class (uint8 when the classes fit: the gathers at image pixels move
    a byte each), and whether the four cells from it to the right and below (clamped at the border,
    as the sampling clamps) agree on it."""
    coarse = logits.max(0).indices  # the first maximum, as argmax(0), and several times faster over classes
    if logits.shape[0] <= 256:
        coarse = coarse.to(torch.uint8)
    right = torch.cat([coarse[:, 1:], coarse[:, -1:]], 1)
    below = torch.cat([coarse[1:], coarse[-1:]], 0)
    diagonal = torch.cat([right[1:], right[-1:]], 0)
    return coarse, (coarse == right) & (coarse == below) & (coarse == diagonal)


def _resampled_argmax(logits: Tensor, fy: Tensor, fx: Tensor) -> Tensor:
    """Argmax over classes of the bilinear logits at points ``(fy, fx)`` (feature cells), a bounded
    number of points per grid_sample call."""
    fh, fw = logits.shape[-2:]
    out = torch.empty(fy.shape, dtype=torch.long, device=logits.device)
    step = max(1, RESAMPLED_VALUES // logits.shape[0])
    for start in range(0, fy.numel(), step):
        gy, gx = fy[start:start + step], fx[start:start + step]
        grid = torch.stack((2 * gx / fw - 1, 2 * gy / fh - 1), dim=-1)[None, None]
        values = F.grid_sample(logits[None], grid, mode="bilinear", padding_mode="border", align_corners=False)
        # max(0).indices: the first maximum, as argmax(0), and about 10x faster over a short class axis
        out[start:start + step] = values[0, :, 0].max(0).indices
    return out


def stuff_labels(
    logits: Tensor, image_size: tuple[int, int], original_size: tuple[int, int], stride: int,
    rows: Optional[Tensor] = None, cols: Optional[Tensor] = None,
) -> Tensor:
    """``argmax`` over classes of :func:`resample_to_original` (``H x W`` int64) at the original rows
    ``rows`` and columns ``cols`` (default: all; int64 tensors), without resampling every class at
    every pixel.

    Bilinear interpolation is a convex combination of the four neighbouring feature cells, so where
    the four agree on their argmax class ``c``, every interpolated ``logit_c - logit_k`` is a convex
    combination of positive numbers: ``c`` wins there too. Only pixels whose neighbours disagree (class
    boundaries, a small share of the image) are resampled over all ``C`` channels, by the same
    ``grid_sample`` call as :func:`resample_to_original` (which computes each output pixel on its own),
    so the labels are those of the full-resolution argmax, up to float rounding at exact ties.
    """
    logits = full_precision(logits)
    fh, fw = logits.shape[-2:]
    fy, fx = feature_coordinates(image_size, original_size, stride, logits, rows, cols)
    y0, x0 = _corner_cells(fy, fx, fh, fw)
    coarse, agree_cells = coarse_labels(logits)
    labels = coarse.index_select(0, y0).index_select(1, x0).long()
    ys, xs = (~agree_cells.index_select(0, y0).index_select(1, x0)).nonzero(as_tuple=True)
    if ys.numel():
        labels[ys, xs] = _resampled_argmax(logits, fy[ys], fx[xs])
    return labels


def stuff_labels_at(
    logits: Tensor, image_size: tuple[int, int], original_size: tuple[int, int], stride: int, ys: Tensor, xs: Tensor,
    coarse: Optional[tuple[Tensor, Tensor]] = None,
) -> Tensor:
    """:func:`stuff_labels` at the single original pixels ``(ys, xs)`` (int64 tensors): the same label
    each of them has in the full map. ``coarse``: :func:`coarse_labels` of ``logits``, when already made
    (the grid fusion asks for pixels chunk by chunk)."""
    logits = full_precision(logits)
    fh, fw = logits.shape[-2:]
    fy, fx = feature_coordinates(image_size, original_size, stride, logits, ys, xs)
    y0, x0 = _corner_cells(fy, fx, fh, fw)
    coarse, agree_cells = coarse if coarse is not None else coarse_labels(logits)
    labels = coarse[y0, x0].long()
    pick = (~agree_cells[y0, x0]).nonzero().squeeze(1)
    if pick.numel():
        labels[pick] = _resampled_argmax(logits, fy[pick], fx[pick])
    return labels


__all__ = ["feature_coordinates", "resample_to_original", "stuff_labels", "stuff_labels_at", "coarse_labels"]
