"""Image inputs: files, folders, PIL images and arrays to RGB pixels. No torch here.

Every inference path (``oanet predict``, ``oanet evaluate``, :class:`oanet.Predictor`, the ONNX
runtime) reads images through these functions, so a greyscale, palette, RGBA, CMYK or 16-bit input
is converted the same way everywhere, and an unreadable one is a DataError naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from oanet.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
_WIDE_INTEGER_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def pil_to_rgb(img: Image.Image) -> np.ndarray:
    """RGB uint8 ``HxWx3`` of a PIL image of any mode.

    Pillow's ``convert("RGB")`` clips 16-bit and 32-bit integer greyscale at 255 (a 16-bit PNG comes
    out almost white); those are scaled to 8 bits instead. Alpha is dropped, as ``convert`` does.
    """
    if img.mode in _WIDE_INTEGER_MODES:
        grey = np.asarray(img).astype(np.float64)
        # 16-bit data in a 32-bit "I" image is the common case (how Pillow opens 16-bit PNGs).
        top = 65535.0 if img.mode != "I" or grey.max(initial=0) <= 65535 else float(grey.max())
        grey = np.clip(np.round(grey * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if img.mode == "F":
        grey = np.asarray(img, dtype=np.float64)
        top = 1.0 if grey.max(initial=0) <= 1.0 else 255.0
        grey = np.clip(np.round(grey * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(img.convert("RGB"))


def load_rgb_image(path: str | Path, expected_size: Optional[tuple[int, int]] = None) -> np.ndarray:
    """An image file as RGB uint8 ``(H, W, 3)``; see :func:`pil_to_rgb` for the conversions.

    ``expected_size`` is ``(width, height)``; a different size raises DataError naming the file.
    EXIF orientation is not applied: annotations refer to the stored pixels.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image not found")
    try:
        with Image.open(path) as img:
            if expected_size is not None and img.size != tuple(expected_size):
                raise DataError(
                    f"{path}: image is {img.size[0]}x{img.size[1]} but the annotation says "
                    f"{expected_size[0]}x{expected_size[1]}"
                )
            array = pil_to_rgb(img)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{path}: not a readable image ({exc})") from None
    return array


def describe(image: Any) -> str:
    """How an input is named in errors: its path, or its kind."""
    if isinstance(image, (str, Path)):
        return str(image)
    if isinstance(image, Image.Image):
        return f"<PIL image {image.mode} {image.width}x{image.height}>"
    shape = getattr(image, "shape", None)
    return f"<{type(image).__name__} of shape {tuple(shape)}>" if shape is not None else f"<{type(image).__name__}>"


def _array_to_rgb(array: np.ndarray, name: str, channels_first: bool) -> np.ndarray:
    if channels_first and array.ndim == 3:
        array = array.transpose(1, 2, 0)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4) or array.shape[0] == 0 or array.shape[1] == 0:
        layout = "3xHxW" if channels_first else "HxWx3"
        raise DataError(f"{name}: expected an image of layout {layout} (or greyscale), got shape {array.shape}")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    array = array[..., :3]  # alpha is dropped, as for files
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype == np.uint16:
        return (array.astype(np.float32) / 65535.0).astype(np.float32)
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.number):
        raise DataError(f"{name}: unsupported pixel type {array.dtype}")
    if np.issubdtype(array.dtype, np.integer):
        raise DataError(f"{name}: integer pixels must be uint8 or uint16, got {array.dtype}")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise DataError(f"{name}: image has NaN or infinite pixels")
    if array.size and (array.min() < 0.0 or array.max() > 1.0):
        raise DataError(
            f"{name}: float pixels must be in 0..1, got {float(array.min()):g}..{float(array.max()):g} "
            "(pass uint8 for 0..255)"
        )
    return np.ascontiguousarray(array)


def as_rgb(image: Any) -> np.ndarray:
    """Any supported input as ``HxWx3`` RGB pixels: uint8 (0..255) or float32 (0..1).

    Accepted: a path, a ``PIL.Image`` (any mode), a numpy array ``HxWx3`` / ``HxWx4`` / ``HxW`` (uint8,
    uint16, or float in 0..1), or a torch tensor ``3xHxW`` (float in 0..1, or uint8). Float inputs
    stay float so nothing is quantised; everything else becomes uint8.
    """
    if isinstance(image, (str, Path)):
        return load_rgb_image(image)
    if isinstance(image, Image.Image):
        return pil_to_rgb(image)
    name = describe(image)
    if type(image).__module__.split(".")[0] == "torch":  # a tensor, without importing torch here
        return _array_to_rgb(image.detach().cpu().numpy(), name, channels_first=True)
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image, name, channels_first=False)
    raise DataError(f"{name}: not an image (expected a path, a PIL image, a numpy array or a tensor)")


def to_float_chw(rgb: np.ndarray) -> np.ndarray:
    """``HxWx3`` uint8 or float pixels as float32 ``3xHxW`` in 0..1 (what the network takes)."""
    chw = np.ascontiguousarray(rgb.transpose(2, 0, 1))
    if chw.dtype == np.uint8:
        return chw.astype(np.float32) / np.float32(255.0)
    return chw.astype(np.float32, copy=False)


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """``HxWx3`` pixels as uint8 (for drawing)."""
    if rgb.dtype == np.uint8:
        return rgb
    return np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)


def list_image_files(inputs: str | Path | Sequence[str | Path]) -> list[Path]:
    """Image files named directly or found in named folders (not recursive; sorted by name)."""
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    if not inputs:
        raise DataError("no input images given")
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files = sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                raise DataError(f"{item}: folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            found += files
        elif item.is_file():
            found.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such image or folder")
    return found


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS
