"""The C PNG decoder (oanet._ext) against Pillow, and PQ with and without it.

PNGs with each row filter are crafted here (numpy filters + zlib), since Pillow picks filters itself.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from oanet import _ext
from oanet.data.png_io import read_id_png
from oanet.errors import DataError
from perturb import write_perturbed_predictions
from oanet.evaluation.pq import pq_compute

needs_ext = pytest.mark.skipif(_ext.speedups is None, reason="C extension not built (no compiler at install)")

NONE, SUB, UP, AVERAGE, PAETH = range(5)


# --------------------------------------------------------------------------------------------------
# Crafting PNGs


def _paeth(left: np.ndarray, up: np.ndarray, up_left: np.ndarray) -> np.ndarray:
    a, b, c = (v.astype(np.int16) for v in (left, up, up_left))
    pa, pb, pc = np.abs(b - c), np.abs(a - c), np.abs(a + b - 2 * c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c)).astype(np.uint8)


def filtered_scanlines(pixels: np.ndarray, filters: tuple[int, ...]) -> bytes:
    """PNG scanlines of an (H, W, C) uint8 image; line y uses filters[y % len(filters)]."""
    height, width, channels = pixels.shape
    lines = pixels.reshape(height, width * channels)
    out = np.empty((height, 1 + width * channels), dtype=np.uint8)
    for y in range(height):
        line = lines[y]
        up = lines[y - 1] if y else np.zeros_like(line)
        left = np.concatenate([np.zeros(channels, np.uint8), line[:-channels]])
        up_left = np.concatenate([np.zeros(channels, np.uint8), up[:-channels]])
        kind = filters[y % len(filters)]
        average = ((left.astype(np.uint16) + up) // 2).astype(np.uint8)
        prediction = [np.zeros_like(line), left, up, average, _paeth(left, up, up_left)][kind]
        out[y, 0] = kind
        out[y, 1:] = line - prediction  # uint8 arithmetic wraps, as PNG's does
    return out.tobytes()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(pixels: np.ndarray, filters=(NONE,), idat_chunks: int = 1, scanlines: bytes | None = None) -> bytes:
    """An 8-bit RGB (C=3) or RGBA (C=4) PNG; ``scanlines`` overrides the filtered data (to corrupt it)."""
    height, width, channels = pixels.shape
    header = struct.pack(">IIBBBBB", width, height, 8, {3: 2, 4: 6}[channels], 0, 0, 0)
    stream = zlib.compress(scanlines if scanlines is not None else filtered_scanlines(pixels, filters))
    step = -(-len(stream) // idat_chunks)
    idat = b"".join(_chunk(b"IDAT", stream[k : k + step]) for k in range(0, len(stream), step))
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + idat + _chunk(b"IEND", b"")


def label_map(height: int, width: int, seed: int) -> np.ndarray:
    """uint32 ids like a panoptic map: rectangles over a background, a few noisy pixels, full 24 bits."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((height, width), dtype=np.uint32)
    for segment_id in rng.integers(1, 256**3, size=12):
        y, x = rng.integers(0, height), rng.integers(0, width)
        ids[y : y + rng.integers(1, height), x : x + rng.integers(1, width)] = segment_id
    noise = rng.random((height, width)) < 0.02
    ids[noise] = rng.integers(0, 256**3, size=int(noise.sum()))
    return ids


def rgb_of(ids: np.ndarray) -> np.ndarray:
    return np.stack([(ids >> shift) & 255 for shift in (0, 8, 16)], axis=-1).astype(np.uint8)


def pillow_ids(data_or_path) -> np.ndarray:
    import io

    source = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else data_or_path
    with Image.open(source) as img:
        rgb = np.array(img.convert("RGB")).astype(np.uint32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


@pytest.fixture(params=["C", "pure"])
def decoder(request, monkeypatch):
    """Runs a test with the C extension and again with the pure path (pyspng/Pillow, numpy)."""
    if request.param == "C" and _ext.speedups is None:
        pytest.skip("C extension not built")
    if request.param == "pure":
        monkeypatch.setattr(_ext, "speedups", None)
    return request.param


# --------------------------------------------------------------------------------------------------
# Decoding


def test_real_coco_pngs_decode_like_pillow(coco16, decoder):
    pngs = sorted((coco16 / "annotations" / "panoptic_val2017").glob("*.png"))
    assert len(pngs) == 16
    for path in pngs:
        assert np.array_equal(read_id_png(path), pillow_ids(path)), path.name


@pytest.mark.parametrize(
    "filters", [(NONE,), (SUB,), (UP,), (AVERAGE,), (PAETH,), (PAETH, UP, SUB, AVERAGE, NONE, UP, PAETH)]
)
@pytest.mark.parametrize("channels", [3, 4])
def test_every_filter_decodes_exactly(tmp_path, decoder, filters, channels):
    ids = label_map(37, 53, seed=len(filters) + channels)
    pixels = rgb_of(ids)
    if channels == 4:  # alpha is not part of the id
        alpha = np.random.default_rng(1).integers(0, 256, size=ids.shape, dtype=np.uint8)
        pixels = np.concatenate([pixels, alpha[..., None]], axis=-1)
    path = tmp_path / "crafted.png"
    path.write_bytes(png_bytes(pixels, filters, idat_chunks=3))
    assert np.array_equal(pillow_ids(path), ids)  # the crafted PNG itself is right
    assert np.array_equal(read_id_png(path), ids)


@pytest.mark.parametrize("settings", [{"compress_level": 0}, {"compress_level": 1}, {"optimize": True}])
def test_pillow_written_pngs_decode_exactly(tmp_path, decoder, settings):
    ids = label_map(64, 80, seed=3)
    Image.fromarray(rgb_of(ids)).save(tmp_path / "ids.png", **settings)
    assert np.array_equal(read_id_png(tmp_path / "ids.png"), ids)


def test_other_png_kinds_go_to_the_general_decoders(tmp_path, decoder):
    ids = label_map(20, 30, seed=4)
    rgb = rgb_of(ids)
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(tmp_path / "p.png")
    Image.fromarray(rgb).save(tmp_path / "interlaced.png", interlace=1)
    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.png")
    for name in ("p.png", "interlaced.png", "grey.png"):
        assert np.array_equal(read_id_png(tmp_path / name), pillow_ids(tmp_path / name)), name


# --------------------------------------------------------------------------------------------------
# Corrupt files: DataError naming the file, on either path


def _corrupt_pngs() -> dict[str, bytes]:
    pixels = rgb_of(label_map(16, 16, seed=5))
    good = png_bytes(pixels, (UP,))
    two_idats = png_bytes(pixels, (UP,), idat_chunks=2)
    lines = bytearray(filtered_scanlines(pixels, (UP,)))
    bad_filter = bytearray(lines)
    bad_filter[5 * (1 + 16 * 3)] = 7  # line 5: no such filter type
    idat_at = good.index(b"IDAT") + 4
    flipped = bytearray(good)
    flipped[idat_at + 10] ^= 0xFF
    return {
        "cut_in_idat.png": good[: idat_at + 20],
        "cut_between_idats.png": two_idats[: two_idats.index(b"IDAT", two_idats.index(b"IDAT") + 4) - 4],
        "flipped_byte.png": bytes(flipped),
        "bad_filter.png": png_bytes(pixels, scanlines=bytes(bad_filter)),
        "short_data.png": png_bytes(pixels, scanlines=bytes(lines[: -(1 + 16 * 3)])),  # one line missing
    }


@pytest.mark.parametrize("name", sorted(_corrupt_pngs()))
def test_corrupt_pngs_raise_data_error_naming_the_file(tmp_path, decoder, name):
    path = tmp_path / name
    path.write_bytes(_corrupt_pngs()[name])
    with pytest.raises(DataError, match=name):
        read_id_png(path)


def _write_pq_case(root: Path, gt_png: bytes, pred_png: bytes) -> tuple:
    import json

    (root / "gt").mkdir()
    (root / "pred").mkdir()
    (root / "gt" / "1.png").write_bytes(gt_png)
    (root / "pred" / "1.png").write_bytes(pred_png)
    segments = [{"id": int(i), "category_id": 1, "area": 1} for i in range(1, 4)]
    ann = {"image_id": 1, "file_name": "1.png", "segments_info": segments}
    (root / "gt.json").write_text(json.dumps({"categories": [{"id": 1, "isthing": 1}], "annotations": [ann]}))
    (root / "pred.json").write_text(json.dumps({"annotations": [ann]}))
    return root / "gt.json", root / "gt", root / "pred.json", root / "pred"


@pytest.mark.parametrize("broken", ["gt", "pred"])
def test_pq_names_the_corrupt_png(tmp_path, decoder, broken):
    ids = np.repeat(np.arange(1, 4, dtype=np.uint32), 16).reshape(3, 16).repeat(4, axis=0)
    good = png_bytes(rgb_of(ids), (PAETH,))
    bad = _corrupt_pngs()["bad_filter.png"]
    gt_json, gt_dir, pred_json, pred_dir = _write_pq_case(
        tmp_path, bad if broken == "gt" else good, bad if broken == "pred" else good
    )
    role = "ground truth" if broken == "gt" else "prediction for"
    with pytest.raises(DataError, match=rf"{broken}/1\.png \({role}.*image 1\): .*"):
        pq_compute(gt_json, gt_dir, pred_json, pred_dir, workers=0, progress=False)


# --------------------------------------------------------------------------------------------------
# PQ: both paths give the same numbers, bit for bit


@needs_ext
def test_pq_is_identical_with_and_without_the_extension(coco16, tmp_path, monkeypatch):
    annotations = coco16 / "annotations"
    paths = write_perturbed_predictions(
        annotations / "panoptic_val2017.json", annotations / "panoptic_val2017", tmp_path, seed=3
    )
    with_c = [pq_compute(*paths, workers=w, progress=False).to_dict() for w in (0, 2)]
    monkeypatch.setattr(_ext, "speedups", None)
    pure = [pq_compute(*paths, workers=w, progress=False).to_dict() for w in (0, 2)]
    assert with_c[0] == with_c[1] == pure[0] == pure[1]
    assert 0.1 < with_c[0]["All"]["pq"] < 0.9


@needs_ext
def test_pair_counts_match_numpy_on_every_filter():
    from oanet.evaluation.pq import confusion

    gt_ids, pred_ids = label_map(29, 41, seed=6), label_map(29, 41, seed=7)
    gt_keys = np.unique(gt_ids[gt_ids > 0]).astype(np.uint32)
    pred_keys = np.unique(pred_ids[pred_ids > 0]).astype(np.uint32)
    rows = [np.searchsorted(np.r_[0, keys], ids) for ids, keys in ((gt_ids, gt_keys), (pred_ids, pred_keys))]
    expected = confusion(rows[0], rows[1], len(gt_keys), len(pred_keys))
    for gt_filters, pred_filters in [((PAETH,), (SUB,)), ((UP, AVERAGE), (NONE, PAETH, UP))]:
        gt_lines = filtered_scanlines(rgb_of(gt_ids), gt_filters)
        rgba = np.concatenate([rgb_of(pred_ids), np.full(pred_ids.shape + (1,), 255, np.uint8)], axis=-1)
        pred_lines = filtered_scanlines(rgba, pred_filters)
        counts = np.zeros_like(expected)
        complete = _ext.speedups.pair_counts(gt_lines, 3, gt_keys, pred_lines, 4, pred_keys, 41, 29, counts)
        assert complete and np.array_equal(counts, expected)
    counts = np.zeros_like(expected)  # an id the prediction does not declare
    assert not _ext.speedups.pair_counts(gt_lines, 3, gt_keys, pred_lines, 4, pred_keys[1:], 41, 29, counts[:, 1:].copy())


def _blocky_label_map(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Runs that continue, shift and end from line to line, repeated lines, single-pixel segments."""
    ids = np.zeros((height, width), dtype=np.uint32)
    for segment_id in rng.integers(1, 256**3, size=int(rng.integers(1, 9))):
        y, x = rng.integers(0, height), rng.integers(0, width)
        h, w = rng.integers(1, height + 1), rng.integers(1, width + 1)
        slant = rng.integers(-2, 3)
        for dy in range(min(h, height - y)):
            x0 = int(np.clip(x + slant * dy, 0, width - 1))
            ids[y + dy, x0 : x0 + w] = segment_id
    ids = ids[np.sort(rng.integers(0, height, size=height))]  # repeated lines
    noise = rng.random((height, width)) < 0.01
    ids[noise] = rng.integers(0, 256**3, size=int(noise.sum()))
    return ids


@needs_ext
@pytest.mark.parametrize("seeds", [range(100), range(100, 200)])
def test_random_filters_decode_and_count_exactly(seeds):
    """Every filter on every line, in any order, at any size: ids and pair counts as numpy gives them."""
    for seed in seeds:
        _check_random_case(np.random.default_rng(seed))


def _check_random_case(rng: np.random.Generator) -> None:
    from oanet.evaluation.pq import confusion

    height, width = int(rng.integers(1, 30)), int(rng.integers(1, 90))
    maps, lines, keys = [], [], []
    for _ in range(2):
        ids = _blocky_label_map(rng, height, width)
        pixels = rgb_of(ids)
        channels = int(rng.choice([3, 4]))
        if channels == 4:  # alpha that changes inside segments: a run boundary that is no id change
            alpha = np.where(rng.random(ids.shape) < 0.05, 0, 255).astype(np.uint8)
            pixels = np.concatenate([pixels, alpha[..., None]], axis=-1)
        filters = tuple(int(f) for f in rng.integers(0, 5, size=height))
        data = filtered_scanlines(pixels, filters)
        out = np.empty((height, width), dtype=np.uint32)
        _ext.speedups.scanlines_to_ids(data, width, height, channels, out)
        assert np.array_equal(out, ids), filters
        maps.append(ids)
        lines.append((data, channels))
        keys.append(np.unique(ids[ids > 0]).astype(np.uint32))
    rows = [np.searchsorted(np.r_[0, k], ids) for ids, k in zip(maps, keys)]
    expected = confusion(rows[0], rows[1], len(keys[0]), len(keys[1]))
    counts = np.zeros_like(expected)
    (gt_data, gt_channels), (pred_data, pred_channels) = lines
    assert _ext.speedups.pair_counts(
        gt_data, gt_channels, keys[0], pred_data, pred_channels, keys[1], width, height, counts
    )
    assert np.array_equal(counts, expected)


@needs_ext
def test_matching_in_c_gives_the_bits_of_numpy():
    """pair_stats (count and match in C) against confusion + match_segments, on random maps with crowd
    regions, void, several segments per category and IoUs around 0.5: the same float64 bits."""
    from oanet.evaluation.pq import Segments, confusion, match_segments

    n_categories = 5
    for seed in range(60):
        rng = np.random.default_rng(seed)
        height, width = int(rng.integers(1, 24)), int(rng.integers(1, 40))
        gt_ids = _blocky_label_map(rng, height, width)
        pred_ids = np.where(rng.random((height, width)) < 0.85, gt_ids, _blocky_label_map(rng, height, width))
        tables = []
        for ids, is_gt in ((gt_ids, True), (pred_ids, False)):
            keys = np.unique(ids[ids > 0]).astype(np.uint32)
            category = rng.integers(0, n_categories, size=len(keys)).astype(np.int64)
            crowd = (rng.random(len(keys)) < 0.2) & is_gt
            pixels = np.bincount(np.searchsorted(keys, ids[ids > 0]), minlength=len(keys))
            area = (pixels + rng.integers(-1, 3, size=len(keys)).clip(1 - pixels)).astype(np.float64)
            if seed % 2:  # fractional areas: the order of the union's terms shows in the bits
                area += rng.random(len(keys)) / 3
            crowd_rows = {int(category[k]): k for k in np.flatnonzero(crowd)[::-1]}  # not the last: any one
            tables.append(Segments(
                ids=keys, category=category, iscrowd=crowd, area=area,
                crowd_category=np.array(list(crowd_rows), dtype=np.int64),
                crowd_row=np.array(list(crowd_rows.values()), dtype=np.int64),
            ))
        gt, pred = tables
        rows = [np.searchsorted(np.r_[0, s.ids], ids) for ids, s in ((gt_ids, gt), (pred_ids, pred))]
        expected = match_segments(confusion(rows[0], rows[1], len(gt.ids), len(pred.ids)), gt, pred, n_categories)
        stats = np.full((4, n_categories), np.nan)
        complete = _ext.speedups.pair_stats(
            filtered_scanlines(rgb_of(gt_ids), (PAETH, UP, SUB)), 3, gt.ids,
            filtered_scanlines(rgb_of(pred_ids), (UP, PAETH)), 3, pred.ids, width, height,
            gt.category, gt.iscrowd, gt.area, pred.category, gt.crowd_category, gt.crowd_row, stats,
        )
        assert complete
        assert np.array_equal(stats.view(np.int64), expected.view(np.int64)), seed


@needs_ext
def test_pair_stats_leaves_undeclared_ids_and_absent_segments_to_the_general_path():
    ids = np.array([[1, 1, 2, 0]], dtype=np.uint32)
    lines = filtered_scanlines(rgb_of(ids), (SUB,))
    keys = np.array([1, 2], dtype=np.uint32)

    def stats_of(gt_keys, pred_keys):
        n = len(gt_keys)
        return _ext.speedups.pair_stats(
            lines, 3, gt_keys, lines, 3, pred_keys, 4, 1, np.zeros(n, np.int64), np.zeros(n, bool),
            np.ones(n), np.zeros(len(pred_keys), np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64),
            np.zeros((4, 1)),
        )

    assert stats_of(keys, keys)
    assert not stats_of(keys[:1], keys)  # id 2 in the GT PNG is not declared
    assert not stats_of(keys, np.array([1, 2, 3], dtype=np.uint32))  # declared 3 has no pixel
    with pytest.raises(TypeError, match="wrong type or size"):
        _ext.speedups.pair_stats(
            lines, 3, keys, lines, 3, keys, 4, 1, np.zeros(2, np.int64), np.zeros(2, bool), np.ones(2),
            np.array([0, 7]), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((4, 1)),
        )  # category 7 of 1
