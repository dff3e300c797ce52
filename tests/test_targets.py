"""Target builders on hand-made arrays: every expected value is written out by hand."""

import numpy as np
import pytest

from oanet.data.coco_panoptic import segment_index_map
from oanet.data.labels import Category, LabelSpace
from oanet.data.targets import (
    instances_from_masks,
    instances_from_panoptic,
    masks_to_boxes,
    semantic_target,
    srm_target,
)

# Things 1 (person) and 3 (car) -> thing index 0, 1; stuff 7 (road) and 9 (sky) -> stuff index 0, 1.
LABELS = LabelSpace(
    [
        Category(9, "sky", False, (0, 0, 255)),
        Category(3, "car", True, (255, 0, 0)),
        Category(1, "person", True, (0, 255, 0)),
        Category(7, "road", False, (50, 50, 50)),
    ]
)

# A 4x6 panoptic id map: 0 void, 11 person, 12 car, 13 crowd person, 20 sky, 21 road.
ID_MAP = np.array(
    [
        [20, 20, 20, 20, 20, 0],
        [11, 11, 12, 12, 20, 0],
        [11, 11, 12, 13, 13, 21],
        [21, 21, 21, 13, 13, 21],
    ],
    dtype=np.uint32,
)
SEGMENT_IDS = np.array([11, 12, 13, 20, 21])
CATEGORY_IDS = np.array([1, 3, 1, 9, 7])
ISCROWD = np.array([False, False, True, False, False])


def index_map():
    index, areas = segment_index_map(ID_MAP, SEGMENT_IDS)
    np.testing.assert_array_equal(areas, [4, 3, 4, 6, 5])
    return index


def test_label_space_lookups():
    np.testing.assert_array_equal(LABELS.thing_ids, [1, 3])
    np.testing.assert_array_equal(LABELS.stuff_ids, [7, 9])
    np.testing.assert_array_equal(LABELS.thing_index(CATEGORY_IDS), [0, 1, 0, -1, -1])
    np.testing.assert_array_equal(LABELS.stuff_index(CATEGORY_IDS), [-1, -1, -1, 1, 0])
    np.testing.assert_array_equal(LABELS.channel(CATEGORY_IDS, "all"), [0, 1, 0, 3, 2])
    np.testing.assert_array_equal(LABELS.channel(CATEGORY_IDS, "stuff"), [0, 0, 0, 2, 1])
    assert LABELS.num_channels("all") == 4 and LABELS.num_channels("stuff") == 3
    np.testing.assert_array_equal(LABELS.channel_category_ids("all"), [1, 3, 7, 9])
    np.testing.assert_array_equal(LABELS.channel_category_ids("stuff"), [-1, 7, 9])
    assert LABELS.thing_names == ["person", "car"] and LABELS.stuff_names == ["road", "sky"]


def test_segment_index_map_positions_and_void():
    index = index_map()
    assert index[0, 5] == -1 and index[1, 0] == 0 and index[2, 4] == 2 and index[3, 5] == 4


def test_masks_to_boxes_exclusive_max_and_empty():
    masks = np.zeros((2, 4, 6), np.uint8)
    masks[0, 1:3, 2:5] = 1
    np.testing.assert_array_equal(masks_to_boxes(masks), [[2, 1, 5, 3], [0, 0, 0, 0]])
    assert masks_to_boxes(masks).dtype == np.float32
    assert masks_to_boxes(np.zeros((0, 4, 6), np.uint8)).shape == (0, 4)


def test_instances_from_panoptic_excludes_crowd_and_stuff():
    boxes, labels, masks = instances_from_panoptic(index_map(), LABELS.thing_index(CATEGORY_IDS), ISCROWD)
    np.testing.assert_array_equal(labels, [0, 1])  # person, car; the crowd person is no instance
    assert masks.dtype == np.uint8 and masks.shape == (2, 4, 6)
    np.testing.assert_array_equal(masks[0], ID_MAP == 11)
    np.testing.assert_array_equal(masks[1], ID_MAP == 12)
    np.testing.assert_array_equal(boxes, [[0, 1, 2, 3], [2, 1, 4, 3]])
    assert labels.dtype == np.int64 and boxes.dtype == np.float32


def test_instances_from_masks_drops_crowd_and_empty_keeps_overlap():
    masks = np.zeros((4, 4, 6), np.uint8)
    masks[0, 0:3, 0:3] = 1  # person
    masks[1, 1:3, 2:4] = 1  # car, overlapping the person at column 2
    masks[2, 2:4, 3:5] = 1  # crowd
    # masks[3] stays empty
    boxes, labels, kept = instances_from_masks(masks, [0, 1, 0, 1], [False, False, True, False])
    np.testing.assert_array_equal(labels, [0, 1])
    np.testing.assert_array_equal(boxes, [[0, 0, 3, 3], [2, 1, 4, 3]])
    assert (kept.sum(axis=0) == 2).sum() == 2  # the two overlapping pixels survive
    with pytest.raises(ValueError):
        instances_from_masks(masks, [0, 1, -1, 1], [False] * 4)  # a stuff label is a caller bug
    _, _, from_bool = instances_from_masks(masks.astype(bool), [0, 1, 0, 1], [False, False, True, False])
    assert from_bool.dtype == np.uint8 and np.array_equal(from_bool, kept)


def test_semantic_target_all_and_stuff_variants():
    index = index_map()
    all_target = semantic_target(index, LABELS.channel(CATEGORY_IDS, "all"))
    expected_all = np.array(
        [
            [3, 3, 3, 3, 3, 255],
            [0, 0, 1, 1, 3, 255],
            [0, 0, 1, 0, 0, 2],  # the crowd person keeps the person channel
            [2, 2, 2, 0, 0, 2],
        ]
    )
    np.testing.assert_array_equal(all_target, expected_all)
    assert all_target.dtype == np.int64
    stuff_target = semantic_target(index, LABELS.channel(CATEGORY_IDS, "stuff"))
    expected_stuff = np.array(
        [
            [2, 2, 2, 2, 2, 255],
            [0, 0, 0, 0, 2, 255],
            [0, 0, 0, 0, 0, 1],
            [1, 1, 1, 0, 0, 1],
        ]
    )
    np.testing.assert_array_equal(stuff_target, expected_stuff)


def test_srm_target_only_at_overlaps_of_non_crowd_things():
    index = index_map()
    masks = np.zeros((3, 4, 6), np.uint8)
    masks[0, 0:3, 0:4] = 1  # a person mask reaching over the car, the crowd and the sky
    masks[1, 1:4, 2:5] = 1  # a car mask reaching over the crowd and the road
    masks[2, 0:2, 3:6] = 1  # a third mask over sky and void
    target = srm_target(masks, index, LABELS.thing_index(CATEGORY_IDS), ISCROWD)
    expected = np.full((4, 6), 255)
    # >= 2 masks at (0,3) sky, (1,2) car, (1,3) car + third mask, (1,4) sky, (2,2) car, (2,3) crowd
    expected[1, 2] = 1
    expected[1, 3] = 1
    expected[2, 2] = 1
    np.testing.assert_array_equal(target, expected)
    assert target.dtype == np.int64


def test_srm_target_empty_with_fewer_than_two_masks():
    index = index_map()
    one = (ID_MAP == 11)[None].astype(np.uint8)
    assert (srm_target(one, index, LABELS.thing_index(CATEGORY_IDS), ISCROWD) == 255).all()
    # non-overlapping masks (pano-instance GT) never produce an SRM target either
    _, _, masks = instances_from_panoptic(index, LABELS.thing_index(CATEGORY_IDS), ISCROWD)
    assert (srm_target(masks, index, LABELS.thing_index(CATEGORY_IDS), ISCROWD) == 255).all()
