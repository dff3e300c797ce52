"""Spatial ranking module (paper §3.2, Fig. 4, Eqs. 2-4).

Instance masks are written into a zero tensor with one channel per thing class (1 inside a mask;
instances of one class share their channel), a large-kernel convolution turns it into a ranking
score map (``T`` channels), and softmax over classes makes it a per-pixel distribution. Training
supervises it with the class of the visible (panoptic) segment at pixels where >= 2 instance masks
overlap (everything else is 255 in the target, Eq. 2). At inference each detection's ranking score
is the mean over its mask of its own class's probability (Eq. 3). The paper's Eq. 4 defines the
mask indicator as 0 inside the instance and 1 outside, which would average over the complement of
the mask; the text ("the average of pixel ranking scores in a mask") makes clear it is meant as
1 inside, which is what is implemented.

The module runs at 1/``stride`` of the (padded) network input: 4 by default, 16x fewer values than
full resolution (for 80 classes at 800x1216: 80x200x304 instead of 80x800x1216 floats).

Why a single linear layer can learn the order: at a pixel where the channels of a set of classes
are on, the logit of class c is ``sum_k W[c,k] x_k + b_c``. With ``W = diag(r)`` and ``b = 0``,
the present class with the largest ``r`` wins, so any total depth order over classes (tie above
person) is representable; larger kernels add spatial context (Table 5). A hidden layer is not
needed for that, so the module stays faithful to the paper: one (possibly factorised) linear conv.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from oanet.model.autocast import full_precision
from oanet.model.stuff_head import masked_cross_entropy

SRM_KERNELS = ("1x1", "3x3", "gcn7")


class GlobalConvolution(nn.Module):
    """Large-kernel conv of "Large Kernel Matters": (kx1 then 1xk) + (1xk then kx1), no nonlinearity."""

    def __init__(self, in_channels: int, out_channels: int, k: int = 7) -> None:
        super().__init__()
        p = k // 2
        self.left = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, (k, 1), padding=(p, 0), bias=False),
            nn.Conv2d(out_channels, out_channels, (1, k), padding=(0, p)),
        )
        self.right = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, (1, k), padding=(0, p), bias=False),
            nn.Conv2d(out_channels, out_channels, (k, 1), padding=(p, 0)),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.left(x) + self.right(x)


class SpatialRankingModule(nn.Module):
    """``forward(occupancy B x T x h x w) -> ranking logits B x T x h x w``."""

    def __init__(self, num_classes: int, kernel: str = "gcn7", stride: int = 4, loss_weight: float = 1.0) -> None:
        super().__init__()
        if kernel not in SRM_KERNELS:
            raise ValueError(f"srm.kernel must be one of {SRM_KERNELS}, got {kernel!r}")
        if stride < 1 or 32 % stride != 0:
            # The padded batch is divisible by 32, so these strides tile it exactly.
            raise ValueError(f"srm.stride must divide 32, got {stride}")
        self.num_classes = num_classes
        self.stride = stride
        self.loss_weight = loss_weight
        if kernel == "1x1":
            self.conv: nn.Module = nn.Conv2d(num_classes, num_classes, 1)
        elif kernel == "3x3":
            self.conv = nn.Conv2d(num_classes, num_classes, 3, padding=1)
        else:
            self.conv = GlobalConvolution(num_classes, num_classes, 7)

    def forward(self, occupancy: Tensor) -> Tensor:
        return self.conv(occupancy)

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Eq. 2 x loss_weight; ``targets`` are ``B x h x w`` at the SRM resolution (255 = ignore)."""
        return self.loss_weight * masked_cross_entropy(logits, targets)


def present_channels_forward(srm: SpatialRankingModule, occupancy: Tensor, channels: Tensor) -> Tensor:
    """``srm(occupancy)`` computed from the occupancy's ``channels`` alone (the others must be all 0).

    The module's layers are linear with no nonlinearity between them, so its composition is one
    ``k x k`` convolution; built for the few classes present in an image (an image shows a handful of
    the 80 COCO thing classes) it costs ``present / T`` of the full input for 1x1 and 3x3, and for the
    factorised gcn7 (whose second layers see all T channels) about ``2 * present * 7 / (4 * T)``: 10x
    less at 80 classes with 5 present. Equal to the module's forward up to float rounding; the plug-in
    (:mod:`oanet.srm`) trains and ranks with it, OANet's network keeps its module.
    """
    weight, bias, padding = _composed_kernel(srm, channels)
    return F.conv2d(occupancy[:, channels], weight, bias, padding=padding)


def _composed_kernel(srm: SpatialRankingModule, channels: Tensor) -> tuple[Tensor, Tensor, int]:
    """``(weight T x C x k x k, bias T, padding)`` of the SRM's conv, for input ``channels`` only."""
    conv = srm.conv
    if isinstance(conv, nn.Conv2d):
        return conv.weight[:, channels], conv.bias, conv.padding[0]
    (l1, l2), (r1, r2) = conv.left, conv.right
    # left: (k x 1) then (1 x k); right: (1 x k) then (k x 1). K[t, c, i, j] = sum_m second[t, m, .] first[m, c, .]
    left = torch.einsum("tmj,mci->tcij", l2.weight[:, :, 0, :], l1.weight[:, channels, :, 0])
    right = torch.einsum("tmi,mcj->tcij", r2.weight[:, :, :, 0], r1.weight[:, channels, 0, :])
    return left + right, l2.bias + r2.bias, l1.padding[0]


def subsample(x: Tensor, stride: int) -> Tensor:
    """Nearest-neighbour downsampling of the last two dims, sampling the centre of each cell.

    Used for both the instance masks and the SRM target, so they are sampled at the same pixels and
    every non-ignored target pixel sees all the overlapping masks it was built from.
    """
    if stride == 1:
        return x
    o = stride // 2
    return x[..., o::stride, o::stride]


def occupancy_map(masks: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """``T x h x w`` float map: 1 where any instance of class t covers the pixel, else 0.

    ``masks``: ``N x h x w`` binary; ``labels``: ``N`` thing indices 0..T-1.
    """
    h, w = masks.shape[-2:]
    flat = masks.flatten(1).to(torch.float32)
    # scatter_add rather than index_add_: the same sums, and ONNX export maps it to ScatterElements
    # (reduction "add"), while its index_add_ ignores repeated labels (two instances of one class).
    occupancy = flat.new_zeros((num_classes, h * w)).scatter_add_(0, labels[:, None].expand_as(flat), flat)
    return occupancy.clamp_(max=1.0).reshape(num_classes, h, w)


def paste_masks_at_stride(mask_probs: Tensor, boxes: Tensor, size: tuple[int, int], stride: int) -> Tensor:
    """Paste ``N x M x M`` RoI mask probabilities into an ``N x h x w`` canvas at 1/``stride`` scale.

    Batched with one grid_sample (torchvision's paste_masks_in_image loops over instances). Pixel
    ``(i, j)`` of the canvas has its centre at ``((j + .5) * stride, (i + .5) * stride)`` in network
    input coordinates and samples the mask there; outside the box the value is 0.
    """
    mask_probs = full_precision(mask_probs)  # pixel coordinates need float32
    n = mask_probs.shape[0]
    h, w = size
    if n == 0 and not torch.jit.is_tracing():  # the traced (ONNX) graph takes the general path, fine for 0
        return mask_probs.new_zeros((0, h, w))
    device, dtype = mask_probs.device, mask_probs.dtype
    ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) * stride
    xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) * stride
    x0, y0, x1, y1 = boxes.to(dtype).unbind(1)
    # Normalised coordinates in the box: -1 and 1 are the box edges (align_corners=False).
    gx = (xs[None, :] - x0[:, None]) / (x1 - x0).clamp(min=1e-6)[:, None] * 2 - 1
    gy = (ys[None, :] - y0[:, None]) / (y1 - y0).clamp(min=1e-6)[:, None] * 2 - 1
    grid = torch.stack((gx[:, None, :].expand(n, h, w), gy[:, :, None].expand(n, h, w)), dim=-1)
    return F.grid_sample(mask_probs[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0]


def ranking_scores(probs: Tensor, masks: Tensor, labels: Tensor, soft_masks: Tensor | None = None) -> Tensor:
    """Eq. 3: each instance's mean, over its mask, of its class channel of the softmaxed score map.

    ``probs``: ``T x h x w``; ``masks``: ``N x h x w`` binary; ``labels``: ``N``. An instance whose
    binary mask has no pixel at this resolution (a very small object at stride 4) falls back to the
    mean weighted by ``soft_masks`` (its mask probabilities) when given, else gets 0.
    """
    probs = full_precision(probs)  # means over thousands of pixels: float32 sums
    n = masks.shape[0]
    if n == 0 and not torch.jit.is_tracing():  # as in paste_masks_at_stride
        return probs.new_zeros((0,))
    own = probs[labels]  # N x h x w: S_{i,j,cls}
    weights = masks.to(probs.dtype)
    area = weights.flatten(1).sum(1)
    if soft_masks is not None:
        weights = torch.where((area > 0)[:, None, None], weights, soft_masks.to(probs.dtype))
        area = weights.flatten(1).sum(1)
    total = (own * weights).flatten(1).sum(1)
    return torch.where(area > 0, total / area.clamp(min=1e-12), torch.zeros_like(total))
