"""The OANet network on tiny random inputs: every sharing mode, stuff-class mode and SRM kernel."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torchvision.ops import FrozenBatchNorm2d

from oanet.config import (
    BackboneConfig,
    FusionConfig,
    ModelConfig,
    RoIHeadsConfig,
    RPNConfig,
    SRMConfig,
    StuffHeadConfig,
)
from oanet.errors import ConfigError
from oanet.model.backbone import OANetBackbone
from oanet.model.oanet import LOSS_KEYS, OANet, build_model, resample_to_original, stuff_labels
from oanet.model.transform import PanopticTransform

T, S = 3, 2



def tiny_config(sharing="fpn", classes="all", kernel="gcn7", srm=True, **backbone) -> ModelConfig:
    return ModelConfig(
        num_thing_classes=T,
        num_stuff_classes=S,
        sharing=sharing,
        min_size=(64,),
        max_size=128,
        backbone=BackboneConfig(
            **{"depth": 18, "fpn_channels": 32, "frozen_bn": False, "trainable_layers": 5, **backbone}
        ),
        rpn=RPNConfig(
            pre_nms_top_n_train=64,
            post_nms_top_n_train=32,
            pre_nms_top_n_test=64,
            post_nms_top_n_test=32,
            batch_size_per_image=32,
        ),
        roi_heads=RoIHeadsConfig(
            batch_size_per_image=16,
            box_representation_size=32,
            mask_head_channels=8,
            score_thresh=0.0,  # random init: keep detections so the SRM and outputs are exercised
            detections_per_img=8,
        ),
        stuff_head=StuffHeadConfig(classes=classes, channels=16),
        srm=SRMConfig(enabled=srm, kernel=kernel),
        fusion=FusionConfig(score_thresh=0.0),
    )


def sample(h=64, w=80, classes="all", seed=0):
    """A hand-made image + target: a person (thing 0) with a tie (thing 1) on it, and stuff around."""
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(3, h, w, generator=g) * 0.2
    masks = torch.zeros(3, h, w, dtype=torch.uint8)
    masks[0, 8:56, 10:40] = 1  # person
    masks[1, 16:40, 22:28] = 1  # tie, inside the person
    masks[2, 20:50, 50:75] = 1  # car
    image[0][masks[0].bool()] += 0.6
    image[1][masks[1].bool()] += 0.7
    image[2][masks[2].bool()] += 0.5
    boxes = torch.tensor([[10.0, 8, 40, 56], [22, 16, 28, 40], [50, 20, 75, 50]])
    stuff_0 = T if classes == "all" else 1
    sem_seg = torch.full((h, w), stuff_0)
    sem_seg[h // 2 :] = stuff_0 + 1
    if classes == "all":
        for i, label in enumerate((0, 2)):
            sem_seg[masks[[0, 2][i]].bool()] = label
        sem_seg[masks[1].bool()] = 1
    else:
        sem_seg[masks.any(0).bool()] = 0
    srm = torch.full((h, w), 255)
    srm[(masks[0] & masks[1]).bool()] = 1
    target = {
        "boxes": boxes,
        "labels": torch.tensor([0, 1, 2]),
        "masks": masks,
        "sem_seg": sem_seg,
        "srm": srm,
        "image_id": seed,
    }
    return image.clamp(0, 1), target


def empty_sample(h=48, w=56):
    image = torch.rand(3, h, w)
    return image, {
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.long),
        "masks": torch.zeros(0, h, w, dtype=torch.uint8),
        "sem_seg": torch.full((h, w), 255),
        "srm": torch.full((h, w), 255),
    }


# Pairwise coverage of sharing x classes x kernel (each pair of values appears), plus SRM off.
COMBOS = [
    ("fpn", "all", "gcn7", True),
    ("fpn", "stuff", "1x1", True),
    ("backbone", "all", "1x1", True),
    ("backbone", "stuff", "3x3", True),
    ("none", "all", "3x3", True),
    ("none", "stuff", "gcn7", True),
    ("fpn", "all", "gcn7", False),
]


@pytest.mark.parametrize("sharing,classes,kernel,srm", COMBOS)
def test_train_and_inference_step(sharing, classes, kernel, srm):
    torch.manual_seed(0)
    model = build_model(tiny_config(sharing, classes, kernel, srm))
    assert (model.srm is not None) == srm
    images, targets = zip(sample(classes=classes), empty_sample())
    losses = model(list(images), list(targets))
    assert tuple(losses) == LOSS_KEYS
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    assert (losses["srm"] > 0) == srm
    sum(losses.values()).backward()
    # Every trainable parameter is in the graph (DistributedDataParallel without find_unused_parameters).
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    # The caller's targets are untouched (labels stay thing indices, sizes stay original).
    assert targets[0]["labels"].tolist() == [0, 1, 2] and targets[0]["sem_seg"].shape == (64, 80)

    model.eval()
    outputs = model([images[0], torch.rand(3, 50, 70)])
    channels = T + S if classes == "all" else 1 + S
    for out, (h, w) in zip(outputs, [(64, 80), (50, 70)]):
        n = out["boxes"].shape[0]
        assert 0 < n <= 8
        assert out["labels"].dtype == torch.int64 and out["labels"].min() >= 0 and out["labels"].max() < T
        assert out["masks"].shape == (n, h, w) and 0 <= out["masks"].min() and out["masks"].max() <= 1
        assert out["ranking_scores"].shape == (n,)
        assert out["sem_seg_labels"].shape == (h, w) and out["sem_seg_labels"].dtype == torch.int64
        assert out["sem_seg_logits"].shape[0] == channels and out["sem_seg_logits"].dim() == 3
        assert out["selected"].dtype == torch.bool and out["selected"].shape == (n,)
        assert (out["boxes"][:, 2:] <= torch.tensor([w, h]) + 1e-3).all()
        if srm:
            assert ((out["ranking_scores"] >= 0) & (out["ranking_scores"] <= 1)).all()
        else:
            assert torch.equal(out["ranking_scores"], out["scores"])


def _grad_norm(modules) -> float:
    return sum(float(p.grad.abs().sum()) for m in modules for p in m.parameters() if p.grad is not None)


def test_seg_loss_reaches_shared_fpn_and_resnet_in_fpn_mode():
    model = OANet.from_config(tiny_config("fpn"))
    image, target = sample()
    model([image], [target])["seg"].backward()
    assert _grad_norm([model.backbone.fpn]) > 0 and _grad_norm([model.backbone.body]) > 0
    assert _grad_norm([model.rpn, model.roi_heads]) == 0


def test_branches_are_separate_in_none_mode():
    model = OANet.from_config(tiny_config("none"))
    image, target = sample()
    losses = model([image], [target])
    losses["seg"].backward(retain_graph=True)
    assert _grad_norm([model.backbone.body, model.backbone.fpn]) == 0
    assert _grad_norm([model.backbone.stuff_body]) > 0 and _grad_norm([model.backbone.stuff_fpn]) > 0
    model.zero_grad(set_to_none=True)
    (losses["rpn_cls"] + losses["cls"] + losses["mask"]).backward()
    assert _grad_norm([model.backbone.stuff_body, model.backbone.stuff_fpn]) == 0
    assert _grad_norm([model.backbone.body]) > 0


def test_backbone_mode_shares_resnet_but_not_fpn():
    model = OANet.from_config(tiny_config("backbone"))
    image, target = sample()
    model([image], [target])["seg"].backward()
    assert model.backbone.stuff_body is None
    assert _grad_norm([model.backbone.stuff_fpn]) > 0 and _grad_norm([model.backbone.body]) > 0
    assert _grad_norm([model.backbone.fpn]) == 0


def test_overfits_two_tiny_images():
    torch.manual_seed(0)
    model = OANet.from_config(tiny_config("fpn"))
    data = [sample(seed=0), sample(seed=1)]
    images, targets = [d[0] for d in data], [d[1] for d in data]
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    totals = []
    for _ in range(30):
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        totals.append(loss.item())
    assert all(torch.isfinite(torch.tensor(totals)))
    assert sum(totals[-3:]) / 3 < 0.5 * totals[0], totals


def test_transform_resizes_and_pads_dense_targets_like_the_image():
    transform = PanopticTransform(min_size=(64, 96), max_size=200, image_mean=[0.0] * 3, image_std=[1.0] * 3)
    image, target = sample(h=40, w=50)
    transform.eval()
    images, targets = transform([image, torch.rand(3, 30, 44)], [target, empty_sample(30, 44)[1]])
    padded = images.tensors.shape[-2:]
    assert padded[0] % 32 == 0 and padded[1] % 32 == 0
    (h, w) = images.image_sizes[0]
    assert (h, w) == (96, 120)  # inference uses the last min_size
    for key in ("sem_seg", "srm"):
        assert targets[0][key].shape == padded and targets[0][key].dtype == torch.int64
        assert (targets[0][key][h:] == 255).all() and (targets[0][key][:, w:] == 255).all()
    # Nearest resize: only labels that exist in the input, and the tie stays where the image put it.
    assert set(targets[0]["sem_seg"].unique().tolist()) <= set(target["sem_seg"].unique().tolist()) | {255}
    assert targets[0]["masks"].shape[-2:] == padded
    assert torch.equal(targets[0]["srm"][:h, :w] == 1, (targets[0]["masks"][0] & targets[0]["masks"][1]).bool()[:h, :w])
    assert targets[1]["masks"].shape == (0, *padded)
    transform.train()
    sizes = set()
    for _ in range(12):
        images, _ = transform([image])
        sizes.add(min(images.image_sizes[0]))
    assert sizes == {64, 96}  # multi-scale training


def test_resample_to_original_aligns_stride4_logits():
    # Image 48x64 in a 64x64 padded batch; a class boundary at x = 32 of the network input.
    logits = torch.zeros(2, 16, 16)
    logits[1, :, 8:] = 1.0
    out = resample_to_original(logits, (48, 64), (24, 32), stride=4)
    assert out.shape == (2, 24, 32)
    labels = out.argmax(0)
    assert (labels[:, :15] == 0).all() and (labels[:, 17:] == 1).all()


@pytest.mark.parametrize("original", [(24, 32), (48, 64), (61, 83), (7, 9)])
def test_stuff_labels_equal_the_argmax_of_the_full_resampling(original):
    # Smooth random logits with many classes: large uniform regions and plenty of boundaries.
    g = torch.Generator().manual_seed(sum(original))
    logits = torch.nn.functional.interpolate(torch.randn(1, 9, 5, 5, generator=g) * 3, size=(16, 16),
                                             mode="bicubic", align_corners=False)[0]
    logits += torch.randn(9, 16, 16, generator=g) * 0.3
    full = resample_to_original(logits, (48, 64), original, stride=4).argmax(0)
    fast = stuff_labels(logits, (48, 64), original, stride=4)
    assert torch.equal(fast, full)
    assert 0 < len(torch.unique(full)) <= 9


def test_backbone_weights_freezing_and_norm(tmp_path):
    import torchvision

    state = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "r18.pth"
    torch.save(state, path)
    backbone = OANetBackbone(BackboneConfig(depth=18, weights=str(path), trainable_layers=3, fpn_channels=32))
    assert torch.equal(backbone.body["layer3"][0].conv1.weight, state["layer3.0.conv1.weight"])
    assert any(isinstance(m, FrozenBatchNorm2d) for m in backbone.modules())
    trainable = {n.split(".")[0] for n, p in backbone.body.named_parameters() if p.requires_grad}
    assert trainable == {"layer2", "layer3", "layer4"}
    frozen = OANetBackbone(BackboneConfig(depth=18, trainable_layers=0, fpn_channels=32, frozen_bn=False))
    assert not any(p.requires_grad for p in frozen.body.parameters())
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in frozen.modules())
    features = frozen(torch.rand(1, 3, 64, 64))[0]
    assert list(features) == ["0", "1", "2", "3", "pool"]
    assert [f.shape[-1] for f in features.values()] == [16, 8, 4, 2, 1]
    with pytest.raises(ConfigError):
        OANetBackbone(BackboneConfig(depth=18, weights="NOT_A_WEIGHT"))
    with pytest.raises(ConfigError):
        OANetBackbone(BackboneConfig(depth=18, weights=str(tmp_path / "missing.pth")))
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ConfigError):
        OANetBackbone(BackboneConfig(depth=18, weights=str(tmp_path / "bad.pth")))
    with pytest.raises(ConfigError):
        OANetBackbone(BackboneConfig(depth=19))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file at all")
    for bad, words in ((garbage, "not a readable weights file"), (tmp_path / "tensor.pth", "expected a state dict")):
        if bad.name == "tensor.pth":
            torch.save(torch.zeros(2), bad)
        with pytest.raises(ConfigError, match=f"backbone.weights: {bad}: {words}") as info:
            OANetBackbone(BackboneConfig(depth=18, weights=str(bad)))
        assert "\n" not in str(info.value)


def test_config_errors():
    with pytest.raises(ConfigError):
        OANet.from_config(dataclasses.replace(tiny_config(), num_thing_classes=0))
    with pytest.raises(ConfigError):
        OANet.from_config(dataclasses.replace(tiny_config(), sharing="half"))
    with pytest.raises(ConfigError):
        OANet.from_config(dataclasses.replace(tiny_config(), srm=SRMConfig(stride=3)))


# --------------------------------------------------------------------------------------------
# the network from its parts


class _OwnStuffHead(torch.nn.Module):
    """A user's stuff head: one 1x1 conv on P2, with the interface OANet calls."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, num_classes, 1)
        self.calls = 0

    def forward(self, features):
        self.calls += 1
        return self.conv(next(iter(features.values())))

    def loss(self, logits, targets):
        logits = torch.nn.functional.interpolate(logits, size=targets.shape[-2:], mode="bilinear", align_corners=False)
        return torch.nn.functional.cross_entropy(logits, targets, ignore_index=255)


def test_from_config_is_build_model_weight_for_weight():
    from oanet.model import build_model

    torch.manual_seed(0)
    a = OANet.from_config(tiny_config())
    torch.manual_seed(0)
    b = build_model(tiny_config())
    assert a.cfg == b.cfg == tiny_config() and a.score_thresh == tiny_config().fusion.score_thresh
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_oanet_takes_its_parts_and_runs_with_a_users_own_stuff_head():
    donor = OANet.from_config(tiny_config(srm=False))
    head = _OwnStuffHead(donor.backbone.out_channels, T + S)
    model = OANet(transform=donor.transform, backbone=donor.backbone, rpn=donor.rpn, roi_heads=donor.roi_heads,
                  stuff_head=head, srm=None, num_thing_classes=T, num_stuff_classes=S, score_thresh=0.0)
    assert model.cfg is None and model.srm is None
    image, target = sample()
    losses = model([image], [target])
    assert head.calls == 1 and float(losses["seg"].detach()) > 0 and float(losses["srm"].detach()) == 0
    losses["seg"].backward()
    assert head.conv.weight.grad is not None
    model.eval()
    (out,) = model([image])
    assert out["sem_seg_labels"].shape == image.shape[-2:]
    assert torch.equal(out["ranking_scores"], out["scores"])  # without an SRM, ranked by detection score


def test_oanet_parts_are_keyword_only():
    with pytest.raises(TypeError):
        OANet(tiny_config())  # noqa
