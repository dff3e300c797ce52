"""ResNet + FPN backbone with the three feature-sharing modes of the paper's Table 4.

* ``"fpn"`` (default, "+skip-connection"): one ResNet and one FPN; both branches read the same P2-P6.
* ``"backbone"`` ("res1-res5"): one ResNet, one FPN per branch.
* ``"none"``: two complete ResNet+FPN networks, one per branch (the separate-networks baseline).

Every mode returns ``(instance_features, stuff_features)``, two ordered dicts with keys
``"0".."3"`` (P2-P5, strides 4-32) and ``"pool"`` (P6, stride 64, from LastLevelMaxPool), as
torchvision's detection backbones do, so RPN / RoIHeads / MultiScaleRoIAlign plug in unchanged.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Optional

import torch
import torchvision
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops import FeaturePyramidNetwork, FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from oanet.config import BackboneConfig
from oanet.errors import ConfigError

SUPPORTED_DEPTHS = (18, 34, 50, 101)
SHARING_MODES = ("none", "backbone", "fpn")
# ResNet stages in the order torchvision's Mask R-CNN unfreezes them (last stage first).
_STAGES_LAST_FIRST = ("layer4", "layer3", "layer2", "layer1", "conv1")
_RETURN_LAYERS = {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"}


def _resolve_weights(depth: int, weights: Optional[str]):
    """``(torchvision weights enum or None, local state-dict path or None)`` for ``cfg.weights``."""
    if weights is None or weights == "":
        return None, None
    path = Path(weights).expanduser()
    if weights.endswith((".pth", ".pt")) or path.is_file():
        if not path.is_file():
            raise ConfigError(f"backbone.weights: file {weights} not found")
        return None, path
    enum = torchvision.models.get_model_weights(f"resnet{depth}")
    try:
        return enum[weights], None
    except KeyError:
        names = ", ".join(["DEFAULT"] + [w.name for w in enum])
        raise ConfigError(
            f"backbone.weights: {weights!r} is neither a local .pth file nor one of {names}"
        ) from None


def build_resnet(cfg: BackboneConfig) -> nn.Module:
    """A torchvision ResNet with the configured weights, normalisation and frozen stages."""
    if cfg.depth not in SUPPORTED_DEPTHS:
        raise ConfigError(f"backbone.depth: {cfg.depth} is not one of {SUPPORTED_DEPTHS}")
    if not 0 <= cfg.trainable_layers <= 5:
        raise ConfigError(f"backbone.trainable_layers: {cfg.trainable_layers} is not in 0..5")
    if cfg.stride_in_1x1 and cfg.depth < 50:
        raise ConfigError(
            f"backbone.stride_in_1x1: ResNet-{cfg.depth} has basic blocks (no 1x1 conv); only 50/101 have it"
        )
    weights_enum, local_path = _resolve_weights(cfg.depth, cfg.weights)
    # Honoured as configured even with random init (unlike torchvision, which then silently trains
    # everything with BatchNorm): a checkpoint's config must describe its model exactly. Training from
    # scratch wants frozen_bn=false and trainable_layers=5 (docs/model.md).
    norm_layer = FrozenBatchNorm2d if cfg.frozen_bn else nn.BatchNorm2d
    resnet = getattr(torchvision.models, f"resnet{cfg.depth}")(weights=weights_enum, norm_layer=norm_layer)
    if local_path is not None:
        try:
            state = torch.load(local_path, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated/garbage file, pickled code, ...
            # torch's messages run to many lines (weights_only advice): keep the first sentence.
            first = (str(exc).strip().splitlines() or [""])[0].split(". ")[0][:200]
            raise ConfigError(
                f"backbone.weights: {local_path}: not a readable weights file ({type(exc).__name__}: {first})"
            ) from None
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ConfigError(
                f"backbone.weights: {local_path}: expected a state dict, found {type(state).__name__}"
            )
        # The classifier is not part of a detection backbone; BN counters do not exist in frozen BN.
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        if cfg.frozen_bn:
            state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
        own = {k: v for k, v in resnet.state_dict().items() if not k.startswith("fc.")}
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise ConfigError(
                f"backbone.weights: {local_path} is not a ResNet-{cfg.depth} state dict "
                f"(missing {missing[:3]}..., unexpected {unexpected[:3]}...)"
            )
        try:
            resnet.load_state_dict(state, strict=False)
        except RuntimeError as exc:
            raise ConfigError(f"backbone.weights: {local_path}: {exc}") from None
    if cfg.stride_in_1x1:
        move_stride_to_1x1(resnet)
    freeze_stages(resnet, cfg.trainable_layers)
    return resnet


def move_stride_to_1x1(resnet: nn.Module) -> None:
    """Put each downsampling bottleneck's stride in its first 1x1 conv instead of its 3x3 conv.

    That is the original (MSRA) ResNet, detectron2's ``STRIDE_IN_1X1``: weights trained that way
    compute something else with the stride in the 3x3 conv. The shortcut keeps its strided 1x1 conv.
    """
    for stage in ("layer2", "layer3", "layer4"):
        block = getattr(resnet, stage)[0]
        stride = block.conv2.stride
        block.conv1.stride, block.conv2.stride = stride, (1, 1)


def freeze_stages(resnet: nn.Module, trainable_layers: int) -> None:
    """Freeze all but the last ``trainable_layers`` stages, with the semantics of torchvision's Mask R-CNN."""
    train = list(_STAGES_LAST_FIRST[:trainable_layers])
    if trainable_layers == 5:
        train.append("bn1")
    for name, parameter in resnet.named_parameters():
        if not any(name.startswith(stage) for stage in train):
            parameter.requires_grad_(False)


def _fpn_in_channels(depth: int) -> list[int]:
    # Basic-block ResNets (18/34) end at 512 channels, bottleneck ones (50/101) at 2048.
    last = 512 if depth < 50 else 2048
    return [last // 8, last // 4, last // 2, last]


def build_fpn(depth: int, out_channels: int) -> FeaturePyramidNetwork:
    return FeaturePyramidNetwork(_fpn_in_channels(depth), out_channels, extra_blocks=LastLevelMaxPool())


class OANetBackbone(nn.Module):
    """ResNet(s) + FPN(s) wired for one sharing mode; ``forward(x) -> (instance_feats, stuff_feats)``."""

    def __init__(self, cfg: BackboneConfig, sharing: str = "fpn") -> None:
        super().__init__()
        if sharing not in SHARING_MODES:
            raise ConfigError(f"model.sharing: {sharing!r} is not one of {SHARING_MODES}")
        self.sharing = sharing
        self.out_channels = cfg.fpn_channels

        def body() -> nn.Module:
            return IntermediateLayerGetter(build_resnet(cfg), return_layers=_RETURN_LAYERS)

        self.body = body()
        self.fpn = build_fpn(cfg.depth, cfg.fpn_channels)
        # Modules that only exist when a level is not shared belong to the stuff branch.
        self.stuff_body: Optional[nn.Module] = body() if sharing == "none" else None
        self.stuff_fpn: Optional[nn.Module] = (
            build_fpn(cfg.depth, cfg.fpn_channels) if sharing in ("none", "backbone") else None
        )

    def forward(self, x: torch.Tensor) -> tuple[OrderedDict, OrderedDict]:
        c = self.body(x)
        instance = self.fpn(c)
        if self.sharing == "fpn":
            return instance, instance
        c_stuff = self.stuff_body(x) if self.stuff_body is not None else c
        return instance, self.stuff_fpn(c_stuff)
