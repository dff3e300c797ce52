"""COCO instance annotations: a compact per-image store, and segmentations (polygons, RLE, uncompressed
RLE) checked and decoded to masks. No torch; pycocotools is imported only to decode.
"""

from __future__ import annotations

import io
import pickle
import warnings
from typing import Any, Container, Optional, Sequence

import numpy as np

from oanet.data.labels import is_integer
from oanet.errors import DataError


def index_instances(annotations: Any, where: str, image_ids: Container, thing_ids: Container,
                    panoptic_json: str) -> dict[Any, bytes]:
    """Each image's annotations ``[category_id, iscrowd, segmentation, id]`` as one ``bytes`` record
    (:func:`read_record` reads it back).

    Annotations of images outside ``image_ids`` are skipped (an instances JSON may cover more images
    than the panoptic split); a category outside ``thing_ids`` (the things of ``panoptic_json``) or a
    missing segmentation raises DataError naming ``where``. A full COCO instances JSON is millions of
    small Python objects; DataLoader workers forked from this process would copy them page by page as
    reference counts change. Records in one buffer (:mod:`oanet.data.split_build`) are never copied.
    """
    if not isinstance(annotations, list):
        raise DataError(f"{where}: 'annotations' must be a list")
    per_image: dict[Any, list] = {}
    for ann in annotations:
        if not isinstance(ann, dict) or "image_id" not in ann:
            raise DataError(f"{where}: annotation without image_id")
        if ann["image_id"] not in image_ids:
            continue
        if ann.get("category_id") not in thing_ids:
            raise DataError(
                f"{where}: annotation {ann.get('id')} has category id {ann.get('category_id')!r}, "
                f"not a thing category of {panoptic_json}"
            )
        if "segmentation" not in ann:
            raise DataError(f"{where}: annotation {ann.get('id')} has no segmentation")
        per_image.setdefault(ann["image_id"], []).append(
            [ann["category_id"], int(bool(ann.get("iscrowd", 0))), ann["segmentation"], ann.get("id")]
        )
    # pickle rather than JSON: much faster to write for COCO's 50 M polygon coordinates (JSON spends
    # its time printing floats); read_record only lets it rebuild plain lists, dicts and numbers.
    return {image_id: pickle.dumps(anns, protocol=5) for image_id, anns in per_image.items()}


class _PlainUnpickler(pickle.Unpickler):
    """Rebuilds lists, dicts, strings and numbers only: a record can name no class or function to call."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in an instance record")


def read_record(record: bytes) -> list:
    """The ``[[category_id, iscrowd, segmentation, id], ...]`` of an :func:`index_instances` record.

    Raises ``pickle.UnpicklingError`` (or another error of the unpickler) for bytes that are not one.
    """
    return _PlainUnpickler(io.BytesIO(record)).load()


def decode_instances(encoded: Optional[bytes | list], height: int, width: int,
                     where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's record from :func:`index_instances` (None or empty: no annotations; or the record
    already read by :func:`read_record`) as ``(masks uint8 NxHxW, category_ids int64, iscrowd bool)``.

    Each segmentation is checked (an RLE's ``size`` must be the image's and its counts must add up
    to H*W: pycocotools would silently shift the masks after a bad one), then all are decoded in one
    batch. Errors are DataErrors naming ``where`` and the annotation.
    """
    if not encoded:
        return np.zeros((0, height, width), np.uint8), np.zeros(0, np.int64), np.zeros(0, bool)
    from pycocotools import mask as mask_utils

    anns = read_record(encoded) if isinstance(encoded, bytes) else encoded
    rles = []
    for _, _, segmentation, ann_id in anns:
        try:
            rles.append(segmentation_to_rle(segmentation, height, width))
        except Exception as exc:  # pycocotools raises bare Exceptions / TypeErrors on bad segmentations
            raise DataError(f"{where}: annotation {ann_id}: bad segmentation ({exc})") from None
    try:
        with warnings.catch_warnings():  # pycocotools' numpy-2 copy= deprecation notice
            warnings.simplefilter("ignore", DeprecationWarning)
            masks = mask_utils.decode(rles)  # H x W x N, Fortran order
    except Exception as exc:
        raise DataError(f"{where}: cannot decode a segmentation ({exc})") from None
    masks = np.ascontiguousarray(masks.transpose(2, 0, 1))
    category_ids = np.array([a[0] for a in anns], dtype=np.int64)
    iscrowd = np.array([a[1] for a in anns], dtype=bool)
    return masks, category_ids, iscrowd


def segmentation_to_rle(segmentation: Any, height: int, width: int) -> dict:
    """A COCO ``segmentation`` (polygons, uncompressed or compressed RLE) as one compressed RLE.

    Raises ValueError for an RLE whose ``size`` is not ``[height, width]`` or whose counts do not
    add up to ``height * width``.
    """
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        # Polygons with fewer than 3 points have no area; pycocotools would also read a lone
        # 4-number polygon as a box.
        polygons = [p for p in segmentation if len(p) >= 6]
        if not polygons:
            return mask_utils.encode(np.zeros((height, width), dtype=np.uint8, order="F"))
        return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    if not (isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation):
        raise ValueError(f"unknown segmentation format {type(segmentation).__name__}")
    _check_rle_size(segmentation["size"], height, width)
    counts = segmentation["counts"]
    if isinstance(counts, list):
        if not all(is_integer(c) and c >= 0 for c in counts):
            raise ValueError("RLE counts must be non-negative integers")
        total = sum(int(c) for c in counts)
    elif isinstance(counts, (str, bytes)):
        total = _compressed_rle_total(counts)
        if total is None:
            raise ValueError("RLE counts are not a valid compressed RLE string")
    else:
        raise ValueError(f"RLE counts must be a list or a string, not {type(counts).__name__}")
    if total != height * width:
        raise ValueError(f"RLE counts add up to {total}, not height*width = {height * width}")
    if isinstance(counts, list):
        return mask_utils.frPyObjects({"size": [height, width], "counts": [int(c) for c in counts]}, height, width)
    return {"size": [height, width], "counts": counts}


def _check_rle_size(size: Any, height: int, width: int) -> None:
    if not (isinstance(size, list) and len(size) == 2 and all(is_integer(v) for v in size)) or [
        int(v) for v in size
    ] != [height, width]:
        raise ValueError(f"RLE size {size!r} is not the image's [height, width] {[height, width]}")


def segmentation_runs(segmentation: Any, height: int, width: int) -> np.ndarray:
    """The run lengths (column-major, zeros first) of a COCO ``segmentation``, checked as
    :func:`segmentation_to_rle` checks it; a compressed RLE is decoded once, with no mask."""
    if isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), (str, bytes)):
        _check_rle_size(segmentation.get("size"), height, width)
        runs = compressed_rle_runs(segmentation["counts"])
        if runs is None:
            raise ValueError("RLE counts are not a valid compressed RLE string")
    else:
        runs = compressed_rle_runs(segmentation_to_rle(segmentation, height, width)["counts"])
    total = int(runs.sum())
    if total != height * width:
        raise ValueError(f"RLE counts add up to {total}, not height*width = {height * width}")
    return runs


def _compressed_rle_total(counts: str | bytes) -> Optional[int]:
    """Sum of the run lengths of a compressed COCO RLE string, or None when it is malformed."""
    runs = compressed_rle_runs(counts)
    return None if runs is None else int(runs.sum())


def compressed_rle_runs(counts: str | bytes) -> Optional[np.ndarray]:
    """The run lengths (zeros first, then ones, alternating; int64) of a compressed COCO RLE string
    (pycocotools' ``rleFrString``, vectorised), or None when the string is malformed or holds a
    negative run."""
    runs = compressed_rle_runs_many([counts])
    return None if runs is None else runs[0]


def compressed_rle_runs_many(counts: Sequence[str | bytes]) -> Optional[list[np.ndarray]]:
    """:func:`compressed_rle_runs` of many strings in one vectorised pass (one image's RLEs), or None
    when any of them is malformed (decode them one by one to tell which)."""
    raws = [c.encode("ascii", "replace") if isinstance(c, str) else c for c in counts]
    sizes = np.array([len(r) for r in raws], dtype=np.int64)
    chars = np.frombuffer(b"".join(raws), dtype=np.uint8).astype(np.int64) - 48
    if chars.size == 0:
        return [np.zeros(0, dtype=np.int64) for _ in raws]
    if chars.min() < 0 or chars.max() > 63:
        return None
    more = (chars & 0x20) != 0
    string_end = np.cumsum(sizes) - 1
    if more[string_end[sizes > 0]].any():
        return None  # truncated inside a number
    ends = np.flatnonzero(~more)
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts + 1
    if lengths.max() > 7:  # 35 bits: more than any run length pycocotools writes
        return None
    shift = 5 * (np.arange(chars.size) - np.repeat(starts, lengths))
    values = np.add.reduceat((chars & 0x1F) << shift, starts)
    values = np.where((chars[ends] & 0x10) != 0, values - (1 << (5 * lengths)), values)
    # Run m > 2 is stored as the difference to run m - 2: a cumulative sum along each string's chain
    # of odd runs and of even runs from m = 2 (run 0 stands alone), all strings at once.
    owner = np.searchsorted(string_end, ends)
    per_string = np.bincount(owner, minlength=len(raws))
    m = np.arange(len(values)) - (np.cumsum(per_string) - per_string)[owner]
    key = 3 * owner + np.where(m == 0, 0, np.where(m % 2 == 1, 1, 2))
    order = np.argsort(key, kind="stable")
    sorted_values, sorted_keys = values[order], key[order]
    total = np.cumsum(sorted_values)
    first = np.flatnonzero(np.concatenate([[True], sorted_keys[1:] != sorted_keys[:-1]]))
    before = np.repeat(total[first] - sorted_values[first], np.diff(np.append(first, len(order))))
    runs = np.empty_like(values)
    runs[order] = total - before
    if runs.min() < 0:
        return None
    return np.split(runs, np.cumsum(per_string)[:-1])

