"""What the converters of home-made formats share: the categories file and the list of images. No torch.

A folder of label PNGs gives the images either from a COCO-style JSON (``--images``: its ``images``
list, each paired with the label PNG of the same name stem) or from the PNGs themselves (the image
id is the stem, the file the image of that stem in ``--image-dir``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np

from oanet.convert.segments import image_size
from oanet.data.labels import parse_categories
from oanet.data.panoptic_json import parse_images
from oanet.errors import DataError
from oanet.fileio import read_json

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def read_categories(path: str | Path) -> list[dict]:
    """A categories JSON (a list as panopticapi's ``panoptic_coco_categories.json``, or a COCO JSON's
    ``categories``) as the COCO panoptic categories to write; every category must say ``isthing``."""
    path = Path(path)
    raw = read_json(path, "categories")
    if isinstance(raw, dict):
        raw = raw.get("categories")
    if not isinstance(raw, list) or not raw:
        raise DataError(f"{path}: expected a non-empty list of categories (or a JSON with 'categories')")
    for cat in raw:
        if isinstance(cat, dict) and "isthing" not in cat:
            raise DataError(f"{path}: category {cat.get('id')!r} ({cat.get('name')!r}) does not say 'isthing' (0 or 1)")
    return [c.to_dict() for c in parse_categories(raw, str(path))]


def list_pngs(folder: str | Path, what: str) -> list[Path]:
    """The ``*.png`` of ``folder``, sorted by name; DataError for a missing folder or none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: {what} folder not found")
    pngs = sorted(Path(e.path) for e in os.scandir(folder) if e.is_file() and e.name.lower().endswith(".png"))
    if not pngs:
        raise DataError(f"{folder}: no .png files in the {what} folder (empty split)")
    return pngs


def _images_by_stem(image_dir: Path) -> dict[str, str]:
    if not image_dir.is_dir():
        raise DataError(f"{image_dir}: image folder not found")
    rank = {ext: i for i, ext in enumerate(IMAGE_EXTENSIONS)}
    found: dict[str, str] = {}
    for entry in sorted(os.scandir(image_dir), key=lambda e: e.name):
        stem, ext = os.path.splitext(entry.name)
        if entry.is_file() and ext.lower() in rank:
            if stem not in found or rank[ext.lower()] < rank[os.path.splitext(found[stem])[1].lower()]:
                found[stem] = entry.name
    return found


def image_list(label_dir: str | Path, what: str, images_json: Optional[str | Path] = None,
               image_dir: Optional[str | Path] = None) -> tuple[list[tuple[dict, str, Optional[Path]]], tuple[str, ...]]:
    """``([(image entry, label PNG name, image path or None), ...], notes)`` for a folder of label PNGs."""
    label_dir = Path(label_dir)
    image_dir = Path(image_dir) if image_dir else None
    if images_json is not None:
        if not label_dir.is_dir():
            raise DataError(f"{label_dir}: {what} folder not found")
        infos = parse_images(_images_of(images_json), str(images_json))
        if not infos:
            raise DataError(f"{images_json}: no images (empty split)")
        out = [(info.to_dict(), Path(info.file_name).with_suffix(".png").name,
                image_dir / info.file_name if image_dir else None) for info in infos]
        return out, ()
    pngs = list_pngs(label_dir, what)
    if image_dir is None:
        return ([({"id": p.stem, "file_name": f"{p.stem}.jpg", "width": 0, "height": 0}, p.name, None) for p in pngs],
                ("no --image-dir or --images: each image's file_name is the label PNG's stem + '.jpg', unchecked",))
    by_stem = _images_by_stem(image_dir)
    missing = [p.name for p in pngs if p.stem not in by_stem]
    if missing:
        raise DataError(f"{image_dir}: no image for the label PNG(s) {missing[:5]}{' ...' if len(missing) > 5 else ''} "
                        f"(looked for {', '.join(IMAGE_EXTENSIONS)})")
    return [({"id": p.stem, "file_name": by_stem[p.stem], "width": 0, "height": 0}, p.name, image_dir / by_stem[p.stem])
            for p in pngs], ()


def _images_of(images_json: str | Path) -> list:
    data = read_json(images_json, "images")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{images_json}: expected a COCO-style JSON with an 'images' list")
    return data["images"]


def check_image(image_path: Optional[Path], labels: np.ndarray, label_path: Path) -> None:
    """DataError when the image beside a label map has another size (nothing to check without one)."""
    if image_path is None:
        return
    width, height = image_size(image_path)
    if (labels.shape[1], labels.shape[0]) != (width, height):
        raise DataError(f"{label_path}: is {labels.shape[1]}x{labels.shape[0]} but its image {image_path} "
                        f"is {width}x{height}")
