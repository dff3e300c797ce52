"""Model options that pretrained detectron2 weights need: the MSRA ResNet's stride in the 1x1 conv,
RoIAlign with aligned=True, and BGR 0-255 input with detectron2's mean and std."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import MultiScaleRoIAlign

from oanet.config import BackboneConfig, load_config
from oanet.errors import ConfigError
from oanet.model.backbone import build_resnet
from oanet.model.oanet import OANet
from oanet.model.poolers import AlignedMultiScaleRoIAlign, build_roi_pool
from oanet.model.transform import PanopticTransform

from test_model import tiny_config


def _randomize_frozen_bn(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for name, buffer in module.named_buffers():
        if name.endswith("running_var"):
            buffer.copy_(torch.rand(buffer.shape, generator=g) + 0.5)
        elif name.endswith(("running_mean", "bias")):
            buffer.copy_(torch.randn(buffer.shape, generator=g) * 0.1)


def test_stride_in_1x1_puts_the_stride_in_the_first_conv_as_the_msra_resnet():
    torch.manual_seed(0)
    cfg = BackboneConfig(depth=50, stride_in_1x1=True, trainable_layers=0)
    msra = build_resnet(cfg)
    _randomize_frozen_bn(msra, 1)
    plain = build_resnet(dataclasses.replace(cfg, stride_in_1x1=False))
    plain.load_state_dict(msra.state_dict())  # same tensors, only the strides differ
    for stage in ("layer2", "layer3", "layer4"):
        first, *rest = getattr(msra, stage)
        assert (first.conv1.stride, first.conv2.stride, first.downsample[0].stride) == ((2, 2), (1, 1), (2, 2))
        assert all(b.conv1.stride == (1, 1) and b.conv2.stride == (1, 1) for b in rest)
    assert plain.layer2[0].conv1.stride == (1, 1) and plain.layer2[0].conv2.stride == (2, 2)
    assert msra.layer1[0].conv1.stride == (1, 1)  # res2 does not downsample

    block = msra.layer2[0]
    x = torch.randn(1, 256, 12, 12)
    with torch.no_grad():
        # The MSRA block by hand: the strided 1x1 conv reads every other pixel, the 3x3 runs at stride 1.
        y = F.relu(block.bn1(F.conv2d(x[..., ::2, ::2], block.conv1.weight)))
        y = F.relu(block.bn2(F.conv2d(y, block.conv2.weight, padding=1)))
        expected = F.relu(block.bn3(F.conv2d(y, block.conv3.weight)) + block.downsample(x))
        assert torch.allclose(block(x), expected, atol=1e-5)
        assert not torch.allclose(plain.layer2[0](x), expected, atol=1e-3)  # torchvision's v1.5 block
        image = torch.randn(1, 3, 64, 64)
        assert msra(image).shape == plain(image).shape


def test_stride_in_1x1_needs_bottleneck_blocks():
    with pytest.raises(ConfigError, match="stride_in_1x1: ResNet-18 has basic blocks"):
        build_resnet(BackboneConfig(depth=18, stride_in_1x1=True))


def _ramp_features(size: int = 256) -> OrderedDict:
    """P2-P5 of a ``size`` image whose value is the feature column index: RoIAlign then returns the
    mean sampling x coordinate of each bin, which shows where it samples."""
    out = OrderedDict()
    for i, stride in enumerate((4, 8, 16, 32)):
        n = size // stride
        out[str(i)] = torch.arange(n, dtype=torch.float32).expand(1, 2, n, n).contiguous()
    return out


def test_aligned_roi_pooling_samples_half_a_feature_pixel_earlier_on_each_level():
    features = _ramp_features()
    # 20 px -> P2 (scale 1/4), 120 px -> P3 (1/8), 224 px -> P4 (1/16): FPN's level rule.
    boxes = torch.tensor([[40.0, 40, 60, 60], [64, 64, 184, 184], [16, 16, 240, 240]])
    scales = torch.tensor([1 / 4, 1 / 8, 1 / 16])
    plain = build_roi_pool(2, 2, aligned=False)
    aligned = build_roi_pool(2, 2, aligned=True)
    assert type(plain) is MultiScaleRoIAlign and isinstance(aligned, AlignedMultiScaleRoIAlign)
    out_plain = plain(features, [boxes], [(256, 256)])
    out_aligned = aligned(features, [boxes], [(256, 256)])
    # Bin k of a box spanning [x1, x2] on a ramp: x1 * s + (k + 0.5) * (x2 - x1) * s / 2, minus 0.5 aligned.
    k = torch.tensor([0.5, 1.5])
    expected = boxes[:, :1] * scales[:, None] + k[None] * ((boxes[:, 2:3] - boxes[:, :1]) * scales[:, None] / 2)
    assert torch.allclose(out_plain[:, 0, 0, :], expected, atol=1e-5)
    assert torch.allclose(out_aligned[:, 0, 0, :], expected - 0.5, atol=1e-5)


def test_aligned_roi_pooling_batches_images_and_keeps_box_order():
    features = _ramp_features()
    features = OrderedDict((k, torch.cat([v, v + 100])) for k, v in features.items())  # image 1 = +100
    boxes = [torch.tensor([[16.0, 16, 240, 240]]), torch.tensor([[40.0, 40, 60, 60], [16, 16, 240, 240]])]
    out = build_roi_pool(1, 0, aligned=True)(features, boxes, [(256, 256), (256, 256)])
    assert out.shape == (3, 2, 1, 1)
    centre = lambda box, s: (box[0] + box[2]) / 2 * s - 0.5
    expected = torch.tensor([centre(boxes[0][0], 1 / 16), 100 + centre(boxes[1][0], 1 / 4), 100 + centre(boxes[1][1], 1 / 16)])
    assert torch.allclose(out[:, 0, 0, 0], expected, atol=1e-4)
    with pytest.raises(ConfigError, match="pooler_sampling_ratio must be >= 0"):
        build_roi_pool(7, -1, aligned=True)


def test_bgr_0_255_input_with_detectron2_mean_and_std():
    mean = [103.53, 116.28, 123.675]
    transform = PanopticTransform(
        min_size=8, max_size=8, image_mean=mean, image_std=[1.0, 1.0, 1.0], input_format="BGR", input_scale=255
    )
    image = torch.rand(3, 8, 8)
    expected = image.flip(0) * 255 - torch.tensor(mean)[:, None, None]
    assert torch.allclose(transform.normalize(image), expected, atol=1e-4)
    default = PanopticTransform(min_size=8, max_size=8, image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.2, 0.2])
    assert torch.allclose(default.normalize(image), (image - torch.tensor([0.5, 0.4, 0.3])[:, None, None]) / 0.2)
    with pytest.raises(TypeError, match="floating"):
        transform.normalize(torch.zeros(3, 8, 8, dtype=torch.uint8))


def test_config_fields_reach_the_model():
    cfg = load_config(None, [
        "model.input_format=BGR", "model.input_scale=255", "model.roi_heads.pooler_aligned=true",
        "model.roi_heads.pooler_sampling_ratio=0", "model.freeze=[backbone, rpn]", "model.init=x.pkl",
    ])
    assert (cfg.model.input_format, cfg.model.input_scale, cfg.model.freeze) == ("BGR", 255.0, ("backbone", "rpn"))
    with pytest.raises(ConfigError, match="input_format"):
        load_config(None, ["model.input_format=bgr"])
    model = OANet.from_config(dataclasses.replace(
        tiny_config(), input_format="BGR", input_scale=255.0,
        roi_heads=dataclasses.replace(tiny_config().roi_heads, pooler_aligned=True, pooler_sampling_ratio=0),
    ))
    assert (model.transform.input_format, model.transform.input_scale) == ("BGR", 255.0)
    assert isinstance(model.roi_heads.box_roi_pool, AlignedMultiScaleRoIAlign)
    assert model.roi_heads.mask_roi_pool.sampling_ratio == 0
    model.eval()
    (result,) = model([torch.rand(3, 64, 80)])  # the aligned pooler runs inside the instance branch
    assert result["masks"].shape[-2:] == (64, 80)
