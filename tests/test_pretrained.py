"""load_pretrained with torchvision weights and oanet checkpoints; freezing. Offline: nothing is fetched.

The parity tests build torchvision's Mask R-CNN with random weights (BatchNorm statistics perturbed so
that the normalisation matters), save its state dict, load it into an OANet with COCO's label space and
check that both detect the same boxes, scores, COCO labels and masks on the same images.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn, maskrcnn_resnet50_fpn_v2
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

from oanet.config import BackboneConfig, Config, ModelConfig, RoIHeadsConfig, RPNConfig, StuffHeadConfig, to_dict
from oanet.data.coco_categories import COCO_THING_IDS, coco_label_space
from oanet.data.labels import Category, LabelSpace
from oanet.errors import ConfigError
from oanet.model.oanet import OANet
from oanet.model.pretrained import freeze, load_pretrained, match_slots
from oanet.model.weight_formats import BACKGROUND, torchvision_current_name

# Rows of torchvision's 91-entry COCO classifier without a category (index 0 is the background).
NA_ROWS = [12, 26, 29, 30, 45, 66, 68, 69, 71, 83]
# The same size and detection settings on both sides; fewer proposals and detections than COCO's
# defaults keep the RoI heads cheap on a CPU.
SIZE = dict(min_size=256, max_size=352, rpn_pre_nms_top_n_test=500, rpn_post_nms_top_n_test=300,
            box_detections_per_img=20)


@pytest.fixture(autouse=True)
def _never_fetch(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to download weights")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def _perturb(tv: torch.nn.Module, seed: int, confidence: float = 3.0) -> None:
    """Random BatchNorm statistics and a classifier that is confident, so detections pass the threshold.

    The N/A rows get a logit of -50: an OANet for COCO's 80 things has no such rows, and softmax over
    81 rows equals softmax over 91 only when the other 10 contribute nothing (trained COCO weights have
    them low too, since no box is ever of those classes).
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, buffer in tv.named_buffers():
            if name.endswith("running_mean"):
                buffer.copy_(torch.randn(buffer.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                buffer.copy_(torch.rand(buffer.shape, generator=g) + 0.5)
        cls = tv.roi_heads.box_predictor.cls_score
        cls.weight.mul_(confidence)
        cls.weight[NA_ROWS] = 0
        cls.bias[NA_ROWS] = -50


def _oanet_for(label_space: LabelSpace, size: dict = SIZE, **backbone) -> OANet:
    return OANet.from_config(ModelConfig(
        num_thing_classes=label_space.num_things, num_stuff_classes=label_space.num_stuff,
        min_size=(size["min_size"],), max_size=size["max_size"], backbone=BackboneConfig(**backbone),
        rpn=RPNConfig(pre_nms_top_n_test=SIZE["rpn_pre_nms_top_n_test"], post_nms_top_n_test=SIZE["rpn_post_nms_top_n_test"]),
        roi_heads=RoIHeadsConfig(detections_per_img=SIZE["box_detections_per_img"]),
    ))


def _assert_same_detections(tv: torch.nn.Module, model: OANet, label_space: LabelSpace, min_labels: int = 3) -> None:
    torch.manual_seed(5)
    images = [torch.rand(3, 240, 320), torch.rand(3, 300, 200)]
    tv.eval()
    model.eval()
    with torch.no_grad():
        expected = tv(images)
        got = model(images, score_thresh=0.05)
    thing_ids = torch.as_tensor(label_space.thing_ids)
    total = 0
    for e, g in zip(expected, got):
        assert len(e["boxes"]) == len(g["boxes"])
        total += len(e["boxes"])
        # Pair detections by label and box: scores that tie (saturated at 1 with random weights) may
        # come out in either order.
        labels = thing_ids[g["labels"]]
        same = ((e["boxes"][:, None] - g["boxes"][None]).abs().amax(-1) < 1e-4) & (e["labels"][:, None] == labels[None])
        assert same.any(1).all(), "a torchvision detection has no OANet counterpart"
        pair = same.int().argmax(1)
        assert len(set(pair.tolist())) == len(pair)
        assert torch.allclose(e["boxes"], g["boxes"][pair], atol=1e-4)
        assert torch.allclose(e["scores"], g["scores"][pair], atol=1e-4)
        assert torch.equal(e["labels"], labels[pair])
        assert torch.allclose(e["masks"][:, 0], g["masks"][pair], atol=1e-4)
    assert total >= 5, "too few detections for the comparison to mean anything"
    assert len({int(label) for e in expected for label in e["labels"]}) >= min_labels


@pytest.mark.slow  # ~10 s on 2 cores; the ResNet-18 variant below checks the same in the quick suite
def test_parity_with_torchvision_maskrcnn_resnet50_fpn(tmp_path):
    torch.manual_seed(0)
    # weights=None: torchvision builds the backbone with trainable BatchNorm2d (eval: running statistics).
    tv = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91, **SIZE)
    _perturb(tv, 1)
    path = tmp_path / "maskrcnn_r50.pth"
    torch.save(tv.state_dict(), path)
    label_space = coco_label_space()
    model = _oanet_for(label_space, depth=50, frozen_bn=False, trainable_layers=5)
    report = load_pretrained(model, path, label_space)
    assert {e["target"].split(".")[0] for e in report.reinitialized} == {"stuff_head", "srm"}
    assert not report.unused
    assert len(report.remapped) == 6  # cls_score, bbox_pred, mask_fcn_logits: weight + bias
    _assert_same_detections(tv, model, label_space)


def test_parity_with_a_resnet18_maskrcnn_and_frozen_batchnorm(tmp_path):
    torch.manual_seed(1)
    backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5)  # FrozenBN
    size = dict(SIZE, min_size=160, max_size=224)
    tv = MaskRCNN(backbone, num_classes=91, **size)
    _perturb(tv, 2, confidence=10)
    path = tmp_path / "maskrcnn_r18.pth"
    torch.save(tv.state_dict(), path)
    label_space = coco_label_space()
    model = _oanet_for(label_space, size, depth=18, frozen_bn=True)
    load_pretrained(model, path, label_space)
    _assert_same_detections(tv, model, label_space, min_labels=2)  # random R-18 features favour few classes


def test_torchvision_weights_name_reads_the_hub_cache_and_old_names(tmp_path, monkeypatch):
    """``torchvision:MaskRCNN_ResNet50_FPN_Weights.COCO_V1`` with the file already in the hub cache
    (what an offline user copies there); the state dict uses torchvision < 0.13 names, as that file does."""
    torch.manual_seed(0)
    backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5)
    tv = MaskRCNN(backbone, num_classes=91)
    old = {}
    for name, value in tv.state_dict().items():
        for new, legacy in (("conv.0.0.", "conv."), ("inner_blocks.0.0.", "inner_blocks.0."),
                            ("layer_blocks.2.0.", "layer_blocks.2."), ("mask_head.3.0.", "mask_head.mask_fcn4.")):
            name = name.replace(new, legacy)
        old[name] = value
    assert "rpn.head.conv.weight" in old and "roi_heads.mask_head.mask_fcn4.bias" in old
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    torch.save(old, hub / "checkpoints" / "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    label_space = coco_label_space()
    model = _oanet_for(label_space, depth=18)
    report = load_pretrained(model, "torchvision:MaskRCNN_ResNet50_FPN_Weights.COCO_V1", label_space)
    assert "MaskRCNN_ResNet50_FPN_Weights.COCO_V1" in report.description and not report.unused
    state = model.state_dict()
    assert torch.equal(state["rpn.head.conv.0.0.weight"], old["rpn.head.conv.weight"])
    assert torch.equal(state["backbone.fpn.inner_blocks.0.0.bias"], old["backbone.fpn.inner_blocks.0.bias"])
    assert torch.equal(state["roi_heads.mask_head.3.0.weight"], old["roi_heads.mask_head.mask_fcn4.weight"])
    with pytest.raises(ConfigError, match="not a torchvision weights name"):
        load_pretrained(model, "torchvision:MaskRCNN_ResNet50_FPN_Weights.NOPE", label_space)


def test_torchvision_names_of_older_releases():
    assert torchvision_current_name("backbone.fpn.layer_blocks.3.bias") == "backbone.fpn.layer_blocks.3.0.bias"
    assert torchvision_current_name("rpn.head.conv.weight") == "rpn.head.conv.0.0.weight"
    assert torchvision_current_name("roi_heads.mask_head.mask_fcn1.weight") == "roi_heads.mask_head.0.0.weight"
    for current in ("backbone.fpn.layer_blocks.3.0.bias", "rpn.head.cls_logits.weight", "backbone.body.conv1.weight"):
        assert torchvision_current_name(current) == current


def test_maskrcnn_v2_weights_give_the_resnet_body_and_report_the_rest(tmp_path):
    torch.manual_seed(0)
    v2 = maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=91)
    path = tmp_path / "v2.pth"
    torch.save(v2.state_dict(), path)
    label_space = coco_label_space()
    model = _oanet_for(label_space, depth=50)
    report = load_pretrained(model, path, label_space)
    source, state = v2.state_dict(), model.state_dict()
    body = [k for k in state if k.startswith("backbone.body.")]
    assert body and all(torch.equal(state[k], source[k]) for k in body)
    assert {e["target"] for e in report.loaded} == set(body)
    unused = {e["source"]: e["detail"] for e in report.unused}
    assert "V2 layout" in unused["roi_heads.box_head.0.0.weight"]
    assert "V2 layout" in unused["backbone.fpn.inner_blocks.0.1.running_var"]
    assert "BatchNorm counter" in unused["backbone.body.bn1.num_batches_tracked"]
    fresh = {e["target"].split(".")[0] + "." + e["target"].split(".")[1] for e in report.reinitialized}
    assert {"backbone.fpn", "rpn.head", "roi_heads.box_head", "stuff_head.per_level"} <= fresh


# --------------------------------------------------------------------------------------------
# class rows


def _tiny_cfg(label_space: LabelSpace, **changes) -> ModelConfig:
    fields = dict(
        min_size=(64,), max_size=96, backbone=BackboneConfig(depth=18, fpn_channels=16),
        roi_heads=RoIHeadsConfig(box_representation_size=32, mask_head_channels=8),
        stuff_head=StuffHeadConfig(channels=8),
    )
    return ModelConfig(
        num_thing_classes=label_space.num_things, num_stuff_classes=label_space.num_stuff, **{**fields, **changes}
    )


def _custom_label_space() -> LabelSpace:
    """Another dataset: person (COCO's id and name), "Car" under id 2 (COCO's bicycle id), a unicorn, sky."""
    return LabelSpace([
        Category(1, "person", True, (1, 1, 1)), Category(2, "Car", True, (2, 2, 2)),
        Category(7, "unicorn", True, (3, 3, 3)), Category(300, "sky", False, (4, 4, 4)),
    ])


def _coco_shaped_source(model: OANet, seed: int = 0) -> dict:
    """``model``'s state dict with torchvision's 91-row COCO class tensors (random)."""
    g = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(v.shape, generator=g) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    for prefix, rows in (("roi_heads.box_predictor.cls_score.", 91), ("roi_heads.box_predictor.bbox_pred.", 364),
                         ("roi_heads.mask_predictor.mask_fcn_logits.", 91)):
        for suffix in ("weight", "bias"):
            shape = (rows,) + tuple(state[prefix + suffix].shape[1:])
            state[prefix + suffix] = torch.randn(shape, generator=g)
    return {k: v for k, v in state.items() if not k.startswith(("stuff_head.", "srm."))}


def test_class_rows_onto_another_dataset_by_id_then_name_and_fresh_rows_for_new_classes(tmp_path):
    label_space = _custom_label_space()
    torch.manual_seed(0)
    model = OANet.from_config(_tiny_cfg(label_space))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    source = _coco_shaped_source(model)
    torch.save(source, tmp_path / "tv.pth")
    report = load_pretrained(model, tmp_path / "tv.pth", label_space)
    state = model.state_dict()
    cls_w, src_w = state["roi_heads.box_predictor.cls_score.weight"], source["roi_heads.box_predictor.cls_score.weight"]
    assert torch.equal(cls_w[0], src_w[0])  # background
    assert torch.equal(cls_w[1], src_w[1])  # person: COCO id 1
    assert torch.equal(cls_w[2], src_w[3])  # "Car": by name, COCO's car is id 3
    assert torch.equal(cls_w[3], before["roi_heads.box_predictor.cls_score.weight"][3])  # unicorn: fresh
    box, src_box = state["roi_heads.box_predictor.bbox_pred.bias"], source["roi_heads.box_predictor.bbox_pred.bias"]
    assert torch.equal(box[8:12], src_box[12:16])  # 4 rows per class
    assert torch.equal(box[12:16], before["roi_heads.box_predictor.bbox_pred.bias"][12:16])
    mask, src_mask = state["roi_heads.mask_predictor.mask_fcn_logits.weight"], source["roi_heads.mask_predictor.mask_fcn_logits.weight"]
    assert torch.equal(mask[2], src_mask[3])
    detail = {e["target"]: e["detail"] for e in report.remapped}["roi_heads.box_predictor.cls_score.weight"]
    assert detail == "1 classes by category id, 1 by name, background, 1 fresh"
    assert any("unicorn (7)" in note for note in report.notes)
    assert torch.equal(state["backbone.body.conv1.weight"], source["backbone.body.conv1.weight"])


def test_match_slots():
    source = [BACKGROUND, (1, "person"), None, (3, "car"), (4, "motorcycle")]
    index, how = match_slots([BACKGROUND, (3, "car"), (9, "Motorcycle"), (1, "boat"), (5, "unicorn")], source)
    assert index == [0, 3, 4, -1, -1]
    assert how == [BACKGROUND, "id", "name", "fresh", "fresh"]


def test_a_shape_mismatch_is_an_error_naming_the_tensors(tmp_path):
    label_space = _custom_label_space()
    model = OANet.from_config(_tiny_cfg(label_space))
    source = _coco_shaped_source(model)
    wider = OANet.from_config(_tiny_cfg(label_space, backbone=BackboneConfig(depth=18, fpn_channels=32)))
    torch.save(_coco_shaped_source(wider), tmp_path / "wider.pth")
    with pytest.raises(ConfigError, match=r"tensor\(s\) do not fit this model: backbone\.fpn\.inner_blocks\.0\.0\.weight \(16, 64, 1, 1\) <- .* \(32, 64, 1, 1\)"):
        load_pretrained(model, tmp_path / "wider.pth", label_space)
    # A class-indexed tensor whose other dims differ (another box head width) is refused too.
    source["roi_heads.box_predictor.cls_score.weight"] = torch.zeros(91, 64)
    torch.save(source, tmp_path / "box.pth")
    with pytest.raises(ConfigError, match=r"cls_score\.weight \(4, 32\) <- .* \(91, 64\)"):
        load_pretrained(model, tmp_path / "box.pth", label_space)


def test_unreadable_or_foreign_sources_are_one_line_errors(tmp_path):
    label_space = _custom_label_space()
    model = OANet.from_config(_tiny_cfg(label_space))
    with pytest.raises(ConfigError, match="neither a file nor a torchvision weights name"):
        load_pretrained(model, tmp_path / "missing.pth", label_space)
    (tmp_path / "garbage.pth").write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="garbage.pth: not a readable weights file"):
        load_pretrained(model, tmp_path / "garbage.pth", label_space)
    torch.save({"conv1.weight": torch.zeros(1), "layer1.0.conv1.weight": torch.zeros(1)}, tmp_path / "resnet.pth")
    with pytest.raises(ConfigError, match="use model.backbone.weights"):
        load_pretrained(model, tmp_path / "resnet.pth", label_space)
    with pytest.raises(ConfigError, match="not one of auto, torchvision, detectron2, oanet"):
        load_pretrained(model, tmp_path / "resnet.pth", label_space, format="mmdet")


def test_oanet_checkpoint_onto_another_label_space_remaps_detection_stuff_and_srm_rows(tmp_path):
    source_space = _custom_label_space()
    torch.manual_seed(1)
    source_cfg = _tiny_cfg(source_space)
    source_model = OANet.from_config(source_cfg)
    checkpoint = {"model": source_model.state_dict(), "config": to_dict(Config(model=source_cfg)),
                  "label_space": source_space.to_dict(), "iteration": 10}
    torch.save(checkpoint, tmp_path / "model_final.pth")
    # Target: unicorn and person (reordered ids), a new thing, sky kept, a new stuff; object-context channels.
    target_space = LabelSpace([
        Category(7, "unicorn", True, (3, 3, 3)), Category(8, "person", True, (1, 1, 1)),
        Category(9, "dragon", True, (5, 5, 5)), Category(300, "sky", False, (4, 4, 4)),
        Category(301, "lava", False, (6, 6, 6)),
    ])
    torch.manual_seed(2)
    model = OANet.from_config(_tiny_cfg(target_space))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_pretrained(model, tmp_path / "model_final.pth", target_space)
    state, src = model.state_dict(), checkpoint["model"]
    # Things: target [unicorn(7), person(8), dragon(9)]; source [person(1), Car(2), unicorn(7)].
    cls = state["roi_heads.box_predictor.cls_score.weight"]
    assert torch.equal(cls[1], src["roi_heads.box_predictor.cls_score.weight"][3])  # unicorn, by id
    assert torch.equal(cls[2], src["roi_heads.box_predictor.cls_score.weight"][1])  # person, by name
    assert torch.equal(cls[3], before["roi_heads.box_predictor.cls_score.weight"][3])  # dragon: fresh
    # Stuff branch ("all"): channels [unicorn, person, dragon, sky, lava] <- [person, Car, unicorn, sky].
    head, src_head = state["stuff_head.classifier.weight"], src["stuff_head.classifier.weight"]
    assert torch.equal(head[0], src_head[2]) and torch.equal(head[1], src_head[0]) and torch.equal(head[3], src_head[3])
    assert torch.equal(head[4], before["stuff_head.classifier.weight"][4])
    # SRM: class-to-class convs, remapped in both dims.
    key = next(k for k in state if k.startswith("srm.") and state[k].dim() == 4)
    w, w_src = state[key], src[key]
    assert torch.equal(w[0, 1], w_src[2, 0]) and torch.equal(w[1, 0], w_src[0, 2]) and torch.equal(w[1, 1], w_src[0, 0])
    assert torch.equal(w[2], before[key][2]) and torch.equal(w[:, 2], before[key][:, 2])
    assert torch.equal(state["stuff_head.fuse.0.weight"], src["stuff_head.fuse.0.weight"])
    assert any("dragon (9)" in note for note in report.notes)
    assert {e["target"].split(".")[0] for e in report.remapped} == {"roi_heads", "stuff_head", "srm"}


def test_stuff_branch_of_a_non_shared_backbone_starts_as_a_copy(tmp_path):
    label_space = _custom_label_space()
    model = OANet.from_config(_tiny_cfg(label_space, sharing="none"))
    source = _coco_shaped_source(OANet.from_config(_tiny_cfg(label_space)))
    torch.save(source, tmp_path / "tv.pth")
    report = load_pretrained(model, tmp_path / "tv.pth", label_space)
    state = model.state_dict()
    assert torch.equal(state["backbone.stuff_body.layer1.0.conv1.weight"], source["backbone.body.layer1.0.conv1.weight"])
    assert torch.equal(state["backbone.stuff_fpn.layer_blocks.0.0.weight"], source["backbone.fpn.layer_blocks.0.0.weight"])
    copies = [e for e in report.remapped if e["detail"] == "copy for the stuff branch"]
    assert copies and all(e["target"].startswith(("backbone.stuff_body.", "backbone.stuff_fpn.")) for e in copies)


def test_report_is_readable_and_serialises_to_json(tmp_path):
    label_space = _custom_label_space()
    model = OANet.from_config(_tiny_cfg(label_space, input_format="BGR"))
    torch.save(_coco_shaped_source(model), tmp_path / "tv.pth")
    report = load_pretrained(model, tmp_path / "tv.pth", label_space)
    text = str(report)
    assert text.splitlines()[0].startswith(f"init from {tmp_path / 'tv.pth'}: torchvision state dict")
    for word in ("loaded", "remapped", "re-initialised", "unused", "stuff_head.*"):
        assert word in text
    # The weights were trained on RGB input: said, not silently accepted.
    assert "note: model.input_format is 'BGR' but the source was trained with 'RGB'" in text
    data = json.loads(report.save(tmp_path / "init_report.json").read_text())
    assert data["counts"] == {"loaded": len(report.loaded), "remapped": len(report.remapped),
                              "reinitialized": len(report.reinitialized), "unused": len(report.unused)}
    assert data["source"] == str(tmp_path / "tv.pth") and data["notes"] == report.notes


# --------------------------------------------------------------------------------------------
# freezing


def test_freeze_stops_the_named_modules_from_training():
    label_space = _custom_label_space()
    model = OANet.from_config(_tiny_cfg(label_space))
    assert freeze(model, ["backbone", "rpn", "roi_heads.box_head"]) == ["backbone", "rpn", "roi_heads.box_head"]
    trainable = {n.split(".")[0] + ("." + n.split(".")[1] if n.startswith("roi_heads") else "")
                 for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"roi_heads.box_predictor", "roi_heads.mask_head", "roi_heads.mask_predictor", "stuff_head", "srm"}
    with pytest.raises(ConfigError, match=r"model.freeze: 'heads' is not a module of this model \(top level: transform, backbone, rpn, roi_heads, stuff_head, srm\)"):
        freeze(model, ["heads"])
    trainable_bn = OANet.from_config(_tiny_cfg(label_space, backbone=BackboneConfig(depth=18, fpn_channels=16, frozen_bn=False)))
    with pytest.raises(ConfigError, match="backbone has BatchNorm layers .*frozen_bn: true"):
        freeze(trainable_bn, ["backbone"])
    assert freeze(trainable_bn, ["rpn"]) == ["rpn"]


def test_coco_label_space_is_torchvision_and_detectron2_order():
    space = coco_label_space()
    assert (space.num_things, space.num_stuff) == (80, 53)
    assert list(space.thing_ids) == list(COCO_THING_IDS) and COCO_THING_IDS == tuple(sorted(COCO_THING_IDS))
    assert not set(NA_ROWS) & set(COCO_THING_IDS) and max(COCO_THING_IDS) == 90
    assert space.category(1).name == "person" and space.category(200).name == "rug-merged"
    assert dataclasses.replace(space.category(1)).color == (220, 20, 60)
