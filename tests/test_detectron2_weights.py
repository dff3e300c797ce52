"""detectron2 model-zoo checkpoints: every tensor lands where it should, and untrusted pickles run nothing.

The ``.pkl`` files here are written by the test with detectron2's parameter names and shapes (Mask R-CNN
R50-FPN plus Panoptic FPN's semantic head, random arrays), the layout of detectron2's model zoo files:
``{"model": {name: numpy array}, "__author__": ...}``.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from oanet.config import BackboneConfig, ModelConfig, RoIHeadsConfig, StuffHeadConfig
from oanet.data.coco_categories import COCO_STUFF_IDS, coco_label_space
from oanet.errors import ConfigError
from oanet.model.oanet import OANet
from oanet.model.pretrained import load_pretrained
from oanet.model.weight_formats import detectron2_name, read_restricted_pickle

STAGES = {2: (3, 64, 256), 3: (4, 128, 512), 4: (6, 256, 1024), 5: (3, 512, 2048)}  # blocks, width, out


def _conv(arrays, rng, name, shape, norm=False, bias=False):
    arrays[f"{name}.weight"] = rng.standard_normal(shape, dtype=np.float32)
    if bias:
        arrays[f"{name}.bias"] = rng.standard_normal(shape[0], dtype=np.float32)
    if norm:
        for key in ("weight", "bias", "running_mean"):
            arrays[f"{name}.norm.{key}"] = rng.standard_normal(shape[0], dtype=np.float32)
        arrays[f"{name}.norm.running_var"] = rng.uniform(0.5, 2, shape[0]).astype(np.float32)


def detectron2_panoptic_fpn_r50(seed: int = 0) -> dict:
    """detectron2's names and shapes for panoptic_fpn_R_50 (Mask R-CNN R50-FPN + semantic head)."""
    rng = np.random.default_rng(seed)
    a: dict = {}
    _conv(a, rng, "backbone.bottom_up.stem.conv1", (64, 3, 7, 7), norm=True)
    channels = 64
    for stage, (blocks, width, out) in STAGES.items():
        for i in range(blocks):
            prefix = f"backbone.bottom_up.res{stage}.{i}"
            if i == 0:
                _conv(a, rng, f"{prefix}.shortcut", (out, channels, 1, 1), norm=True)
            _conv(a, rng, f"{prefix}.conv1", (width, channels if i == 0 else out, 1, 1), norm=True)
            _conv(a, rng, f"{prefix}.conv2", (width, width, 3, 3), norm=True)
            _conv(a, rng, f"{prefix}.conv3", (out, width, 1, 1), norm=True)
        channels = out
        _conv(a, rng, f"backbone.fpn_lateral{stage}", (256, out, 1, 1), bias=True)
        _conv(a, rng, f"backbone.fpn_output{stage}", (256, 256, 3, 3), bias=True)
    _conv(a, rng, "proposal_generator.rpn_head.conv", (256, 256, 3, 3), bias=True)
    _conv(a, rng, "proposal_generator.rpn_head.objectness_logits", (3, 256, 1, 1), bias=True)
    _conv(a, rng, "proposal_generator.rpn_head.anchor_deltas", (12, 256, 1, 1), bias=True)
    _conv(a, rng, "roi_heads.box_head.fc1", (1024, 256 * 7 * 7), bias=True)
    _conv(a, rng, "roi_heads.box_head.fc2", (1024, 1024), bias=True)
    _conv(a, rng, "roi_heads.box_predictor.cls_score", (81, 1024), bias=True)  # background last
    _conv(a, rng, "roi_heads.box_predictor.bbox_pred", (320, 1024), bias=True)  # no background rows
    for k in range(1, 5):
        _conv(a, rng, f"roi_heads.mask_head.mask_fcn{k}", (256, 256, 3, 3), bias=True)
    _conv(a, rng, "roi_heads.mask_head.deconv", (256, 256, 2, 2), bias=True)
    _conv(a, rng, "roi_heads.mask_head.predictor", (80, 256, 1, 1), bias=True)
    # SemSegFPNHead: p2/p3 one conv, p4 two, p5 three (each followed by a 2x upsampling, not a parameter),
    # registered both as scale_heads.i and as p{i+2}.
    for level, convs in enumerate((1, 1, 2, 3)):
        for k in range(convs):
            index = 2 * k if level > 0 else 0
            name = f"sem_seg_head.scale_heads.{level}.{index}"
            _conv(a, rng, name, (128, 256 if k == 0 else 128, 3, 3))
            for key in ("weight", "bias"):
                a[f"{name}.norm.{key}"] = rng.standard_normal(128, dtype=np.float32)
    for name in [n for n in a if n.startswith("sem_seg_head.scale_heads.")]:
        level = int(name.split(".")[2])
        a[name.replace(f"scale_heads.{level}.", f"p{level + 2}.")] = a[name]
    _conv(a, rng, "sem_seg_head.predictor", (54, 128, 1, 1), bias=True)  # things + 53 stuff
    a["pixel_mean"] = np.array([103.53, 116.28, 123.675], dtype=np.float32).reshape(3, 1, 1)
    a["pixel_std"] = np.ones((3, 1, 1), dtype=np.float32)
    return a


def _expected_name(d2: str) -> str | None:
    """The test's own statement of where each detectron2 tensor goes (independent of the loader's rules)."""
    name = d2.replace("backbone.bottom_up.", "backbone.body.").replace("stem.conv1.norm.", "bn1.").replace("stem.", "")
    for k in (2, 3, 4, 5):
        name = name.replace(f".res{k}.", f".layer{k - 1}.").replace(f"fpn_lateral{k}.", f"fpn.inner_blocks.{k - 2}.0.")
        name = name.replace(f"fpn_output{k}.", f"fpn.layer_blocks.{k - 2}.0.")
    for j in (1, 2, 3):
        name = name.replace(f".conv{j}.norm.", f".bn{j}.")
    name = name.replace(".shortcut.norm.", ".downsample.1.").replace(".shortcut.", ".downsample.0.")
    name = name.replace("proposal_generator.rpn_head.conv.", "rpn.head.conv.0.0.")
    name = name.replace("proposal_generator.rpn_head.objectness_logits", "rpn.head.cls_logits")
    name = name.replace("proposal_generator.rpn_head.anchor_deltas", "rpn.head.bbox_pred")
    name = name.replace("box_head.fc1.", "box_head.fc6.").replace("box_head.fc2.", "box_head.fc7.")
    for k in (1, 2, 3, 4):
        name = name.replace(f"mask_head.mask_fcn{k}.", f"mask_head.{k - 1}.0.")
    name = name.replace("mask_head.deconv.", "mask_predictor.conv5_mask.").replace("mask_head.predictor.", "mask_predictor.mask_fcn_logits.")
    for level in range(4):
        name = name.replace(f"sem_seg_head.scale_heads.{level}.0.norm.", f"stuff_head.per_level.{level}.0.1.")
        name = name.replace(f"sem_seg_head.scale_heads.{level}.0.", f"stuff_head.per_level.{level}.0.0.")
    name = name.replace("sem_seg_head.predictor.", "stuff_head.classifier.")
    return None if name.startswith(("sem_seg_head.", "pixel_")) else name


def _detectron2_model(stuff_classes: str = "stuff") -> OANet:
    space = coco_label_space()
    return OANet.from_config(ModelConfig(
        num_thing_classes=80, num_stuff_classes=53, min_size=(64,), max_size=96,
        input_format="BGR", input_scale=255.0, pixel_mean=(103.53, 116.28, 123.675), pixel_std=(1.0, 1.0, 1.0),
        backbone=BackboneConfig(depth=50, stride_in_1x1=True),
        roi_heads=RoIHeadsConfig(pooler_aligned=True, pooler_sampling_ratio=0),
        stuff_head=StuffHeadConfig(classes=stuff_classes, channels=128),
    )), space


@pytest.fixture(scope="module")
def panoptic_fpn_pkl(tmp_path_factory):
    arrays = detectron2_panoptic_fpn_r50()
    path = tmp_path_factory.mktemp("d2") / "model_final_cafdb1.pkl"
    with open(path, "wb") as handle:  # protocol 2, as detectron2's zoo files
        pickle.dump({"model": arrays, "__author__": "Detectron2 Model Zoo"}, handle, protocol=2)
    return path, arrays


def test_every_detectron2_tensor_lands_where_it_should(panoptic_fpn_pkl):
    path, arrays = panoptic_fpn_pkl
    model, space = _detectron2_model("stuff")
    torch.manual_seed(0)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_pretrained(model, path, space)
    state = model.state_dict()
    t = lambda name: torch.from_numpy(arrays[name])
    class_rows = ("cls_score", "bbox_pred", "mask_fcn_logits", "stuff_head.classifier")
    placed = set()
    for d2, value in arrays.items():
        target = _expected_name(d2)
        if target is None or any(c in target for c in class_rows):
            continue
        assert torch.equal(state[target], torch.from_numpy(value)), f"{d2} -> {target}"
        placed.add(target)

    # Background is detectron2's last class and torchvision's first; things are COCO's sorted ids on both.
    cls_w, cls_b = state["roi_heads.box_predictor.cls_score.weight"], state["roi_heads.box_predictor.cls_score.bias"]
    assert torch.equal(cls_w[0], t("roi_heads.box_predictor.cls_score.weight")[80])
    assert torch.equal(cls_w[1:], t("roi_heads.box_predictor.cls_score.weight")[:80])
    assert torch.equal(cls_b[0], t("roi_heads.box_predictor.cls_score.bias")[80])
    # Class-specific box rows: OANet's background rows (unused by inference) stay fresh.
    box = state["roi_heads.box_predictor.bbox_pred.weight"]
    assert torch.equal(box[4:], t("roi_heads.box_predictor.bbox_pred.weight"))
    assert torch.equal(box[:4], fresh["roi_heads.box_predictor.bbox_pred.weight"][:4])
    mask = state["roi_heads.mask_predictor.mask_fcn_logits.bias"]
    assert torch.equal(mask[1:], t("roi_heads.mask_head.predictor.bias"))
    assert torch.equal(mask[0], fresh["roi_heads.mask_predictor.mask_fcn_logits.bias"][0])
    # classes "stuff": channel 0 = any thing, 1 + s = stuff s by COCO id, exactly detectron2's 54 channels.
    assert torch.equal(state["stuff_head.classifier.weight"], t("sem_seg_head.predictor.weight"))

    loaded = {e["target"] for e in report.loaded} | {e["target"] for e in report.remapped}
    assert placed | {n for n in state if any(c in n for c in class_rows)} == loaded
    fresh_names = {e["target"] for e in report.reinitialized}
    assert fresh_names == set(state) - loaded
    assert all(n.startswith(("srm.", "stuff_head.fuse.", "stuff_head.per_level.")) for n in fresh_names)
    unused = {e["source"]: e["detail"] for e in report.unused}
    assert set(unused) == {n for n in arrays if _expected_name(n) is None}
    assert "2x upsampling" in unused["sem_seg_head.scale_heads.3.4.weight"]
    assert "alias" in unused["sem_seg_head.p2.0.weight"]
    assert not report.notes  # the model is configured as detectron2's: BGR, 255, its mean/std, MSRA, aligned


def test_object_context_stuff_head_takes_the_stuff_rows_and_leaves_thing_channels_fresh(panoptic_fpn_pkl):
    path, arrays = panoptic_fpn_pkl
    model, space = _detectron2_model("all")
    before = model.state_dict()["stuff_head.classifier.weight"].clone()
    report = load_pretrained(model, path, space)
    head = model.state_dict()["stuff_head.classifier.weight"]
    predictor = torch.from_numpy(arrays["sem_seg_head.predictor.weight"])
    assert torch.equal(head[80:], predictor[1:])  # 53 stuff channels, COCO stuff ids sorted
    assert torch.equal(head[:80], before[:80])
    assert len(COCO_STUFF_IDS) == 53
    detail = {e["target"]: e["detail"] for e in report.remapped}["stuff_head.classifier.weight"]
    assert detail == "53 classes by category id, 80 fresh"


def test_notes_name_the_settings_detectron2_weights_need(panoptic_fpn_pkl):
    path, _ = panoptic_fpn_pkl
    space = coco_label_space()
    model = OANet.from_config(ModelConfig(num_thing_classes=80, num_stuff_classes=53, min_size=(64,), max_size=96,
                              stuff_head=StuffHeadConfig(classes="stuff", channels=128)))
    notes = " | ".join(load_pretrained(model, path, space).notes)
    for expected in ("model.input_format is 'RGB' but the source was trained with 'BGR'",
                     "model.input_scale is 1.0", "model.pixel_mean", "model.backbone.stride_in_1x1 is False",
                     "model.roi_heads.pooler_aligned is False"):
        assert expected in notes


def test_a_pickle_naming_os_system_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pkl"
    path.write_bytes(b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    model, space = OANet.from_config(ModelConfig(num_thing_classes=80, num_stuff_classes=53, backbone=BackboneConfig(depth=18))), coco_label_space()
    with pytest.raises(ConfigError, match=r"evil\.pkl: refused to unpickle: it names os\.system .*nothing was executed"):
        load_pretrained(model, path, space)
    assert not marker.exists()
    # Nested inside an otherwise plain dict, or via builtins: the same.
    payload = pickle.dumps({"model": {"a": np.zeros(2)}, "x": print}, protocol=2)
    (tmp_path / "builtin.pkl").write_bytes(payload)
    with pytest.raises(ConfigError, match=r"it names (__builtin__|builtins)\.print"):
        read_restricted_pickle(tmp_path / "builtin.pkl")
    # An object array's items pass the unpickler (they are plain values) but are not weights.
    (tmp_path / "objects.pkl").write_bytes(pickle.dumps({"model": {"a": np.array([1, "x"], dtype=object)}}))
    with pytest.raises(ConfigError, match="dtype object"):
        read_restricted_pickle(tmp_path / "objects.pkl")
    (tmp_path / "cut.pkl").write_bytes(pickle.dumps({"model": {"a": np.zeros(4)}})[:-9])
    with pytest.raises(ConfigError, match="cut.pkl: not a readable pickle"):
        read_restricted_pickle(tmp_path / "cut.pkl")


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_restricted_unpickler_reads_numpy_pickles_of_every_protocol(tmp_path, protocol):
    from collections import OrderedDict

    data = {"model": OrderedDict(a=np.arange(6, dtype=np.float32).reshape(2, 3), b=np.float64(2.5)), "n": [1, "s"]}
    (tmp_path / "w.pkl").write_bytes(pickle.dumps(data, protocol=protocol))
    back = read_restricted_pickle(tmp_path / "w.pkl")
    assert np.array_equal(back["model"]["a"], data["model"]["a"]) and back["model"]["b"] == 2.5 and back["n"] == [1, "s"]


def test_detectron2_names():
    assert detectron2_name("backbone.bottom_up.res5.2.conv3.norm.running_var") == "backbone.body.layer4.2.bn3.running_var"
    assert detectron2_name("backbone.bottom_up.res4.22.conv2.weight") == "backbone.body.layer3.22.conv2.weight"
    assert detectron2_name("backbone.bottom_up.res3.0.shortcut.norm.bias") == "backbone.body.layer2.0.downsample.1.bias"
    assert detectron2_name("backbone.fpn_lateral5.bias") == "backbone.fpn.inner_blocks.3.0.bias"
    assert detectron2_name("backbone.fpn_output2.weight") == "backbone.fpn.layer_blocks.0.0.weight"
    assert detectron2_name("roi_heads.mask_head.mask_fcn4.bias") == "roi_heads.mask_head.3.0.bias"
    assert detectron2_name("sem_seg_head.p3.0.weight") is None
    assert detectron2_name("roi_heads.res5.0.conv1.weight") is None  # C4 models: no counterpart
