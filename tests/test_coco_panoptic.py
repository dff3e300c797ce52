"""COCO panoptic reading/writing, the label space and the errors bad data gets (each naming its file)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from oanet.data.coco_panoptic import ImageInfo, PanopticSplit, PanopticWriter
from oanet.data.labels import Category, LabelSpace, generated_color
from oanet.data.png_io import id2rgb, rgb2id, write_id_png
from oanet.errors import DataError

CATEGORIES = [
    {"id": 1, "name": "person", "isthing": 1, "supercategory": "person"},
    {"id": 3, "name": "car", "isthing": 1, "supercategory": "vehicle"},
    {"id": 7, "name": "road", "isthing": 0, "supercategory": "ground"},
    {"id": 9, "name": "sky", "isthing": 0, "supercategory": "sky"},
]

# Image 1 (6 wide, 4 high): 11 person, 12 car, 13 crowd person, 20 sky, 21 road, 0 void.
ID_MAP_1 = np.array(
    [
        [20, 20, 20, 20, 20, 0],
        [11, 11, 12, 12, 20, 0],
        [11, 11, 12, 13, 13, 21],
        [21, 21, 21, 13, 13, 21],
    ],
    dtype=np.uint32,
)
SEGMENTS_1 = [
    {"id": 11, "category_id": 1, "iscrowd": 0},
    {"id": 12, "category_id": 3, "iscrowd": 0},
    {"id": 13, "category_id": 1, "iscrowd": 1},
    {"id": 20, "category_id": 9, "iscrowd": 0},
    {"id": 21, "category_id": 7, "iscrowd": 0},
]
# Image 2 (3 wide, 5 high): one car on road.
ID_MAP_2 = np.array([[7, 7, 7], [7, 5, 5], [7, 5, 5], [7, 7, 7], [7, 7, 7]], dtype=np.uint32)
SEGMENTS_2 = [{"id": 5, "category_id": 3, "iscrowd": 0}, {"id": 7, "category_id": 7, "iscrowd": 0}]


def write_split(root: Path, with_instances: bool = True) -> dict:
    """A two-image split on disk; returns the paths as PanopticSplit keyword arguments."""
    (root / "png").mkdir(parents=True)
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for image_id, (ids, segments) in enumerate([(ID_MAP_1, SEGMENTS_1), (ID_MAP_2, SEGMENTS_2)], start=1):
        name = f"{image_id:012d}"
        height, width = ids.shape
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(root / "images" / f"{name}.png")
        write_id_png(root / "png" / f"{name}.png", ids)
        images.append({"id": image_id, "file_name": f"{name}.png", "width": width, "height": height})
        annotations.append({"image_id": image_id, "file_name": f"{name}.png", "segments_info": copy.deepcopy(segments)})
    (root / "panoptic.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES})
    )
    paths = {
        "panoptic_json": root / "panoptic.json",
        "panoptic_dir": root / "png",
        "image_dir": root / "images",
    }
    if with_instances:
        (root / "instances.json").write_text(json.dumps(instances_json(images)))
        paths["instances_json"] = root / "instances.json"
    return paths


def instances_json(images: list) -> dict:
    """Image 1: an overlapping person (polygon) and car (compressed RLE), and a crowd (uncompressed RLE)."""
    car = np.zeros((4, 6), np.uint8, order="F")
    car[1:4, 1:4] = 1
    car_rle = mask_utils.encode(np.asfortranarray(car))
    car_rle["counts"] = car_rle["counts"].decode("ascii")
    crowd = np.zeros((4, 6), np.uint8)
    crowd[2:4, 3:5] = 1
    crowd_counts = _uncompressed_counts(crowd)
    annotations = [
        # the polygon covers pixel centres of columns 0..1, rows 0..2
        {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": [[0, 0, 2, 0, 2, 3, 0, 3]], "area": 6, "bbox": [0, 0, 2, 3]},
        {"id": 2, "image_id": 1, "category_id": 3, "iscrowd": 0, "segmentation": car_rle, "area": 9, "bbox": [1, 1, 3, 3]},
        {"id": 3, "image_id": 1, "category_id": 1, "iscrowd": 1, "segmentation": {"size": [4, 6], "counts": crowd_counts}, "area": 4, "bbox": [3, 2, 2, 2]},
    ]
    categories = [{"id": c["id"], "name": c["name"]} for c in CATEGORIES if c["isthing"]]
    return {"images": images, "annotations": annotations, "categories": categories}


def _uncompressed_counts(mask: np.ndarray) -> list[int]:
    flat = mask.flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    return counts if flat[0] == 0 else [0] + counts


@pytest.fixture
def split_paths(tmp_path: Path) -> dict:
    return write_split(tmp_path)


def edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


# --------------------------------------------------------------------------------------------
# ids and colours


def test_rgb2id_id2rgb_round_trip():
    ids = np.array([[0, 1, 256], [65536, 16777215, 123456]], dtype=np.uint32)
    np.testing.assert_array_equal(rgb2id(id2rgb(ids)), ids)


def test_generated_colors_are_deterministic_and_distinct(split_paths):
    split = PanopticSplit(**split_paths)
    colors = [c.color for c in split.categories]
    assert len(set(colors)) == len(colors)
    assert split.label_space().color(3) == generated_color(3)
    assert PanopticSplit(**split_paths).categories == split.categories


def test_colors_from_categories_json(split_paths, tmp_path):
    (tmp_path / "cats.json").write_text(json.dumps([{"id": 3, "color": [1, 2, 3]}]))
    split = PanopticSplit(**split_paths, categories_json=tmp_path / "cats.json")
    assert split.label_space().color(3) == (1, 2, 3)


# --------------------------------------------------------------------------------------------
# label space


def test_label_space_round_trip_and_unknown_ids(split_paths):
    labels = PanopticSplit(**split_paths).label_space()
    assert (labels.num_things, labels.num_stuff) == (2, 2)
    restored = LabelSpace.from_dict(json.loads(json.dumps(labels.to_dict())))
    assert restored == labels
    np.testing.assert_array_equal(restored.channel([1, 3, 7, 9], "all"), [0, 1, 2, 3])
    with pytest.raises(DataError, match=r"somewhere.json: unknown category id\(s\) \[4, 100\]"):
        labels.thing_index([1, 4, 100], "somewhere.json")
    with pytest.raises(DataError, match="unknown category id 5"):
        labels.category(5)


def test_label_space_rejects_duplicate_ids():
    with pytest.raises(DataError, match="duplicate category id"):
        LabelSpace([Category(1, "a", True, (0, 0, 0)), Category(1, "b", False, (1, 1, 1))])
    with pytest.raises(DataError, match="category id 1000000000 is above"):  # not a MemoryError
        LabelSpace([Category(10**9, "a", True, (0, 0, 0))])


# --------------------------------------------------------------------------------------------
# reading a split


def test_split_loads_and_checks_id_maps(split_paths):
    split = PanopticSplit(**split_paths)
    assert len(split) == 2 and split.has_instances
    assert split.aspect_ratios() == [6 / 4, 3 / 5]
    ann = split.annotation(1)
    np.testing.assert_array_equal(ann.segment_ids, [11, 12, 13, 20, 21])
    np.testing.assert_array_equal(ann.iscrowd, [False, False, True, False, False])
    index = split.load_index_map(1)
    np.testing.assert_array_equal(np.where(index >= 0, ann.segment_ids[index], 0), ID_MAP_1)


def test_instance_masks_from_polygon_rle_and_uncompressed_rle(split_paths):
    masks, category_ids, iscrowd = PanopticSplit(**split_paths).load_instance_masks(1)
    assert masks.shape == (3, 4, 6) and masks.dtype == np.uint8
    np.testing.assert_array_equal(category_ids, [1, 3, 1])
    np.testing.assert_array_equal(iscrowd, [False, False, True])
    assert masks[0, 0:3, 0:2].all() and masks[0].sum() == 6
    expected_car = np.zeros((4, 6), np.uint8)
    expected_car[1:4, 1:4] = 1
    np.testing.assert_array_equal(masks[1], expected_car)
    assert masks[2, 2:4, 3:5].all() and masks[2].sum() == 4
    masks2, _, _ = PanopticSplit(**split_paths).load_instance_masks(2)  # no annotations
    assert masks2.shape == (0, 5, 3)


def test_missing_files_raise_file_not_found(split_paths):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        PanopticSplit(**{**split_paths, "panoptic_json": split_paths["panoptic_json"].parent / "nope.json"})
    (split_paths["panoptic_dir"] / "000000000001.png").unlink()
    with pytest.raises(FileNotFoundError, match="000000000001.png"):
        PanopticSplit(**split_paths).load_index_map(1)


def test_corrupt_json_and_png_are_named(split_paths):
    split = PanopticSplit(**split_paths)
    (split_paths["panoptic_dir"] / "000000000002.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(DataError, match="000000000002.png"):
        split.load_index_map(2)
    (split_paths["panoptic_dir"] / "000000000002.png").write_bytes(b"")
    with pytest.raises(DataError, match="000000000002.png: empty file"):
        split.load_index_map(2)
    split_paths["panoptic_json"].write_text('{"images": [')
    with pytest.raises(DataError, match=r"panoptic.json: not valid JSON"):
        PanopticSplit(**split_paths)


def test_undeclared_id_in_png(split_paths):
    edit_json(split_paths["panoptic_json"], lambda d: d["annotations"][0]["segments_info"].pop(1))
    with pytest.raises(DataError, match=r"000000000001.png: segment id\(s\) \[12\] in the PNG are not declared"):
        PanopticSplit(**split_paths).load_index_map(1)


def test_declared_segment_absent_from_png(split_paths):
    edit_json(split_paths["panoptic_json"], lambda d: d["annotations"][1]["segments_info"].append({"id": 99, "category_id": 7}))
    with pytest.raises(DataError, match=r"000000000002.png: segment id\(s\) \[99\] declared .* absent"):
        PanopticSplit(**split_paths).load_index_map(2)


def test_png_size_mismatch(tmp_path):
    split_paths = write_split(tmp_path, with_instances=False)  # the instances JSON would catch it first
    edit_json(split_paths["panoptic_json"], lambda d: d["images"][1].update(width=4))
    with pytest.raises(DataError, match=r"000000000002.png: PNG is 3x5 but the JSON says 4x5"):
        PanopticSplit(**split_paths).load_index_map(2)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["annotations"][0]["segments_info"][0].update(category_id=42), r"image 1: unknown category id\(s\) \[42\]"),
        (lambda d: d["annotations"][0]["segments_info"][1].update(id=11), r"image 1: duplicate segment id\(s\) \[11\]"),
        (lambda d: d["categories"].append({"id": 3, "name": "again", "isthing": 1}), r"duplicate category id\(s\) \[3\]"),
        (lambda d: d["images"].append(dict(d["images"][0])), r"duplicate image id\(s\) \[1\]"),
        (lambda d: d["annotations"][1].update(image_id=77), "annotation for unknown image id 77"),
        (lambda d: d["annotations"].pop(), r"1 image\(s\) without annotation"),
        (lambda d: d.update(images=[], annotations=[]), "the split has no images"),
        (lambda d: d["annotations"][0]["segments_info"][0].update(id=0), "segment ids must be in 1.."),
        (lambda d: d["annotations"][0]["segments_info"][0].update(id=1.5), "integer 'id' and 'category_id' \\(got a fraction\\)"),
        (lambda d: d["images"][0].update(id=[1]), r"image id \[1\] is not a number or a string"),
        (lambda d: d["annotations"][0].update(image_id={"id": 1}), "image id {'id': 1} is not a number or a string"),
        (lambda d: d["annotations"][0]["segments_info"][0].update(area="big"), "image 1: every segment's 'area' must be a number"),
        (lambda d: d["annotations"][0]["segments_info"][0].update(bbox=[1, 2]), "'bbox' four numbers"),
        (lambda d: d["categories"][0].update(id="abc"), "category id 'abc' is not an integer"),
        (lambda d: d["categories"][0].update(id=10**9), "category id 1000000000 is outside 0..16777215"),
        (lambda d: d["categories"][0].update(id=-1), "category id -1 is outside 0..16777215"),
        (lambda d: d["categories"][0].update(color="red"), "bad colour 'red'"),
        (lambda d: d["categories"][0].update(color=7), "bad colour 7"),
    ],
)
def test_bad_panoptic_json_is_named(split_paths, edit, message):
    edit_json(split_paths["panoptic_json"], edit)
    with pytest.raises(DataError, match=f"panoptic.json: .*{message}"):
        PanopticSplit(**split_paths)


def test_bad_instances_json_is_named(split_paths):
    edit_json(split_paths["instances_json"], lambda d: d.update(annotations=5))
    with pytest.raises(DataError, match=r"instances.json: 'annotations' must be a list"):
        PanopticSplit(**split_paths)
    edit_json(split_paths["instances_json"], lambda d: d.update(annotations=instances_json([])["annotations"]))
    edit_json(split_paths["instances_json"], lambda d: d["annotations"][0].update(category_id=7))
    with pytest.raises(DataError, match=r"instances.json: annotation 1 has category id 7, not a thing category"):
        PanopticSplit(**split_paths)
    edit_json(split_paths["instances_json"], lambda d: (d["annotations"][0].update(category_id=1), d["images"].pop()))
    with pytest.raises(DataError, match="instances.json: image 2 .* is missing"):
        PanopticSplit(**split_paths)


# --------------------------------------------------------------------------------------------
# writing predictions


def test_writer_round_trip(tmp_path):
    labels = LabelSpace([Category(c["id"], c["name"], bool(c["isthing"]), (0, 0, 0)) for c in CATEGORIES])
    with PanopticWriter(tmp_path / "pred" / "panoptic.json", tmp_path / "pred" / "png", labels) as writer:
        segments = [dict(s, score=0.9) for s in SEGMENTS_1] + [{"id": 77, "category_id": 3}]  # 77 has no pixel
        annotation = writer.add(ImageInfo(1, "000000000001.jpg", 6, 4), ID_MAP_1, segments)
        writer.add({"id": 2, "file_name": "000000000002.jpg", "width": 3, "height": 5}, ID_MAP_2, SEGMENTS_2)
        assert not (tmp_path / "pred" / "panoptic.json").exists()  # written at the end only
    assert [s["id"] for s in annotation["segments_info"]] == [11, 12, 13, 20, 21]
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == ["panoptic.json", "png"]  # no temporary left

    data = json.loads((tmp_path / "pred" / "panoptic.json").read_text())
    info = {s["id"]: s for s in data["annotations"][0]["segments_info"]}
    assert info[11] == {"id": 11, "category_id": 1, "area": 4, "bbox": [0, 1, 2, 2], "iscrowd": 0}
    assert info[20]["area"] == 6 and info[20]["bbox"] == [0, 0, 5, 2]
    assert info[21]["area"] == 5 and info[21]["bbox"] == [0, 2, 6, 2]
    assert data["annotations"][1]["segments_info"][0] == {"id": 5, "category_id": 3, "area": 4, "bbox": [1, 1, 2, 2], "iscrowd": 0}

    # the output is itself a valid split: read it back with the checks on
    split = PanopticSplit(tmp_path / "pred" / "panoptic.json", tmp_path / "pred" / "png", tmp_path)
    for image_id, ids in [(1, ID_MAP_1), (2, ID_MAP_2)]:
        ann = split.annotation(image_id)
        index = split.load_index_map(image_id)
        np.testing.assert_array_equal(np.where(index >= 0, ann.segment_ids[index], 0), ids)


def test_writer_refuses_undeclared_ids_and_unknown_categories(tmp_path):
    labels = LabelSpace([Category(c["id"], c["name"], bool(c["isthing"]), (0, 0, 0)) for c in CATEGORIES])
    writer = PanopticWriter(tmp_path / "p.json", tmp_path / "png", labels)
    with pytest.raises(DataError, match=r"image 1 .*segment id\(s\) \[13\]"):
        writer.add(ImageInfo(1, "a.jpg", 6, 4), ID_MAP_1, [s for s in SEGMENTS_1 if s["id"] != 13])
    with pytest.raises(ValueError, match=r"unknown category id\(s\) \[42\]"):
        writer.add(ImageInfo(1, "a.jpg", 6, 4), ID_MAP_1, SEGMENTS_1 + [{"id": 3, "category_id": 42}])
    with pytest.raises(ValueError, match="id map is 6x4, image is 5x4"):
        writer.add(ImageInfo(1, "a.jpg", 5, 4), ID_MAP_1, SEGMENTS_1)


@pytest.mark.parametrize(
    "index, segmentation, message",
    [
        # another image size: pycocotools would size the batch from it and shift the other masks
        (1, {"size": [6, 4], "counts": mask_utils.encode(np.zeros((6, 4), np.uint8, order="F"))["counts"].decode()},
         r"annotation 2: .*RLE size \[6, 4\] is not the image's \[height, width\] \[4, 6\]"),
        (2, {"size": [5, 6], "counts": [10, 4, 16]}, r"annotation 3: .*RLE size \[5, 6\]"),
        # counts that do not add up to H*W = 24, uncompressed and compressed
        (2, {"size": [4, 6], "counts": [10, 4, 5]}, r"annotation 3: .*counts add up to 19, not height\*width = 24"),
        (2, {"size": [4, 6], "counts": [10, 4, 20]}, r"annotation 3: .*counts add up to 34"),
        (1, {"size": [4, 6], "counts": mask_utils.frPyObjects({"size": [4, 6], "counts": [3, 2, 10]}, 4, 6)["counts"].decode()},
         r"annotation 2: .*counts add up to 15"),
        (1, {"size": [4, 6], "counts": mask_utils.frPyObjects({"size": [4, 6], "counts": [3, 2, 30]}, 4, 6)["counts"].decode()},
         r"annotation 2: .*counts add up to 35"),
        (1, {"size": [4, 6], "counts": "3"}, r"annotation 2: .*counts add up to 3,"),
        (1, {"size": [4, 6], "counts": "~~"}, r"annotation 2: .*not a valid compressed RLE string"),
    ],
)
def test_bad_rle_is_named(split_paths, index, segmentation, message):
    edit_json(split_paths["instances_json"], lambda d: d["annotations"][index].update(segmentation=segmentation))
    with pytest.raises(DataError, match=f"instances.json: image 1: {message}"):
        PanopticSplit(**split_paths).load_instance_masks(1)


def test_degenerate_polygons_give_empty_masks(split_paths):
    # a 2-point polygon (which pycocotools alone would read as a box) and an empty polygon list
    edit_json(split_paths["instances_json"], lambda d: (d["annotations"][0].update(segmentation=[[0, 0, 3, 3]]),
                                                        d["annotations"][1].update(segmentation=[])))
    masks, _, _ = PanopticSplit(**split_paths).load_instance_masks(1)
    assert masks[0].sum() == 0 and masks[1].sum() == 0 and masks[2].sum() == 4


def test_read_images_returns_the_validated_entries_in_json_order(split_paths):
    from oanet.data.coco_panoptic import read_images

    assert read_images(split_paths["panoptic_json"]) == [
        ImageInfo(1, "000000000001.png", 6, 4), ImageInfo(2, "000000000002.png", 3, 5)
    ]
    edit_json(split_paths["panoptic_json"], lambda d: d["images"].append(dict(d["images"][0])))
    with pytest.raises(DataError, match=r"panoptic.json: duplicate image id\(s\) \[1\]"):
        read_images(split_paths["panoptic_json"])
    edit_json(split_paths["panoptic_json"], lambda d: d.pop("annotations"))
    with pytest.raises(DataError, match="panoptic.json: not a COCO panoptic JSON"):
        read_images(split_paths["panoptic_json"])


def test_instance_store_keeps_the_split_images_and_decodes_in_one_batch():
    from oanet.data.instances import decode_instances, index_instances

    square = {"size": [4, 6], "counts": [6, 2, 2, 2, 12]}  # column-major: rows 2-3 of columns 1-2
    annotations = [
        {"id": 5, "image_id": 1, "category_id": 3, "iscrowd": 1, "segmentation": square},
        {"id": 6, "image_id": 99, "category_id": 7, "segmentation": []},  # not in the split: skipped, unchecked
    ]
    store = index_instances(annotations, "inst.json", image_ids={1, 2}, thing_ids={1, 3}, panoptic_json="p.json")
    assert set(store) == {1}
    masks, category_ids, iscrowd = decode_instances(store[1], 4, 6, "inst.json: image 1")
    assert masks.shape == (1, 4, 6) and masks[0, 2:4, 1:3].all() and masks.sum() == 4
    assert category_ids.tolist() == [3] and iscrowd.tolist() == [True]
    empty = decode_instances(store.get(2), 4, 6, "inst.json: image 2")
    assert [a.shape for a in empty] == [(0, 4, 6), (0,), (0,)]
    with pytest.raises(DataError, match=r"inst.json: annotation 5 has category id 3, not a thing category of p.json"):
        index_instances(annotations, "inst.json", image_ids={1}, thing_ids={1}, panoptic_json="p.json")
