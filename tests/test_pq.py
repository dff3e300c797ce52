"""Panoptic Quality on hand-made cases: each checks one rule of the COCO panoptic API's pq_compute."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from oanet import _ext
from oanet.data.png_io import write_id_png
from oanet.errors import DataError
from oanet.evaluation.pq import Categories, format_table, parse_segments, pq_compute

PERSON, CAR, SKY = 1, 2, 3
CATEGORIES = [
    {"id": PERSON, "name": "person", "isthing": 1},
    {"id": CAR, "name": "car", "isthing": 1},
    {"id": SKY, "name": "sky", "isthing": 0},
]


@pytest.fixture(autouse=True, params=["C", "pure"])
def path(request, monkeypatch):
    """Every case runs with the C extension (decoding, counting and matching in C) and without it (numpy)."""
    if request.param == "C" and _ext.speedups is None:
        pytest.skip("C extension not built")
    if request.param == "pure":
        monkeypatch.setattr(_ext, "speedups", None)
    return request.param


def segment(segment_id: int, category_id: int, iscrowd: int = 0, area: int | None = None) -> dict:
    info = {"id": segment_id, "category_id": category_id, "iscrowd": iscrowd}
    if area is not None:
        info["area"] = area
    return info


def write_case(root: Path, images: list[tuple[np.ndarray, list[dict], np.ndarray, list[dict]]]) -> tuple:
    """Write (gt ids, gt segments, pred ids, pred segments) per image as a COCO panoptic GT and prediction.

    A GT segment without an explicit area gets its pixel count, as in COCO.
    """
    gt_dir, pred_dir = root / "gt", root / "pred"
    gt_dir.mkdir(parents=True, exist_ok=True)
    pred_dir.mkdir(parents=True, exist_ok=True)
    gt_annotations, pred_annotations = [], []
    for image_id, (gt_ids, gt_segments, pred_ids, pred_segments) in enumerate(images, start=1):
        file_name = f"{image_id:06d}.png"
        write_id_png(gt_dir / file_name, np.asarray(gt_ids))
        write_id_png(pred_dir / file_name, np.asarray(pred_ids))
        gt_segments = [
            {**s, "area": s.get("area", int((np.asarray(gt_ids) == s["id"]).sum()))} for s in gt_segments
        ]
        gt_annotations.append({"image_id": image_id, "file_name": file_name, "segments_info": gt_segments})
        pred_annotations.append({"image_id": image_id, "file_name": file_name, "segments_info": pred_segments})
    gt = {"categories": CATEGORIES, "annotations": gt_annotations}
    pred = {"annotations": pred_annotations}
    (root / "gt.json").write_text(json.dumps(gt))
    (root / "pred.json").write_text(json.dumps(pred))
    return root / "gt.json", gt_dir, root / "pred.json", pred_dir


def evaluate(root: Path, images, workers: int = 0) -> dict:
    gt_json, gt_dir, pred_json, pred_dir = write_case(root, images)
    return pq_compute(gt_json, gt_dir, pred_json, pred_dir, workers=workers, progress=False).to_dict()


def row(*ids: int) -> np.ndarray:
    """A 1-pixel-high id map: segments are runs of pixels, so areas and overlaps are easy to count."""
    return np.array([ids], dtype=np.uint32)


def runs(*pieces: tuple[int, int]) -> np.ndarray:
    """row() from (id, length) runs."""
    return np.array([np.repeat([p[0] for p in pieces], [p[1] for p in pieces])], dtype=np.uint32)


# --------------------------------------------------------------------------------------------------
# Matching and counting


def test_perfect_prediction_scores_one(tmp_path):
    gt = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 3, 0]], dtype=np.uint32)
    segments = [segment(1, PERSON), segment(2, CAR), segment(3, SKY)]
    result = evaluate(tmp_path, [(gt, segments, gt, [segment(1, PERSON), segment(2, CAR), segment(3, SKY)])])
    assert result["All"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 3}
    assert result["Things"]["n"] == 2 and result["Stuff"]["n"] == 1
    assert result["per_class"][str(PERSON)] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "tp": 1, "fp": 0, "fn": 0}


def test_iou_of_exactly_one_half_is_no_match(tmp_path):
    gt = runs((7, 4))
    pred = runs((9, 2), (0, 2))  # intersection 2, union 4
    result = evaluate(tmp_path, [(gt, [segment(7, PERSON)], pred, [segment(9, PERSON)])])
    assert result["per_class"][str(PERSON)] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": 0, "fp": 1, "fn": 1}


def test_iou_just_above_one_half_matches(tmp_path):
    gt = runs((7, 201))
    pred = runs((9, 101), (0, 100))  # IoU 101/201
    result = evaluate(tmp_path, [(gt, [segment(7, PERSON)], pred, [segment(9, PERSON)])])
    stats = result["per_class"][str(PERSON)]
    assert (stats["tp"], stats["fp"], stats["fn"]) == (1, 0, 0)
    assert stats["sq"] == pytest.approx(101 / 201, abs=1e-15)
    assert stats["pq"] == pytest.approx(101 / 201, abs=1e-15) and stats["rq"] == 1.0


def test_predicted_pixels_on_gt_void_leave_the_union(tmp_path):
    gt = runs((7, 4), (0, 4))
    # 3 of the GT's 4 pixels + all 4 void pixels: IoU 3/8 counting the void, 3/4 without it.
    pred = runs((9, 3), (0, 1), (9, 4))
    result = evaluate(tmp_path, [(gt, [segment(7, PERSON)], pred, [segment(9, PERSON)])])
    stats = result["per_class"][str(PERSON)]
    assert stats["tp"] == 1 and stats["sq"] == pytest.approx(0.75, abs=1e-15)


def test_only_same_category_matches(tmp_path):
    gt = runs((7, 4))
    result = evaluate(tmp_path, [(gt, [segment(7, PERSON)], gt, [segment(7, CAR)])])
    assert result["per_class"][str(PERSON)]["fn"] == 1
    assert result["per_class"][str(CAR)]["fp"] == 1
    assert result["All"]["pq"] == 0.0 and result["All"]["n"] == 2


def test_unmatched_prediction_mostly_on_void_is_not_a_false_positive(tmp_path):
    gt = row(5, 5, 5, 5, 0, 0, 0, 0, 0, 0)
    pred = row(8, 8, 9, 9, 8, 8, 8, 9, 9, 0)
    # Car 8 has 3 of its 5 pixels on void (0.6 > 0.5): ignored. Car 9 has 2 of 4 (exactly 0.5): FP.
    result = evaluate(tmp_path, [(gt, [segment(5, SKY)], pred, [segment(8, CAR), segment(9, CAR)])])
    assert result["per_class"][str(CAR)]["fp"] == 1
    assert result["per_class"][str(SKY)]["fn"] == 1


def test_unmatched_prediction_on_same_category_crowd_is_not_a_false_positive(tmp_path):
    gt = runs((4, 6), (5, 4))
    gt_segments = [segment(4, PERSON, iscrowd=1), segment(5, SKY)]
    pred = runs((8, 6), (9, 4))
    # A person on the person crowd is ignored; crowd GT is never a false negative.
    result = evaluate(tmp_path, [(gt, gt_segments, pred, [segment(8, PERSON), segment(9, SKY)])])
    assert result["per_class"][str(PERSON)] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": 0, "fp": 0, "fn": 0}
    assert result["All"]["n"] == 1  # person is not counted at all
    # A car on the person crowd is a false positive.
    result = evaluate(tmp_path / "car", [(gt, gt_segments, pred, [segment(8, CAR), segment(9, SKY)])])
    assert result["per_class"][str(CAR)]["fp"] == 1


def test_crowd_is_never_matched(tmp_path):
    gt = runs((4, 6))
    result = evaluate(tmp_path, [(gt, [segment(4, PERSON, iscrowd=1)], gt, [segment(4, PERSON)])])
    assert result["per_class"][str(PERSON)]["tp"] == 0 and result["per_class"][str(PERSON)]["fp"] == 0


def test_only_the_last_listed_crowd_segment_of_a_category_is_ignored(tmp_path):
    # The COCO API remembers one crowd segment per category and image (the last one in segments_info);
    # a prediction on an earlier crowd segment of that category is a false positive there.
    gt = runs((4, 4), (6, 4))
    gt_segments = [segment(4, PERSON, iscrowd=1), segment(6, PERSON, iscrowd=1)]
    on_first = runs((8, 4), (0, 4))
    on_last = runs((0, 4), (8, 4))
    result = evaluate(tmp_path / "a", [(gt, gt_segments, on_first, [segment(8, PERSON)])])
    assert result["per_class"][str(PERSON)]["fp"] == 1
    result = evaluate(tmp_path / "b", [(gt, gt_segments, on_last, [segment(8, PERSON)])])
    assert result["per_class"][str(PERSON)]["fp"] == 0


def test_predicted_class_absent_from_gt_counts_fp_and_gt_class_never_predicted_counts_fn(tmp_path):
    gt = runs((5, 4), (6, 4))
    pred = runs((5, 4), (7, 4))
    result = evaluate(tmp_path, [(gt, [segment(5, SKY), segment(6, PERSON)], pred, [segment(5, SKY), segment(7, CAR)])])
    assert result["per_class"][str(CAR)] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": 0, "fp": 1, "fn": 0}
    assert result["per_class"][str(PERSON)] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": 0, "fp": 0, "fn": 1}
    assert result["All"] == {"pq": pytest.approx(1 / 3), "sq": pytest.approx(1 / 3), "rq": pytest.approx(1 / 3), "n": 3}
    assert result["Things"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 2}
    assert result["Stuff"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 1}


def test_gt_area_comes_from_the_json_not_the_png(tmp_path):
    gt = runs((7, 4))
    # The PNG has 4 pixels but the JSON says 8: IoU = 4 / (4 + 8 - 4) = 0.5, no match.
    result = evaluate(tmp_path, [(gt, [segment(7, PERSON, area=8)], gt, [segment(7, PERSON)])])
    assert result["per_class"][str(PERSON)]["tp"] == 0


def test_classes_average_over_images_and_workers_agree(tmp_path):
    rng = np.random.default_rng(0)
    images = []
    for _ in range(6):
        gt = runs((1, 10), (2, 10), (3, 10))
        pred = gt.copy()
        pred[0, rng.integers(0, 30, size=8)] = 0
        present = sorted(set(pred.ravel().tolist()) - {0})
        images.append((gt, [segment(1, PERSON), segment(2, CAR), segment(3, SKY)], pred,
                       [segment(i, {1: PERSON, 2: CAR, 3: SKY}[i]) for i in present]))
    in_process = evaluate(tmp_path / "a", images, workers=0)
    two_workers = evaluate(tmp_path / "b", images, workers=2)
    assert in_process == two_workers
    assert 0.0 < in_process["All"]["pq"] < 1.0


def test_accepts_loaded_dicts_and_formats_the_table(tmp_path):
    gt_json, gt_dir, pred_json, pred_dir = write_case(tmp_path, [(runs((1, 3)), [segment(1, SKY)], runs((1, 3)), [segment(1, SKY)])])
    gt, pred = json.loads(gt_json.read_text()), json.loads(pred_json.read_text())
    result = pq_compute(gt, gt_dir, pred, pred_dir, workers=0, progress=False)
    assert result.to_dict()["Stuff"]["pq"] == 1.0
    table = format_table(result).splitlines()
    assert table[0].split() == ["|", "PQ", "SQ", "RQ", "N"]
    assert table[2] == "All       | 100.00  100.00  100.00     1"  # 2 decimals, as `oanet evaluate`
    assert table[3] == "Things    |   0.00    0.00    0.00     0"


# --------------------------------------------------------------------------------------------------
# Errors name the image and the problem


def good_case(root: Path) -> tuple:
    gt = runs((1, 4), (2, 4))
    return write_case(root, [(gt, [segment(1, PERSON), segment(2, SKY)], gt, [segment(1, PERSON), segment(2, SKY)])])


def edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def run_case(paths) -> None:
    pq_compute(*paths, workers=0, progress=False)


@pytest.mark.parametrize(
    "damage, exception, message",
    [
        (lambda p: edit_json(p[2], lambda d: d["annotations"].clear()), DataError, "no prediction for image 1"),
        (lambda p: (p[1] / "000001.png").unlink(), FileNotFoundError, "000001.png (ground truth of image 1)"),
        (lambda p: (p[3] / "000001.png").unlink(), FileNotFoundError, "000001.png (prediction for image 1)"),
        (lambda p: write_id_png(p[3] / "000001.png", runs((1, 4), (2, 5))), DataError, "size 9x1 differs"),
        (lambda p: write_id_png(p[3] / "000001.png", runs((1, 4), (3, 4))), DataError, "ids [3] in the PNG are declared by no segment"),
        (lambda p: write_id_png(p[1] / "000001.png", runs((1, 4), (5, 4))), DataError, "ground truth of image 1): ids [5]"),
        (lambda p: write_id_png(p[3] / "000001.png", runs((1, 8))), DataError, "declared segments [2] have no pixel"),
        (lambda p: write_id_png(p[1] / "000001.png", runs((1, 8))), DataError, "ground truth of image 1): declared segments [2]"),
        (lambda p: edit_json(p[2], lambda d: d["annotations"][0]["segments_info"][0].update(category_id=99)), DataError, "unknown category ids [99]"),
        (lambda p: edit_json(p[2], lambda d: d["annotations"][0]["segments_info"][1].update(id=1)), DataError, "duplicate segment ids [1]"),
        (lambda p: edit_json(p[0], lambda d: d["annotations"][0]["segments_info"][1].update(id=1)), DataError, "ground-truth image 1 (000001.png): duplicate"),
        (lambda p: (p[3] / "000001.png").write_bytes(b"\x89PNG\r\n\x1a\n broken"), DataError, "not a readable PNG"),
        (lambda p: p[2].write_text('{"annotations": [}'), DataError, "malformed prediction JSON"),
        (lambda p: edit_json(p[0], lambda d: d["annotations"][0]["segments_info"][0].pop("area")), DataError, "needs 'id', 'category_id' and 'area'"),
        (lambda p: edit_json(p[2], lambda d: d["annotations"][0]["segments_info"][0].update(id=0)), DataError, "(0 is VOID)"),
        (lambda p: edit_json(p[0], lambda d: d.pop("categories")), DataError, "no 'categories'"),
        (lambda p: edit_json(p[2], lambda d: d["annotations"][0].update(image_id=[1])), DataError, "annotation #0: image id [1] is not a number or a string"),
        (lambda p: edit_json(p[0], lambda d: d["annotations"][0].update(image_id={"a": 1})), DataError, "annotation #0: image id"),
        (lambda p: edit_json(p[2], lambda d: d["annotations"][0]["segments_info"][1].update(id=2.5)), DataError, "2.5 is not an integer"),
        (lambda p: (p[3] / "000001.png").write_bytes(b""), DataError, "000001.png (prediction for image 1): empty file (0 bytes)"),
    ],
    ids=[
        "no-prediction", "missing-gt-png", "missing-pred-png", "size", "undeclared-pred-id", "undeclared-gt-id",
        "absent-pred-segment", "absent-gt-segment", "unknown-category", "duplicate-pred-id", "duplicate-gt-id",
        "corrupt-png", "malformed-json", "gt-without-area", "void-id-declared", "no-categories",
        "list-image-id", "dict-image-id-gt", "fractional-segment-id", "zero-byte-png",
    ],
)
def test_bad_input_raises_a_clear_error(tmp_path, damage, exception, message):
    paths = good_case(tmp_path)
    run_case(paths)  # sanity: the undamaged case evaluates
    damage(paths)
    with pytest.raises(exception) as info:
        run_case(paths)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_errors_in_workers_reach_the_caller_in_image_order(tmp_path):
    import threading

    gt = runs((1, 4), (2, 4))
    good = (gt, [segment(1, PERSON), segment(2, SKY)], gt, [segment(1, PERSON), segment(2, SKY)])
    paths = write_case(tmp_path, [good] * 30)
    for image_id in (13, 21):  # two broken images: the first in image order is the one reported
        write_id_png(paths[3] / f"{image_id:06d}.png", runs((1, 4), (3, 4)))
    for workers in (2, 3):
        with pytest.raises(DataError, match=r"000013\.png \(prediction for image 13\): ids \[3\]"):
            pq_compute(*paths, workers=workers, progress=False)
    assert not [t for t in threading.enumerate() if t.name.startswith("oanet-pq")]  # the threads were joined


def test_segments_given_as_floats_strings_or_bools_parse_like_integers():
    categories = Categories.from_json({"categories": CATEGORIES}, "gt")
    plain = {"image_id": 1, "file_name": "1.png", "segments_info": [
        {"id": 9, "category_id": SKY, "iscrowd": 0, "area": 5},
        {"id": 3, "category_id": PERSON, "iscrowd": 1, "area": 2},
        {"id": 4, "category_id": PERSON, "area": 7},
    ]}
    odd = {"image_id": 1, "file_name": "1.png", "segments_info": [
        {"id": 9.0, "category_id": "3", "iscrowd": False, "area": "5"},
        {"id": "3", "category_id": 1.0, "iscrowd": True, "area": 2.0},
        {"id": True + 3, "category_id": True, "area": 7},
    ]}
    expected = parse_segments(plain, categories, "gt", with_area=True)
    assert expected.ids.tolist() == [3, 4, 9] and expected.category.tolist() == [0, 0, 2]
    assert expected.iscrowd.tolist() == [True, False, False] and expected.area.tolist() == [2.0, 7.0, 5.0]
    assert (expected.crowd_category.tolist(), expected.crowd_row.tolist()) == ([0], [0])
    got = parse_segments(odd, categories, "gt", with_area=True)
    for field in ("ids", "category", "iscrowd", "area", "crowd_category", "crowd_row"):
        mine, theirs = getattr(got, field), getattr(expected, field)
        assert mine.dtype == theirs.dtype and mine.tolist() == theirs.tolist(), field
    empty = parse_segments({"segments_info": []}, categories, "gt", with_area=True)
    assert empty.ids.shape == empty.category.shape == (0,)
    with pytest.raises(DataError, match=r"segment ids \[18446744073709551616\] outside"):
        parse_segments({"segments_info": [{"id": 2**64, "category_id": SKY}]}, categories, "p", with_area=False)
    with pytest.raises(DataError, match=r"every segment needs 'id' and 'category_id'"):
        parse_segments({"segments_info": [{"id": 1, "category_id": [3]}]}, categories, "p", with_area=False)


def test_missing_folder_and_json(tmp_path):
    paths = good_case(tmp_path)
    with pytest.raises(FileNotFoundError, match="prediction PNG folder not found"):
        pq_compute(paths[0], paths[1], paths[2], tmp_path / "nowhere", workers=0, progress=False)
    with pytest.raises(FileNotFoundError, match="ground-truth JSON not found"):
        pq_compute(tmp_path / "nothing.json", paths[1], paths[2], paths[3], workers=0, progress=False)
