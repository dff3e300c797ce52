"""Keep the detection geometry of torchvision's RPN and RoIHeads in float32 under autocast.

Under ``torch.autocast`` the FPN features are bfloat16 / float16, and torchvision derives the dtype
of the geometry from them: ``AnchorGenerator`` makes its anchors in the features' dtype and
``BoxCoder.decode`` casts the reference boxes to the deltas' dtype. bfloat16 has 8 significant bits,
so anchors, proposals and detections at 512-1024 px would move in steps of 4 px (float16: 0.5 px).
Two kinds of hooks keep them in float32, without changing any module or state-dict key:

* the anchor generator is handed float32 stand-ins of the feature maps (zero-stride views of one
  number: it reads only their shape, dtype and device);
* the RPN head, box predictor and mask predictor return float32 (their convolutions and matmuls
  still run in the autocast dtype), so box decoding, softmax scores and mask probabilities are
  float32.

In float32 both hooks return their input untouched: fp32 results are bit-identical with or without
them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

LOW_PRECISION = (torch.float16, torch.bfloat16)


def _is_low_precision(t: object) -> bool:
    return isinstance(t, Tensor) and t.dtype in LOW_PRECISION


def full_precision(t: Tensor) -> Tensor:
    """``t`` in float32 when it is float16 / bfloat16; else ``t`` itself (no copy)."""
    return t.float() if _is_low_precision(t) else t


def _float32_outputs(module: nn.Module, inputs: tuple, output):
    if isinstance(output, (list, tuple)):
        if any(_is_low_precision(o) or isinstance(o, (list, tuple)) for o in output):
            return type(output)(_float32_outputs(module, inputs, o) for o in output)
        return output
    return full_precision(output) if isinstance(output, Tensor) else output


def _float32_feature_stand_ins(module: nn.Module, args: tuple):
    image_list, feature_maps = args
    if not any(_is_low_precision(f) for f in feature_maps):
        return None
    stand_ins = [f.new_zeros((), dtype=torch.float32).expand(f.shape) for f in feature_maps]
    return image_list, stand_ins


def keep_geometry_float32(rpn: nn.Module, roi_heads: nn.Module) -> None:
    """Register the hooks above on torchvision's ``RegionProposalNetwork`` and ``RoIHeads``."""
    rpn.anchor_generator.register_forward_pre_hook(_float32_feature_stand_ins)
    for head in (rpn.head, roi_heads.box_predictor, roi_heads.mask_predictor):
        if head is not None:
            head.register_forward_hook(_float32_outputs)
