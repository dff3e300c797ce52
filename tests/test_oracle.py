"""The oracle order: matching detections to instances, the depth order, the fusion hook, the predictor."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from oanet.config import FusionConfig
from oanet.data.labels import LabelSpace, parse_categories
from oanet.errors import DataError
from oanet.experiments.oracle import (
    DepthTruth,
    depth_order_scores,
    greedy_match,
    mask_iou,
    oracle_scores,
)
from oanet.experiments.tables import oracle_share
from oanet.model.fusion import fuse, paste_order

CFG = FusionConfig(score_thresh=0.0, overlap_thresh=0.0, stuff_area_limit=0)
# two thing classes (ids 1, 2), one stuff class (id 10)
LABELS = LabelSpace(parse_categories([{"id": 1, "name": "a", "isthing": 1}, {"id": 2, "name": "b", "isthing": 1},
                                      {"id": 10, "name": "s", "isthing": 0}], "test"))


def box(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
    mask = torch.zeros(h, w, dtype=torch.bool)
    mask[y0:y1, x0:x1] = True
    return mask


# --------------------------------------------------------------------------------------------
# matching


def test_mask_iou_by_hand():
    a = box(4, 4, 0, 2, 0, 2)  # 4 pixels
    b = box(4, 4, 0, 2, 0, 4)  # 8 pixels, contains a
    c = box(4, 4, 2, 4, 2, 4)  # disjoint from a and b
    iou = mask_iou(torch.stack([a, b]), torch.stack([b, c, torch.zeros(4, 4, dtype=torch.bool)]))
    assert torch.allclose(iou, torch.tensor([[0.5, 0.0, 0.0], [1.0, 0.0, 0.0]]))
    assert mask_iou(torch.zeros(0, 4, 4), torch.stack([a])).shape == (0, 1)


def test_greedy_match_takes_the_largest_iou_first_and_is_one_to_one():
    # Row 0 prefers column 0 (0.6), but row 1 has the larger IoU with it (0.8): row 0 gets column 1.
    assert greedy_match(np.array([[0.6, 0.55], [0.8, 0.1]])).tolist() == [1, 0]
    # A column is taken once, and only IoU above the threshold matches: row 1's 0.7 is with the
    # column row 0 took, its 0.2 is too small.
    assert greedy_match(np.array([[0.9, 0.6], [0.7, 0.2], [0.4, 0.3]])).tolist() == [0, -1, -1]
    assert greedy_match(np.array([[0.5]])).tolist() == [-1]  # strictly above 0.5
    assert greedy_match(np.zeros((2, 0))).tolist() == [-1, -1]
    # Equal IoU: the lower row, then the lower column.
    assert greedy_match(np.array([[0.7, 0.7], [0.7, 0.7]])).tolist() == [0, 1]


# --------------------------------------------------------------------------------------------
# ordering


def test_depth_order_refills_the_matched_positions_and_keeps_the_unmatched():
    det = torch.tensor([0.6, 0.9, 0.7, 0.8])  # score order: 1, 3, 2, 0
    matched = torch.tensor([True, True, False, True])
    depth = torch.tensor([5.0, 0.0, 99.0, 2.0])  # detection 2's depth is ignored (unmatched)
    scores = depth_order_scores(det, depth, matched)
    order = torch.sort(scores, descending=True).indices.tolist()
    # Matched positions 0, 1, 3 of the score order are refilled nearest first: 0 (5), 3 (2), 1 (0);
    # detection 2 keeps position 2.
    assert order == [0, 3, 2, 1]
    assert depth_order_scores(torch.zeros(0), torch.zeros(0), torch.zeros(0, dtype=torch.bool)).shape == (0,)


def test_depth_ties_keep_the_score_order():
    det = torch.tensor([0.5, 0.9, 0.7])
    scores = depth_order_scores(det, torch.tensor([1.0, 1.0, 1.0]), torch.ones(3, dtype=torch.bool))
    assert torch.sort(scores, descending=True).indices.tolist() == [1, 2, 0]


def test_oracle_scores_with_perfect_masks_paste_in_depth_order():
    h = w = 12
    gt = torch.stack([box(h, w, 0, 8, 0, 8), box(h, w, 4, 12, 4, 12), box(h, w, 2, 10, 2, 10)])
    depth = torch.tensor([0.0, 2.0, 1.0])  # instance 1 is nearest, then 2, then 0
    permutation = torch.tensor([2, 0, 1])  # detections in another order than the instances
    det = torch.tensor([0.95, 0.9, 0.5])  # the score order would put instance 2 on top
    scores = oracle_scores(gt[permutation], det, gt, depth)
    order = paste_order(torch.zeros(3, dtype=torch.long), det, scores, per_class=False)
    assert permutation[order].tolist() == [1, 2, 0]  # nearest first


def test_unmatched_detections_keep_their_score_position():
    h = w = 10
    gt = torch.stack([box(h, w, 0, 5, 0, 5), box(h, w, 0, 5, 3, 8)])
    depth = torch.tensor([0.0, 1.0])
    # detection 0 = instance 0, detection 1 matches nothing, detection 2 = instance 1
    pred = torch.stack([gt[0], box(h, w, 6, 10, 6, 10), gt[1]])
    det = torch.tensor([0.9, 0.8, 0.7])
    scores = oracle_scores(pred, det, gt, depth)
    assert torch.sort(scores, descending=True).indices.tolist() == [2, 1, 0]


def test_oracle_share():
    def pq(score, srm, oracle):
        return {f"{o}_order": {"Things": {"pq": v}} for o, v in (("score", score), ("srm", srm), ("oracle", oracle))}

    assert oracle_share(pq(0.5, 0.6, 0.7)) == pytest.approx(0.5)
    assert oracle_share(pq(0.5, 0.45, 0.7)) == pytest.approx(-0.25)
    assert oracle_share(pq(0.5, 0.6, 0.5)) is None  # a perfect order adds nothing: undefined


# --------------------------------------------------------------------------------------------
# the fusion hook


def two_overlapping_same_class() -> dict:
    h = w = 8
    masks = torch.stack([box(h, w, 0, 6, 0, 6), box(h, w, 2, 8, 2, 8)]).float()
    sem_seg_labels = torch.full((h, w), 2)  # stuff everywhere else
    return {"masks": masks, "labels": torch.tensor([0, 0]), "scores": torch.tensor([0.9, 0.8]),
            "ranking_scores": torch.tensor([0.1, 0.7]), "selected": torch.tensor([True, True]),
            "sem_seg_labels": sem_seg_labels, "boxes": torch.zeros(2, 4)}


def test_custom_order_scores_rank_instances_of_one_class():
    prediction = two_overlapping_same_class()
    fused = fuse(prediction, LABELS, "all", CFG, orders=("score", "srm", "mine"),
                 order_scores={"mine": torch.tensor([0.0, 1.0])})
    overlap = (3, 3)
    top = {order: next(s for s in segs if s["id"] == int(ids[overlap]))["score"] for order, (ids, segs) in fused.items()}
    # The SRM's per-class channel cannot order instances of one class: detection score decides.
    assert top["score"] == pytest.approx(0.9) and top["srm"] == pytest.approx(0.9)
    # Caller-given scores are used as they are.
    assert top["mine"] == pytest.approx(0.8)
    # The built-in orders are what fuse gives without the hook.
    plain = fuse(prediction, LABELS, "all", CFG, orders=("score", "srm"))
    for order in ("score", "srm"):
        assert torch.equal(plain[order][0], fused[order][0]) and plain[order][1] == fused[order][1]


def test_custom_order_scores_are_checked():
    prediction = two_overlapping_same_class()
    with pytest.raises(ValueError, match="built-in"):
        fuse(prediction, LABELS, "all", CFG, orders=("srm",), order_scores={"srm": torch.zeros(2)})
    with pytest.raises(ValueError, match="shape"):
        fuse(prediction, LABELS, "all", CFG, orders=("x",), order_scores={"x": torch.zeros(3)})
    with pytest.raises(ValueError, match="unknown fusion order"):
        fuse(prediction, LABELS, "all", CFG, orders=("oracle",))


# --------------------------------------------------------------------------------------------
# depth from the instances JSON, and the predictor


def rle(mask: np.ndarray) -> dict:
    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    encoded["counts"] = encoded["counts"].decode("ascii")
    return encoded


def write_instances(path, images, annotations):
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": []}))
    return path


def test_depth_truth_reads_non_crowd_instances(tmp_path):
    a, b = np.zeros((5, 6), np.uint8), np.zeros((5, 6), np.uint8)
    a[:3, :3], b[2:, 2:] = 1, 1
    path = write_instances(tmp_path / "inst.json", [{"id": 7, "width": 6, "height": 5}, {"id": 8, "width": 6, "height": 5}], [
        {"id": 1, "image_id": 7, "segmentation": rle(a), "depth": 1, "iscrowd": 0},
        {"id": 2, "image_id": 7, "segmentation": rle(b), "depth": 0, "iscrowd": 0},
        {"id": 3, "image_id": 7, "segmentation": rle(b), "iscrowd": 1},  # crowd: no depth needed, skipped
    ])
    truth = DepthTruth(path)
    masks, depth = truth.instances(7)
    assert masks.dtype == torch.bool and masks.shape == (2, 5, 6)
    assert torch.equal(masks[0], torch.from_numpy(a.astype(bool))) and depth.tolist() == [1.0, 0.0]
    assert truth.instances(8)[0].shape == (0, 5, 6)
    with pytest.raises(DataError, match="no image with id 9"):
        truth.instances(9)


def test_depth_truth_without_depth_is_a_data_error(tmp_path):
    mask = np.ones((4, 4), np.uint8)
    path = write_instances(tmp_path / "coco.json", [{"id": 1, "width": 4, "height": 4}],
                           [{"id": 5, "image_id": 1, "segmentation": rle(mask), "iscrowd": 0}])
    with pytest.raises(DataError, match=r"coco\.json: annotation 5 has no 'depth'"):
        DepthTruth(path)
    with pytest.raises(FileNotFoundError, match="absent.json"):
        DepthTruth(tmp_path / "absent.json")


def test_synthetic_depth_reproduces_the_ground_truth_paint_order(tmp_path):
    """Perfect detections in an arbitrary score order, pasted in oracle order: every visible ground-truth
    thing pixel gets the instance the generator painted there."""
    from oanet.data.png_io import read_id_png
    from oanet.data.synthetic import generate_dataset
    from oanet.model.fusion import paste_instances

    paths = generate_dataset(tmp_path / "bench", train=1, val=2, size=64, seed=3, workers=1, progress=False)["val"]
    truth = DepthTruth(paths["instances_json"])
    instances = json.loads(Path(paths["instances_json"]).read_text())["annotations"]
    panoptic = json.loads(Path(paths["panoptic_json"]).read_text())
    for ann in panoptic["annotations"]:
        singles = [a for a in instances if a["image_id"] == ann["image_id"] and not a["iscrowd"]]
        masks, depth = truth.instances(ann["image_id"])
        det = torch.rand(len(singles), generator=torch.Generator().manual_seed(ann["image_id"]))
        scores = oracle_scores(masks, det, masks, depth)
        order = paste_order(torch.zeros(len(singles), dtype=torch.long), det, scores, per_class=False)
        owner, _ = paste_instances(masks[order], 0.0)
        segment_of = torch.tensor([singles[i]["segment_id"] for i in order.tolist()])
        gt = torch.from_numpy(read_id_png(f"{paths['panoptic_dir']}/{ann['file_name']}").astype(np.int64))
        thing_ids = torch.tensor([s["id"] for s in ann["segments_info"] if s["id"] in segment_of.tolist()])
        visible = torch.isin(gt, thing_ids)
        assert visible.any()
        assert torch.equal(segment_of[owner[visible]], gt[visible])


def test_oracle_predictor_adds_an_order_and_leaves_the_others_alone(tiny_checkpoint, test_images, tmp_path):
    from oanet import Predictor
    from oanet.data.images import load_rgb_image
    from oanet.experiments.oracle import OraclePredictor

    rgbs = [load_rgb_image(p) for p in test_images]
    images, annotations = [], []
    for image_id, rgb in enumerate(rgbs, 1):
        h, w = rgb.shape[:2]
        images.append({"id": image_id, "width": w, "height": h})
        for depth, (y0, x0) in enumerate([(0, 0), (h // 3, w // 3)]):
            mask = np.zeros((h, w), np.uint8)
            mask[y0:y0 + h // 2, x0:x0 + w // 2] = 1
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "segmentation": rle(mask),
                                "depth": depth, "iscrowd": 0})
    truth = DepthTruth(write_instances(tmp_path / "inst.json", images, annotations))
    plain = Predictor.from_checkpoint(tiny_checkpoint, order="both")
    oracle = OraclePredictor(plain, truth)
    names = [(i, f"img{i}.png") for i in range(1, 4)]
    got = oracle.predict_arrays(rgbs, names, orders=oracle.orders)
    want = plain.predict_arrays(rgbs, names)
    for g, w in zip(got, want):
        assert set(g) == {"score", "srm", "oracle"}
        for order in ("score", "srm"):
            assert np.array_equal(g[order].panoptic, w[order].panoptic) and g[order].segments == w[order].segments
    # The oracle pastes from the same selected detections as the two others.
    from oanet.data.images import to_float_chw

    with torch.inference_mode():
        outputs = plain.model([torch.from_numpy(to_float_chw(rgb)) for rgb in rgbs], score_thresh=plain.score_thresh)
    pasted = 0
    for g, output in zip(got, outputs):
        selected = {round(float(s), 6) for s in output["scores"][output["selected"]]}
        things = [s for s in g["oracle"].segments if s["isthing"]]
        assert all(round(s["score"], 6) in selected for s in things)
        pasted += len(things)
    assert pasted > 0  # the random tiny model detects (threshold 0): the check above is not vacuous
    with pytest.raises(DataError, match="image's id"):
        oracle(test_images[0])


def test_demo_report_sentence_states_the_srm_share_of_the_oracle_gain():
    from oanet.experiments.demo import oracle_sentence

    def pq(score, srm, oracle):
        return {f"{o}_order": {"Things": {"pq": v}} for o, v in (("score", score), ("srm", srm), ("oracle", oracle))}

    assert "the SRM recovers **40%** of the PQ_th that a perfect order would add" in \
        oracle_sentence(pq(0.60, 0.64, 0.70)).replace("The SRM", "the SRM")
    assert "undefined" in oracle_sentence(pq(0.6, 0.6, 0.6))
    assert "not computed: no instances" in oracle_sentence({"score_order": {}, "srm_order": {}}, "no instances")
