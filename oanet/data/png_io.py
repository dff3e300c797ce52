"""Panoptic PNG input/output with clear errors. No torch here.

Decoding PNGs is most of the time of a PQ evaluation, so every reader in oanet goes through
``read_id_png``: one place to choose the fastest decoder. ``pyspng`` (libspng) decodes COCO panoptic
PNGs about twice as fast as Pillow; it is optional and Pillow is the fallback.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from oanet.data.coco_panoptic import id2rgb
from oanet.errors import DataError

try:
    import pyspng
except ImportError:  # optional: Pillow decodes everything, only slower
    pyspng = None

_ID_MASK = np.uint32(0xFFFFFF)


def _ids_from_rgba(rgba: np.ndarray) -> np.ndarray:
    # Little-endian RGBA bytes read as one uint32 are R + 256 G + 256^2 B + 256^3 A; masking A off
    # gives the COCO id in one pass instead of rgb2id's three widening passes.
    ids = np.ascontiguousarray(rgba).view("<u4")[..., 0]
    np.bitwise_and(ids, _ID_MASK, out=ids)
    return ids.astype(np.uint32, copy=False)


def _decode_with_pillow(data: bytes, name: str | Path) -> np.ndarray:
    import io

    try:
        with Image.open(io.BytesIO(data)) as img:
            # convert("RGBA") drops a palette or grey level to colours, like the COCO API's RGB read.
            rgba = np.array(img.convert("RGBA"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{name}: not a readable PNG ({exc})") from None
    return rgba


def decode_id_png(data: bytes, name: str | Path = "<bytes>") -> np.ndarray:
    """Segment ids (uint32, HxW) of an RGB panoptic PNG held in memory; ``name`` goes in errors."""
    rgba = None
    if pyspng is not None:
        try:
            rgba = pyspng.load(data, "RGBA")
        except Exception:  # noqa: BLE001 - let Pillow decode it or word the error
            rgba = None
    if rgba is None:
        rgba = _decode_with_pillow(data, name)
    if rgba.dtype != np.uint8 or rgba.ndim != 3 or rgba.shape[2] != 4:
        raise DataError(f"{name}: unsupported PNG pixel format (decoded to {rgba.dtype} {rgba.shape})")
    return _ids_from_rgba(rgba)


def read_id_png(path: str | Path) -> np.ndarray:
    """Segment ids (uint32, HxW) of an RGB panoptic PNG; DataError names the file on any problem."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: panoptic PNG not found")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return decode_id_png(data, path)


def write_id_png(path: str | Path, ids: np.ndarray) -> None:
    """Write segment ids as an RGB panoptic PNG (id = R + 256 G + 256^2 B)."""
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D id map, got shape {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() > 0xFFFFFF):
        # id2rgb would wrap such ids silently into other segments' colours.
        raise ValueError(f"{path}: segment ids must be in 0..{0xFFFFFF}, got {ids.min()}..{ids.max()}")
    Image.fromarray(id2rgb(ids)).save(path)
