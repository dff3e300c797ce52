"""``SpatialRanker``: the SRM (paper §3.2, Eqs. 2-3) for any detector's instance masks.

The SRM reads nothing but instance masks mapped to per-class channels, so the module OANet trains
jointly can rank the overlaps of any instance segmentation model. This wraps one
:class:`~oanet.model.srm.SpatialRankingModule` with what it needs to read a detector's output: the
label space (which COCO category id is which channel) and the scale it was trained at.

**Scale.** OANet runs its SRM at 1/``stride`` of the network input, the image resized to a short side
of ``short_side`` (long side at most ``max_size``). The ranker samples full-size masks onto that same
grid: cell ``(i, j)`` takes the mask pixel under its centre, which for an image already at the network
scale is exactly the pixel OANet's ``subsample`` takes. So a ranker loaded from an OANet checkpoint
sees what the network's own SRM sees, and the ranking scores of Eq. 3 come from the same functions
(:func:`~oanet.model.srm.occupancy_map`, :func:`~oanet.model.srm.ranking_scores`). The SRM itself runs
on the classes present only (:func:`~oanet.model.srm.present_channels_forward`, the same linear map, a
handful of input channels instead of 80): equal to the network's scores up to float rounding.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from oanet.data.labels import LabelSpace
from oanet.errors import ConfigError, DataError
from oanet.model.autocast import full_precision
from oanet.model.srm import SpatialRankingModule, occupancy_map, present_channels_forward, ranking_scores

FORMAT = "oanet-srm"
FORMAT_VERSION = 1


def grid_size(height: int, width: int, short_side: int, max_size: int, stride: int) -> tuple[int, int]:
    """The SRM grid of an ``height x width`` image: resized as the network resizes it, then / stride."""
    scale = min(short_side / min(height, width), max_size / max(height, width))
    return max(1, round(height * scale / stride)), max(1, round(width * scale / stride))


def grid_indices(size: int, cells: int, device: Any = "cpu") -> Tensor:
    """The pixel under the centre of each of ``cells`` equal cells of a line of ``size`` pixels."""
    return ((torch.arange(cells, device=device, dtype=torch.float64) + 0.5) * (size / cells)).long().clamp_(max=size - 1)


def sample_to_grid(masks: Tensor, grid: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """``N x H x W`` binary masks on the SRM grid: ``(binary N x h x w, soft N x h x w)``.

    ``binary`` is the centre sample of each cell. ``soft`` is the share of each cell the mask covers
    (area averaging), used by Eq. 3 for a mask too small to cover any cell centre; it is only computed
    for those masks.
    """
    h, w = grid
    rows = grid_indices(masks.shape[-2], h, masks.device)
    cols = grid_indices(masks.shape[-1], w, masks.device)
    binary = masks.index_select(-2, rows).index_select(-1, cols) != 0
    soft = binary.to(torch.float32)
    empty = (~binary.flatten(1).any(1)).nonzero().squeeze(1)
    if len(empty):
        pooled = torch.nn.functional.adaptive_avg_pool2d(masks[empty].to(torch.float32)[:, None], (h, w))[:, 0]
        soft[empty] = pooled
    return binary, soft


class SpatialRanker:
    """Rank overlapping instance masks by the SRM's Eq. 3 scores (higher = pasted on top).

    ``ranker = SpatialRanker.from_file("srm.pth")`` (a file of ``oanet srm train``, or any OANet
    checkpoint trained with its SRM); ``scores = ranker.rank(masks, labels)`` with ``masks`` the
    ``N x H x W`` binary masks of one image (numpy or torch) and ``labels`` their COCO category ids.
    """

    def __init__(self, srm: SpatialRankingModule, label_space: LabelSpace, short_side: int = 800,
                 max_size: int = 1333, device: str | torch.device = "cpu") -> None:
        if srm.num_classes != label_space.num_things:
            raise ConfigError(f"the SRM has {srm.num_classes} channels, the label space {label_space.num_things} thing classes")
        self.srm = srm.to(device).eval()
        self.label_space = label_space
        self.short_side = int(short_side)
        self.max_size = int(max_size)
        self.device = torch.device(device)

    # ----------------------------------------------------------------------------------------
    # loading and saving

    @classmethod
    def from_file(cls, path: str | Path, device: str | torch.device = "cpu") -> "SpatialRanker":
        """Load ``oanet srm train``'s file, an SRM of ``oanet ablate``, or an OANet checkpoint's SRM."""
        from oanet.srm.io import load_ranker_parts

        srm, label_space, short_side, max_size = load_ranker_parts(path)
        return cls(srm, label_space, short_side, max_size, device)

    def state(self, **extra: Any) -> dict:
        """What :meth:`save` writes (weights, kernel, stride, label space, scale; ``extra`` as well)."""
        kernel = "gcn7" if hasattr(self.srm.conv, "left") else "3x3" if self.srm.conv.kernel_size == (3, 3) else "1x1"
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "model": self.srm.state_dict(), "kernel": kernel,
                "stride": self.srm.stride, "loss_weight": self.srm.loss_weight, "label_space": self.label_space.to_dict(),
                "num_thing_classes": self.srm.num_classes, "short_side": self.short_side, "max_size": self.max_size,
                "config": {}, **extra}

    def save(self, path: str | Path, **extra: Any) -> Path:
        from oanet.model.checkpoint import atomic_save

        atomic_save(self.state(**extra), path)
        return Path(path)

    # ----------------------------------------------------------------------------------------
    # ranking

    def channels(self, labels: Any, where: str = "") -> Tensor:
        """The SRM channel (thing index) of each COCO category id; an unknown or stuff id is a DataError."""
        index = self.label_space.thing_index(labels, where)
        if (index < 0).any():
            bad = sorted(set(np.asarray(labels, dtype=np.int64).reshape(-1)[index < 0].tolist()))
            prefix = f"{where}: " if where else ""
            raise DataError(f"{prefix}category id(s) {bad[:10]} are stuff classes: only things are ranked")
        return torch.from_numpy(index).to(self.device)

    def grid(self, height: int, width: int) -> tuple[int, int]:
        return grid_size(height, width, self.short_side, self.max_size, self.srm.stride)

    def rank(self, masks: Any, labels: Any, where: str = "") -> Any:
        """Eq. 3 ranking scores of one image's instances: ``N`` floats, numpy in, numpy out.

        ``masks``: ``N x H x W`` binary (bool or 0/1) at the image's size; ``labels``: ``N`` COCO
        category ids of thing classes.
        """
        as_numpy = not isinstance(masks, Tensor)
        masks_t = torch.from_numpy(np.ascontiguousarray(masks)) if as_numpy else masks
        if masks_t.ndim != 3:
            raise DataError(f"{where or 'masks'}: expected N x H x W masks, got shape {tuple(masks_t.shape)}")
        channels = self.channels(labels.cpu().numpy() if isinstance(labels, Tensor) else labels, where)
        if len(channels) != masks_t.shape[0]:
            raise DataError(f"{where or 'masks'}: {masks_t.shape[0]} masks but {len(channels)} labels")
        scores = self.rank_channels(masks_t.to(self.device), channels)
        return scores.cpu().numpy() if as_numpy else scores

    @torch.inference_mode()
    def rank_channels(self, masks: Tensor, channels: Tensor) -> Tensor:
        """:meth:`rank` with labels already as SRM channels (thing indices 0..T-1), tensors in and out."""
        n, height, width = masks.shape
        if n == 0:
            return torch.zeros(0, dtype=torch.float32, device=masks.device)
        binary, soft = sample_to_grid(masks, self.grid(height, width))
        occupancy = occupancy_map(binary, channels, self.srm.num_classes)
        logits = present_channels_forward(self.srm, occupancy[None], torch.unique(channels))
        probs = full_precision(logits)[0].softmax(0)
        return ranking_scores(probs, binary, channels, soft_masks=soft)

    def __repr__(self) -> str:
        return (f"SpatialRanker({self.state()['kernel']}, {self.srm.num_classes} thing classes, "
                f"short side {self.short_side}, stride {self.srm.stride})")

