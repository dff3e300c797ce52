"""The dataset on disk: arguments, folders, images rendered in worker processes, the two JSONs per split."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from pathlib import Path
from typing import Any, Optional

import numpy as np
from PIL import Image

from oanet.data.png_io import write_id_png
from oanet.data.synthetic.classes import SPLITS, categories
from oanet.data.synthetic.image import render_image
from oanet.errors import DataError, make_dir
from oanet.fileio import atomic_write_bytes
from oanet.parallel import default_workers
from oanet.progress import Progress

GENERATOR_VERSION = 1
DEFAULT_TRAIN = 2000
DEFAULT_VAL = 300
DEFAULT_SIZE = 256
DEFAULT_SEED = 0
MIN_SIZE = 64  # below this the smallest shapes are a few pixels wide
MAX_SIZE = 2048
JPEG_QUALITY = 92


def split_paths(root: str | Path, split: str) -> dict[str, str]:
    """The paths of one split, keyed like oanet.config.SplitConfig's fields."""
    root = Path(root)
    return {
        "image_dir": str(root / "images" / split),
        "panoptic_json": str(root / "annotations" / f"panoptic_{split}.json"),
        "panoptic_dir": str(root / "annotations" / f"panoptic_{split}"),
        "instances_json": str(root / "annotations" / f"instances_{split}.json"),
    }


def _check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise DataError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def validate_arguments(train: Any, val: Any, size: Any, seed: Any, workers: Any) -> None:
    """Raise DataError (one line) for arguments generate_dataset cannot honour."""
    train, val = _check_count("train", train), _check_count("val", val)
    if train + val == 0:
        raise DataError("nothing to generate: train and val are both 0")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not MIN_SIZE <= size <= MAX_SIZE:
        raise DataError(f"size must be an integer from {MIN_SIZE} to {MAX_SIZE} pixels, got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1):
        raise DataError(f"workers must be a positive integer, got {workers!r}")


def _prepare_output(root: Path, overwrite: bool) -> None:
    if root.exists() and not root.is_dir():
        raise DataError(f"{root}: exists and is not a directory")
    if root.is_dir() and any(root.iterdir()):
        if not overwrite:
            raise DataError(f"{root}: directory exists and is not empty (pass --overwrite to replace the dataset)")
        # remove only what a previous run wrote: never wipe a directory the user may keep other files in
        for split in SPLITS:
            paths = split_paths(root, split)
            for key in ("image_dir", "panoptic_dir"):
                shutil.rmtree(paths[key], ignore_errors=True)
            for key in ("panoptic_json", "instances_json"):
                Path(paths[key]).unlink(missing_ok=True)
    for split in SPLITS:
        paths = split_paths(root, split)
        make_dir(paths["image_dir"], "dataset folder")
        make_dir(paths["panoptic_dir"], "dataset folder")


def _file_stem(image_id: int) -> str:
    return f"{image_id:012d}"


def _image_id(split: str, index: int) -> int:
    # ids stay distinct across splits, so the two JSONs can be merged without clashes
    return SPLITS.index(split) * 10_000_000 + index + 1


def _render_and_write(task: tuple[str, str, int, int, int]) -> dict[str, Any]:
    """Render one image, write its JPEG and panoptic PNG; its JSON records and statistics."""
    root, split, index, size, seed = task
    out = render_image(seed, split, index, size)
    image_id = _image_id(split, index)
    stem = _file_stem(image_id)
    Image.fromarray(out["rgb"]).save(Path(root, "images", split, stem + ".jpg"), quality=JPEG_QUALITY)
    write_id_png(Path(root, "annotations", f"panoptic_{split}", stem + ".png"), out["ids"])
    for ann in out["annotations"]:
        ann["image_id"] = image_id
    return {
        "image": {"id": image_id, "file_name": stem + ".jpg", "width": size, "height": size},
        "panoptic": {"image_id": image_id, "file_name": stem + ".png", "segments_info": out["segments"]},
        "annotations": out["annotations"],
        "stats": out["stats"],
    }


def _map(tasks: list, workers: int, progress: bool, desc: str):
    """Results of _render_and_write over ``tasks`` in order, in worker processes when workers > 1."""
    with Progress(total=len(tasks), desc=desc, unit="img", disable=not progress) as bar:
        if workers <= 1 or len(tasks) <= 1:
            for task in tasks:
                record = _render_and_write(task)
                bar.update()
                yield record
            return
        chunk = max(1, min(16, len(tasks) // (4 * workers)))
        with multiprocessing.get_context("spawn" if os.name == "nt" else "fork").Pool(workers) as pool:
            for record in pool.imap(_render_and_write, tasks, chunksize=chunk):
                bar.update()
                yield record


def write_json(path: str, data: dict) -> None:
    """Compact JSON, written atomically, as the dataset's files are."""
    atomic_write_bytes(path, json.dumps(data, separators=(",", ":")).encode())


def generate_dataset(out_dir: str | Path, train: int = DEFAULT_TRAIN, val: int = DEFAULT_VAL,
                     size: int = DEFAULT_SIZE, seed: int = DEFAULT_SEED, workers: Optional[int] = None,
                     overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Write the synthetic occlusion benchmark to ``out_dir`` in COCO panoptic layout.

    Returns ``{"root": str, "train": split_paths, "val": split_paths, "stats": {...}}``; each split's
    paths are keyed like ``SplitConfig`` (image_dir, panoptic_json, panoptic_dir, instances_json).
    The files are the same bytes for the same (train, val, size, seed), whatever ``workers``.
    """
    validate_arguments(train, val, size, seed, workers)
    root = Path(out_dir)
    _prepare_output(root, overwrite)
    workers = default_workers() if workers is None else int(workers)
    info = {"description": "oanet synthetic occlusion benchmark", "generator_version": GENERATOR_VERSION,
            "seed": int(seed), "size": int(size)}
    result: dict[str, Any] = {"root": str(root)}
    totals = {"images": 0, "things": 0, "overlapping": 0, "same_class_overlap_pairs": 0, "crowd_images": 0,
              "void_pixels": 0, "pixels": 0}
    for split, count in (("train", train), ("val", val)):
        tasks = [(str(root), split, i, int(size), int(seed)) for i in range(count)]
        images, panoptic, instances = [], [], []
        for record in _map(tasks, workers, progress, f"synth {split}"):
            images.append(record["image"])
            panoptic.append(record["panoptic"])
            for ann in record["annotations"]:
                instances.append({"id": len(instances) + 1, **ann})
            stats = record["stats"]
            totals["images"] += 1
            totals["crowd_images"] += stats["crowd"]
            for key in ("things", "overlapping", "same_class_overlap_pairs", "void_pixels", "pixels"):
                totals[key] += stats[key]
        paths = split_paths(root, split)
        write_json(paths["panoptic_json"], {"info": {**info, "split": split}, "images": images,
                                        "annotations": panoptic, "categories": categories()})
        write_json(paths["instances_json"], {"info": {**info, "split": split}, "images": images,
                                         "annotations": instances, "categories": categories(things_only=True)})
        result[split] = paths
    totals["overlap_fraction"] = totals["overlapping"] / max(1, totals["things"])
    totals["void_fraction"] = totals["void_pixels"] / max(1, totals["pixels"])
    result["stats"] = totals
    return result

