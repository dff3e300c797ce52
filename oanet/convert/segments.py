"""Label maps -> panoptic segments, vectorised; and the label PNG readers of the converters. No torch.

Every converter reduces an image to a *key map*: one integer per pixel that is equal exactly where
two pixels belong to the same segment (a Cityscapes instanceIds value, ``class * 256 + instance`` of a
2-channel PNG, ...). :func:`key_segments` takes that map apart by horizontal runs: a label map of
2048x1024 has ~10^4 runs for 2*10^6 pixels, so the distinct keys, their areas, their boxes and the
output id map all come from arrays of runs (``np.unique``, ``bincount``, ``minimum.at``,
``np.repeat``) after one comparison pass over the pixels, with no loop over segments.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from oanet.data.png_io import PNG_SIGNATURE, decode_id_png
from oanet.errors import DataError

# PNG colour types (IHDR) as Pillow names the modes they decode to; for error messages.
_COLOUR_TYPES = {0: "greyscale", 2: "RGB", 3: "palette", 4: "greyscale+alpha", 6: "RGBA"}
GREY = ("greyscale", 8), ("greyscale", 16), ("palette", 8)
GREY_16 = ("greyscale", 8), ("greyscale", 16)
COLOUR = ("RGB", 8), ("RGBA", 8)


@dataclass(frozen=True)
class KeySegments:
    """The distinct keys of a key map with their pixel statistics, in increasing key order."""

    keys: np.ndarray  # (K,) the distinct keys, sorted
    areas: np.ndarray  # (K,) int64 pixel counts
    boxes: np.ndarray  # (K, 4) int64 COCO [x, y, w, h] (inclusive extent, as the COCO converters compute it)
    run_key: np.ndarray  # (R,) index into ``keys`` of each horizontal run, row-major
    run_length: np.ndarray  # (R,) pixels of each run
    shape: tuple[int, int]

    def id_map(self, segment_id_of_key: np.ndarray) -> np.ndarray:
        """The HxW uint32 map with ``segment_id_of_key[k]`` on the pixels of key ``k`` (0: void).
        Runs are row-major and cover the image, so repeating each run's id rebuilds the map."""
        ids = np.asarray(segment_id_of_key, dtype=np.uint32)[self.run_key]
        return np.repeat(ids, self.run_length).reshape(self.shape)

    def pixels(self, mask_of_key: np.ndarray) -> int:
        """Pixels of the keys where ``mask_of_key`` is True."""
        return int(self.areas[np.asarray(mask_of_key, dtype=bool)].sum())


def key_segments(key_map: np.ndarray) -> KeySegments:
    """Distinct keys, areas and boxes of a 2-D integer key map (see the module docstring)."""
    key_map = np.ascontiguousarray(key_map)
    if key_map.ndim != 2 or key_map.size == 0:
        raise ValueError(f"expected a non-empty 2-D key map, got shape {key_map.shape}")
    height, width = key_map.shape
    flat = key_map.reshape(-1)
    change = np.empty(flat.size, dtype=bool)
    change[0] = True
    np.not_equal(flat[1:], flat[:-1], out=change[1:])
    change[::width] = True  # a run never continues onto the next row
    starts = np.flatnonzero(change)
    lengths = np.diff(np.append(starts, flat.size))
    keys, run_key = np.unique(flat[starts], return_inverse=True)
    run_key = run_key.reshape(-1)
    ys, xs = np.divmod(starts, width)
    x_last = xs + lengths - 1
    k = len(keys)
    areas = np.bincount(run_key, weights=lengths, minlength=k).astype(np.int64)
    x1, y1 = np.full(k, width, np.int64), np.full(k, height, np.int64)
    x2, y2 = np.zeros(k, np.int64), np.zeros(k, np.int64)
    np.minimum.at(x1, run_key, xs)
    np.minimum.at(y1, run_key, ys)
    np.maximum.at(x2, run_key, x_last)
    np.maximum.at(y2, run_key, ys)
    boxes = np.stack([x1, y1, x2 - x1 + 1, y2 - y1 + 1], axis=1)
    return KeySegments(keys, areas, boxes, run_key, lengths, (height, width))


def segment_records(ids: np.ndarray, category_ids: np.ndarray, iscrowd: np.ndarray, stats: KeySegments,
                    rows: np.ndarray) -> list[dict]:
    """COCO ``segments_info`` entries for the keys ``rows`` of ``stats`` (in that order)."""
    return [
        {"id": int(ids[i]), "category_id": int(category_ids[i]), "area": int(stats.areas[k]),
         "bbox": [int(v) for v in stats.boxes[k]], "iscrowd": int(iscrowd[i])}
        for i, k in enumerate(np.asarray(rows, dtype=np.int64).tolist())
    ]


def count_drop(dropped: dict, reason: str, segments: int, pixels: int) -> None:
    """Add to a per-image tally of what was dropped and why: ``{reason: [segments, pixels]}``."""
    if segments or pixels:
        entry = dropped.setdefault(reason, [0, 0])
        entry[0] += int(segments)
        entry[1] += int(pixels)


# --------------------------------------------------------------------------------------------
# reading label PNGs


def read_bytes(path: Path, what: str) -> bytes:
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None


def png_kind(data: bytes, path: Path, what: str) -> tuple[str, int, int, int]:
    """``(colour kind, bit depth, width, height)`` from a PNG's IHDR, without decoding it."""
    if not data.startswith(PNG_SIGNATURE) or len(data) < 33 or data[12:16] != b"IHDR":
        raise DataError(f"{path}: the {what} is not a PNG file")
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    return _COLOUR_TYPES.get(colour, f"colour type {colour}"), depth, width, height


def _check_kind(data: bytes, path: Path, what: str, accepted: tuple) -> tuple[str, int]:
    kind, depth, _, _ = png_kind(data, path, what)
    if (kind, depth) not in accepted:
        wanted = " or ".join(f"{k} {d}-bit" for k, d in accepted)
        raise DataError(f"{path}: the {what} is a {kind} {depth}-bit PNG; expected {wanted}")
    return kind, depth


def read_label_png(path: Path, what: str, accepted: tuple = GREY) -> np.ndarray:
    """A single-channel label PNG (greyscale 8/16-bit or palette indices) as a 2-D integer array;
    DataError naming the file when it is missing, not a PNG, or of a kind outside ``accepted``."""
    from PIL import Image

    path = Path(path)
    data = read_bytes(path, what)
    _check_kind(data, path, what, accepted)
    try:
        with Image.open(io.BytesIO(data)) as img:
            array = np.asarray(img)
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: the {what} is not a readable PNG ({exc})") from None
    if array.ndim != 2:
        raise DataError(f"{path}: the {what} decoded to shape {array.shape}; expected one channel")
    return array


def read_colour_png(path: Path, what: str) -> np.ndarray:
    """An 8-bit RGB(A) PNG as ``R + 256 G + 256^2 B`` (uint32 HxW), by oanet's fast panoptic decoder."""
    path = Path(path)
    data = read_bytes(path, what)
    _check_kind(data, path, what, COLOUR)
    return decode_id_png(data, path)


def image_size(path: Path, what: str = "image") -> tuple[int, int]:
    """``(width, height)`` of an image file from its header (no decoding)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    try:
        with Image.open(path) as img:
            return img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: not a readable {what} ({exc})") from None


def check_same_size(array: np.ndarray, size: tuple[int, int] | None, path: Path, other: str) -> None:
    """DataError when the label map at ``path`` is not ``size`` (width, height) of ``other``."""
    if size is not None and (array.shape[1], array.shape[0]) != tuple(size):
        raise DataError(f"{path}: is {array.shape[1]}x{array.shape[0]} but {other} is {size[0]}x{size[1]}")
