"""Panoptic fusion on hand-made masks (pure tensor function, no model)."""

from __future__ import annotations

import pytest
import torch

from oanet.config import FusionConfig
from oanet.data.labels import Category, LabelSpace
from oanet.model.fusion import (
    category_ids,
    fuse,
    paste_instances,
    paste_order,
    panoptic_fusion,
)

PERSON, TIE = 0, 1


def fuse_both_orders(prediction, label_space, stuff_classes, cfg):
    """A model output's ``selected``: what the model would pick with ``cfg.score_thresh``."""
    prediction = {"selected": prediction["scores"] >= cfg.score_thresh, **prediction}
    return fuse(prediction, label_space, stuff_classes, cfg, orders=("score", "srm"))



def make_label_space(things, stuff):
    """A LabelSpace of the given thing and stuff COCO ids (names and colours do not matter to fusion)."""
    cats = [Category(i, f"thing{i}", True, (i % 256, 0, 0)) for i in things]
    return LabelSpace(cats + [Category(i, f"stuff{i}", False, (0, i % 256, 0)) for i in stuff])


# thing COCO ids by thing index (person 1, tie 32), stuff COCO ids by stuff index
LABELS = make_label_space([1, 32], [184, 187])
CFG = FusionConfig(score_thresh=0.5, overlap_thresh=0.5, stuff_area_limit=0, stuff_area_reference_size=800)


def _box_mask(h, w, y0, y1, x0, x1):
    m = torch.zeros(h, w)
    m[y0:y1, x0:x1] = 1.0
    return m


def _tie_on_person(h=40, w=40):
    person = _box_mask(h, w, 5, 35, 10, 30)
    tie = _box_mask(h, w, 10, 25, 18, 22)  # entirely inside the person
    return torch.stack([person, tie]), torch.tensor([PERSON, TIE])


def test_tie_on_person_score_order_hides_tie_srm_order_shows_it():
    masks, labels = _tie_on_person()
    scores = torch.tensor([0.997, 0.662])
    ranking = torch.tensor([0.325, 0.878])  # Fig. 7's numbers
    prediction = {
        "masks": masks,
        "labels": labels,
        "scores": scores,
        "ranking_scores": ranking,
        "sem_seg_labels": torch.full((40, 40), 2),  # all stuff 0
    }
    both = fuse_both_orders(prediction, LABELS, "all", CFG)

    ids, segments = both["score"]
    # The tie is fully covered by the person: visible 0 < 0.5 of its area -> dropped.
    assert [s["category_id"] for s in segments if s["isthing"]] == [1]
    assert ids[15, 20] == ids[30, 15] == segments[0]["id"]

    ids, segments = both["srm"]
    things = [s for s in segments if s["isthing"]]
    assert [s["category_id"] for s in things] == [32, 1]
    tie_id, person_id = things[0]["id"], things[1]["id"]
    assert ids[15, 20] == tie_id and ids[30, 15] == person_id
    assert things[0]["area"] == 15 * 4 and things[1]["area"] == 30 * 20 - 15 * 4
    assert things[0]["score"] == torch.tensor(0.662).item()  # segments keep the detection score
    assert things[0]["ranking_score"] == torch.tensor(0.878).item()  # and the ranking score
    # Stuff fills the rest; ids are 1..K and int32.
    assert ids.dtype == torch.int32
    assert sorted(s["id"] for s in segments) == list(range(1, len(segments) + 1))
    stuff = [s for s in segments if not s["isthing"]]
    assert [(s["category_id"], s["score"], s["ranking_score"]) for s in stuff] == [(184, None, None)]
    assert int((ids == stuff[0]["id"]).sum()) == 40 * 40 - 30 * 20


def test_both_orders_paste_only_the_selected_detections():
    masks, labels = _tie_on_person()
    # A third, low-scoring detection covering the whole image with the highest ranking score: it must
    # not be pasted in either order, so both orders equal the two-detection result.
    masks3 = torch.cat([masks, torch.ones(1, 40, 40)])
    prediction = {
        "masks": masks3,
        "labels": torch.cat([labels, torch.tensor([0])]),
        "scores": torch.tensor([0.997, 0.662, 0.3]),
        "ranking_scores": torch.tensor([0.325, 0.878, 0.99]),
        "sem_seg_labels": torch.full((40, 40), 2),
    }
    both = fuse_both_orders(prediction, LABELS, "all", CFG)
    two = {k: v[:2] for k, v in prediction.items() if k != "sem_seg_labels"}
    expected = fuse_both_orders({**two, "sem_seg_labels": prediction["sem_seg_labels"]}, LABELS, "all", CFG)
    for order in ("score", "srm"):
        assert torch.equal(both[order][0], expected[order][0])
        assert both[order][1] == expected[order][1]
    assert [s["category_id"] for s in both["srm"][1] if s["isthing"]] == [32, 1]


def test_one_order_fuses_only_that_order_with_the_same_result():
    masks, labels = _tie_on_person()
    prediction = {
        "masks": masks,
        "labels": labels,
        "scores": torch.tensor([0.997, 0.662]),
        "ranking_scores": torch.tensor([0.325, 0.878]),
        "sem_seg_labels": torch.full((40, 40), 2),
    }
    both = fuse_both_orders(prediction, LABELS, "all", CFG)
    prediction["selected"] = torch.tensor([True, True])
    for order in ("score", "srm"):
        one = fuse(prediction, LABELS, "all", CFG, orders=(order,))
        assert list(one) == [order]
        assert torch.equal(one[order][0], both[order][0]) and one[order][1] == both[order][1]


def test_overlap_threshold_drops_mostly_hidden_instance_and_frees_its_pixels():
    h = w = 20
    a = _box_mask(h, w, 0, 10, 0, 10)  # on top
    b = _box_mask(h, w, 0, 10, 4, 14)  # 60% hidden by a -> visible 40% < 50% -> dropped
    c = _box_mask(h, w, 0, 10, 10, 20)  # overlaps b only; b dropped -> c fully visible
    masks = torch.stack([a, b, c])
    owner, kept = paste_instances(masks.bool(), overlap_thresh=0.5)
    assert kept.tolist() == [True, False, True]
    assert (owner[:10, 10:14] == 2).all()
    # With a lower threshold b survives and takes 4 columns, then c loses 4 of 10 columns (60% visible).
    owner, kept = paste_instances(masks.bool(), overlap_thresh=0.3)
    assert kept.tolist() == [True, True, True]
    assert (owner[:10, 10:14] == 1).all() and (owner[:10, 14:] == 2).all()


def test_sequential_drop_semantics_match_a_reference_loop():
    torch.manual_seed(0)
    masks = torch.rand(12, 24, 24) > 0.55
    for thresh in (0.3, 0.5, 0.7):
        owner, kept = paste_instances(masks, thresh)
        taken = torch.zeros(24, 24, dtype=torch.bool)
        ref_owner = torch.full((24, 24), -1)
        for i, m in enumerate(masks):
            vis = m & ~taken
            keep = m.sum() > 0 and vis.sum() >= thresh * m.sum()
            assert bool(kept[i]) == bool(keep)
            if keep:
                ref_owner[vis] = i
                taken |= vis
        assert torch.equal(owner, ref_owner)


def test_score_threshold_and_same_class_fallback_to_detection_score():
    # Two persons with overlapping masks: ranking scores of one class are meaningless between its
    # instances, so the higher detection score goes on top, keeping the class's cross-class slots.
    labels = torch.tensor([PERSON, PERSON, TIE, PERSON])
    det = torch.tensor([0.6, 0.9, 0.7, 0.3])
    rank = torch.tensor([0.8, 0.2, 0.5, 0.0])
    order = paste_order(labels, det, rank)
    # Person slots by ranking: 0.8, 0.2 (and 0.0); by detection: 1 (0.9) gets 0.8, 0 (0.6) gets 0.2.
    assert order.tolist() == [1, 2, 0, 3]

    h = w = 10
    m0 = _box_mask(h, w, 0, 10, 0, 6)
    m1 = _box_mask(h, w, 0, 10, 4, 10)
    masks = torch.stack([m0, m1, torch.zeros(h, w), _box_mask(h, w, 0, 10, 0, 10)])
    sem = torch.full((h, w), 2)
    prediction = {"masks": masks, "labels": labels, "scores": det, "ranking_scores": rank,
                  "selected": det >= CFG.score_thresh, "sem_seg_labels": sem}
    ids, segments = fuse(prediction, LABELS, "all", CFG, orders=("srm",))["srm"]
    things = [s for s in segments if s["isthing"]]
    # Instance 1 (det 0.9) on top; instance 3 is not selected (below score_thresh); instance 2 is empty.
    assert [s["score"] for s in things] == [torch.tensor(0.9).item(), torch.tensor(0.6).item()]
    assert (ids[:, 4:6] == things[0]["id"]).all()
    assert not any(s["category_id"] == 184 for s in segments)  # no pixel left for stuff


def test_stuff_rules_thing_channels_void_and_area_limit_scaled():
    h, w = 40, 40
    cfg = FusionConfig(score_thresh=0.5, overlap_thresh=0.5, stuff_area_limit=4900, stuff_area_reference_size=800)
    # 4900 * (40 / 800)^2 = 12.25 pixels
    assert cfg.min_stuff_area(h, w) == 4900 * (40 / 800) ** 2
    sem = torch.full((h, w), 2)  # stuff 0 everywhere...
    sem[0:10, 0:10] = 0  # ...a thing channel: void
    sem[20:23, 20:24] = 3  # stuff 1, 12 pixels < 12.25 -> void
    sem[30:34, 30:34] = 3  # another 16 pixels of stuff 1: per-class area 28 >= 12.25 -> kept
    ids, segments = panoptic_fusion(
        torch.zeros(0, h, w), torch.zeros(0, dtype=torch.long), torch.zeros(0), torch.zeros(0), sem, LABELS, "all", cfg
    )
    assert (ids[0:10, 0:10] == 0).all()
    by_cat = {s["category_id"]: s for s in segments}
    assert set(by_cat) == {184, 187} and by_cat[187]["area"] == 28
    sem2 = sem.clone()
    sem2[30:34, 30:34] = 2
    ids, segments = panoptic_fusion(
        torch.zeros(0, h, w), torch.zeros(0, dtype=torch.long), torch.zeros(0), torch.zeros(0), sem2, LABELS, "all", cfg
    )
    assert [s["category_id"] for s in segments] == [184]
    assert (ids[20:23, 20:24] == 0).all()

    # classes "stuff": channel 0 is "any thing" (void), 1 + s is stuff s.
    sem3 = torch.zeros(h, w, dtype=torch.long)
    sem3[:, 20:] = 2
    ids, segments = panoptic_fusion(
        torch.zeros(0, h, w), torch.zeros(0, dtype=torch.long), torch.zeros(0), torch.zeros(0), sem3, LABELS, "stuff", cfg
    )
    assert [s["category_id"] for s in segments] == [187]
    assert (ids[:, :20] == 0).all() and (ids[:, 20:] == 1).all()


def test_empty_inputs_give_all_void():
    h, w = 8, 12
    sem = torch.zeros(h, w, dtype=torch.long)  # thing channel everywhere
    ids, segments = panoptic_fusion(
        torch.zeros(0, h, w), torch.zeros(0, dtype=torch.long), torch.zeros(0), torch.zeros(0), sem, LABELS, "all", CFG
    )
    assert segments == [] and ids.shape == (h, w) and int(ids.abs().sum()) == 0
    # A label space with no stuff classes at all.
    ids, segments = panoptic_fusion(
        torch.ones(1, h, w), torch.tensor([0]), torch.tensor([0.9]), torch.tensor([0.9]), sem, make_label_space([1], []),
        "all", CFG,
    )
    assert segments[0]["category_id"] == 1 and (ids == 1).all()


def test_category_ids_come_from_a_label_space_only():
    assert category_ids(LABELS) == ([1, 32], [184, 187])
    sem = torch.full((6, 6), 3)
    masks = torch.zeros(1, 6, 6, dtype=torch.bool)
    masks[0, :3] = True
    ids, segments = panoptic_fusion(masks, torch.tensor([1]), torch.tensor([0.9]), torch.tensor([0.9]), sem, LABELS, "all", CFG)
    assert [(s["category_id"], s["isthing"], s["area"]) for s in segments] == [(32, True, 18), (187, False, 18)]
    assert ids[:3].eq(1).all() and ids[3:].eq(2).all()
    with pytest.raises(TypeError, match="must be an oanet.data.labels.LabelSpace, got tuple"):
        category_ids(([1, 32], [184, 187]))
    with pytest.raises(TypeError, match="got dict"):
        panoptic_fusion(masks, torch.tensor([1]), torch.tensor([0.9]), torch.tensor([0.9]), sem,
                        {"thing_category_ids": [1, 32], "stuff_category_ids": [184, 187]}, "all", CFG)


def test_fully_hidden_instance_is_dropped_even_with_overlap_thresh_zero():
    masks, labels = _tie_on_person()  # the tie lies entirely inside the person
    owner, kept = paste_instances(masks.bool(), overlap_thresh=0.0)
    assert kept.tolist() == [True, False]
    cfg = FusionConfig(score_thresh=0.5, overlap_thresh=0.0, stuff_area_limit=0, stuff_area_reference_size=800)
    prediction = {
        "masks": masks, "labels": labels, "scores": torch.tensor([0.997, 0.662]),
        "ranking_scores": torch.tensor([0.325, 0.878]), "sem_seg_labels": torch.zeros(40, 40, dtype=torch.long),
        "selected": torch.tensor([True, True]),
    }
    things = [s for s in fuse(prediction, LABELS, "all", cfg, orders=("score",))["score"][1] if s["isthing"]]
    assert [(s["category_id"], s["area"] > 0) for s in things] == [(1, True)]  # no area-0 tie segment


def test_fuse_refuses_an_output_without_selected_detections():
    import pytest

    masks, labels = _tie_on_person()
    prediction = {"masks": masks, "labels": labels, "scores": torch.tensor([0.9, 0.8]),
                  "ranking_scores": torch.tensor([0.1, 0.2]), "sem_seg_labels": torch.zeros(40, 40, dtype=torch.long)}
    with pytest.raises(ValueError, match="selected"):
        fuse(prediction, LABELS, "all", CFG)


def _reference_paste(masks, thresh):
    """The sequential definition: one pass per instance."""
    taken = torch.zeros(masks.shape[-2:], dtype=torch.bool)
    owner = torch.full(masks.shape[-2:], -1)
    kept = []
    for i, m in enumerate(masks.bool()):
        vis = m & ~taken
        keep = bool(m.sum() > 0 and vis.sum() >= thresh * m.sum() and vis.sum() > 0)
        kept.append(keep)
        if keep:
            owner[vis] = i
            taken |= vis
    return owner, torch.tensor(kept)


@pytest.mark.parametrize("n", [3, 40, 300])  # 300: ranks and coverage counts beyond uint8
def test_many_overlapping_instances_match_the_sequential_definition(n):
    g = torch.Generator().manual_seed(n)
    yy, xx = torch.meshgrid(torch.arange(30.0), torch.arange(34.0), indexing="ij")
    centre = torch.rand(n, 2, generator=g) * torch.tensor([30.0, 34.0])
    radius = 3 + 8 * torch.rand(n, 1, 1, generator=g)
    masks = (yy - centre[:, 0, None, None]) ** 2 + (xx - centre[:, 1, None, None]) ** 2 <= radius**2
    masks[0] = False  # an empty mask is never kept
    for thresh in (0.0, 0.3, 0.6, 0.95):
        owner, kept = paste_instances(masks, thresh)
        ref_owner, ref_kept = _reference_paste(masks, thresh)
        assert torch.equal(kept, ref_kept) and torch.equal(owner, ref_owner), thresh
        if n > 3 and thresh > 0:
            assert not kept[1:].all()  # non-empty instances were dropped: the drop path ran
        # 0/1 float masks give the same result as bool ones.
        float_owner, float_kept = paste_instances(masks.float(), thresh)
        assert torch.equal(float_owner, owner) and torch.equal(float_kept, kept)


def test_fuse_selects_the_same_masks_whether_or_not_they_are_a_run():
    (person, tie), _ = _tie_on_person()
    masks = torch.stack([person, tie, person.roll(3, 1), tie.roll(-4, 0)])
    prediction = {
        "masks": masks, "labels": torch.tensor([PERSON, TIE, PERSON, TIE]),
        "scores": torch.tensor([0.9, 0.8, 0.7, 0.6]), "ranking_scores": torch.tensor([0.2, 0.9, 0.4, 0.5]),
        "sem_seg_labels": torch.full((40, 40), 2),
    }
    for selected in ([True, True, True, False], [True, False, True, True], [False, True, False, False]):
        sel = torch.tensor(selected)
        fused = fuse(dict(prediction, selected=sel), LABELS, "all", CFG)
        subset = {k: v[sel] if k != "sem_seg_labels" else v for k, v in prediction.items()}
        expected = fuse(dict(subset, selected=torch.ones(int(sel.sum()), dtype=torch.bool)), LABELS, "all", CFG)
        for order in ("score", "srm"):
            assert torch.equal(fused[order][0], expected[order][0]) and fused[order][1] == expected[order][1]
