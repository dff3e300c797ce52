"""The synthetic occlusion benchmark: layout, COCO validity, determinism, difficulty, order experiment, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from oanet.data import synthetic
from oanet.data.morphology import label_boundary
from oanet.data.png_io import read_id_png
from oanet.data.synthetic.geometry import Grid, Shape, polygon_mask, shape_mask
from oanet.errors import DataError
from order_experiment import order_experiment, priority_order

SIZE = 96
SEED = 3


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "data"
    synthetic.generate_dataset(root, train=6, val=6, size=SIZE, seed=SEED, workers=1, progress=False)
    return root


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("split", ["train", "val"])
def test_layout_and_panoptic_json(dataset: Path, split: str) -> None:
    paths = synthetic.split_paths(dataset, split)
    panoptic = _load(Path(paths["panoptic_json"]))
    cats = {c["id"]: c for c in panoptic["categories"]}
    assert len([c for c in cats.values() if c["isthing"]]) == len(synthetic.THINGS)
    assert len([c for c in cats.values() if not c["isthing"]]) == len(synthetic.STUFF)
    for c in cats.values():
        assert set(c) == {"id", "name", "supercategory", "isthing", "color"}
    assert len(panoptic["images"]) == len(panoptic["annotations"]) == 6
    for image, ann in zip(panoptic["images"], panoptic["annotations"]):
        assert image["id"] == ann["image_id"] and (image["width"], image["height"]) == (SIZE, SIZE)
        assert (Path(paths["image_dir"]) / image["file_name"]).is_file()
        ids = read_id_png(Path(paths["panoptic_dir"]) / ann["file_name"])
        declared = {s["id"] for s in ann["segments_info"]}
        present = set(np.unique(ids).tolist()) - {0}
        assert present == declared, "every PNG id declared and every declared id present"
        for seg in ann["segments_info"]:
            assert set(seg) == {"id", "category_id", "area", "bbox", "iscrowd"}
            assert seg["category_id"] in cats
            mask = ids == seg["id"]
            assert seg["area"] == int(mask.sum())
            ys, xs = np.nonzero(mask)
            assert seg["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert not (seg["iscrowd"] and not cats[seg["category_id"]]["isthing"])


@pytest.mark.parametrize("split", ["train", "val"])
def test_instances_are_amodal_and_contain_the_visible_segment(dataset: Path, split: str) -> None:
    paths = synthetic.split_paths(dataset, split)
    panoptic = _load(Path(paths["panoptic_json"]))
    instances = _load(Path(paths["instances_json"]))
    assert all(c["isthing"] for c in instances["categories"])
    by_image: dict = {}
    for ann in instances["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    assert len({a["id"] for a in instances["annotations"]}) == len(instances["annotations"])
    occluded = 0
    for pan in panoptic["annotations"]:
        ids = read_id_png(Path(paths["panoptic_dir"]) / pan["file_name"])
        segments = {s["id"]: s for s in pan["segments_info"]}
        anns = by_image[pan["image_id"]]
        assert sorted(a["depth"] for a in anns) == list(range(len(anns)))
        for ann in anns:
            assert isinstance(ann["segmentation"]["counts"], str)
            mask = mask_utils.decode(ann["segmentation"]).astype(bool)
            assert ann["area"] == int(mask.sum())
            ys, xs = np.nonzero(mask)
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            seg = segments[ann["segment_id"]]
            assert seg["category_id"] == ann["category_id"] and seg["iscrowd"] == ann["iscrowd"]
            visible = ids == seg["id"]
            assert not (visible & ~mask).any(), "the amodal mask contains the visible segment"
            occluded += int(mask.sum() > visible.sum())
    assert occluded > 0, "some instances are partly hidden"


def test_same_bytes_for_same_arguments_whatever_the_workers(dataset: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    synthetic.generate_dataset(again, train=6, val=6, size=SIZE, seed=SEED, workers=2, progress=False)
    assert _all_files(again) == _all_files(dataset)
    other = tmp_path / "other"
    synthetic.generate_dataset(other, train=0, val=2, size=SIZE, seed=SEED + 1, workers=1, progress=False)
    assert (other / "images/val/000010000001.jpg").read_bytes() != (dataset / "images/val/000010000001.jpg").read_bytes()


def test_scenes_have_overlaps_same_class_overlaps_crowd_and_void() -> None:
    stats = [synthetic.render_image(0, "train", i, 128)["stats"] for i in range(30)]
    things = sum(s["things"] for s in stats)
    assert things >= 3 * 30
    assert sum(s["overlapping"] for s in stats) / things >= 0.3
    assert sum(s["same_class_overlap_pairs"] for s in stats) > 0
    assert sum(s["crowd"] for s in stats) > 0
    assert sum(s["void_pixels"] for s in stats) > 0


def test_shapes_scale_with_the_image_size() -> None:
    small, large = Grid.square(128), Grid.square(256)
    for cls in synthetic.THINGS:
        shape = Shape(cls.name, 64.0, 64.0, 0.3, 40.0)
        area_small = shape_mask(shape, small).sum()
        doubled = Shape(cls.name, 128.0, 128.0, 0.3, 80.0)
        area_large = shape_mask(doubled, large).sum()
        assert area_small > 0 and abs(area_large / area_small - 4) < 0.4, cls.name


def test_polygon_mask_and_label_boundary() -> None:
    grid = Grid.square(10)
    square = polygon_mask(grid.xs, grid.ys, [(2, 2), (8, 2), (8, 8), (2, 8)])
    assert square.sum() == 36 and square[2:8, 2:8].all()
    labels = np.zeros((10, 10), dtype=np.int64)
    labels[:, 5:] = 1
    band = label_boundary(labels, 1)
    assert band[:, 4:6].all() and band.sum() == 20


def test_order_experiment_true_depth_is_perfect_and_heuristics_are_not(dataset: Path, tmp_path: Path) -> None:
    results = order_experiment(dataset, split="train", orders=("depth", "larger_on_top", "frequency"),
                               out_dir=tmp_path / "orders", workers=1)
    assert results["depth"]["Things"]["pq"] == pytest.approx(1.0)
    assert results["depth"]["All"]["pq"] == pytest.approx(1.0)
    assert results["larger_on_top"]["Things"]["pq"] < 1.0
    assert results["frequency"]["Things"]["pq"] < 1.0
    assert results["larger_on_top"]["Stuff"]["pq"] == pytest.approx(1.0)
    assert (tmp_path / "orders/depth/panoptic_pred.json").is_file()


def test_priority_orders_on_hand_made_instances() -> None:
    # category 1 is the most frequent class; the instance of depth 2 lies on top of the scene
    annotations = [{"depth": 0, "area": 50, "category_id": 1}, {"depth": 2, "area": 10, "category_id": 2},
                   {"depth": 1, "area": 30, "category_id": 1}]
    rank = {1: 0, 2: 1}

    def order(name):
        return priority_order(annotations, name, rank, np.random.default_rng(0))

    assert order("depth") == [1, 2, 0]
    assert order("larger_on_top") == [0, 2, 1]
    assert order("smaller_on_top") == [1, 2, 0]
    assert order("frequency")[-1] == 1 and set(order("frequency")[:2]) == {0, 2}
    assert sorted(order("random")) == [0, 1, 2]
    with pytest.raises(DataError, match="unknown order"):
        order("score")


def test_python_api_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="train"):
        synthetic.generate_dataset(tmp_path / "a", train=-1, progress=False)
    with pytest.raises(DataError, match="size"):
        synthetic.generate_dataset(tmp_path / "a", train=1, val=0, size=63, progress=False)
    with pytest.raises(DataError, match="workers"):
        synthetic.generate_dataset(tmp_path / "a", train=1, val=0, workers=0, progress=False)
    with pytest.raises(DataError, match="unknown order"):
        order_experiment(tmp_path, orders=("score",))


def _oanet(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "oanet.cli", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args, words", [
    (["--train", "-1"], "train must be a non-negative integer"),
    (["--val", "-3"], "val must be a non-negative integer"),
    (["--size", "40"], "size must be an integer from 64"),
    (["--train", "0", "--val", "0"], "nothing to generate"),
])
def test_cli_bad_arguments_are_one_line_errors(tmp_path: Path, args: list, words: str) -> None:
    proc = _oanet("synth", "--out", str(tmp_path / "x"), *args)
    assert proc.returncode == 2
    assert words in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_cli_output_under_a_file_is_a_one_line_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    proc = _oanet("synth", "--out", str(blocker / "data"), "--train", "1", "--val", "0", "--quiet")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "file.txt/data/images/train: cannot create the dataset folder (a file is in the way)" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_cli_refuses_a_non_empty_directory_without_overwrite_and_never_imports_torch(tmp_path: Path) -> None:
    out = tmp_path / "d"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    proc = _oanet("synth", "--out", str(out), "--train", "1", "--val", "0", "--size", "64")
    assert proc.returncode == 2 and "not empty" in proc.stderr and "--overwrite" in proc.stderr
    code = (
        "import sys; from oanet.cli import main; "
        f"rc = main(['synth', '--out', {str(out)!r}, '--train', '2', '--val', '1', '--size', '64', '--quiet', "
        "'--overwrite']); assert rc == 0; assert 'torch' not in sys.modules, 'synth imported torch'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert (out / "keep.txt").read_text() == "mine", "--overwrite removes only what synth writes"
    assert len(list((out / "images/train").iterdir())) == 2


def test_cli_defaults_mirror_the_generator_defaults() -> None:
    # commands/synth.py repeats them as literals so that `oanet synth --help` imports nothing heavy
    from oanet.commands import synth as command

    assert (command.DEFAULT_TRAIN, command.DEFAULT_VAL, command.DEFAULT_SIZE, command.DEFAULT_SEED) == (
        synthetic.DEFAULT_TRAIN, synthetic.DEFAULT_VAL, synthetic.DEFAULT_SIZE, synthetic.DEFAULT_SEED
    )
