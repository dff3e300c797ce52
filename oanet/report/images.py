"""The report's pictures and per-image data: panels, thumbnails, the disagreement view, id maps for hover.

Pillow and numpy only. Every picture is a small JPEG written beside the page; the segment under the
mouse is looked up in JS in a downscaled *index map* (0 = void, k = the image's k-th segment), sent as
run lengths: varint (value, run) pairs over the rows, base64 (:func:`encode_index_map`). Id maps are
downscaled by nearest sampling, never interpolated, so every pixel keeps a segment that is there.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
from PIL import Image

from oanet.fileio import atomic_write_bytes

PANEL_SIDE = 320  # long side of the panels (smaller images are enlarged to it)
THUMB_SIDE = 160  # long side of the browser's thumbnails
MAP_SIDE = 256  # long side of the hover index maps (never enlarged)
JPEG_QUALITY = 82


def fit(width: int, height: int, side: int, enlarge: bool = False) -> tuple[int, int]:
    """``(w, h)`` with the long side at most ``side`` (exactly ``side`` with ``enlarge``), ratio kept."""
    scale = side / max(width, height, 1)
    if scale >= 1 and not enlarge:
        return int(width), int(height)
    return max(1, int(round(width * scale))), max(1, int(round(height * scale)))


def sample(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``array`` (H x W [x C]) resized to ``size`` = (w, h) by nearest sampling (pixel centres)."""
    height, width = array.shape[:2]
    w, h = size
    if (w, h) == (width, height):
        return array
    ys = np.minimum(((np.arange(h) + 0.5) * height / h).astype(np.intp), height - 1)
    xs = np.minimum(((np.arange(w) + 0.5) * width / w).astype(np.intp), width - 1)
    return array[ys[:, None], xs[None, :]]


def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if (rgb.shape[1], rgb.shape[0]) == tuple(size):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR))


def index_map(ids: np.ndarray, segment_ids: Sequence[int]) -> np.ndarray:
    """Each pixel's position + 1 in ``segment_ids`` (0: void, or an id no segment declares)."""
    ids = np.asarray(ids, dtype=np.int64)
    declared = np.asarray(segment_ids, dtype=np.int64)
    if declared.size == 0:
        return np.zeros(ids.shape, dtype=np.int64)
    order = np.argsort(declared, kind="stable")
    keys = declared[order]
    pos = np.minimum(np.searchsorted(keys, ids), len(keys) - 1)
    found = (keys[pos] == ids) & (ids != 0)
    return np.where(found, order[pos] + 1, 0)


def _varints(numbers: np.ndarray) -> bytes:
    """LEB128 of non-negative integers, vectorised: 7 bits a byte, the high bit set on all but the last."""
    numbers = np.asarray(numbers, dtype=np.uint64)
    if numbers.size == 0:
        return b""
    nbytes = np.ones(numbers.shape, dtype=np.int64)
    for shift in (7, 14, 21, 28, 35):
        nbytes += numbers >= (1 << shift)
    owner = np.repeat(np.arange(numbers.size), nbytes)
    k = np.arange(int(nbytes.sum())) - np.repeat(np.cumsum(nbytes) - nbytes, nbytes)
    value = (numbers[owner] >> (7 * k).astype(np.uint64)) & np.uint64(0x7F)
    more = k < nbytes[owner] - 1
    return (value | (more.astype(np.uint64) << np.uint64(7))).astype(np.uint8).tobytes()


def run_lengths(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(values, lengths)`` of the runs of equal values in ``index`` read row by row."""
    flat = np.asarray(index).reshape(-1)
    if flat.size == 0:
        return flat[:0], flat[:0]
    starts = np.concatenate([[0], np.flatnonzero(flat[1:] != flat[:-1]) + 1])
    lengths = np.diff(np.concatenate([starts, [flat.size]]))
    return flat[starts], lengths


def encode_index_map(index: np.ndarray) -> str:
    """base64 of the (value, run length) varint pairs of an index map, row by row (JS: ``decodeMap``)."""
    values, lengths = run_lengths(index)
    pairs = np.empty(2 * len(values), dtype=np.uint64)
    pairs[0::2], pairs[1::2] = values, lengths
    return base64.b64encode(_varints(pairs)).decode("ascii")


def decode_index_map(text: str, width: int, height: int) -> np.ndarray:
    """The inverse of :func:`encode_index_map` (for tests; the page decodes in JS)."""
    data = base64.b64decode(text)
    numbers, value, shift = [], 0, 0
    for byte in data:
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            numbers.append(value)
            value, shift = 0, 0
    values, lengths = numbers[0::2], numbers[1::2]
    return np.repeat(np.array(values, dtype=np.int64), lengths).reshape(height, width)


def _kept(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per pixel: ``b`` there is the segment of ``b`` that ``a``'s segment overlaps most."""
    width = int(b.max(initial=0)) + 1
    pairs = a * width + b
    unique, inverse, counts = np.unique(pairs.reshape(-1), return_inverse=True, return_counts=True)
    first = unique // width
    order = np.lexsort((counts, first))  # per segment of a, its largest overlap last (ties: the larger id)
    last = np.ones(len(order), dtype=bool)
    last[:-1] = first[order][1:] != first[order][:-1]
    best = np.zeros(len(unique), dtype=bool)
    best[order[last]] = True
    return best[inverse.reshape(-1)].reshape(a.shape)


def disagreement(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The pixels where two id maps disagree up to a renaming of their ids: outside the largest overlap of
    each segment of one with a segment of the other, either way (the pixels whose share
    :func:`oanet.evaluation.differences.panoptic_map_difference` measures)."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    if a.shape != b.shape:
        raise ValueError(f"id maps differ in size: {a.shape} vs {b.shape}")
    if a.size == 0:
        return np.zeros(a.shape, dtype=bool)
    return ~(_kept(a, b) & _kept(b, a))


def jpeg_bytes(picture: Image.Image | np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    if isinstance(picture, np.ndarray):
        picture = Image.fromarray(picture)
    buffer = io.BytesIO()
    picture.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def save_jpeg(path: Path, picture: Image.Image | np.ndarray, quality: int = JPEG_QUALITY) -> Path:
    return atomic_write_bytes(path, jpeg_bytes(picture, quality))


def color_table(segments: Sequence[Mapping], categories: Mapping[int, Mapping]) -> np.ndarray:
    """``(K + 1) x 3`` uint8 colours of an index map's values: void, then each segment's
    (``viz.segment_colors``)."""
    from oanet import viz

    colors = viz.segment_colors(segments, categories)
    return np.array([viz.VOID_COLOR, *(colors[int(s["id"])] for s in segments)], dtype=np.uint8).reshape(-1, 3)


def panel(rgb: np.ndarray, index: np.ndarray, segments: Sequence[Mapping], categories: Mapping[int, Mapping],
          alpha: float = 0.55) -> Image.Image:
    """The segments of an index map (:func:`index_map` over ``segments``, at the picture's size) blended over
    ``rgb`` by ``alpha`` (1: the colours alone, where there is no image), outlined in white. Unnamed: the
    page names the segment under the mouse. Table lookups and Pillow's blend, no pass per segment."""
    from oanet import viz

    colors = color_table(segments, categories)[index]
    out = np.array(Image.blend(Image.fromarray(rgb), Image.fromarray(colors), alpha)) if alpha < 1 else colors
    void = index == 0
    out[void] = rgb[void]
    out[viz.segment_boundaries(index)] = viz.OUTLINE_COLOR
    return Image.fromarray(out)


def disagreement_panel(rgb: np.ndarray, mask: np.ndarray, index: np.ndarray, segments: Sequence[Mapping],
                       categories: Mapping[int, Mapping]) -> Image.Image:
    """The image in grey, and in the colours of ``index``'s segments (e.g. the SRM order's) the pixels of
    ``mask`` where two orders disagree, outlined in white; all three at the picture's size."""
    from oanet import viz

    image = Image.fromarray(rgb)
    grey = image.convert("L").point(lambda v: int(v * 0.45 + 40)).convert("RGB")
    coloured = Image.blend(image, Image.fromarray(color_table(segments, categories)[index]), 0.75)
    out = np.array(Image.composite(coloured, grey, Image.fromarray(mask.astype(np.uint8) * 255)))
    out[viz.segment_boundaries(mask.astype(np.uint8)) & mask] = viz.OUTLINE_COLOR
    return Image.fromarray(out)


def read_rgb(path: Optional[Path], shape: tuple[int, int]) -> Optional[np.ndarray]:
    """The image at ``path`` as H x W x 3 uint8; None where there is none, it cannot be read, or its size
    is not the id map's ``shape`` (the panels then show the segments' colours alone)."""
    if path is None:
        return None
    try:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"))
    except (OSError, ValueError):
        return None
    return rgb if rgb.shape[:2] == tuple(shape) else None
