"""Spatial ranking module: Eq. 3 on hand-made maps, mask pasting, and learning a tie-on-person order."""

from __future__ import annotations

import pytest
import torch

from oanet.model.srm import (
    SpatialRankingModule,
    occupancy_map,
    paste_masks_at_stride,
    ranking_scores,
    subsample,
)

PERSON, TIE, CAR = 0, 1, 2



def test_eq3_mean_of_own_class_probability_inside_the_mask():
    probs = torch.zeros(2, 2, 3)
    probs[0] = torch.tensor([[0.9, 0.8, 0.1], [0.7, 0.2, 0.3]])
    probs[1] = 1 - probs[0]
    masks = torch.zeros(3, 2, 3, dtype=torch.bool)
    masks[0, 0, :2] = True  # class 0 over (0.9, 0.8)
    masks[1, :, 2] = True  # class 1 over (0.9, 0.7)
    # masks[2] is empty at this resolution: falls back to the soft mask, here weight on one pixel
    soft = torch.zeros(3, 2, 3)
    soft[2, 1, 1] = 0.3
    scores = ranking_scores(probs, masks, torch.tensor([0, 1, 0]), soft_masks=soft)
    assert torch.allclose(scores, torch.tensor([0.85, 0.8, 0.2]))
    # Without a soft mask an empty instance gets 0 (never NaN); no instances -> empty.
    assert ranking_scores(probs, masks, torch.tensor([0, 1, 0]))[2] == 0
    assert ranking_scores(probs, masks[:0], torch.zeros(0, dtype=torch.long)).shape == (0,)


def test_occupancy_map_one_channel_per_class_instances_share_it():
    masks = torch.zeros(3, 4, 4, dtype=torch.uint8)
    masks[0, :2, :2] = 1
    masks[1, 1:3, 1:3] = 1  # same class as 0, overlapping: still 1, not 2
    masks[2, 3, 3] = 1
    occ = occupancy_map(masks, torch.tensor([TIE, TIE, CAR]), num_classes=3)
    assert occ.shape == (3, 4, 4)
    assert occ[PERSON].sum() == 0 and occ.max() == 1
    assert occ[TIE].sum() == 7 and occ[CAR, 3, 3] == 1
    assert occupancy_map(masks[:0], torch.zeros(0, dtype=torch.long), 3).sum() == 0


def test_paste_masks_at_stride_places_the_box():
    probs = torch.ones(1, 28, 28)
    pasted = paste_masks_at_stride(probs, torch.tensor([[8.0, 8.0, 24.0, 24.0]]), (8, 8), stride=4)
    # SRM pixel i covers input [4i, 4i+4), centre 4i+2: centres 10..22 fall inside [8, 24].
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[2:6, 2:6] = True
    assert torch.equal(pasted[0] > 0.5, expected)
    assert paste_masks_at_stride(probs[:0], torch.zeros(0, 4), (8, 8), 4).shape == (0, 8, 8)
    assert subsample(torch.arange(64).reshape(8, 8), 4).tolist() == [[18, 22], [50, 54]]


def _layouts(n: int, size: int, generator: torch.Generator):
    """Persons with a tie inside, and cars overlapping persons (person on top of car)."""
    occupancies, targets, instances = [], [], []
    for _ in range(n):
        y, x = torch.randint(2, size // 2 - 2, (2,), generator=generator).tolist()
        ph, pw = torch.randint(size // 3, size // 2, (2,), generator=generator).tolist()
        person = torch.zeros(size, size, dtype=torch.bool)
        person[y : y + ph, x : x + pw] = True
        tie = torch.zeros_like(person)
        ty, tx = y + ph // 4, x + pw // 2 - 1
        tie[ty : ty + ph // 2, tx : tx + 3] = True
        car = torch.zeros_like(person)
        car[y + ph // 2 : y + ph + 4, x + pw // 2 : x + pw + 6] = True
        masks = torch.stack([person, tie, car])
        labels = torch.tensor([PERSON, TIE, CAR])
        occupancies.append(occupancy_map(masks, labels, 3))
        target = torch.full((size, size), 255)
        target[person & car] = PERSON
        target[person & tie] = TIE
        targets.append(target)
        instances.append((masks, labels))
    return torch.stack(occupancies), torch.stack(targets), instances


@pytest.mark.parametrize("kernel", ["1x1", "3x3", "gcn7"])
def test_srm_learns_tie_on_person_and_person_on_car(kernel):
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    occupancy, targets, _ = _layouts(8, 32, generator)
    srm = SpatialRankingModule(3, kernel)
    optimizer = torch.optim.Adam(srm.parameters(), lr=0.05)
    first = None
    for _ in range(60):
        loss = srm.loss(srm(occupancy), targets)
        first = loss.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.25 * first

    occupancy, _, instances = _layouts(4, 32, generator)  # unseen layouts
    with torch.no_grad():
        probs = srm(occupancy).softmax(1)
    for i, (masks, labels) in enumerate(instances):
        person, tie, car = ranking_scores(probs[i], masks, labels).tolist()
        overlap = masks[0] & masks[2] & ~masks[1]
        assert tie > person, (kernel, tie, person)
        # Where person and car overlap the person channel must win.
        assert (probs[i, PERSON][overlap] > probs[i, CAR][overlap]).all()


def test_srm_loss_is_zero_but_connected_without_overlap_pixels():
    srm = SpatialRankingModule(3, "gcn7")
    logits = srm(torch.zeros(1, 3, 8, 8))
    loss = srm.loss(logits, torch.full((1, 8, 8), 255))
    assert loss.detach().item() == 0.0  # detached: the loss itself must keep its graph for backward()
    loss.backward()
    assert all(p.grad is not None for p in srm.parameters())


def test_srm_rejects_bad_kernel_and_stride():
    with pytest.raises(ValueError):
        SpatialRankingModule(3, "5x5")
    with pytest.raises(ValueError):
        SpatialRankingModule(3, "1x1", stride=3)
