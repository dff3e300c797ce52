"""Normalise, resize and batch images together with *all* panoptic training targets.

torchvision's GeneralizedRCNNTransform resizes images, boxes and instance masks; the dense targets
``sem_seg`` and ``srm`` (``HxW`` int64, 255 = ignore) need the same geometry: nearest-neighbour
resize to exactly the resized image's size, then padding with 255 to the batch's padded size
(divisible by ``size_divisible``), just as the image is padded with zeros. ``min_size`` may hold
several values: training picks one at random per image (multi-scale), inference uses the last.

At inference an image may also come as uint8 pixels (0..255): it is then resized from the pixels the
bilinear resize reads, so a 12 MP photo never exists as floats at its full size (144 MB).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from oanet.data.labels import IGNORE
from oanet.fusion_grid import network_size

DENSE_TARGET_KEYS = ("sem_seg", "srm")


def resize_label_map(label_map: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest-neighbour resize of an ``HxW`` integer label map (labels are never blended)."""
    if tuple(label_map.shape[-2:]) == tuple(size):
        return label_map
    # float32 represents every label id exactly (ids < 2**24).
    resized = F.interpolate(label_map[None, None].float(), size=size, mode="nearest")
    return resized[0, 0].to(label_map.dtype)


def pad_label_map(label_map: Tensor, size: tuple[int, int], value: int = IGNORE) -> Tensor:
    """Pad an ``HxW`` map at the bottom/right to ``size`` with ``value``."""
    h, w = label_map.shape[-2:]
    return F.pad(label_map, (0, size[1] - w, 0, size[0] - h), value=value)


def linear_taps(out_size: int, in_size: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Source indices and weights of 1-D bilinear resizing from ``in_size`` to ``out_size``
    (``align_corners=False``): PyTorch's ``compute_source_index_and_lambda`` in float32."""
    dst = torch.arange(out_size, device=device, dtype=torch.float32)
    ratio = torch.tensor(in_size, dtype=torch.float32) / torch.tensor(out_size, dtype=torch.float32)
    src = (ratio.to(device) * (dst + 0.5) - 0.5).clamp(min=0)
    low = src.floor().long().clamp(max=in_size - 1)
    lam1 = (src - low.to(torch.float32)).clamp(0, 1)
    high = low + (low < in_size - 1).long()
    return low, high, 1 - lam1, lam1


class PanopticTransform(GeneralizedRCNNTransform):
    """GeneralizedRCNNTransform that also carries ``sem_seg`` and ``srm`` targets.

    Images arrive as RGB in [0, 1]. ``input_format="BGR"`` reverses the channels and ``input_scale``
    multiplies the values before ``(x - image_mean) / image_std``, so weights trained on other inputs
    (detectron2's: BGR, 0-255) see what they were trained on; the mean and std are in those units.
    """

    def __init__(self, *args, input_format: str = "RGB", input_scale: float = 1.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if input_format not in ("RGB", "BGR"):
            raise ValueError(f"input_format must be 'RGB' or 'BGR', got {input_format!r}")
        self.input_format = input_format
        self.input_scale = float(input_scale)

    def normalize(self, image: Tensor) -> Tensor:
        if image.dtype == torch.uint8 and not self.training:
            return image  # normalised by resize(), at the pixels the resize reads
        if not image.is_floating_point():
            return super().normalize(image)  # torchvision's error for integer images
        if self.input_format == "BGR":
            image = image.flip(0)
        if self.input_scale != 1.0:
            image = image * self.input_scale
        return super().normalize(image)

    def resize_pixels(self, image: Tensor) -> Tensor:
        """A ``3 x H x W`` uint8 image (0..255), normalised and bilinearly resized as a float image is,
        from the four pixels around each output pixel: memory and time of the output's size."""
        h, w = network_size(image.shape[-2], image.shape[-1], int(self.min_size[-1]), int(self.max_size))
        y0, y1, wy0, wy1 = linear_taps(h, image.shape[-2], image.device)
        x0, x1, wx0, wx1 = linear_taps(w, image.shape[-1], image.device)
        # Gathered as H x W x 3, the layout of a decoded image (a view): whole rows are copied at once,
        # where gathering a permuted 3 x H x W view is several hundred times slower.
        pixels = image.permute(1, 2, 0)
        top, bottom = pixels.index_select(0, y0), pixels.index_select(0, y1)

        def corner(rows: Tensor, cols: Tensor) -> Tensor:
            # As a float input: pixels / 255, normalised, then blended (normalising is affine per channel).
            return self.normalize(rows.index_select(1, cols).permute(2, 0, 1).to(torch.float32) / 255.0)

        wy0, wy1 = wy0[:, None], wy1[:, None]
        return ((corner(top, x0) * wx0 + corner(top, x1) * wx1) * wy0
                + (corner(bottom, x0) * wx0 + corner(bottom, x1) * wx1) * wy1)

    def resize(self, image: Tensor, target: Optional[dict] = None) -> tuple[Tensor, Optional[dict]]:
        if image.dtype == torch.uint8 and target is None and not self.training:
            return self.resize_pixels(image), None
        if target is not None and target["masks"].shape[0] == 0:
            # interpolate() rejects empty batches: resize a placeholder and keep zero instances.
            masks = target["masks"]
            target = dict(target, masks=masks.new_zeros((1,) + tuple(masks.shape[1:])))
            image, target = super().resize(image, target)
            target["masks"] = target["masks"][:0]
        else:
            image, target = super().resize(image, target)
        if target is not None:
            size = tuple(image.shape[-2:])
            for key in DENSE_TARGET_KEYS:
                if key in target:
                    target[key] = resize_label_map(target[key], size)
        return image, target

    def forward(self, images: list[Tensor], targets: Optional[list[dict]] = None) -> tuple[ImageList, Optional[list]]:
        image_list, targets = super().forward(images, targets)
        if targets is not None:
            padded = tuple(image_list.tensors.shape[-2:])
            for target in targets:
                for key in DENSE_TARGET_KEYS:
                    if key in target:
                        target[key] = pad_label_map(target[key], padded)
                # Instance masks are padded with 0 so the SRM input lines up with the padded batch.
                masks = target["masks"]
                target["masks"] = F.pad(masks, (0, padded[1] - masks.shape[-1], 0, padded[0] - masks.shape[-2]))
        return image_list, targets
