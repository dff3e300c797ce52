"""4-connected morphology (data/morphology.py) on hand-made masks, and the package layering it serves."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from oanet.data.morphology import dilate, erode, inner_edge, label_boundary, shift

OANET = Path(__file__).resolve().parents[1] / "oanet"


def _square(size: int, lo: int, hi: int) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[lo:hi, lo:hi] = True
    return mask


def test_shift_moves_and_fills():
    mask = _square(5, 1, 3)
    moved = shift(mask, 1, -1)
    assert moved.sum() == 4 and moved[2:4, 0:2].all()
    assert shift(mask, 0, 0).tolist() == mask.tolist()
    assert shift(mask, 2, 0, fill=True)[:2].all()  # what enters is the fill
    assert not shift(mask, 7, 0).any() and shift(mask, 0, -9, fill=True).all()  # beyond the image


def test_dilate_and_erode_are_4_connected_steps():
    dot = np.zeros((7, 7), dtype=bool)
    dot[3, 3] = True
    diamond = dilate(dot, 2)
    assert diamond.sum() == 13  # |dy| + |dx| <= 2
    assert not diamond[1, 1] and diamond[1, 3] and diamond[2, 2]
    assert erode(diamond, 2).tolist() == dot.tolist()
    assert (dilate(dot, 0) == dot).all() and (erode(dot, 1) == 0).all()


def test_the_image_border_neither_grows_nor_erodes_a_mask():
    full = np.ones((4, 6), dtype=bool)
    assert erode(full, 3).all()  # nothing outside the image eats it
    left = np.zeros((4, 6), dtype=bool)
    left[:, :2] = True
    assert erode(left, 1)[:, 0].all() and not erode(left, 1)[:, 1].any()
    assert inner_edge(left, 1)[:, 1].all() and not inner_edge(left, 1)[:, 0].any()


def test_label_boundary_marks_both_sides_of_every_border():
    labels = np.zeros((6, 6), dtype=np.int64)
    labels[:, 3:] = 2
    assert np.flatnonzero(label_boundary(labels, 1).any(axis=0)).tolist() == [2, 3]
    assert np.flatnonzero(label_boundary(labels, 2).any(axis=0)).tolist() == [1, 2, 3, 4]
    assert not label_boundary(np.ones((3, 3), dtype=np.int64), 3).any()
