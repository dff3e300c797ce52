"""Overlays on hand-made id maps: colours, outlines, labels, the both-orders picture."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from oanet import viz
from oanet.data.labels import generated_color

CATEGORIES = {
    1: {"id": 1, "name": "person", "isthing": 1},
    2: {"id": 2, "name": "tie", "isthing": 1},
    10: {"id": 10, "name": "grass", "isthing": 0},
}


def _hand_made_map() -> tuple[np.ndarray, list[dict]]:
    ids = np.zeros((40, 60), dtype=np.uint32)
    ids[:, :] = 7  # grass everywhere...
    ids[5:30, 5:25] = 11  # ...a person...
    ids[10:20, 10:15] = 12  # ...wearing a tie...
    ids[5:30, 35:55] = 13  # ...another person...
    ids[35:, :10] = 0  # ...and some void
    segments = [
        {"id": 7, "category_id": 10, "isthing": False},
        {"id": 11, "category_id": 1, "isthing": True, "score": 0.99},
        {"id": 12, "category_id": 2, "isthing": True, "score": 0.66},
        {"id": 13, "category_id": 1, "isthing": True, "score": 0.90},
    ]
    return ids, segments


def test_colorize_maps_each_segment_to_its_colour_and_void_to_black():
    ids, segments = _hand_made_map()
    colors = viz.segment_colors(segments, CATEGORIES)
    picture = viz.colorize(ids, colors)
    assert picture.shape == (40, 60, 3) and picture.dtype == np.uint8
    for seg_id, color in colors.items():
        assert (picture[ids == seg_id] == color).all()
    assert (picture[ids == 0] == viz.VOID_COLOR).all()


def test_instances_of_one_class_get_different_colours_and_stuff_its_category_colour():
    ids, segments = _hand_made_map()
    colors = viz.segment_colors(segments, CATEGORIES)
    assert colors[11] != colors[13]  # two persons
    assert colors[11] != colors[12]  # person vs tie
    assert colors[7] == generated_color(10)
    # A category's own colour (COCO JSONs carry one) wins over the generated palette.
    coloured = {**CATEGORIES, 10: {**CATEGORIES[10], "color": [1, 2, 3]}}
    assert viz.segment_colors(segments, coloured)[7] == (1, 2, 3)
    # Deterministic: the same input always gives the same colours.
    assert viz.segment_colors(segments, CATEGORIES) == colors


def test_generated_category_colours_are_spread():
    colors = {generated_color(i) for i in range(1, 201)}
    assert len(colors) == 200


def test_boundaries_follow_segment_edges_only():
    ids = np.zeros((10, 10), dtype=np.int64)
    ids[:, 5:] = 3
    edges = viz.segment_boundaries(ids)
    assert edges[:, 4:6].all()
    assert not edges[:, :4].any() and not edges[:, 6:].any()


def test_centroids():
    ids, segments = _hand_made_map()
    centroids = viz.segment_centroids(ids, [13, 99])
    assert set(centroids) == {13}
    x, y = centroids[13]
    assert x == pytest.approx(44.5) and y == pytest.approx(17.0)


def test_overlay_blends_colours_keeps_void_and_draws_labels():
    ids, segments = _hand_made_map()
    image = np.full((40, 60, 3), 100, dtype=np.uint8)
    plain = viz.draw_panoptic(image, ids, segments, CATEGORIES, alpha=0.5, outlines=False, labels=False)
    out = np.asarray(plain)
    assert plain.size == (60, 40)
    np.testing.assert_array_equal(out[ids == 0], 100)  # void shows the image
    expected = np.round(0.5 * 100 + 0.5 * np.asarray(generated_color(10), dtype=np.float64))
    np.testing.assert_allclose(out[2, 30], expected, atol=1)
    labelled = np.asarray(viz.draw_panoptic(image, ids, segments, CATEGORIES, outlines=True, labels=True))
    assert (labelled != np.asarray(viz.draw_panoptic(image, ids, segments, CATEGORIES, labels=False))).any()
    assert (labelled[viz.segment_boundaries(ids)] == viz.OUTLINE_COLOR).all(axis=-1).mean() > 0.5


def test_overlay_rejects_size_mismatch():
    ids, segments = _hand_made_map()
    with pytest.raises(ValueError, match="id map"):
        viz.draw_panoptic(np.zeros((10, 10, 3), np.uint8), ids, segments, CATEGORIES)


def test_side_by_side_size_and_titles():
    ids, segments = _hand_made_map()
    image = Image.new("RGB", (60, 40), (30, 30, 30))
    left = viz.draw_panoptic(image, ids, segments, CATEGORIES)
    right = viz.draw_panoptic(image, ids, segments[:2], CATEGORIES)
    both = viz.side_by_side([("heuristic (score order)", left), ("SRM order", right)], gap=4)
    assert both.size == (60 * 2 + 4, 40 + viz.TITLE_HEIGHT)
    title_bar = np.asarray(both)[: viz.TITLE_HEIGHT, :60]
    assert (title_bar > 0).any()  # the title text is drawn
    np.testing.assert_array_equal(np.asarray(both)[viz.TITLE_HEIGHT :, :60], np.asarray(left))


def test_enlarge_repeats_pixels_and_titles_fit():
    ids = np.array([[1, 2], [3, 4]], dtype=np.uint32)
    image = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    big_image, big_ids = viz.enlarge(image, ids, min_side=5)
    assert big_ids.shape == (6, 6) and big_image.shape == (6, 6, 3)
    assert (big_ids[:3, 3:] == 2).all() and (big_image[3:, :3] == image[1, 0]).all()
    same_image, same_ids = viz.enlarge(image, ids, min_side=2)
    assert same_ids.shape == (2, 2)
    narrow = viz.with_title(Image.new("RGB", (40, 10)), "a very long title that cannot fit")
    assert narrow.size == (40, 10 + viz.TITLE_HEIGHT)


def test_labels_skip_small_segments_and_never_overlap():
    """Largest segment first; a segment smaller than its label, below the area limits, or whose label
    would overlap a larger segment's stays unnamed. Labels here are 40x10 px whatever the font."""
    ids = np.zeros((100, 100), dtype=np.int32)
    ids[10:50, 10:50] = 2  # 1600 px, centroid (29.5, 29.5)
    ids[10:50, 50:70] = 3  # 800 px beside it: its label would overlap 2's
    ids[80:85, 80:85] = 4  # 25 px: below 0.4 % of the picture
    ids[60:90, 10:40] = 5  # 900 px, clear of the others
    ids[95:97, :] = 6  # 200 px, but thinner than a label
    segments = [{"id": i, "category_id": 1} for i in (2, 3, 4, 5, 6)]
    texts = {i: "name" for i in (2, 3, 4, 5, 6)}
    placed = viz.place_labels(ids, segments, texts, lambda text: (40, 10))
    assert [seg_id for seg_id, _ in placed] == [2, 5]
    assert dict(placed)[2] == (8, 23, 50, 35)  # centred on the centroid, 1 px of background around the text
    assert [seg_id for seg_id, _ in viz.place_labels(ids, segments, texts, lambda text: (40, 10),
                                                      min_label_area=1000)] == [2]
    assert [seg_id for seg_id, _ in viz.place_labels(ids, segments, texts, lambda text: (8, 4))] == [2, 5, 3, 6]
