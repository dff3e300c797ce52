"""Cross-check against hotcoco (an independent Rust implementation of the COCO panoptic API's PQ) on the
16 real COCO val2017 images with perturbed predictions: shifted, eroded and dilated masks, dropped and
extra segments, wrong classes, predictions on crowd and void regions."""

from __future__ import annotations

import contextlib
import io

import pytest

from perturb import write_perturbed_predictions
from oanet.evaluation.pq import pq_compute

hotcoco_panoptic = pytest.importorskip("hotcoco.panoptic")

TOLERANCE = 1e-9


def hotcoco_pq(gt_json, gt_dir, pred_json, pred_dir) -> dict:
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its table
        return hotcoco_panoptic.pq_compute(str(gt_json), str(pred_json), str(gt_dir), str(pred_dir))


@pytest.mark.parametrize("seed, workers", [(0, 0), (1, 2), (2, 0)])
def test_agrees_with_hotcoco_on_real_coco_images(coco16, tmp_path, seed, workers):
    annotations = coco16 / "annotations"
    paths = write_perturbed_predictions(
        annotations / "panoptic_val2017.json", annotations / "panoptic_val2017", tmp_path, seed=seed
    )
    ours = pq_compute(*paths, workers=workers, progress=False).to_dict()
    reference = hotcoco_pq(*paths)

    assert 0.1 < ours["All"]["pq"] < 0.9  # the perturbation leaves a mix of matches and errors
    for group in ("All", "Things", "Stuff"):
        assert ours[group]["n"] == reference[group]["n"], group
        for key in ("pq", "sq", "rq"):
            assert ours[group][key] == pytest.approx(reference[group][key], abs=TOLERANCE), (group, key)

    assert set(ours["per_class"]) == {str(c) for c in reference["per_class"]}
    counted = 0
    for category_id, theirs in reference["per_class"].items():
        mine = ours["per_class"][str(category_id)]
        assert (mine["tp"], mine["fp"], mine["fn"]) == (theirs["tp"], theirs["fp"], theirs["fn"]), category_id
        if theirs["tp"] + theirs["fp"] + theirs["fn"] == 0:
            # hotcoco marks an unseen class -1; the COCO API (and oanet) report 0.0.
            assert (mine["pq"], mine["sq"], mine["rq"]) == (0.0, 0.0, 0.0)
            continue
        counted += 1
        for key in ("pq", "sq", "rq"):
            assert mine[key] == pytest.approx(theirs[key], abs=TOLERANCE), (category_id, key)
    assert counted == ours["All"]["n"]


def _bench_pq():
    """benchmarks/bench_pq.py as a module (its synthetic data generator)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_pq.py"
    spec = importlib.util.spec_from_file_location("bench_pq", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("workers", [0, 2])
def test_agrees_with_hotcoco_on_the_benchmarks_many_segment_images(tmp_path, workers):
    """The benchmark's synthetic kind (about 60 segments per image, crowd and void) at a small size."""
    paths = _bench_pq().build_synthetic_set(tmp_path, n_images=6, height=120, width=160, seed=1)
    ours = pq_compute(*paths, workers=workers, progress=False).to_dict()
    reference = hotcoco_pq(*paths)
    assert 0.1 < ours["All"]["pq"] < 0.9
    for group in ("All", "Things", "Stuff"):
        assert ours[group]["n"] == reference[group]["n"], group
        for key in ("pq", "sq", "rq"):
            assert ours[group][key] == pytest.approx(reference[group][key], abs=TOLERANCE), (group, key)
    for category_id, theirs in reference["per_class"].items():
        mine = ours["per_class"][str(category_id)]
        assert (mine["tp"], mine["fp"], mine["fn"]) == (theirs["tp"], theirs["fp"], theirs["fn"]), category_id


def test_ground_truth_against_itself_is_perfect(coco16):
    annotations = coco16 / "annotations"
    gt_json, gt_dir = annotations / "panoptic_val2017.json", annotations / "panoptic_val2017"
    result = pq_compute(gt_json, gt_dir, gt_json, gt_dir, workers=0, progress=False).to_dict()
    reference = hotcoco_pq(gt_json, gt_dir, gt_json, gt_dir)
    assert result["All"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": reference["All"]["n"]}
