"""Panoptic PNG input/output with clear errors. No torch here.

Decoding PNGs is most of the time of a PQ evaluation, so every reader in oanet goes through
``read_id_png``: one place to choose the fastest decoder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from oanet.data.coco_panoptic import id2rgb, rgb2id
from oanet.errors import DataError


def read_id_png(path: str | Path) -> np.ndarray:
    """Segment ids (uint32, HxW) of an RGB panoptic PNG; DataError names the file on any problem."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: panoptic PNG not found")
    try:
        with Image.open(path) as img:
            if img.mode != "RGB":
                img = img.convert("RGB")
            rgb = np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"{path}: not a readable PNG ({exc})") from None
    return rgb2id(rgb)


def write_id_png(path: str | Path, ids: np.ndarray) -> None:
    """Write segment ids as an RGB panoptic PNG (id = R + 256 G + 256^2 B)."""
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D id map, got shape {ids.shape}")
    Image.fromarray(id2rgb(ids)).save(path)
