"""The numpy fusion (oanet.runtime.fusion) gives the torch fusion's (oanet.model.fusion) id map and
segments bit for bit: on the hand-made cases of test_fusion.py, on edge cases of float32 promotion,
and on real outputs of tiny random models. Also the numpy paste against torchvision's."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from test_fusion import CFG, LABELS, PERSON, TIE, _box_mask, _tie_on_person, make_label_space
from test_model import COMBOS, sample, tiny_config

from oanet.config import FusionConfig
from oanet.model import fusion as torch_fusion
from oanet.model.oanet import OANet
from oanet.runtime import fusion as np_fusion
from oanet.runtime.paste import expand_boxes, paste_masks


def _numpy(prediction: dict) -> dict:
    return {k: v.numpy() for k, v in prediction.items()}


def assert_same_fusion(prediction: dict, label_space, stuff_classes: str, cfg: FusionConfig, orders=("score", "srm")):
    """Fuse one output with both implementations and require identical maps and segments."""
    expected = torch_fusion.fuse(prediction, label_space, stuff_classes, cfg, orders)
    got = np_fusion.fuse(_numpy(prediction), label_space, stuff_classes, cfg, orders)
    assert list(got) == list(expected)
    for order in orders:
        ids, segments = got[order]
        assert ids.dtype == np.int32 and np.array_equal(ids, expected[order][0].numpy())
        assert segments == expected[order][1]
    return got


def _prediction(masks, labels, scores, ranks, sem, cfg=CFG):
    return {"masks": masks, "labels": labels, "scores": scores, "ranking_scores": ranks,
            "selected": scores >= cfg.score_thresh, "sem_seg_labels": sem}


def hand_made_cases():
    """(name, prediction, label space, stuff classes, cfg): the situations of test_fusion.py."""
    masks, labels = _tie_on_person()
    stuff0 = torch.full((40, 40), 2)
    yield "tie_on_person", _prediction(masks, labels, torch.tensor([0.997, 0.662]), torch.tensor([0.325, 0.878]), stuff0), LABELS, "all", CFG
    yield "unselected_third", _prediction(
        torch.cat([masks, torch.ones(1, 40, 40)]), torch.cat([labels, torch.tensor([0])]),
        torch.tensor([0.997, 0.662, 0.3]), torch.tensor([0.325, 0.878, 0.99]), stuff0), LABELS, "all", CFG
    a, b, c = _box_mask(20, 20, 0, 10, 0, 10), _box_mask(20, 20, 0, 10, 4, 14), _box_mask(20, 20, 0, 10, 10, 20)
    for thresh in (0.3, 0.5):
        cfg = dataclasses.replace(CFG, overlap_thresh=thresh)
        yield f"overlap_{thresh}", _prediction(torch.stack([a, b, c]), torch.tensor([0, 0, 1]), torch.tensor([0.9, 0.8, 0.7]),
                                               torch.tensor([0.9, 0.8, 0.7]), torch.full((20, 20), 3)), LABELS, "all", cfg
    g = torch.Generator().manual_seed(0)
    for thresh in (0.0, 0.3, 0.7):
        cfg = dataclasses.replace(CFG, overlap_thresh=thresh, score_thresh=0.2)
        yield f"random_{thresh}", _prediction(
            torch.rand(12, 24, 24, generator=g), torch.randint(0, 2, (12,), generator=g), torch.rand(12, generator=g),
            torch.rand(12, generator=g), torch.randint(0, 4, (24, 24), generator=g), cfg), LABELS, "all", cfg
    m0, m1 = _box_mask(10, 10, 0, 10, 0, 6), _box_mask(10, 10, 0, 10, 4, 10)
    yield "same_class_fallback", _prediction(
        torch.stack([m0, m1, torch.zeros(10, 10), _box_mask(10, 10, 0, 10, 0, 10)]), torch.tensor([PERSON, PERSON, TIE, PERSON]),
        torch.tensor([0.6, 0.9, 0.7, 0.3]), torch.tensor([0.8, 0.2, 0.5, 0.0]), torch.full((10, 10), 2)), LABELS, "all", CFG
    sem = torch.full((40, 40), 2)
    sem[0:10, 0:10] = 0
    sem[20:23, 20:24] = 3
    sem[30:34, 30:34] = 3
    cfg = FusionConfig(score_thresh=0.5, overlap_thresh=0.5, stuff_area_limit=4900, stuff_area_reference_size=800)
    none = (torch.zeros(0, 40, 40), torch.zeros(0, dtype=torch.long), torch.zeros(0), torch.zeros(0))
    yield "stuff_area_limit", _prediction(*none, sem, cfg), LABELS, "all", cfg
    sem_stuff = torch.zeros(40, 40, dtype=torch.long)
    sem_stuff[:, 20:] = 2
    yield "classes_stuff", _prediction(*none, sem_stuff, cfg), LABELS, "stuff", cfg
    yield "empty_all_void", _prediction(*none, torch.zeros(40, 40, dtype=torch.long), cfg), LABELS, "all", cfg
    yield "no_stuff_classes", _prediction(torch.ones(1, 8, 12), torch.tensor([0]), torch.tensor([0.9]), torch.tensor([0.9]),
                                          torch.zeros(8, 12, dtype=torch.long)), make_label_space([1, 32], []), "all", CFG
    yield "stuff_under_things", _prediction(masks, labels, torch.tensor([0.997, 0.662]), torch.tensor([0.325, 0.878]),
                                            torch.full((40, 40), 3)), LABELS, "all", CFG
    cfg0 = dataclasses.replace(CFG, overlap_thresh=0.0)
    yield "hidden_overlap_zero", _prediction(masks, labels, torch.tensor([0.997, 0.662]), torch.tensor([0.325, 0.878]),
                                             torch.zeros(40, 40, dtype=torch.long)), LABELS, "all", cfg0
    # Equal scores everywhere: the stable sorts must keep the input order in both implementations.
    yield "ties", _prediction(torch.stack([a, b, c, a]), torch.tensor([0, 1, 0, 1]), torch.full((4,), 0.7),
                              torch.full((4,), 0.4), torch.full((20, 20), 2)), LABELS, "all", CFG
    # More than 255 instances: the int32 rank path of the topmost-owner computation.
    many = torch.rand(300, 16, 16, generator=g) > 0.9
    yield "300_instances", _prediction(many.float(), torch.randint(0, 2, (300,), generator=g), torch.rand(300, generator=g),
                                       torch.rand(300, generator=g), torch.full((16, 16), 3),
                                       dataclasses.replace(CFG, score_thresh=0.0)), LABELS, "all", dataclasses.replace(CFG, score_thresh=0.0, overlap_thresh=0.1)


@pytest.mark.parametrize("case", list(hand_made_cases()), ids=lambda case: case[0])
def test_numpy_fusion_equals_torch_fusion_on_hand_made_cases(case):
    _, prediction, label_space, stuff_classes, cfg = case
    assert_same_fusion(prediction, label_space, stuff_classes, cfg)


def test_float32_comparisons_as_torch_makes_them():
    """torch compares int tensors with a Python float in float32; float64 would decide otherwise here."""
    # Overlap: 7 of 25 pixels visible at 0.28: float32(0.28) * 25 rounds to 7.0 (kept); in float64
    # 0.28 * 25 > 7 (dropped).
    on_top = torch.zeros(1, 25)
    on_top[0, :18] = 1
    below = torch.ones(1, 25)
    cfg = dataclasses.replace(CFG, overlap_thresh=0.28)
    prediction = _prediction(torch.stack([on_top, below]), torch.tensor([0, 1]), torch.tensor([0.9, 0.8]),
                             torch.tensor([0.9, 0.8]), torch.full((1, 25), 2))
    got = assert_same_fusion(prediction, LABELS, "all", cfg)
    assert len([s for s in got["score"][1] if s["isthing"]]) == 2 and 7 < 0.28 * 25
    # Stuff area limit within float32 rounding above an integer area: kept, as torch keeps it.
    found = next(((limit, ref) for limit in range(1, 3000) for ref in range(41, 400)
                  if (lim := limit * (40 / ref) ** 2) > round(lim) and np.float32(lim) == round(lim) and round(lim) < 1600), None)
    assert found is not None
    limit, ref = found
    cfg = FusionConfig(score_thresh=0.5, overlap_thresh=0.5, stuff_area_limit=limit, stuff_area_reference_size=ref)
    area = round(cfg.min_stuff_area(40, 40))
    sem = torch.full((40, 40), 2)
    sem.view(-1)[:area] = 3  # stuff 1 has exactly `area` pixels, a hair below the float64 limit
    none = (torch.zeros(0, 40, 40), torch.zeros(0, dtype=torch.long), torch.zeros(0), torch.zeros(0))
    got = assert_same_fusion(_prediction(*none, sem, cfg), LABELS, "all", cfg)
    assert [s["area"] for s in got["srm"][1] if s["category_id"] == 187] == [area]


@pytest.mark.parametrize("combo", COMBOS[:4] + COMBOS[-1:], ids=lambda c: "-".join(map(str, c)))
def test_numpy_fusion_equals_torch_fusion_on_model_outputs(combo):
    torch.manual_seed(0)
    model = OANet.from_config(tiny_config(*combo)).eval()
    with torch.no_grad():
        model.roi_heads.mask_predictor.mask_fcn_logits.weight.mul_(20.0)  # confident, overlapping masks
        images = [sample(classes=combo[1])[0], torch.rand(3, 50, 70, generator=torch.Generator().manual_seed(1))]
        outputs = model(images, score_thresh=0.0)
    classes = combo[1]
    space = make_label_space([1, 2, 3], [10, 11])
    for thresh, overlap in ((0.5, 0.5), (0.1, 0.2)):
        cfg = FusionConfig(score_thresh=thresh, overlap_thresh=overlap, stuff_area_limit=40, stuff_area_reference_size=64)
        for output in outputs:
            assert output["selected"].any()
            assert_same_fusion(output, space, classes, cfg)


def test_numpy_paste_matches_torchvision():
    """Integer boxes exactly, binarised masks up to pixels whose probability rounds across 0.5."""
    from torchvision.models.detection.roi_heads import expand_boxes as tv_expand_boxes
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    rng = np.random.default_rng(0)
    pixels = differ = 0
    for _ in range(40):
        h, w, k = int(rng.integers(5, 120)), int(rng.integers(5, 120)), int(rng.integers(0, 10))
        x0, y0 = rng.uniform(0, w, k), rng.uniform(0, h, k)
        # detections: inside the image (RoIHeads clips them), at least 0.01 px wide (and small ones)
        x1 = np.minimum(x0 + rng.exponential(20, k) + 0.01, w)
        y1 = np.minimum(y0 + rng.exponential(20, k) + 0.01, h)
        boxes = np.stack([x0, y0, np.maximum(x1, x0 + 0.01), np.maximum(y1, y0 + 0.01)], 1).astype(np.float32)
        probs = rng.random((k, 28, 28)).astype(np.float32)
        assert np.array_equal(expand_boxes(boxes, 30 / 28).astype(np.int64),
                              tv_expand_boxes(torch.from_numpy(boxes), 30 / 28).to(torch.int64).numpy())
        expected = paste_masks_in_image(torch.from_numpy(probs)[:, None], torch.from_numpy(boxes), (h, w))[:, 0].numpy()
        got = paste_masks(probs, boxes, h, w)
        assert got.shape == (k, h, w) and got.dtype == bool
        wrong = got != (expected > 0.5)
        assert np.all(np.abs(expected[wrong] - 0.5) < 1e-5)
        pixels, differ = pixels + got.size, differ + int(wrong.sum())
    assert pixels > 10**5 and differ <= pixels * 1e-5


def test_fuse_refuses_bad_orders_and_outputs_without_selection():
    masks, labels = _tie_on_person()
    prediction = _numpy({"masks": masks, "labels": labels, "scores": torch.tensor([0.9, 0.8]),
                         "ranking_scores": torch.tensor([0.1, 0.2]), "sem_seg_labels": torch.zeros(40, 40, dtype=torch.long)})
    with pytest.raises(ValueError, match="selected"):
        np_fusion.fuse(prediction, LABELS, "all", CFG)
    with pytest.raises(ValueError, match="unknown fusion order"):
        np_fusion.fuse({**prediction, "selected": np.array([True, True])}, LABELS, "all", CFG, orders=("depth",))
    with pytest.raises(TypeError, match="LabelSpace"):
        np_fusion.fuse({**prediction, "selected": np.array([True, True])}, ([1, 32], [184, 187]), "all", CFG)
