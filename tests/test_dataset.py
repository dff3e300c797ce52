"""PanopticDataset on the 16 real COCO images and on a tiny hand-made split; flips; image folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from oanet.data.coco_panoptic import PanopticSplit
from oanet.data.labels import IGNORE
from oanet.data.dataset import PanopticDataset, collate
from oanet.data.transforms import hflip
from oanet.errors import DataError
from test_coco_panoptic import ID_MAP_1, edit_json, write_split


def coco16_split(root: Path, instances: bool = True) -> PanopticSplit:
    ann = root / "annotations"
    return PanopticSplit(
        ann / "panoptic_val2017.json",
        ann / "panoptic_val2017",
        root / "val2017",
        instances_json=ann / "instances_val2017.json" if instances else None,
    )


@pytest.fixture(scope="module")
def coco16_samples(coco16):
    dataset = PanopticDataset(coco16_split(coco16))
    return dataset, [dataset[i] for i in range(len(dataset))]


def check_sample_contract(image, target, num_things, num_channels):
    height, width = image.shape[-2:]
    n = len(target["labels"])
    assert image.dtype == torch.float32 and image.shape[0] == 3 and 0 <= image.min() and image.max() <= 1
    assert target["boxes"].dtype == torch.float32 and target["boxes"].shape == (n, 4)
    assert target["labels"].dtype == torch.int64 and ((0 <= target["labels"]) & (target["labels"] < num_things)).all()
    assert target["masks"].dtype == torch.uint8 and target["masks"].shape == (n, height, width)
    assert target["sem_seg"].dtype == torch.int64 and target["sem_seg"].shape == (height, width)
    assert target["srm"].dtype == torch.int64 and target["srm"].shape == (height, width)
    sem = target["sem_seg"]
    assert (((0 <= sem) & (sem < num_channels)) | (sem == IGNORE)).all()
    boxes = target["boxes"]
    assert (boxes[:, 0] < boxes[:, 2]).all() and (boxes[:, 1] < boxes[:, 3]).all()
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()


def test_coco16_samples_follow_the_contract(coco16, coco16_samples):
    dataset, samples = coco16_samples
    labels = dataset.label_space
    assert (labels.num_things, labels.num_stuff) == (80, 53)
    instances = json.loads((coco16 / "annotations" / "instances_val2017.json").read_text())["annotations"]
    for index, (image, target) in enumerate(samples):
        info = dataset.image_info(index)
        assert target["image_id"] == info.id and target["file_name"] == info.file_name
        assert image.shape[-2:] == (info.height, info.width)
        check_sample_contract(image, target, labels.num_things, labels.num_channels("all"))
        expected = [a for a in instances if a["image_id"] == info.id and not a["iscrowd"]]
        assert len(target["labels"]) == len(expected), info.file_name
        expected_labels = sorted(labels.thing_index([a["category_id"] for a in expected]).tolist())
        assert sorted(target["labels"].tolist()) == expected_labels
        # void in the panoptic PNG is exactly the ignore region of the stuff target
        ids = dataset.split.read_id_map(info.id)
        np.testing.assert_array_equal(target["sem_seg"].numpy() == IGNORE, ids == 0)


def test_coco16_instances_overlap_and_srm_target(coco16_samples):
    dataset, samples = coco16_samples
    images_with_overlap = images_with_srm = 0
    for image, target in samples:
        overlap = torch.from_numpy(target["masks"].numpy().sum(axis=0, dtype=np.uint16) >= 2)
        srm = target["srm"]
        assert ((srm == IGNORE) | overlap).all()  # labels only where masks overlap
        assert (srm[srm != IGNORE] < dataset.label_space.num_things).all()
        images_with_overlap += bool(overlap.any())
        images_with_srm += bool((srm != IGNORE).any())
    assert images_with_overlap >= 3 and images_with_srm >= 3


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools under numpy 2
def test_coco16_instance_masks_match_pycocotools(coco16):
    import contextlib
    import io

    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(coco16 / "annotations" / "instances_val2017.json"))
    split = coco16_split(coco16)
    for img in split.images[:8]:
        masks, category_ids, iscrowd = split.load_instance_masks(img.id)
        anns = coco.imgToAnns[img.id]
        assert len(masks) == len(anns)
        for mask, ann in zip(masks, anns):
            np.testing.assert_array_equal(mask, coco.annToMask(ann))
        assert category_ids.tolist() == [a["category_id"] for a in anns]


def test_coco16_panoptic_instance_source_and_stuff_variant(coco16):
    split = coco16_split(coco16, instances=False)
    with pytest.warns(UserWarning, match="no instances_json"):
        dataset = PanopticDataset(split, stuff_classes="stuff")  # falls back to the panoptic source
    assert dataset.instance_source == "panoptic"
    labels = dataset.label_space
    for index in (0, 4):
        image, target = dataset[index]
        check_sample_contract(image, target, labels.num_things, labels.num_channels("stuff"))
        ann = split.annotation(dataset.image_info(index).id)
        expected = int((labels.is_thing(ann.category_ids) & ~ann.iscrowd).sum())
        assert len(target["labels"]) == expected > 0
        masks_per_pixel = target["masks"].numpy().sum(axis=0, dtype=np.uint16)
        assert (masks_per_pixel <= 1).all()  # pano-instance masks never overlap
        assert (target["srm"] == IGNORE).all()
        thing_pixels = torch.from_numpy(masks_per_pixel == 1)
        assert (target["sem_seg"][thing_pixels] == 0).all()  # every thing is channel 0 with "stuff"


def test_coco16_aspect_ratios_and_collate(coco16_samples):
    dataset, samples = coco16_samples
    ratios = dataset.aspect_ratios()
    assert ratios == [img.width / img.height for img in dataset.split.images]
    assert any(r < 1 for r in ratios) and any(r > 1 for r in ratios)
    images, targets = collate(samples[:3])
    assert len(images) == len(targets) == 3 and targets[1] is samples[1][1]


def test_flip_is_consistent_and_seeded(coco16, coco16_samples):
    dataset, samples = coco16_samples
    flipped = PanopticDataset(dataset.split, hflip_prob=1.0)
    image, target = samples[0]
    f_image, f_target = flipped[0]
    width = image.shape[-1]
    assert torch.equal(f_image, image.flip(-1))
    for key in ("masks", "sem_seg", "srm"):
        assert torch.equal(f_target[key], target[key].flip(-1))
    # boxes are recomputed from the flipped masks' extent: the transformed boxes must match
    from oanet.data.targets import masks_to_boxes

    np.testing.assert_array_equal(f_target["boxes"].numpy(), masks_to_boxes(f_target["masks"].numpy()))
    assert torch.equal(f_target["boxes"][:, [0, 2]], width - target["boxes"][:, [2, 0]])
    assert torch.equal(f_target["labels"], target["labels"])
    assert torch.equal(hflip(*hflip(image, target))[0], image)

    half = PanopticDataset(dataset.split, hflip_prob=0.5, seed=3)
    decisions = {}
    for epoch in range(6):
        img, _ = half.get(1, epoch=epoch)
        decisions[epoch] = not torch.equal(img, samples[1][0])
        again, _ = half[(1, epoch)]
        assert torch.equal(img, again)  # same (seed, epoch, index) -> same augmentation
    assert len(set(decisions.values())) == 2  # both outcomes occur over the epochs


def test_tiny_split_targets(tmp_path):
    dataset = PanopticDataset(**_dataset_kwargs(write_split(tmp_path)))
    image, target = dataset[0]
    assert image.shape == (3, 4, 6)
    np.testing.assert_array_equal(target["labels"].numpy(), [0, 1])  # the crowd annotation is dropped
    np.testing.assert_array_equal(target["boxes"].numpy(), [[0, 0, 2, 3], [1, 1, 4, 4]])
    # the person (polygon) and car (RLE) overlap at rows 1-2, column 1: panoptic says person there
    srm = target["srm"].numpy()
    expected = np.full((4, 6), IGNORE)
    expected[1:3, 1] = 0
    np.testing.assert_array_equal(srm, expected)
    assert ID_MAP_1[1, 1] == ID_MAP_1[2, 1] == 11


def _dataset_kwargs(paths: dict) -> dict:
    return {"split": paths["panoptic_json"], "panoptic_dir": paths["panoptic_dir"], "image_dir": paths["image_dir"], "instances_json": paths.get("instances_json")}


def test_image_conversion_and_size_check(tmp_path):
    paths = write_split(tmp_path)
    Image.fromarray(np.full((4, 6), 128, np.uint8), mode="L").save(paths["image_dir"] / "000000000001.png")
    image, _ = PanopticDataset(**_dataset_kwargs(paths))[0]
    assert image.shape == (3, 4, 6) and torch.allclose(image, torch.full_like(image, 128 / 255))
    Image.fromarray(np.zeros((4, 5, 4), np.uint8), mode="RGBA").save(paths["image_dir"] / "000000000001.png")
    with pytest.raises(DataError, match=r"000000000001.png: image is 5x4 but the annotation says 6x4"):
        PanopticDataset(**_dataset_kwargs(paths))[0]
    (paths["image_dir"] / "000000000002.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="000000000002.png: not a readable image"):
        PanopticDataset(**_dataset_kwargs(paths))[1]


def test_decompression_bomb_is_named(tmp_path, monkeypatch):
    # PIL's DecompressionBombError is not an OSError
    paths = write_split(tmp_path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5)  # the 6x4 image is more than twice that
    with pytest.raises(DataError, match="000000000001.png: not a readable image .*decompression bomb"):
        PanopticDataset(**_dataset_kwargs(paths))[0]


def test_label_space_from_elsewhere_must_cover_the_split(tmp_path):
    paths = write_split(tmp_path)
    smaller = write_split(tmp_path / "other", with_instances=False)
    edit_json(smaller["panoptic_json"], lambda d: d["categories"].pop())  # drops "sky"; keep it valid:
    edit_json(smaller["panoptic_json"], lambda d: [a["segments_info"].__setitem__(slice(None), [s for s in a["segments_info"] if s["category_id"] != 9]) for a in d["annotations"]])
    labels = PanopticSplit(smaller["panoptic_json"], smaller["panoptic_dir"], smaller["image_dir"]).label_space()
    with pytest.raises(DataError, match=r"panoptic.json: unknown category id\(s\) \[9\]"):
        PanopticDataset(**_dataset_kwargs(paths), label_space=labels)
