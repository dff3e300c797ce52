"""Stuff branch (paper Fig. 3): dense classification from the FPN levels P2-P5.

On each level two 3x3 convs; the four results are upsampled to stride 4 and concatenated, then a
3x3 conv and a 1x1 conv give ``C`` class logits at stride 4 (``C = T + S`` for ``classes: all``,
``1 + S`` for ``classes: stuff``). Normalisation is GroupNorm: the paper trains with 2 images per
GPU, where BatchNorm statistics are too noisy, and GroupNorm is batch-size independent, so training
and inference behave the same. The loss upsamples the logits to the (padded) network input and takes
the pixel-wise cross-entropy there (255 ignored), so thin stuff and the padding-free borders are
supervised at full resolution rather than against a nearest-downsampled target.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from oanet.config import StuffHeadConfig
from oanet.data.labels import IGNORE

LEVELS = ("0", "1", "2", "3")  # P2-P5; P6 ("pool") is too coarse to help dense labelling


def _group_norm(channels: int) -> nn.GroupNorm:
    # 32 groups as in the GroupNorm paper, fewer when the head is narrow (tests, small models).
    groups = max(g for g in range(1, 33) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


def _conv_gn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        _group_norm(out_channels),
        nn.ReLU(inplace=True),
    )


class StuffHead(nn.Module):
    """``forward(features) -> logits`` (``B x C x H/4 x W/4``, aligned with P2)."""

    def __init__(self, in_channels: int, num_classes: int, cfg: StuffHeadConfig) -> None:
        super().__init__()
        width = cfg.channels
        self.num_classes = num_classes
        self.loss_weight = cfg.loss_weight
        self.per_level = nn.ModuleList(
            nn.Sequential(_conv_gn_relu(in_channels, width), _conv_gn_relu(width, width)) for _ in LEVELS
        )
        self.fuse = _conv_gn_relu(len(LEVELS) * width, width)
        self.classifier = nn.Conv2d(width, num_classes, 1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.normal_(self.classifier.weight, std=0.01)

    def forward(self, features: "OrderedDict[str, Tensor]") -> Tensor:
        size = features[LEVELS[0]].shape[-2:]
        maps = []
        for key, block in zip(LEVELS, self.per_level):
            x = block(features[key])
            if x.shape[-2:] != size:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            maps.append(x)
        return self.classifier(self.fuse(torch.cat(maps, dim=1)))

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        """lambda x mean pixel-wise cross-entropy; ``targets`` is ``B x H x W`` at the padded input size."""
        logits = F.interpolate(logits, size=targets.shape[-2:], mode="bilinear", align_corners=False)
        return self.loss_weight * masked_cross_entropy(logits, targets)


def masked_cross_entropy(logits: Tensor, targets: Tensor, ignore_index: int = IGNORE) -> Tensor:
    """Mean cross-entropy over non-ignored pixels; 0 (still attached to ``logits``) when there are none.

    F.cross_entropy(reduction="mean") returns NaN when every pixel is ignored; summing and dividing
    by the clamped count keeps the loss finite and connected to the graph without a host sync.
    """
    total = F.cross_entropy(logits, targets, ignore_index=ignore_index, reduction="sum")
    count = (targets != ignore_index).sum().clamp(min=1)
    return total / count
