"""Augmentation applied consistently to an image and every target of docs/design.md.

A transform is a callable ``(image, target, rng) -> (image, target)``; ``rng`` is a
``numpy.random.Generator`` the dataset derives from ``(seed, epoch, index)``, so a sample's
augmentation does not depend on the worker, the process count or where a run was resumed.
Resizing is not done here: the model resizes (torchvision's GeneralizedRCNNTransform style).
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

Target = dict[str, Any]
Transform = Callable[[torch.Tensor, Target, np.random.Generator], tuple[torch.Tensor, Target]]

# Target entries that are per-pixel maps whose last dimension is the image width.
_PIXEL_KEYS = ("masks", "sem_seg", "srm")


def hflip(image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
    """Mirror an image (3xHxW) and its target left-right.

    Boxes are XYXY with an exclusive maximum, so ``x -> W - x`` maps the pixel extent exactly.
    """
    width = image.shape[-1]
    target = dict(target)
    for key in _PIXEL_KEYS:
        if key in target:
            target[key] = target[key].flip(-1)
    if "boxes" in target:
        boxes = target["boxes"]
        target["boxes"] = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)
    return image.flip(-1), target


class RandomHorizontalFlip:
    def __init__(self, prob: float = 0.5):
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"flip probability must be in [0, 1], got {prob}")
        self.prob = prob

    def __call__(self, image: torch.Tensor, target: Target, rng: np.random.Generator) -> tuple[torch.Tensor, Target]:
        # Always draw, so later transforms see the same random stream whatever prob is.
        if rng.random() < self.prob:
            return hflip(image, target)
        return image, target

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(prob={self.prob})"


class Compose:
    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor, target: Target, rng: np.random.Generator) -> tuple[torch.Tensor, Target]:
        for transform in self.transforms:
            image, target = transform(image, target, rng)
        return image, target

    def __repr__(self) -> str:
        return f"Compose({self.transforms})"


def build_transforms(hflip_prob: float, train: bool) -> Optional[Transform]:
    """The training augmentation of the paper's setup (horizontal flip); none for evaluation."""
    if not train or hflip_prob <= 0:
        return None
    return Compose([RandomHorizontalFlip(hflip_prob)])
