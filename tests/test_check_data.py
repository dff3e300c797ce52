"""``oanet check-data``: a planted defect of every kind is found (count and place), --fix repairs what it
says it repairs into a new file, clean and real COCO data raise nothing, and the command needs no torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from oanet.data.coco_panoptic import PanopticWriter
from oanet.data.labels import parse_categories
from oanet.data.png_io import id2rgb, read_id_png, write_id_png
from oanet.data.validate import check_dataset
from oanet.data.validate_kinds import ERROR, INFO, KINDS, WARNING
from oanet.data.validate_report import fix_json

COCO16 = Path(__file__).resolve().parents[2] / "shared/data/coco_panoptic_val16"
H, W = 24, 32
N_IMAGES = 20
PERSON = (220, 20, 60)
CATEGORIES = [
    {"id": 1, "name": "person", "isthing": 1, "color": list(PERSON)},
    {"id": 2, "name": "car", "isthing": 1, "color": [0, 0, 142]},
    {"id": 20, "name": "grass", "isthing": 0, "color": [0, 153, 0]},
    {"id": 21, "name": "sky", "isthing": 0, "color": [70, 130, 180]},
]


def image_name(i: int) -> str:
    return f"img_{i:02d}.jpg"


def png_name(i: int) -> str:
    return f"img_{i:02d}.png"


def id_map(i: int, planted: bool) -> tuple[np.ndarray, list[dict]]:
    """Sky above grass, a person and a car; a void 4x4 corner (room to plant ids without touching a
    segment); with ``planted``, the two defects that are easier drawn than planted."""
    ids = np.full((H, W), 30, dtype=np.uint32)  # grass
    ids[:8] = 31  # sky
    ids[10:20, 3 + i % 5 : 9 + i % 5] = 10  # person
    ids[12:18, 18:28] = 11  # car
    ids[:4, :4] = 0
    segments = [{"id": 10, "category_id": 1}, {"id": 11, "category_id": 2},
                {"id": 30, "category_id": 20}, {"id": 31, "category_id": 21}]
    if planted and i == 16:  # a second grass segment: stuff-repeated
        ids[20:, 20:] = 32
        segments.append({"id": 32, "category_id": 20})
    if planted and i == 17:  # nothing at all: empty-image
        ids[:] = 0
        segments = []
    return ids, segments


def write_dataset(root: Path, planted: bool = False) -> dict:
    """A valid 20-image COCO panoptic set (JSON, PNGs, JPEGs) in ``root``; returns the paths."""
    paths = {"json": root / "panoptic.json", "pngs": root / "panoptic", "images": root / "images"}
    paths["images"].mkdir(parents=True)
    with PanopticWriter(paths["json"], paths["pngs"], parse_categories(CATEGORIES, "test")) as writer:
        for i in range(N_IMAGES):
            ids, segments = id_map(i, planted)
            writer.add({"id": 100 + i, "file_name": image_name(i), "width": W, "height": H}, ids, segments)
            Image.fromarray(np.full((H, W, 3), 90 + 5 * i, dtype=np.uint8)).save(paths["images"] / image_name(i), "JPEG")
    data = json.loads(paths["json"].read_text())
    data["annotations"][0]["segments_info"][0]["iscrowd"] = 1  # a crowd person: info, no problem
    paths["json"].write_text(json.dumps(data))
    return paths


def load(paths: dict) -> dict:
    return json.loads(paths["json"].read_text())


def segments_of(data: dict, i: int) -> list[dict]:
    return data["annotations"][i]["segments_info"]


def plant_json_defects(data: dict) -> None:
    cats, images, anns = data["categories"], data["images"], data["annotations"]
    cats.append({"name": "nameless"})  # bad-category, categories[#4]
    cats[3]["color"] = [300, 0, 0]  # bad-category, yet sky stays declared (its segments are not unknown)
    cats.append({"id": 2, "name": "car again", "isthing": 1})  # duplicate-category-id
    cats.append({"id": 30, "name": "odd", "isthing": 2})  # bad-isthing (and unused)
    cats.append({"id": 31, "name": "flagless"})  # isthing-missing (and unused)
    images.append({"id": 999, "file_name": "sizeless.jpg"})  # bad-image
    images.append({"id": 100, "file_name": "dup_id.jpg", "width": W, "height": H})  # duplicate-image-id
    images.append({"id": 501, "file_name": "lonely.jpg", "width": W, "height": H})  # image-without-annotation
    images.append({"id": 502, "file_name": image_name(1), "width": W, "height": H})  # duplicate-image-file
    anns.append({"segments_info": []})  # bad-annotation, annotations[#20]
    anns.append({"image_id": 777, "file_name": "ghost.png", "segments_info": []})  # unknown-image
    anns.append(json.loads(json.dumps(anns[2])))  # duplicate-annotation of image 102
    anns.append({"image_id": 502, "file_name": png_name(5), "segments_info": []})  # duplicate-png
    segments_of(data, 1).append({"id": "x", "category_id": 1})  # bad-segment
    segments_of(data, 2).append(dict(segments_of(data, 2)[0]))  # duplicate-segment-id (person 10)
    segments_of(data, 3)[1]["category_id"] = 99  # unknown-category (the car)
    segments_of(data, 12).append({"id": 4242, "category_id": 1, "area": 5, "bbox": [0, 0, 1, 5]})  # not in PNG
    segments_of(data, 13)[0]["area"] += 1  # area-mismatch
    segments_of(data, 14)[1]["bbox"][2] += 1  # bbox-mismatch
    segments_of(data, 15)[2]["iscrowd"] = 1  # crowd-on-stuff (grass)


def plant_file_defects(paths: dict) -> None:
    pngs, images = paths["pngs"], paths["images"]
    (pngs / png_name(4)).unlink()  # png-missing
    data = (pngs / png_name(5)).read_bytes()
    (pngs / png_name(5)).write_bytes(data[: len(data) // 2])  # png-unreadable
    ids = read_id_png(pngs / png_name(6))
    write_id_png(pngs / png_name(6), np.pad(ids, ((0, 0), (0, 1))))  # png-size (a void column: same areas)
    (images / image_name(7)).unlink()  # image-missing
    (images / image_name(8)).write_bytes(b"not a jpeg")  # image-unreadable
    Image.new("RGB", (W + 2, H)).save(images / image_name(9), "JPEG")  # image-size
    rgb = id2rgb(read_id_png(pngs / png_name(10)))
    rgb[:2, :2] = PERSON  # category-colours, in the void corner
    Image.fromarray(rgb).save(pngs / png_name(10))
    ids = read_id_png(pngs / png_name(11))
    ids[:2, :2] = 12345  # undeclared-id, in the void corner
    write_id_png(pngs / png_name(11), ids)
    ids = read_id_png(pngs / png_name(18))  # png-format: the same colours as a palette PNG
    colours, index = np.unique(id2rgb(ids).reshape(-1, 3), axis=0, return_inverse=True)
    palette = Image.fromarray(index.reshape(H, W).astype(np.uint8), mode="P")
    palette.putpalette(colours.astype(np.uint8).reshape(-1).tolist())
    palette.save(pngs / png_name(18))
    write_id_png(pngs / "stray.png", np.zeros((2, 2), np.uint32))  # unreferenced-png


# every kind of KINDS -> the places check-data must name (segment-level kinds: count = segments)
PLANTED = {
    "bad-category": {"categories[#4]", "category 21 (sky)"},
    "duplicate-category-id": {"category 2 (car again)"},
    "bad-isthing": {"category 30 (odd)"},
    "isthing-missing": {"category 31 (flagless)"},
    "bad-image": {"sizeless.jpg"},
    "duplicate-image-id": {"dup_id.jpg"},
    "duplicate-image-file": {image_name(1)},
    "bad-annotation": {"annotations[#20]"},
    "unknown-image": {"ghost.png"},
    "duplicate-annotation": {png_name(2)},
    "image-without-annotation": {"lonely.jpg"},
    "duplicate-png": {png_name(5)},
    "bad-segment": {png_name(1)},
    "duplicate-segment-id": {png_name(2)},
    "unknown-category": {png_name(3)},
    "png-missing": {png_name(4)},
    "png-unreadable": {png_name(5)},
    "png-size": {png_name(6)},
    "image-missing": {image_name(7)},
    "image-unreadable": {image_name(8)},
    "image-size": {image_name(9)},
    "category-colours": {png_name(10)},
    "undeclared-id": {png_name(11)},
    "segment-not-in-png": {png_name(12)},
    "area-mismatch": {png_name(13)},
    "bbox-mismatch": {png_name(14)},
    "crowd-on-stuff": {png_name(15)},
    "stuff-repeated": {png_name(16)},
    "empty-image": {png_name(17)},
    "png-format": {png_name(18)},
    "crowd": {png_name(0), png_name(15)},
    "unused-category": {"category 30 (odd)", "category 31 (flagless)"},
    "unreferenced-png": {"stray.png"},
}


@pytest.fixture
def planted(tmp_path) -> dict:
    paths = write_dataset(tmp_path / "planted", planted=True)
    data = load(paths)
    plant_json_defects(data)
    paths["json"].write_text(json.dumps(data))
    plant_file_defects(paths)
    return paths


def oanet(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "oanet.cli", *args], capture_output=True, text=True, timeout=120)


def cli_args(paths: dict, out: Path, *extra: str) -> list[str]:
    return ["check-data", "--panoptic-json", str(paths["json"]), "--panoptic-dir", str(paths["pngs"]),
            "--image-dir", str(paths["images"]), "--out", str(out), "--no-progress", *extra]


def test_the_planted_set_covers_every_kind():
    assert set(PLANTED) == set(KINDS)


def test_every_planted_defect_is_found_with_its_count_and_place(planted):
    result = check_dataset(planted["json"], planted["pngs"], planted["images"], workers=2, progress=False)
    found = {kind: result.problems.files[kind] for kind in result.problems.counts}
    assert found == PLANTED
    counts = result.problems.counts
    assert counts["crowd"] == 2 and counts["unused-category"] == 2
    assert all(counts[k] == len(PLANTED[k]) for k in PLANTED), counts  # one item per place here
    assert result.has_errors
    examples = dict(result.problems.examples["undeclared-id"])
    assert "12345" in examples[png_name(11)]
    assert "category 1 'person'" in dict(result.problems.examples["category-colours"])[png_name(10)]
    assert dict(result.problems.examples["area-mismatch"])[png_name(13)].endswith("(JSON vs PNG)")


def test_cli_lists_all_kinds_exits_2_and_writes_the_report(planted, tmp_path):
    out = tmp_path / "out"
    proc = oanet(*cli_args(planted, out))
    assert proc.returncode == 2, proc.stderr
    for kind in PLANTED:
        assert f" {kind}: " in proc.stdout
    report = json.loads((out / "check_report.json").read_text())
    assert not report["ok"] and report["errors"] > 0
    by_kind = {p["kind"]: p for p in report["problems"]}
    assert set(by_kind) == set(PLANTED)
    assert by_kind["bbox-mismatch"]["severity"] == WARNING and by_kind["crowd"]["severity"] == INFO
    assert by_kind["png-missing"]["severity"] == ERROR
    assert by_kind["png-missing"]["examples"][0]["file"] == png_name(4)
    per_category = {c["id"]: c for c in report["summary"]["per_category"]}
    # the car: in 20 images less 17 (empty) and 3 (category 99); counted from the JSON where a PNG is unreadable
    assert per_category[2]["images"] == 18 and per_category[2]["instances"] == 18
    assert report["overlays"] and all(Path(p).is_file() for p in report["overlays"])


def test_warnings_only_exit_0_and_a_clean_set_has_no_problem(tmp_path):
    paths = write_dataset(tmp_path / "clean")
    result = check_dataset(paths["json"], paths["pngs"], paths["images"], workers=1, progress=False)
    assert result.problems.kinds(ERROR) == [] and result.problems.kinds(WARNING) == []
    assert result.problems.kinds() == ["crowd"]  # the crowd person of image 0
    data = load(paths)
    segments_of(data, 3)[0]["bbox"] = [0, 0, 1, 1]  # a warning
    paths["json"].write_text(json.dumps(data))
    proc = oanet(*cli_args(paths, tmp_path / "out"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WARNING bbox-mismatch: 1 in 1 place" in proc.stdout and "no error; 1 warning" in proc.stdout


def test_fix_writes_a_new_json_that_passes(tmp_path):
    paths = write_dataset(tmp_path / "fixable")
    data = load(paths)
    segments_of(data, 1)[0]["area"] = 3
    segments_of(data, 2)[1]["bbox"] = [1, 1, 1, 1]
    del segments_of(data, 3)[2]["area"]
    segments_of(data, 4).append({"id": 77, "category_id": 2, "area": 9, "bbox": [0, 0, 3, 3]})
    data["annotations"].append({"image_id": 4040, "file_name": "ghost.png", "segments_info": []})
    paths["json"].write_text(json.dumps(data))
    before = paths["json"].read_bytes()
    out = tmp_path / "out"
    proc = oanet(*cli_args(paths, out, "--fix"))
    assert proc.returncode == 2, proc.stderr
    assert "(4 image(s) changed): 2 area(s) and 1 bbox(es) rewritten from the PNGs" in proc.stdout
    assert "1 segment(s) absent from their PNG dropped" in proc.stdout
    assert "1 annotation(s) of unknown images dropped" in proc.stdout
    assert paths["json"].read_bytes() == before
    fixed = out / "panoptic_fixed.json"
    result = check_dataset(fixed, paths["pngs"], paths["images"], workers=2, progress=False)
    assert result.problems.kinds() == ["crowd"]
    assert json.loads(fixed.read_text())["annotations"][1:5] != data["annotations"][1:5]


def test_fix_of_the_planted_set_repairs_its_kinds_and_names_the_rest(planted, tmp_path):
    first = check_dataset(planted["json"], planted["pngs"], planted["images"], workers=2, progress=False)
    fixed, changes = fix_json(first)
    assert changes["dropped_annotations"] == 1 and changes["dropped_segments"] == 1
    assert set(changes["not_fixed"]) == {k for k in PLANTED if KINDS[k][0] == ERROR} - {
        "unknown-image", "segment-not-in-png", "area-mismatch"}
    path = tmp_path / "fixed.json"
    path.write_text(json.dumps(fixed))
    again = check_dataset(path, planted["pngs"], planted["images"], workers=1, progress=False)
    assert not {"unknown-image", "segment-not-in-png", "area-mismatch", "bbox-mismatch"} & set(again.problems.counts)
    assert first.data == json.loads(planted["json"].read_text())  # the checked data is not modified


def test_fix_never_writes_over_the_input(tmp_path):
    paths = write_dataset(tmp_path / "d")
    before = paths["json"].read_bytes()
    proc = oanet(*cli_args(paths, tmp_path / "out", "--fix", "--fixed-json", str(paths["json"])))
    assert proc.returncode == 2 and "never rewrites the input JSON" in proc.stderr
    assert paths["json"].read_bytes() == before


@pytest.mark.parametrize("problem", ["missing-json", "corrupt-json", "not-panoptic", "missing-dir"])
def test_unusable_input_is_one_line(tmp_path, problem):
    paths = write_dataset(tmp_path / "d")
    if problem == "missing-json":
        paths["json"].unlink()
    elif problem == "corrupt-json":
        paths["json"].write_text('{"images": [')
    elif problem == "not-panoptic":
        paths["json"].write_text('{"images": []}')
    else:
        paths["pngs"] = tmp_path / "nowhere"
    proc = oanet(*cli_args(paths, tmp_path / "out"))
    assert proc.returncode == 2
    assert proc.stderr.startswith("oanet check-data: error: ") and proc.stderr.count("\n") == 1, proc.stderr


def test_check_data_imports_no_torch(tmp_path):
    paths = write_dataset(tmp_path / "d")
    code = ("import sys; from oanet.cli import main; "
            f"rc = main({cli_args(paths, tmp_path / 'out')!r}); print('TORCH', 'torch' in sys.modules, rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "TORCH False 0" in proc.stdout, proc.stdout + proc.stderr


def test_the_real_coco_images_raise_nothing(tmp_path):
    root = COCO16
    if not (root / "annotations/panoptic_val2017.json").is_file():
        pytest.skip(f"the 16 real COCO val2017 images are not at {root} (only beside the dev checkout)")
    result = check_dataset(root / "annotations/panoptic_val2017.json", root / "annotations/panoptic_val2017",
                           root / "val2017", workers=2, progress=False)
    # COCO has crowd regions and, on 16 images, most of its 133 categories unused: both only info.
    assert result.problems.kinds() == ["crowd", "unused-category"], result.problems.to_list()
    assert result.problems.count("crowd") == 3
    assert len(result.results) == 16 and all(r.decoded for r in result.results)


def test_run_stats_agree_with_the_split_helpers():
    from oanet.data.coco_panoptic import segment_boxes, segment_index_map, xyxy_to_coco
    from oanet.data.validate import run_stats

    rng = np.random.default_rng(0)
    for shape in [(1, 1), (1, 7), (9, 1), (37, 53)]:
        ids = rng.choice(np.array([0, 5, 70000, 16777215], dtype=np.uint32), size=shape)
        uniq, areas, boxes = run_stats(ids)
        index, expected_areas = segment_index_map(ids, uniq[uniq != 0])
        assert np.array_equal(areas[uniq != 0], expected_areas)
        assert areas.sum() == ids.size
        assert np.array_equal(xyxy_to_coco(boxes[uniq != 0]), xyxy_to_coco(segment_boxes(index, int((uniq != 0).sum()))))


def test_a_kind_lists_its_first_five_files_and_counts_the_rest(tmp_path):
    paths = write_dataset(tmp_path / "d")
    data = load(paths)
    for i in range(7):
        segments_of(data, i + 2)[1]["area"] += 1
    paths["json"].write_text(json.dumps(data))
    proc = oanet(*cli_args(paths, tmp_path / "out"))
    assert proc.returncode == 2
    lines = proc.stdout.splitlines()
    start = next(k for k, line in enumerate(lines) if "area-mismatch: 7 in 7 places" in line)
    assert [line.split(":")[0].strip() for line in lines[start + 1 : start + 6]] == [png_name(i) for i in range(2, 7)]
    assert lines[start + 6].strip() == "... and 2 more"
