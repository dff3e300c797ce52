"""The SRM as a plug-in: ``SpatialRanker`` (from an OANet checkpoint or its own file), the
perturbations, ``oanet srm train`` from annotations alone (and its resume), and the order measures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from oanet.cli import main
from oanet.data.labels import IGNORE
from oanet.model.srm import occupancy_map, ranking_scores, subsample
from oanet.srm import SpatialRanker
from oanet.srm.samples import Perturbation, overlap_targets, perturb
from oanet.srm.training import MARGIN, overlap_window


def boxes_masks(h: int, w: int, boxes) -> torch.Tensor:
    masks = torch.zeros(len(boxes), h, w, dtype=torch.bool)
    for k, (y0, x0, y1, x1) in enumerate(boxes):
        masks[k, y0:y1, x0:x1] = True
    return masks


def test_ranker_from_an_oanet_checkpoint_ranks_as_the_network_srm(tiny_checkpoint):
    from oanet.model.checkpoint import load_model_from_checkpoint

    model = load_model_from_checkpoint(tiny_checkpoint)[0]
    ranker = SpatialRanker.from_file(tiny_checkpoint)
    assert ranker.short_side == 64 and ranker.srm.stride == model.srm.stride
    # Masks at the network's own scale (short side 64): the ranker samples the pixels subsample takes.
    masks = boxes_masks(64, 96, [(4, 4, 40, 50), (20, 30, 60, 90), (10, 60, 30, 95), (30, 0, 64, 40)])
    labels = torch.tensor([0, 1, 1, 2])
    grid = subsample(masks, model.srm.stride)
    with torch.no_grad():
        probs = model.srm(occupancy_map(grid, labels, model.num_thing_classes)[None])[0].softmax(0)
    expected = ranking_scores(probs, grid, labels)
    assert torch.allclose(ranker.rank_channels(masks, labels), expected, atol=1e-6)
    # The same through the public API, with COCO category ids and numpy in / numpy out.
    ids = ranker.label_space.thing_ids[labels.numpy()]
    scores = ranker.rank(masks.numpy(), ids)
    assert isinstance(scores, np.ndarray) and np.allclose(scores, expected.numpy(), atol=1e-6)


def test_ranker_scores_do_not_depend_on_the_photo_size(tiny_checkpoint):
    ranker = SpatialRanker.from_file(tiny_checkpoint)
    small = boxes_masks(64, 96, [(4, 4, 40, 52), (20, 28, 60, 92)])
    big = small.repeat_interleave(4, 1).repeat_interleave(4, 2)  # the same masks on a 4x larger photo
    assert torch.allclose(ranker.rank_channels(small, torch.tensor([0, 1])), ranker.rank_channels(big, torch.tensor([0, 1])))
    tiny = boxes_masks(640, 960, [(1, 1, 2, 2)])  # covers no cell centre: the area-weighted mean still ranks it
    assert ranker.rank_channels(tiny, torch.tensor([0]))[0] > 0


def test_ranker_file_round_trip_and_errors(tiny_checkpoint, tmp_path):
    from oanet.errors import ConfigError, DataError

    ranker = SpatialRanker.from_file(tiny_checkpoint)
    path = ranker.save(tmp_path / "srm.pth", config={"note": "test"})
    again = SpatialRanker.from_file(path)
    masks = boxes_masks(50, 70, [(0, 0, 30, 40), (10, 20, 50, 70)])
    assert np.array_equal(ranker.rank(masks.numpy(), [1, 2]), again.rank(masks.numpy(), [1, 2]))
    with pytest.raises(DataError, match=r"unknown category id\(s\) \[9\]"):
        ranker.rank(masks.numpy(), [1, 9])
    with pytest.raises(DataError, match="stuff classes"):
        ranker.rank(masks.numpy(), [1, 20])
    with pytest.raises(DataError, match="2 masks but 1 labels"):
        ranker.rank(masks.numpy(), [1])
    no_srm = tmp_path / "no_srm.pth"
    state = torch.load(tiny_checkpoint, weights_only=True)
    state["model"] = {k: v for k, v in state["model"].items() if not k.startswith("srm.")}
    torch.save(state, no_srm)
    with pytest.raises(ConfigError, match="has no SRM"):
        SpatialRanker.from_file(no_srm)


def test_perturbations_are_seeded_and_make_the_overlaps_a_detector_makes():
    # Two touching, non-overlapping panoptic segments: a spill makes them overlap.
    masks = boxes_masks(40, 40, [(5, 5, 25, 20), (5, 20, 25, 35)])
    cfg = Perturbation(shift=0, dilate_prob=0, erode_prob=0, spill_prob=1.0, drop_prob=0)
    out, kept = perturb(masks, cfg, torch.Generator().manual_seed(0))
    assert kept.all() and (out.sum(0) >= 2).any() and (out >= masks).all()
    a = perturb(masks, Perturbation(), torch.Generator().manual_seed(3))
    b = perturb(masks, Perturbation(), torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    shifted, _ = perturb(masks[:1], Perturbation(shift=2, dilate_prob=0, erode_prob=0, spill_prob=0, drop_prob=0),
                         torch.Generator().manual_seed(1))
    assert shifted.sum() <= masks[0].sum()


def test_targets_and_the_window_give_the_loss_of_the_whole_grid():
    from oanet.model.srm import SpatialRankingModule

    torch.manual_seed(0)
    srm = SpatialRankingModule(3, "gcn7", stride=4)
    masks = boxes_masks(48, 64, [(10, 10, 30, 30), (20, 20, 40, 45), (0, 50, 8, 64)])
    labels = torch.tensor([0, 1, 2])
    visible = torch.full((48, 64), IGNORE)
    visible[20:30, 20:30] = 1
    target = overlap_targets(masks, visible)
    assert (target != IGNORE).sum() == 100
    rows, cols = overlap_window(target)
    assert rows == slice(20 - MARGIN, 30 + MARGIN) and cols == slice(20 - MARGIN, 30 + MARGIN)
    full = srm(occupancy_map(masks, labels, 3)[None])[0]
    crop = srm(occupancy_map(masks[:, rows, cols], labels, 3)[None])[0]
    inner = (slice(MARGIN, -MARGIN), slice(MARGIN, -MARGIN))
    assert torch.allclose(crop[:, inner[0], inner[1]], full[:, 20:30, 20:30], atol=1e-6)


def write_depth_dataset(root: Path, n: int = 12, size: int = 64, seed: int = 0) -> dict:
    """Panoptic + amodal instances where a 'cup' (category 1) always stands in front of a 'box' (2)."""
    from pycocotools import mask as mask_utils

    from oanet.data.png_io import write_id_png

    rng = np.random.default_rng(seed)
    (root / "pan").mkdir(parents=True)
    images, anns, inst = [], [], []
    for i in range(n):
        box = np.zeros((size, size), bool)
        cup = np.zeros((size, size), bool)
        y, x = rng.integers(4, 20, 2)
        box[y:y + 30, x:x + 30] = True
        cup[y + 10:y + 40, x + 12:x + 40] = True
        ids = np.full((size, size), 3, np.uint32)  # stuff "floor"
        ids[box] = 2
        ids[cup] = 1  # the cup in front
        write_id_png(root / "pan" / f"{i}.png", ids)
        images.append({"id": i, "file_name": f"{i}.jpg", "height": size, "width": size})
        anns.append({"image_id": i, "file_name": f"{i}.png", "segments_info": [
            {"id": int(s), "category_id": int(c), "iscrowd": 0, "area": int((ids == s).sum()), "bbox": [0, 0, 1, 1]}
            for s, c in ((1, 1), (2, 2), (3, 10))]})
        for k, (m, c) in enumerate(((cup, 1), (box, 2))):
            r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            inst.append({"id": 2 * i + k + 1, "image_id": i, "category_id": c, "iscrowd": 0,
                         "segmentation": {"size": r["size"], "counts": r["counts"].decode()},
                         "area": int(m.sum()), "bbox": [0, 0, 1, 1]})
    cats = [{"id": 1, "name": "cup", "isthing": 1}, {"id": 2, "name": "box", "isthing": 1},
            {"id": 10, "name": "floor", "isthing": 0}]
    (root / "panoptic.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    (root / "instances.json").write_text(json.dumps({"images": images, "annotations": inst,
                                                     "categories": cats[:2]}))
    return {"json": root / "panoptic.json", "dir": root / "pan", "instances": root / "instances.json"}


def train_argv(data, out, *extra) -> list:
    return ["srm", "train", "--panoptic-json", str(data["json"]), "--panoptic-dir", str(data["dir"]), "--out", str(out),
            "--short-side", "64", "--batch-size", "4", "--no-progress", *extra]


def test_srm_train_from_annotations_learns_which_class_is_in_front(tmp_path):
    data = write_depth_dataset(tmp_path / "data")
    extra = ["--instances-json", str(data["instances"])]
    assert main(train_argv(data, tmp_path / "srm.pth", "--kernel", "3x3", "--iterations", "60", *extra)) == 0
    ranker = SpatialRanker.from_file(tmp_path / "srm.pth")
    stored = torch.load(tmp_path / "srm.pth", weights_only=True)
    assert stored["training"]["overlap_cell_accuracy"] > 60  # perturbed masks: not every overlap is the cup
    box = boxes_masks(64, 64, [(10, 10, 40, 40)])[0]
    cup = boxes_masks(64, 64, [(20, 22, 50, 50)])[0]
    scores = ranker.rank(torch.stack([box, cup]).numpy(), [2, 1])
    assert scores[1] > scores[0]  # the cup ranks above the box: pasted on top


def test_srm_train_without_overlapping_masks_says_what_it_learns_from(tmp_path, capsys):
    data = write_depth_dataset(tmp_path / "data", n=4)
    assert main(train_argv(data, tmp_path / "srm.pth", "--iterations", "5")) == 0
    err = capsys.readouterr().err
    assert "--instances-json" in err and "warning" in err


def test_srm_train_resumes_a_killed_run_to_the_same_weights(tmp_path, monkeypatch):
    import oanet.srm.training as training

    data = write_depth_dataset(tmp_path / "data", n=6)
    split_args = ["--kernel", "1x1", "--iterations", "30", "--checkpoint-period", "10"]
    assert main(train_argv(data, tmp_path / "whole.pth", *split_args)) == 0

    calls = {"n": 0}
    real = training.batch_loss

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 17:
            raise KeyboardInterrupt  # killed after the checkpoint at iteration 10
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "batch_loss", dying)
    assert main(train_argv(data, tmp_path / "resumed.pth", *split_args)) == 130
    assert (tmp_path / "resumed.pth.resume").is_file() and not (tmp_path / "resumed.pth").exists()
    monkeypatch.setattr(training, "batch_loss", real)
    assert main(train_argv(data, tmp_path / "resumed.pth", *split_args)) == 0
    assert not (tmp_path / "resumed.pth.resume").exists()
    a = torch.load(tmp_path / "whole.pth", weights_only=True)["model"]
    b = torch.load(tmp_path / "resumed.pth", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_srm_train_bad_input_is_one_line(tmp_path, capsys):
    data = write_depth_dataset(tmp_path / "data", n=2)
    rc = main(train_argv(data, tmp_path / "srm.pth", "--predictions", str(tmp_path / "missing.json")))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "missing.json" in err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"image_id": 0, "category_id": 10, "score": 0.9, "segmentation": {}}]))
    rc = main(train_argv(data, tmp_path / "srm.pth", "--predictions", str(bad)))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "stuff classes" in err and str(bad) in err


@pytest.mark.parametrize("kernel", ["1x1", "3x3", "gcn7"])
def test_the_srm_on_its_present_classes_equals_the_module(kernel):
    from oanet.model.srm import SpatialRankingModule, present_channels_forward

    torch.manual_seed(0)
    srm = SpatialRankingModule(12, kernel)
    masks = torch.rand(5, 20, 30) > 0.6
    labels = torch.tensor([3, 3, 7, 11, 0])
    occupancy = occupancy_map(masks, labels, 12)[None]
    with torch.no_grad():
        full = srm(occupancy)
        sparse = present_channels_forward(srm, occupancy, torch.unique(labels))
    assert full.shape == sparse.shape and torch.allclose(full, sparse, atol=1e-5)
