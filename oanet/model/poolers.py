"""Multi-level RoIAlign for the box and mask heads, with or without detectron2's half-pixel alignment.

torchvision's :class:`~torchvision.ops.MultiScaleRoIAlign` calls ``roi_align(aligned=False)``: a box
``[x1, x2]`` is sampled from ``x1 * scale`` to ``x2 * scale`` in feature-pixel indices, i.e. shifted by
half a feature pixel, and boxes narrower than one feature pixel are widened to one. detectron2's FPN
models (``POOLER_TYPE: ROIAlignV2``) use ``aligned=True``, which subtracts that half pixel and keeps
small boxes small; their weights expect it. :class:`AlignedMultiScaleRoIAlign` is torchvision's
pooler (same level assignment, same scales) with ``aligned=True``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchvision.ops import MultiScaleRoIAlign, roi_align
from torchvision.ops.poolers import initLevelMapper

from oanet.errors import ConfigError

ROI_LEVELS = ["0", "1", "2", "3"]  # RoIAlign on P2-P5, as Mask R-CNN with FPN


class AlignedMultiScaleRoIAlign(MultiScaleRoIAlign):
    """:class:`~torchvision.ops.MultiScaleRoIAlign` with ``roi_align(..., aligned=True)``."""

    def forward(self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]) -> Tensor:
        features = [v for k, v in x.items() if k in self.featmap_names]
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = _scales_and_mapper(
                features, image_shapes, self.canonical_scale, self.canonical_level
            )
        # shape[0], not len(): the ONNX export traces this, and a trace freezes len() as a constant.
        rois = torch.cat(
            [torch.cat([b.new_full((b.shape[0], 1), i), b], dim=1) for i, b in enumerate(boxes)], dim=0
        )
        levels = self.map_levels(boxes)
        first = features[0]
        result = first.new_zeros((rois.shape[0], first.shape[1]) + tuple(self.output_size))
        for level, (feature, scale) in enumerate(zip(features, self.scales)):
            index = torch.where(levels == level)[0]
            pooled = roi_align(
                feature, rois[index], self.output_size, spatial_scale=scale,
                sampling_ratio=self.sampling_ratio, aligned=True,
            )
            # Under autocast levels may come out in different dtypes: match the result's.
            result[index] = pooled.to(result.dtype)
        return result


def _scales_and_mapper(features: list[Tensor], image_shapes, canonical_scale: int, canonical_level: int):
    """Each level's scale (a power of 2, from its height against the tallest image) and the level
    mapper, as torchvision's pooler infers them."""
    max_h = max(s[0] for s in image_shapes)
    scales = [2 ** float(round(math.log2(feature.shape[-2] / max_h))) for feature in features]
    mapper = initLevelMapper(
        int(-math.log2(scales[0])), int(-math.log2(scales[-1])),
        canonical_scale=canonical_scale, canonical_level=canonical_level,
    )
    return scales, mapper


def build_roi_pool(output_size: int, sampling_ratio: int, aligned: bool) -> MultiScaleRoIAlign:
    """The pooler of the box (7) or mask (14) head: torchvision's own unless ``aligned``.

    ``sampling_ratio`` samples per bin side; 0 = adaptive (ceil of the bin size), as detectron2.
    """
    if sampling_ratio < 0:
        raise ConfigError(f"roi_heads.pooler_sampling_ratio must be >= 0, got {sampling_ratio}")
    cls = AlignedMultiScaleRoIAlign if aligned else MultiScaleRoIAlign
    return cls(ROI_LEVELS, output_size=output_size, sampling_ratio=sampling_ratio)
