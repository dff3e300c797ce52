"""Panoptic PNG input/output with clear errors. No torch here.

Decoding PNGs is most of the time of a PQ evaluation, so every reader in oanet goes through
``read_id_png`` (or ``read_scanlines``, whose scanlines the PQ evaluator counts a GT/prediction pair
from, and ``scanlines_to_ids``): one place to choose the fastest decoder. Panoptic PNGs are 8-bit RGB,
non-interlaced; for those (and RGBA) the IDAT stream is inflated with zlib-ng (~10x faster
than zlib, which is ~90% of libspng's and Pillow's decode time on these files) and the C extension
``oanet._ext`` undoes the row filters straight into ids or segment rows. Any other PNG, or a machine
where the extension was not built, goes to ``pyspng`` (libspng, optional) and then Pillow.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from oanet import _ext
from oanet.errors import DataError
from oanet.fileio import atomic_write_bytes

try:
    from zlib_ng import zlib_ng as _zlib
except ImportError:  # a platform without zlib-ng wheels: same bytes, slower
    import zlib as _zlib

try:
    import pyspng
except ImportError:  # optional: Pillow decodes everything, only slower
    pyspng = None

OFFSET = 256 * 256 * 256  # one more than the largest segment id a 24-bit PNG can hold
_ID_MASK = np.uint32(0xFFFFFF)


def rgb2id(color: np.ndarray) -> np.ndarray:
    """Segment ids from an RGB panoptic image (id = R + 256*G + 256^2*B)."""
    color = np.asarray(color)
    if color.ndim == 3:
        color = color.astype(np.uint32)
        return color[..., 0] + 256 * color[..., 1] + 256 * 256 * color[..., 2]
    return color.astype(np.uint32)


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """RGB uint8 image from segment ids (inverse of rgb2id)."""
    rgb = np.empty(np.shape(ids) + (3,), dtype=np.uint8)
    _id_bytes_into(ids, rgb)
    return rgb


def _id_bytes_into(ids: np.ndarray, rgb: np.ndarray) -> None:
    # The low three bytes of each little-endian uint32 are R, G, B: three byte-plane copies, no shifts
    # or masks (a third faster than computing them).
    planes = np.ascontiguousarray(ids, dtype="<u4").view(np.uint8).reshape(np.shape(ids) + (4,))
    for channel in range(3):
        rgb[..., channel] = planes[..., channel]


def _ids_from_rgba(rgba: np.ndarray) -> np.ndarray:
    # Little-endian RGBA bytes read as one uint32 are R + 256 G + 256^2 B + 256^3 A; masking A off
    # gives the COCO id in one pass instead of rgb2id's three widening passes.
    ids = np.ascontiguousarray(rgba).view("<u4")[..., 0]
    np.bitwise_and(ids, _ID_MASK, out=ids)
    return ids.astype(np.uint32, copy=False)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHUNK_HEAD = struct.Struct(">I4s")  # length, type; the data and a 4-byte CRC follow
_IHDR = struct.Struct(">IIBBBBB")  # width, height, bit depth, colour type, compression, filter, interlace
_CHANNELS_OF_COLOUR_TYPE = {2: 3, 6: 4}  # RGB, RGBA: the kinds the C unfilter handles
_MAX_FAST_PIXELS = 1 << 28  # above this, Pillow's decompression-bomb check decides


@dataclass(frozen=True)
class Scanlines:
    """The inflated image data of an 8-bit RGB(A) non-interlaced PNG: per line a filter byte + pixels."""

    width: int
    height: int
    channels: int
    data: bytes


def inflate_scanlines(data: bytes, name: str | Path) -> Optional[Scanlines]:
    """The scanlines of an 8-bit RGB/RGBA non-interlaced PNG; None for any other PNG or non-PNG (the
    general decoders take those, and word the error of a non-PNG). DataError names a corrupt one.

    Chunk CRCs are not checked: the zlib stream's own Adler-32 already catches corrupt image data.
    """
    if not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR" or len(data) < 33:
        return None
    width, height, depth, colour, compression, filtering, interlace = _IHDR.unpack_from(data, 16)
    channels = _CHANNELS_OF_COLOUR_TYPE.get(colour)
    if channels is None or depth != 8 or (compression, filtering, interlace) != (0, 0, 0):
        return None
    if not 0 < width * height <= _MAX_FAST_PIXELS:  # a bogus size: let Pillow word it (or bound a huge one)
        return None
    idat, pos, end = [], 8, len(data)
    view = memoryview(data)
    while pos + 8 <= end:
        length, kind = _CHUNK_HEAD.unpack_from(data, pos)
        if pos + 12 + length > end:
            raise DataError(f"{name}: truncated PNG ({kind.decode('latin-1')!r} chunk cut off)")
        if kind == b"IDAT":
            idat.append(view[pos + 8 : pos + 8 + length])
        elif kind == b"IEND":
            break
        pos += 12 + length
    size = height * (1 + width * channels)
    try:
        # A little room past the expected size: with none, inflate grows the buffer to find the end of
        # the stream, and the copy into fresh pages costs as much as the inflating.
        stream = idat[0] if len(idat) == 1 else b"".join(idat)  # one IDAT (small PNGs): no copy
        inflated = _zlib.decompress(stream, bufsize=size + 64)
    except _zlib.error as exc:
        raise DataError(f"{name}: corrupt PNG image data ({exc})") from None
    if len(inflated) < size:  # more is tolerated, as libpng does
        raise DataError(f"{name}: truncated PNG image data ({len(inflated)} of {size} bytes)")
    return Scanlines(width, height, channels, inflated)


def scanlines_to_ids(lines: Scanlines, name: str | Path) -> np.ndarray:
    """Segment ids (uint32, HxW) of inflated scanlines, by the C extension (which must be built)."""
    ids = np.empty((lines.height, lines.width), dtype=np.uint32)
    try:
        _ext.speedups.scanlines_to_ids(lines.data, lines.width, lines.height, lines.channels, ids)
    except ValueError as exc:  # truncated image data, bad filter byte
        raise DataError(f"{name}: corrupt PNG ({exc.args[-1]})") from None
    return ids


def _decode_with_c(data: bytes, name: str | Path) -> Optional[np.ndarray]:
    lines = inflate_scanlines(data, name) if _ext.speedups is not None else None
    if lines is None:
        return None
    return scanlines_to_ids(lines, name)


def _decode_with_pillow(data: bytes, name: str | Path) -> np.ndarray:
    import io

    from PIL import Image, UnidentifiedImageError  # here: `oanet pq` on panoptic PNGs never needs Pillow

    if not data:
        raise DataError(f"{name}: empty file (0 bytes), not a PNG")
    try:
        with Image.open(io.BytesIO(data)) as img:
            # convert("RGBA") drops a palette or grey level to colours, like the COCO API's RGB read.
            rgba = np.array(img.convert("RGBA"))
    except UnidentifiedImageError:
        raise DataError(f"{name}: not a readable PNG (not an image format Pillow knows)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{name}: not a readable PNG ({exc})") from None
    return rgba


def decode_id_png(data: bytes, name: str | Path = "<bytes>") -> np.ndarray:
    """Segment ids (uint32, HxW) of an RGB panoptic PNG held in memory; ``name`` goes in errors."""
    ids = _decode_with_c(data, name)
    if ids is not None:
        return ids
    rgba = None
    if pyspng is not None:
        try:
            rgba = pyspng.load(data, "RGBA")
        except Exception:  # noqa: BLE001 - let Pillow decode it or word the error
            rgba = None
    if rgba is None:
        # Pillow returns an image whose data stream ends early without a word (unlike libspng): check
        # that first where we can (RGB/RGBA).
        inflate_scanlines(data, name)
        rgba = _decode_with_pillow(data, name)
    if rgba.dtype != np.uint8 or rgba.ndim != 3 or rgba.shape[2] != 4:
        raise DataError(f"{name}: unsupported PNG pixel format (decoded to {rgba.dtype} {rgba.shape})")
    return _ids_from_rgba(rgba)


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: panoptic PNG not found")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None


def read_scanlines(path: str | Path) -> Optional[Scanlines]:
    """``inflate_scanlines`` of a PNG file: None for a kind of PNG that the C extension does not take."""
    path = Path(path)
    return inflate_scanlines(_read_bytes(path), path)


def read_id_png(path: str | Path) -> np.ndarray:
    """Segment ids (uint32, HxW) of an RGB panoptic PNG; DataError names the file on any problem."""
    path = Path(path)
    return decode_id_png(_read_bytes(path), path)


def encode_id_png(ids: np.ndarray, level: int = 3) -> bytes:
    """Segment ids as the bytes of an 8-bit RGB panoptic PNG (id = R + 256 G + 256^2 B).

    Every row gets filter type 0 and the stream is deflated by zlib-ng: panoptic maps are long runs of
    one colour, which deflate finds without filtering, so the files are about Pillow's size (its
    adaptive filters and zlib at level 6 take ~10x longer: 5 ms against 0.6 ms at 256x256, 10 against
    0.9 at 640x480). Any PNG reader reads them.
    """
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"expected a 2-D id map, got shape {ids.shape}")
    low, high = (int(ids.min()), int(ids.max())) if ids.size else (0, 0)
    if low < 0 or high > 0xFFFFFF:
        # id2rgb would wrap such ids silently into other segments' colours.
        raise ValueError(f"segment ids must be in 0..{0xFFFFFF}, got {low}..{high}")
    height, width = ids.shape
    rows = np.zeros((height, 1 + 3 * width), dtype=np.uint8)  # a 0 filter byte, then the row's RGB
    if high < 256:  # a fusion's ids 1..K: only the red byte is non-zero
        rows[:, 1::3] = ids
    else:
        _id_bytes_into(ids, rows[:, 1:].reshape(height, width, 3))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", _zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", _zlib.compress(rows, level))
            + chunk(b"IEND", b""))


def write_id_png(path: str | Path, ids: np.ndarray) -> None:
    """Write segment ids as an RGB panoptic PNG (id = R + 256 G + 256^2 B), atomically."""
    try:
        data = encode_id_png(ids)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    atomic_write_bytes(path, data)
