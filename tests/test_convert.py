"""``oanet convert``: each source against its reference on a small tree written here, bad inputs, resuming,
and ``oanet train`` on every converted dataset.

Cityscapes is compared with cityscapesscripts itself (a test-only dependency); ADE20K, 2-channel,
semantic + instance and COCO detection with a plain re-run of their rules written below, one Python
loop per segment, as the reference scripts are written. Where the reference ids are random colours
(panopticapi's IdGenerator), segments are compared by category and pixel set, in order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from oanet.cli import main
from oanet.data.png_io import read_id_png

REPO = Path(__file__).resolve().parents[1]
H, W = 64, 96


def _convert(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["convert", *argv, "--no-progress"])
    out, err = capsys.readouterr()
    return code, out, err


def _error(capsys, *argv: str) -> str:
    code, _, err = _convert(capsys, *argv)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("oanet convert: error: "), err
    return lines[0]


def _box(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def _segments(out: Path, split: str) -> dict:
    """``{image_id: [(category, mask, segment), ...]}`` of a converted split, the PNG checked against its JSON."""
    data = json.loads((out / f"panoptic_{split}.json").read_text())
    result = {}
    for image, ann in zip(data["images"], data["annotations"]):
        ids = read_id_png(out / f"panoptic_{split}" / ann["file_name"])
        assert ids.shape == (image["height"], image["width"])
        assert set(np.unique(ids).tolist()) - {0} == {s["id"] for s in ann["segments_info"]}
        result[ann["image_id"]] = [(s["category_id"], ids == s["id"], s) for s in ann["segments_info"]]
    return result


def _assert_same(ours: list, expected: list) -> None:
    """Same categories and pixel sets in the same order; areas, boxes, iscrowd of the pixels."""
    assert [c for c, _, _ in ours] == [c for c, _ in expected]
    for (_, mask, seg), (_, want) in zip(ours, expected):
        assert np.array_equal(mask, want)
        assert (seg["area"], seg["bbox"], seg["iscrowd"]) == (int(want.sum()), _box(want), 0)


def _rgb(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8)).save(path)


def _tiny_train(tmp_path: Path, out: Path, split: str, image_dir: Path) -> None:
    """2 iterations of the tiny config on a converted split."""
    from oanet.config import load_config
    from oanet.train.trainer import train

    overrides = [f"data.train.panoptic_json={out}/panoptic_{split}.json", f"data.train.panoptic_dir={out}/panoptic_{split}",
                 f"data.train.image_dir={image_dir}", "solver.max_iter=2", f"output_dir={tmp_path / 'run' / out.name}"]
    with pytest.warns(UserWarning, match="no instances_json"):
        summary = train(load_config(REPO / "configs" / "tiny_test.yaml", overrides))
    assert summary["iteration"] == 2


# --------------------------------------------------------------------------------------------
# Cityscapes


def _cityscapes_map(seed: int, only_small: bool = False) -> np.ndarray:
    """An instanceIds map: stuff, ignored classes, instances, crowd; later rectangles cover earlier ones."""
    rng = np.random.default_rng(seed)
    a = np.zeros((H, W), np.uint16)
    a[1:20], a[20:32], a[32:] = 23, 11, 7
    a[32:, :10] = 8
    a[24:40, 60:63] = 17
    a[-5:, 30:70] = 1  # ego vehicle (ignoreInEval)
    a[28:34, 5:15] = 9  # parking (ignoreInEval)
    things = [26, 24] if only_small else [26000, 26001, 24000, 24001, 26, 24, 33000, 29000, 30, 25000]
    for value in things:
        y, x = rng.integers(10, H - 12), rng.integers(0, W - 16)
        a[y:y + rng.integers(4, 12), x:x + rng.integers(5, 16)] = value
    return a


def _cityscapes_tree(root: Path) -> None:
    for split, names in {"val": ["aachen_000000_000019", "aachen_000001_000019", "bochum_000000_000313"],
                         "train": ["zurich_000000_000019", "zurich_000001_000019"]}.items():
        for k, name in enumerate(names):
            city = name.split("_")[0]
            path = root / "gtFine" / split / city / f"{name}_gtFine_instanceIds.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            # 16-bit, as the official files (the reference fails on 8-bit ones under numpy 2)
            Image.fromarray(_cityscapes_map(k + 10 * len(split), only_small=city == "bochum")).save(path)
            _rgb(root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png", k)


@pytest.fixture(scope="module")
def cityscapes_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cityscapes")
    _cityscapes_tree(root)
    return root


@pytest.mark.parametrize("train_ids", [False, True])
def test_cityscapes_equals_cityscapesscripts(cityscapes_root, tmp_path, capsys, train_ids):
    createPanopticImgs = pytest.importorskip("cityscapesscripts.preparation.createPanopticImgs")
    reference = tmp_path / "reference"
    reference.mkdir()
    createPanopticImgs.convert2panoptic(str(cityscapes_root / "gtFine"), str(reference), train_ids, ["val"])
    stem = "cityscapes_panoptic_val" + ("_trainId" if train_ids else "")
    ref = json.loads((reference / f"{stem}.json").read_text())
    out = tmp_path / "ours"
    code, printed, _ = _convert(capsys, "cityscapes", "--root", str(cityscapes_root), "--split", "val", "--out", str(out),
                                *(["--train-ids"] if train_ids else []))
    assert code == 0 and "3 images (3 converted, 0 already complete and skipped)" in printed
    ours = json.loads((out / "panoptic_val.json").read_text())
    assert [(i["id"], i["width"], i["height"]) for i in ours["images"]] == [
        (i["id"], i["width"], i["height"]) for i in ref["images"]]
    assert ours["images"][0]["file_name"] == "aachen/aachen_000000_000019_leftImg8bit.png"  # the real image
    assert [{k: c[k] for k in ("id", "name", "color", "supercategory", "isthing")} for c in ours["categories"]] == ref["categories"]
    assert len(ours["categories"]) == 19
    for mine, theirs in zip(ours["annotations"], ref["annotations"]):
        assert (mine["image_id"], mine["file_name"]) == (theirs["image_id"], theirs["file_name"])
        assert mine["segments_info"] == theirs["segments_info"]
        ids = read_id_png(out / "panoptic_val" / mine["file_name"])
        pillow = np.array(Image.open(out / "panoptic_val" / mine["file_name"])).astype(np.uint32)  # another decoder
        assert np.array_equal(ids, read_id_png(reference / stem / theirs["file_name"]))
        assert np.array_equal(ids, pillow[..., 0] + 256 * pillow[..., 1] + 65536 * pillow[..., 2])
    segments = [s for a in ours["annotations"] for s in a["segments_info"]]
    assert any(s["iscrowd"] for s in segments) and any(s["id"] >= 1000 for s in segments)
    report = json.loads((out / "convert_report.json").read_text())["splits"]["val"]
    reasons = {d["reason"] for d in report["dropped"]}
    assert {"ignoreInEval class 'ego vehicle' (1)", "ignoreInEval class 'caravan' (29)"} <= reasons
    car = next(c for c in report["categories"] if c["name"] == "car")
    assert car["segments"] == sum(s["category_id"] == car["id"] for s in segments) and car["crowd"] >= 1


def test_cityscapes_resume_skips_complete_images(cityscapes_root, tmp_path, capsys):
    out = tmp_path / "out"
    args = ("cityscapes", "--root", str(cityscapes_root), "--split", "val", "--out", str(out), "--workers", "2")
    assert _convert(capsys, *args)[0] == 0
    first = (out / "panoptic_val.json").read_bytes()
    pngs = sorted((out / "panoptic_val").iterdir())
    mtimes = [p.stat().st_mtime_ns for p in pngs]
    code, printed, _ = _convert(capsys, *args)
    assert code == 0 and "(0 converted, 3 already complete and skipped)" in printed
    assert [p.stat().st_mtime_ns for p in pngs] == mtimes and (out / "panoptic_val.json").read_bytes() == first
    # A deleted PNG, a torn last record (a run killed while appending) and a changed input are redone.
    pngs[0].unlink()
    with open(out / "panoptic_val.records.jsonl", "a") as f:
        f.write('{"png": "torn')
    source = next((cityscapes_root / "gtFine" / "val" / "bochum").iterdir())
    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10**9))
    code, printed, _ = _convert(capsys, *args[:-2], "--workers", "1")
    assert "(2 converted, 1 already complete and skipped)" in printed
    assert (out / "panoptic_val.json").read_bytes() == first  # and the same dataset, with 1 worker as with 2
    # Other settings start over.
    code, printed, _ = _convert(capsys, *args, "--train-ids")
    assert "(3 converted, 0 already complete" in printed


def test_cityscapes_bad_inputs(cityscapes_root, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert "nowhere: Cityscapes folder not found" in _error(capsys, "cityscapes", "--root", str(tmp_path / "nowhere"),
                                                            "--split", "val", "--out", out)
    assert "gtFine/test: folder not found" in _error(capsys, "cityscapes", "--root", str(cityscapes_root), "--split",
                                                     "test", "--out", out)
    empty = tmp_path / "empty"
    (empty / "gtFine" / "val" / "aachen").mkdir(parents=True)
    assert "(empty split)" in _error(capsys, "cityscapes", "--root", str(empty), "--split", "val", "--out", out)
    bad = tmp_path / "bad"
    path = bad / "gtFine" / "val" / "aachen" / "aachen_000000_000019_gtFine_instanceIds.png"
    path.parent.mkdir(parents=True)
    cases = {
        "is a RGB 8-bit PNG; expected greyscale": np.zeros((H, W, 3), np.uint8),
        "unknown Cityscapes class id(s) [40]": np.full((H, W), 40, np.uint16),
        "instance id 23001 on class 'sky' (23), which has no instances": np.full((H, W), 23001, np.uint16),
    }
    for message, array in cases.items():
        Image.fromarray(array).save(path)
        line = _error(capsys, "cityscapes", "--root", str(bad), "--split", "val", "--out", out)
        assert str(path) in line and message in line, line
    assert "cannot create the output folder (a file is in the way)" in _error(
        capsys, "cityscapes", "--root", str(cityscapes_root), "--split", "val", "--out", str(path))


# --------------------------------------------------------------------------------------------
# ADE20K


def _ade_tree(root: Path) -> None:
    from oanet.convert.ade20k import INSTANCE_CLASS_TO_LABEL

    person, car = INSTANCE_CLASS_TO_LABEL.index(13) + 1, INSTANCE_CLASS_TO_LABEL.index(21) + 1
    for folder, n in (("training", 2), ("validation", 1)):
        for k in range(n):
            name = f"ADE_{folder[:5]}_{k + 1:08d}"
            sem = np.zeros((H, W), np.uint8)
            sem[:20], sem[20:40], sem[40:] = 3, 1, 4  # sky, wall, floor
            sem[5:9, 5:9] = (10, 12)[k]  # grass or sidewalk (stuff): small, then entirely under an instance
            sem[30:50, 10:30] = 13  # person in the semantic map; the instance map is smaller
            inst = np.zeros((H, W, 3), np.uint8)
            inst[32:48, 12:26] = (person, 1, 0)
            inst[4:10, 4:12] = (car, 2, 0)  # over sky and the small stuff region: stuff under an instance
            inst[44:60, 50:80] = (car, 3 + k, 0)
            for sub, array in (("annotations", sem), ("annotations_instance", inst)):
                (root / sub / folder).mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(root / sub / folder / f"{name}.png")
            (root / "images" / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((H, W, 3), 90 + k, np.uint8)).save(root / "images" / folder / f"{name}.jpg")


def _ade_rules(sem: np.ndarray, inst: np.ndarray, things: set, to_label: tuple) -> list:
    """prepare_ade20k_pan_seg.py's rules, one loop per segment; pixels after the things are pasted."""
    semantic_cat = sem.astype(np.int64) - 1
    segments = []
    for cat in np.unique(semantic_cat):
        if cat >= 0 and cat not in things:
            segments.append([int(cat), semantic_cat == cat])
    for instance_id in np.unique(inst[..., 1]):
        if instance_id:
            mask = inst[..., 1] == instance_id
            classes = np.unique(inst[..., 0][mask])
            assert len(classes) == 1
            segments.append([to_label[classes[0] - 1] - 1, mask])
    owner = np.full(sem.shape, -1)
    for k, (_, mask) in enumerate(segments):
        owner[mask] = k
    return [(cat, owner == k) for k, (cat, _) in enumerate(segments) if (owner == k).any()]


def test_ade20k_follows_mask2former_rules(tmp_path, capsys):
    from oanet.convert import ade20k

    root = tmp_path / "ADEChallengeData2016"
    _ade_tree(root)
    out = tmp_path / "out"
    code, printed, _ = _convert(capsys, "ade20k", "--root", str(root), "--out", str(out))
    assert code == 0 and "ade20k train: 2 images" in printed and "ade20k val: 1 images" in printed
    data = json.loads((out / "panoptic_train.json").read_text())
    categories = data["categories"]
    assert len(categories) == 150 and sum(c["isthing"] for c in categories) == 100
    assert categories[0] == {"id": 0, "name": "wall", "isthing": 0, "color": [120, 120, 120]}  # the reference's keys
    assert categories[8]["name"] == "window " and categories[12]["isthing"] == 1 and categories[149]["isthing"] == 1
    assert ade20k.INSTANCE_CLASS_TO_LABEL[:4] == (8, 9, 11, 13) and ade20k.INSTANCE_CLASS_TO_LABEL[-1] == 150
    assert [i["id"] for i in data["images"]] == ["ADE_train_00000001", "ADE_train_00000002"]
    assert data["images"][0]["file_name"] == "ADE_train_00000001.jpg"
    things = {c["id"] for c in categories if c["isthing"]}
    for split, folder in (("train", "training"), ("val", "validation")):
        for image_id, ours in _segments(out, split).items():
            sem = np.array(Image.open(root / "annotations" / folder / f"{image_id}.png"))
            inst = np.array(Image.open(root / "annotations_instance" / folder / f"{image_id}.png"))
            _assert_same(ours, _ade_rules(sem, inst, things, ade20k.INSTANCE_CLASS_TO_LABEL))
    report = json.loads((out / "convert_report.json").read_text())["splits"]
    assert set(report) == {"train", "val"}
    train = report["train"]
    hidden = next(d for d in train["dropped"] if d["reason"] == "stuff class entirely under instances")
    assert (hidden["segments"], hidden["pixels"]) == (2, 32)
    assert train["counters"]["stuff_pixels_under_instances"] > 32
    # An instance whose pixels carry two instance classes.
    inst_path = root / "annotations_instance" / "training" / "ADE_train_00000002.png"
    inst = np.array(Image.open(inst_path))
    inst[44, 50, 0] = 1
    Image.fromarray(inst).save(inst_path)
    line = _error(capsys, "ade20k", "--root", str(root), "--split", "train", "--out", str(out))
    assert str(inst_path) in line and "instance 4 has pixels of several instance classes" in line
    # A missing annotation folder.
    (root / "annotations_instance" / "validation").rename(root / "moved")
    assert "annotations_instance/validation: folder not found" in _error(capsys, "ade20k", "--root", str(root),
                                                                           "--split", "val", "--out", str(out))


# --------------------------------------------------------------------------------------------
# 2-channel, semantic + instance


CATEGORIES = [{"id": 1, "name": "person", "isthing": 1}, {"id": 3, "name": "car", "isthing": 1},
              {"id": 7, "name": "road", "isthing": 0}, {"id": 9, "name": "sky", "isthing": 0, "color": [9, 9, 200]}]


def _two_channel_tree(root: Path) -> None:
    (root / "pngs").mkdir(parents=True)
    (root / "categories.json").write_text(json.dumps(CATEGORIES))
    images = []
    for k in range(3):
        png = np.zeros((H, W, 3), np.uint8)
        png[:30, :, 0], png[30:, :, 0] = 9, 7
        png[10:12, 40:60] = (9, 1, 0)  # stuff with an instance id: its own segment, as in panopticapi
        png[35:50, 10:20] = (1, 1, 0)
        png[40:55, 15:30] = (1, 2, 0)
        png[50:60, 60:90] = (3, 1, 0)
        png[20:25, 70:80] = (3, 0, 0)  # a thing with instance 0: one segment too
        png[0:3] = 0  # void
        png[5 + k, 5, 2] = 77  # channel 2 is not read
        Image.fromarray(png).save(root / "pngs" / f"{k:012d}.png")
        images.append({"id": k, "file_name": f"{k:012d}.jpg", "width": W, "height": H})
        _rgb(root / "images" / f"{k:012d}.jpg", k)
    (root / "images.json").write_text(json.dumps({"images": images}))


def _two_channel_rules(png: np.ndarray, void: int = 0) -> list:
    """2channels2panoptic_coco_format.py's rules."""
    pan = 1000 * png[..., 0].astype(np.uint32) + png[..., 1]
    return [(int(v // 1000), pan == v) for v in np.unique(pan) if v // 1000 != void]


def test_two_channel_equals_panopticapi_rules(tmp_path, capsys):
    _two_channel_tree(tmp_path)
    out = tmp_path / "out"
    common = ("--pngs", str(tmp_path / "pngs"), "--categories", str(tmp_path / "categories.json"), "--out", str(out))
    code, printed, _ = _convert(capsys, "two-channel", *common, "--images", str(tmp_path / "images.json"),
                                "--image-dir", str(tmp_path / "images"), "--split", "val")
    assert code == 0 and "stuff segments with an instance id: 3" in printed
    for image_id, ours in _segments(out, "val").items():
        _assert_same(ours, _two_channel_rules(np.array(Image.open(tmp_path / "pngs" / f"{image_id:012d}.png"))))
    data = json.loads((out / "panoptic_val.json").read_text())
    assert [c["color"] for c in data["categories"]][3] == [9, 9, 200]
    # Without --images: one image per PNG, the id its stem.
    code, _, _ = _convert(capsys, "two-channel", *common[:-1], str(tmp_path / "out2"), "--image-dir", str(tmp_path / "images"))
    assert [i["id"] for i in json.loads((tmp_path / "out2" / "panoptic_train.json").read_text())["images"]] == [
        "000000000000", "000000000001", "000000000002"]
    # Bad inputs.
    path = tmp_path / "pngs" / "000000000001.png"
    Image.fromarray(np.full((H, W), 7, np.uint8)).save(path)
    line = _error(capsys, "two-channel", *common)
    assert str(path) in line and "is a greyscale 8-bit PNG; expected RGB 8-bit or RGBA 8-bit" in line
    Image.fromarray(np.full((H, W, 3), 5, np.uint8)).save(path)
    line = _error(capsys, "two-channel", *common)
    assert str(path) in line and "unknown category id(s) [5]" in line
    assert "no .png files in the 2-channel PNG folder (empty split)" in _error(
        capsys, "two-channel", "--pngs", str(tmp_path / "images"), *common[2:])
    # The run stopped by the bad PNG kept what it had finished: the fixed rerun skips it.
    Image.fromarray(np.full((H, W, 3), 7, np.uint8)).save(path)
    code, printed, _ = _convert(capsys, "two-channel", *common)
    assert code == 0 and "(2 converted, 1 already complete and skipped)" in printed


def _semantic_instance_tree(root: Path) -> None:
    for sub in ("semantic", "instance", "images"):
        (root / sub).mkdir(parents=True)
    (root / "categories.json").write_text(json.dumps({"categories": CATEGORIES}))
    for k in range(2):
        sem = np.full((H, W), 7, np.uint8)
        inst = np.zeros((H, W), np.uint16)
        sem[:25] = 9
        sem[:2] = 255  # ignored
        sem[30:50, 10:30], inst[30:50, 10:30] = 1, 1
        sem[35:55, 20:40], inst[35:55, 20:40] = 1, 2
        sem[40:60, 50:80], inst[40:60, 50:80] = 3, 1  # instance ids restart at 1 per category
        inst[0, :5] = 9  # an instance id on an ignored pixel: ignored too
        inst[10:20, 10:20] = 300 + k  # 16-bit instance ids, on a car below
        sem[10:20, 10:20] = 3
        Image.fromarray(sem).save(root / "semantic" / f"img{k}.png")
        Image.fromarray(inst).save(root / "instance" / f"img{k}.png")
        _rgb(root / "images" / f"img{k}.png", k)


def _semantic_instance_rules(sem: np.ndarray, inst: np.ndarray, things: set, ignore: int = 255) -> list:
    segments = []
    for cat in np.unique(sem):
        if cat == ignore:
            continue
        mask = sem == cat
        if cat in things:
            segments += [(int(cat), mask & (inst == i)) for i in np.unique(inst[mask])]
        else:
            segments.append((int(cat), mask))
    return segments


def _painted(array: np.ndarray, where: tuple, value: int) -> np.ndarray:
    array = array.copy()
    array[where] = value
    return array


def test_semantic_instance(tmp_path, capsys):
    _semantic_instance_tree(tmp_path)
    out = tmp_path / "out"
    common = ("--semantic", str(tmp_path / "semantic"), "--instance", str(tmp_path / "instance"),
              "--categories", str(tmp_path / "categories.json"), "--out", str(out), "--image-dir", str(tmp_path / "images"))
    assert _convert(capsys, "semantic-instance", *common)[0] == 0
    things = {c["id"] for c in CATEGORIES if c["isthing"]}
    for image_id, ours in _segments(out, "train").items():
        sem = np.array(Image.open(tmp_path / "semantic" / f"{image_id}.png"))
        inst = np.array(Image.open(tmp_path / "instance" / f"{image_id}.png"))
        _assert_same(ours, _semantic_instance_rules(sem, inst, things))
    report = json.loads((out / "convert_report.json").read_text())["splits"]["train"]
    assert report["dropped"] == [{"reason": "ignore value 255", "images": 2, "segments": 0, "pixels": 2 * 2 * W}]
    sem_path, inst_path = tmp_path / "semantic" / "img1.png", tmp_path / "instance" / "img1.png"
    sem, inst = np.array(Image.open(sem_path)), np.array(Image.open(inst_path))
    cases = [
        (sem_path, "unknown category id(s) [4]", lambda s, i: (np.where(s == 7, 4, s).astype(np.uint8), i)),
        (inst_path, "thing pixels of 'person' (1) without an instance id (0): 100 pixels in the box x=0..9, y=30..39",
         lambda s, i: (_painted(s, (slice(30, 40), slice(0, 10)), 1), i)),
        (inst_path, "instance id 5 on stuff category 'road' (7)", lambda s, i: (s, np.where(s == 7, 5, i).astype(np.uint16))),
        (sem_path, "is a RGB 8-bit PNG", lambda s, i: (np.stack([s] * 3, axis=2), i)),
    ]
    for path, message, change in cases:
        new_sem, new_inst = change(sem, inst)
        Image.fromarray(new_sem.astype(np.uint8)).save(sem_path)
        Image.fromarray(new_inst).save(inst_path)
        line = _error(capsys, "semantic-instance", *common)
        assert str(path) in line and message in line, line
    Image.fromarray(sem).save(sem_path)
    inst_path.unlink()
    assert f"{inst_path}: instance PNG not found" in _error(capsys, "semantic-instance", *common)


# --------------------------------------------------------------------------------------------
# COCO detection


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode()}


def _coco_tree(root: Path) -> tuple[list, list]:
    (root / "images").mkdir(parents=True)
    images = [{"id": 42, "file_name": "a.jpg", "width": W, "height": H}, {"id": 7, "file_name": "b.jpg", "width": W, "height": H}]
    for image in images:
        _rgb(root / "images" / image["file_name"], image["id"])
    rect = lambda y0, y1, x0, x1: np.pad(np.ones((y1 - y0, x1 - x0), bool), ((y0, H - y1), (x0, W - x1)))  # noqa: E731
    things = [  # (image, category, iscrowd, mask); the first is given as a polygon below
        (42, 1, 0, rect(10, 30, 10, 30)), (42, 1, 0, rect(20, 26, 20, 26)), (42, 3, 0, rect(25, 45, 25, 60)),
        (42, 1, 1, rect(5, 50, 5, 40)), (42, 3, 0, rect(0, 0, 0, 0)), (7, 3, 0, rect(30, 40, 30, 40)),
    ]
    stuff = [(42, 9, 0, rect(0, 32, 0, W)), (42, 7, 0, rect(30, H, 0, W)), (42, 183, 0, rect(10, 30, 10, 30)),
             (7, 7, 0, rect(0, H, 0, W))]
    anns = [{"id": 100 + k, "image_id": i, "category_id": c, "iscrowd": z, "segmentation": _rle(m)}
            for k, (i, c, z, m) in enumerate(things)]
    anns[0]["segmentation"] = [[10, 10, 30, 10, 30, 30, 10, 30]]
    anns[4]["segmentation"] = [[1, 1, 2, 2]]  # a degenerate polygon: no pixel
    things[0] = (42, 1, 0, _decode_polygon(anns[0]["segmentation"]))
    categories = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}]
    (root / "instances.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": categories}))
    stuff_anns = [{"id": 200 + k, "image_id": i, "category_id": c, "iscrowd": z, "segmentation": _rle(m)}
                  for k, (i, c, z, m) in enumerate(stuff)]
    stuff_categories = [{"id": 7, "name": "road"}, {"id": 9, "name": "sky"}, {"id": 183, "name": "other"}]
    (root / "stuff.json").write_text(json.dumps({"images": images, "annotations": stuff_anns, "categories": stuff_categories}))
    return things, [s for s in stuff if s[1] != 183]


def _decode_polygon(polygons: list) -> np.ndarray:
    import warnings

    from pycocotools import mask as mask_utils

    with warnings.catch_warnings():  # pycocotools' numpy-2 copy= deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, H, W))).astype(bool)


def _paint(things: list, stuff: list, image_id: int, smaller_on_top: bool) -> list:
    """Painted bottom to top: stuff, crowd, things; in a layer larger first (smaller on top) or the reverse."""
    anns = [a for a in things if a[0] == image_id] + [a for a in stuff if a[0] == image_id]
    layer = [1 + (not a[2]) for a in things if a[0] == image_id] + [0 for a in stuff if a[0] == image_id]
    order = sorted(range(len(anns)), key=lambda k: (layer[k], -anns[k][3].sum() if smaller_on_top
                                                    else anns[k][3].sum(), k))
    owner = np.full((H, W), -1)
    for k in order:
        owner[anns[k][3]] = k
    return [(anns[k][1], owner == k) for k in range(len(anns)) if (owner == k).any()]


def test_coco_detection_overlaps(tmp_path, capsys):
    things, stuff = _coco_tree(tmp_path)
    common = ("--instances", str(tmp_path / "instances.json"), "--stuff", str(tmp_path / "stuff.json"),
              "--image-dir", str(tmp_path / "images"))
    for rule in ("smaller-on-top", "larger-on-top"):
        out = tmp_path / rule
        code, printed, _ = _convert(capsys, "coco-detection", *common, "--overlaps", rule, "--out", str(out))
        assert code == 0
        segments = _segments(out, "train")
        for image_id in (42, 7):
            expected = _paint(things, stuff, image_id, rule == "smaller-on-top")
            assert [c for c, _, _ in segments[image_id]] == [c for c, _ in expected]
            for (_, mask, seg), (_, want) in zip(segments[image_id], expected):
                assert np.array_equal(mask, want) and (seg["area"], seg["bbox"]) == (int(want.sum()), _box(want))
        crowd = [s["iscrowd"] for _, _, s in segments[42]]
        assert crowd.count(1) == 1
        report = json.loads((out / "convert_report.json").read_text())["splits"]["train"]
        # pixels under two or more things (crowd included) or two or more stuff annotations
        overlap = 0
        for image_id in (42, 7):
            thing_count = sum(m.astype(int) for i, _, _, m in things if i == image_id)
            stuff_count = sum(m.astype(int) for i, _, _, m in stuff if i == image_id)
            overlap += int(((thing_count > 1) | (stuff_count > 1)).sum())
        assert report["counters"]["overlap_pixels"] == overlap > 2 * W
        assert {d["reason"]: d["segments"] for d in report["dropped"]}["empty segmentation"] == 1
        assert [c["id"] for c in json.loads((out / "panoptic_train.json").read_text())["categories"]] == [1, 3, 7, 9]
    line = _error(capsys, "coco-detection", *common, "--overlaps", "error", "--out", str(tmp_path / "e"))
    assert "instances.json: image 42: annotations" in line and "overlap" in line
    bad = json.loads((tmp_path / "instances.json").read_text())
    bad["annotations"][1]["category_id"] = 11
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    line = _error(capsys, "coco-detection", "--instances", str(tmp_path / "bad.json"), "--out", str(tmp_path / "e"))
    assert "bad.json: annotation 101 has unknown category id 11" in line


# --------------------------------------------------------------------------------------------
# all of them: torch-free, and oanet train reads what they write


def test_convert_imports_no_torch(cityscapes_root, tmp_path):
    code = ("import argparse, sys\nfrom oanet.commands import convert\nparser = argparse.ArgumentParser()\n"
            "convert.add_arguments(parser)\n"
            f"assert convert.run(parser.parse_args(['cityscapes', '--root', {str(cityscapes_root)!r}, '--split', 'train', "
            f"'--out', {str(tmp_path)!r}, '--no-progress'])) == 0\n"
            "print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_benchmark_compares_and_runs(capsys):
    pytest.importorskip("cityscapesscripts")
    import bench_convert  # benchmarks/ is on sys.path (conftest.py)

    assert bench_convert.main(["--images", "2", "--width", "256", "--height", "128", "--workers", "2", "--repeat", "1"]) == 0
    assert "2 images 256x128" in capsys.readouterr().out


@pytest.mark.slow
def test_train_on_each_converted_dataset(cityscapes_root, tmp_path, capsys):
    datasets = []
    out = tmp_path / "cityscapes"
    assert _convert(capsys, "cityscapes", "--root", str(cityscapes_root), "--split", "train", "--out", str(out))[0] == 0
    datasets.append((out, "train", cityscapes_root / "leftImg8bit" / "train"))
    root = tmp_path / "ADEChallengeData2016"
    _ade_tree(root)
    assert _convert(capsys, "ade20k", "--root", str(root), "--split", "train", "--out", str(tmp_path / "ade"))[0] == 0
    datasets.append((tmp_path / "ade", "train", root / "images" / "training"))
    _two_channel_tree(tmp_path / "2ch")
    assert _convert(capsys, "two-channel", "--pngs", str(tmp_path / "2ch" / "pngs"), "--categories",
                    str(tmp_path / "2ch" / "categories.json"), "--image-dir", str(tmp_path / "2ch" / "images"),
                    "--out", str(tmp_path / "2ch_out"))[0] == 0
    datasets.append((tmp_path / "2ch_out", "train", tmp_path / "2ch" / "images"))
    _semantic_instance_tree(tmp_path / "si")
    assert _convert(capsys, "semantic-instance", "--semantic", str(tmp_path / "si" / "semantic"), "--instance",
                    str(tmp_path / "si" / "instance"), "--categories", str(tmp_path / "si" / "categories.json"),
                    "--image-dir", str(tmp_path / "si" / "images"), "--out", str(tmp_path / "si_out"))[0] == 0
    datasets.append((tmp_path / "si_out", "train", tmp_path / "si" / "images"))
    _coco_tree(tmp_path / "coco")
    assert _convert(capsys, "coco-detection", "--instances", str(tmp_path / "coco" / "instances.json"), "--stuff",
                    str(tmp_path / "coco" / "stuff.json"), "--out", str(tmp_path / "coco_out"))[0] == 0
    datasets.append((tmp_path / "coco_out", "train", tmp_path / "coco" / "images"))
    for out, split, image_dir in datasets:
        _tiny_train(tmp_path, out, split, image_dir)
